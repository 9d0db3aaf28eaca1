"""Volume grants and removal, and secrets, as operations (agents faked at the protocol)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from moorage.model import (
    Conflict,
    Forbidden,
    Node,
    NotFound,
    SpecError,
    Task,
    Unavailable,
    parse_specs,
)
from moorage.model.volume import GrantBody, VolumeCreate
from moorage.ops import AgentLost, AgentUnreachable, SecretBox, Secrets, Volumes
from moorage.ops.deploy import Deployer
from moorage.state import kinds
from moorage.testing.state import World


class Agents:
    """Agents answering as scripted: None (done) or an exception to raise."""

    def __init__(self, answer: Exception | None = None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str]] = []

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        self.calls.append((node, method, path))
        if self.answer is not None:
            raise self.answer
        return {}


async def node(world: World, name: str = "n1") -> None:
    agent = Node(name=name, cpu=1, memory=1, agent_addr="10.0.0.1:7071")
    await world.writer.commit([], [kinds.NODE.put(agent)])


async def test_one_writer_at_a_time_with_epochs(world: World) -> None:
    ops = Volumes(world.cache, world.writer, world.clock, Agents())
    await ops.create(VolumeCreate(name="data", driver="shared"))
    with pytest.raises(Conflict):
        await ops.create(VolumeCreate(name="data", driver="shared"))
    first = await ops.claim("data", GrantBody(node="n1", task="t1"))
    assert first.epoch == 1
    with pytest.raises(Conflict):
        await ops.claim("data", GrantBody(node="n2", task="t2"))
    with pytest.raises(SpecError) as caught:
        await ops.renew("data", GrantBody(node="n1", task="t1"))
    assert caught.value.errors[0].field == "epoch"
    await ops.renew("data", GrantBody(node="n1", task="t1", epoch=1))
    released = await ops.release("data", GrantBody(node="n1", task="t1", epoch=1))
    assert not released.attachments
    assert (await ops.claim("data", GrantBody(node="n2", task="t2"))).epoch == 2


async def test_delete_has_an_agent_remove_the_data_first(world: World) -> None:
    agents = Agents()
    ops = Volumes(world.cache, world.writer, world.clock, agents)
    await node(world)
    await ops.create(VolumeCreate(name="data", driver="shared"))
    assert await ops.delete("data") == "n1"
    assert agents.calls == [("n1", "DELETE", "/v1/volumes/data")]
    assert "data" not in world.cache.volumes
    with pytest.raises(NotFound):
        await ops.delete("data")


async def test_an_agent_that_did_nothing_leaves_the_volume_as_it_was(world: World) -> None:
    ops = Volumes(world.cache, world.writer, world.clock, Agents(AgentUnreachable("down")))
    await node(world)
    await ops.create(VolumeCreate(name="data", driver="shared"))
    with pytest.raises(AgentUnreachable):
        await ops.delete("data")
    assert world.cache.volumes["data"].state != "deleting"


async def test_an_agent_that_may_have_acted_leaves_it_deleting(world: World) -> None:
    ops = Volumes(world.cache, world.writer, world.clock, Agents(AgentLost("no answer")))
    await node(world)
    await ops.create(VolumeCreate(name="data", driver="shared"))
    with pytest.raises(Unavailable, match="stays `deleting`"):
        await ops.delete("data")
    assert world.cache.volumes["data"].state == "deleting"
    with pytest.raises(Conflict):  # no claim gets past `deleting`
        await ops.claim("data", GrantBody(node="n1", task="t1"))


async def test_a_volume_an_active_service_uses_is_not_deleted(world: World) -> None:
    spec = """
service: db
containers: [{name: db, command: [sleep, '9'], mounts: [{volume: data, path: /d}]}]
volumes: {data: {driver: shared, scope: shared, autoprovision: true}}
"""
    ops = Volumes(world.cache, world.writer, world.clock, Agents())
    (parsed,) = parse_specs(spec)
    await ops.provision(parsed)
    name = parsed.volumes["data"].volume_name("data")
    await Deployer(world.cache, world.writer, world.clock).deploy(parsed)
    with pytest.raises(Conflict, match="used by service db"):
        await ops.delete(name)


def box() -> SecretBox:
    return SecretBox(os.urandom(32))


async def test_secrets_are_sealed_and_opened_only_for_the_tasks_node(world: World) -> None:
    sealing = box()
    ops = Secrets(world.cache, world.writer, sealing, world.clock)
    info = await ops.set("db-url", "postgres://secret")
    assert info.version == 1 and (await ops.set("db-url", "v2")).version == 2
    stored = world.cache.secrets["db-url"]
    assert b"v2" not in base64.b64decode(stored.sealed)
    spec = "service: web\ncontainers: [{name: app, command: [x], secrets: {DB: db-url}}]\n"
    await Deployer(world.cache, world.writer, world.clock).deploy(parse_specs(spec)[0])
    task = Task(
        id="web-1",
        service="web",
        family="web",
        revision=1,
        node="n1",
        created_at=1.0,
        updated_at=1.0,
    )
    await world.writer.commit([], [kinds.TASK.put(task)])
    assert ops.for_task("web-1", "n1").root == {"app": {"DB": "v2"}}
    with pytest.raises(Forbidden):
        ops.for_task("web-1", "n2")  # another node's task: not its own secrets
    with pytest.raises(Forbidden):
        ops.for_task("web-2", "n1")


async def test_many_secrets_at_once_name_every_bad_entry(world: World) -> None:
    ops = Secrets(world.cache, world.writer, box(), world.clock)
    with pytest.raises(SpecError) as caught:
        await ops.set_many({"ok": "1", "bad name": "2", "n": 3})
    assert {e.field for e in caught.value.errors} == {"bad name", "n"}
    assert not world.cache.secrets
    assert [i.name for i in await ops.set_many({"a": "1", "b": "2"})] == ["a", "b"]
    await ops.delete("a")
    assert [i.name for i in ops.infos()] == ["b"]


def test_a_sealed_value_does_not_open_under_another_name() -> None:
    sealing = box()
    sealed = sealing.seal("a", "value")
    assert sealing.open("a", sealed) == "value"
    with pytest.raises(Unavailable):
        sealing.open("b", sealed)
