"""The agent's side of a task's volumes against a scripted server: wait on a held volume,
renew, fence on a lost or unconfirmed lease, release, resume after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from moorage.agent import volumes as av
from moorage.agent.client import ServerError
from moorage.model import Container, TaskDefinition
from moorage.model.volume import GrantBody, Volume
from moorage.volumes import Layout, fence


class Grants:
    """A server whose answers are scripted per action: an exception to raise, or an epoch."""

    def __init__(self, **script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def volume_grant(self, action: str, name: str, body: GrantBody, timeout: float) -> Volume:
        self.calls.append((action, body.model_dump(exclude_unset=True, exclude_none=True)))
        answers = self.script.get(action, [])
        answer = answers.pop(0) if len(answers) > 1 else (answers[0] if answers else 1)
        if isinstance(answer, Exception):
            raise answer
        return Volume(name=name, driver="shared", epoch=int(answer))


def taskdef(**volume: Any) -> TaskDefinition:
    container = Container(
        name="app", command=["true"], mounts=[{"volume": "app-data", "path": "/data"}]
    )
    spec = {"driver": "shared", "source": "data", "scope": "shared", **volume}
    return TaskDefinition(
        family="db", revision=1, containers=[container], volumes={"app-data": spec}
    )


def volumes(tmp_path: Path, grants: Grants, lease: float = 1.0, **spec: Any) -> av.TaskVolumes:
    paths = Layout(tmp_path / "agent", tmp_path / "shared")
    return av.TaskVolumes(
        "db-1",
        taskdef(**spec),
        tmp_path / "alloc" / "db-1",
        "n1",
        paths,
        grants,
        lease,
        av.NodeMounts(),
    )


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(av, "CLAIM_RETRY", 0.05)


HELD = ServerError(409, "volume data is held by task db-0 on node n2 (epoch 1)")


async def test_a_held_volume_makes_the_task_wait_then_it_mounts(tmp_path: Path) -> None:
    grants = Grants(claim=[HELD, HELD, HELD, 2])
    task = volumes(tmp_path, grants, lease=3.0)
    said: list[str] = []
    lost: list[str] = []

    async def waiting(message: str) -> None:
        said.append(message)

    assert await task.attach(asyncio.Event(), waiting, lost.append)
    try:
        assert said == ["waiting for volume data: " + HELD.detail]  # said once, not per retry
        data = tmp_path / "shared" / "data" / "data"
        assert data.is_dir()
        assert task.env() == {
            "MOORAGE_VOLUME_APP_DATA": str(data),
            "MOORAGE_VOLUME_APP_DATA_EPOCH": "2",
        }
        (bind,) = task.binds(taskdef().containers[0])
        assert (bind.source, bind.path, bind.read_only) == (data, "/data", False)
        saved = fence.read(task.fence_file)
        assert saved is not None and saved.deadline is not None
        assert saved.deadline - fence.now() <= 0.75 * 3.0
        claim = [body for action, body in grants.calls if action == "claim"][-1]
        assert (claim["node"], claim["task"], claim["lease_ttl"]) == ("n1", "db-1", 3.0)
        assert "size_enforced" not in claim  # known once the volume is looked at
        for _ in range(40):  # ... and the renewal right after mounting says it
            if any(action == "renew" for action, _ in grants.calls):
                break
            await asyncio.sleep(0.05)
        renew = next(body for action, body in grants.calls if action == "renew")
        assert (renew["epoch"], renew["size_enforced"]) == (2, False)
    finally:
        await task.detach(discard=False)
    assert grants.calls[-1] == ("release", {"node": "n1", "task": "db-1", "epoch": 2})
    assert not task.fence_file.exists()
    assert lost == []


async def test_stopped_while_waiting(tmp_path: Path) -> None:
    task = volumes(tmp_path, Grants(claim=[HELD]))
    stop = asyncio.Event()

    async def waiting(message: str) -> None:
        stop.set()

    assert not await task.attach(stop, waiting, lambda _: None)
    assert task.claims == []


async def test_a_lost_claim_fences_the_task(tmp_path: Path) -> None:
    lost_claim = ServerError(409, "the claim on volume data with epoch 1 ... was lost")
    task = volumes(tmp_path, Grants(claim=[1], renew=[lost_claim]), read_only=True)
    lost = asyncio.Event()
    why: list[str] = []

    def on_lost(reason: str) -> None:
        why.append(reason)
        lost.set()

    assert await task.attach(asyncio.Event(), _quiet, on_lost)
    try:
        assert task.binds(taskdef().containers[0])[0].read_only  # the spec's read_only
        await asyncio.wait_for(lost.wait(), 2)  # the first renewal comes after lease/3
        assert "was lost" in why[0]
    finally:
        await task.detach(discard=True)


async def test_no_server_confirms_the_lease_fenced_at_three_quarters(tmp_path: Path) -> None:
    unreachable = ServerError(0, "cannot reach the server")
    task = volumes(tmp_path, Grants(claim=[1], renew=[unreachable]), lease=1.0)
    lost = asyncio.Event()
    started = fence.now()
    assert await task.attach(asyncio.Event(), _quiet, lambda _: lost.set())
    try:
        await asyncio.wait_for(lost.wait(), 2)
        assert 0.7 <= fence.now() - started < 1.0  # 0.75 x the lease after the claim's send
    finally:
        await task.detach(discard=True)


async def test_a_restarted_agent_renews_with_the_same_epoch(tmp_path: Path) -> None:
    first = volumes(tmp_path, Grants(claim=[7]), lease=3.0)
    assert await first.attach(asyncio.Event(), _quiet, lambda _: None)
    await first.stop_keeping()  # the agent dies; the fence file and the watchdog stay
    saved = first.to_json()

    grants = Grants(renew=[7])
    second = volumes(tmp_path, grants, lease=3.0)
    second.restore(saved)
    lost: list[str] = []
    await second.resume(lost.append)
    try:
        for _ in range(40):
            if grants.calls:
                break
            await asyncio.sleep(0.05)
        assert grants.calls[0] == (
            "renew",
            {"node": "n1", "task": "db-1", "epoch": 7, "lease_ttl": 3.0, "size_enforced": False},
        )
        assert lost == []
    finally:
        await second.detach(discard=True)
    assert not first.fence_file.exists()
    reap(first)  # its watchdog saw the file go


async def test_resume_after_the_deadline_fences_at_once(tmp_path: Path) -> None:
    first = volumes(tmp_path, Grants(claim=[3]), lease=1.0)
    assert await first.attach(asyncio.Event(), _quiet, lambda _: None)
    await first.stop_keeping()
    await asyncio.sleep(0.8)  # past 0.75 x the lease: the watchdog fenced it
    second = volumes(tmp_path, Grants(renew=[3]), lease=1.0)
    second.restore(first.to_json())
    lost: list[str] = []
    await second.resume(lost.append)
    assert lost and "fenced" in lost[0]
    await second.detach(discard=True)
    reap(first)


def reap(volumes: av.TaskVolumes) -> None:
    """The watchdog a 'dead agent' left behind has exited: collect it."""
    assert volumes._watchdog is not None
    assert volumes._watchdog.wait(5) == 0


async def _quiet(message: str) -> None:
    return None
