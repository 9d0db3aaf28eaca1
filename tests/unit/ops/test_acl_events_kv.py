"""ACL tokens, user events, registrations and KV writes as operations."""

from __future__ import annotations

import pytest

from moorage.model import Conflict, Forbidden, Health, Node, NotFound, SpecError, Task, TaskStatus
from moorage.model.acl import ALLOW_ALL, Authorizer, Level, Rule, secret_digest
from moorage.model.messages import CheckReport
from moorage.ops import Acl, Events, Kv, Registrations
from moorage.state import kinds
from moorage.testing.state import World


async def test_bootstrap_once_and_tokens_resolve_to_their_policies(world: World) -> None:
    acl = Acl(world.cache, world.writer, world.clock, enabled=True)
    token, secret = await acl.bootstrap()
    assert token.management and acl.resolve(secret) is ALLOW_ALL
    with pytest.raises(Conflict):
        await acl.bootstrap()
    stored, _ = await world.store.range("/moorage/")
    assert all(secret.encode() not in kv.value for kv in stored)  # only its SHA-256 is kept
    assert world.cache.acl_by_digest[secret_digest(secret)].accessor_id == token.accessor_id
    with pytest.raises(SpecError) as caught:
        await acl.set_policy({"Name": "app", "Rules": ["kv:app/=admin"]})
    assert caught.value.errors[0].field == "Rules[0]"
    await acl.set_policy({"Name": "app", "Rules": ["kv:app/=write"]})
    with pytest.raises(SpecError):
        await acl.create_token({"Policies": ["nope"]})
    _app, app_secret = await acl.create_token({"Policies": [{"Name": "app"}]})
    authz = acl.resolve(app_secret)
    assert authz is not None and authz.allows("kv", "app/x", Level.WRITE)
    assert not authz.allows("kv", "other", Level.READ)
    assert acl.resolve("made-up") is None
    anonymous = acl.resolve("")
    assert anonymous is not None and not anonymous.allows("kv", "", Level.READ)
    with pytest.raises(Forbidden):
        acl.token_self("made-up")


async def test_acls_off_refuse_the_management_calls(world: World) -> None:
    acl = Acl(world.cache, world.writer, world.clock, enabled=False)
    with pytest.raises(Conflict, match="--acl"):
        await acl.bootstrap()


def test_a_token_that_may_write_no_service_is_known_as_such() -> None:
    reader = Authorizer([Rule(resource="service", prefix="", level=Level.READ)])
    one = Authorizer(
        [
            Rule(resource="service", prefix="", level=Level.DENY),
            Rule(resource="service", prefix="api", level=Level.WRITE),
        ]
    )
    assert not reader.allows_any("service", Level.WRITE) and reader.allows_any(
        "service", Level.READ
    )
    assert one.allows_any("service", Level.WRITE) and not one.allows("service", "web", Level.WRITE)


async def test_user_events_are_checked_trimmed_and_filtered(world: World) -> None:
    events = Events(world.cache, world.writer, world.clock)
    with pytest.raises(SpecError) as caught:
        await events.fire("bad name", b"x" * (100 * 1024 + 1), {"node": "(", "tag": "v1"})
    assert {e.field for e in caught.value.errors} == {"name", "payload", "node", "tag"}
    fired = await events.fire("deploy", b"{}", {"node": "^web-"})
    assert fired.ltime == world.cache.revision
    await world.writer.commit([], [kinds.NODE.put(Node(name="web-1", cpu=1, memory=1))])
    assert [e.name for e in events.user_events(None, "web-1")] == ["deploy"]
    assert events.user_events(None, "db-1") == []
    assert events.user_events("other", None) == []


async def test_service_filters_select_nodes_running_the_service(world: World) -> None:
    events = Events(world.cache, world.writer, world.clock)
    task = Task(
        id="api-1",
        service="api",
        family="api",
        revision=1,
        node="n1",
        status=TaskStatus.RUNNING,
        created_at=1.0,
        updated_at=1.0,
    )
    await world.writer.commit([], [kinds.TASK.put(task)])
    fired = await events.fire("restart", b"", {"service": "^api$"})
    assert events.aimed_at(fired, "n1") and not events.aimed_at(fired, "n2")


REGISTER = {
    "ID": "pg-1",
    "Name": "postgres",
    "Port": 5432,
    "Checks": [{"CheckID": "pg-ttl", "TTL": "30s"}, {"CheckID": "pg-tcp", "TCP": "db:5432"}],
}


async def test_registrations_keep_unnamed_checks_and_need_service_write(world: World) -> None:
    ops = Registrations(world.cache, world.writer, world.clock)
    with pytest.raises(SpecError) as caught:
        ops.node_for(None, "10.9.9.9")  # no node at all: it must be named
    assert caught.value.errors[0].field == "node"
    await world.writer.commit([], [kinds.NODE.put(Node(name="n1", cpu=1, memory=1))])
    node = ops.node_for(None, "10.9.9.9")  # the only node
    reader = Authorizer([Rule(resource="service", prefix="", level=Level.READ)])
    with pytest.raises(Forbidden, match="service:postgres write"):
        await ops.register(REGISTER, node, "false", reader)
    await ops.register(REGISTER, node, "false", ALLOW_ALL)
    await ops.register({**REGISTER, "Checks": []}, node, "false", ALLOW_ALL)
    assert [c.id for c in world.cache.registrations["pg-1"].checks] == ["pg-ttl", "pg-tcp"]
    with pytest.raises(SpecError):
        await ops.set_ttl("pg-tcp", Health.PASSING, "", ALLOW_ALL)  # not a TTL check
    await ops.set_ttl("pg-ttl", Health.PASSING, "ok", ALLOW_ALL)
    await ops.record("pg-1", "pg-tcp", CheckReport(status=Health.WARNING, output="slow"))
    checks = {c.id: c.status for c in world.cache.registrations["pg-1"].checks}
    assert checks == {"pg-ttl": Health.PASSING, "pg-tcp": Health.WARNING}
    await ops.register({**REGISTER, "Checks": []}, node, "true", ALLOW_ALL)
    assert world.cache.registrations["pg-1"].checks == []
    with pytest.raises(NotFound):
        await ops.deregister("nope", ALLOW_ALL)
    await ops.deregister("pg-1", ALLOW_ALL)
    assert not world.cache.registrations


async def test_kv_cas_as_consul(world: World) -> None:
    kv = Kv(world.cache, world.writer)
    assert (await kv.put("a", b"1", 0, cas=0))[0]
    assert not (await kv.put("a", b"2", 0, cas=0))[0]  # only if absent
    index = world.cache.kv.get("a")
    assert index is not None
    done, revision = await kv.put("a", b"3", 7, cas=index.modify_index)
    assert done and world.cache.kv.get("a") is not None and revision == world.cache.revision
    assert not (await kv.delete("a", recurse=False, cas=1))[0]
    assert (await kv.delete("missing", recurse=False, cas=5))[0]  # Consul: a missing key is true
    await kv.put("dir/x", b"", 0, None)
    await kv.put("dir/y", b"", 0, None)
    assert (await kv.delete("dir/", recurse=True, cas=None))[0]
    assert world.cache.kv.keys_under("dir/") == []
