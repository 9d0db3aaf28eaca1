"""The watch-fed cache and the CAS writer, over the real SQLite engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from moorage.model import Conflict, Service, ServiceSpec, Task, parse_specs
from moorage.ops.deploy import Deployer
from moorage.state import StateCache, StateWriter, Topic, kinds
from moorage.store import Put, Store
from moorage.store.sqlite import SqliteStore
from moorage.testing.memstore import MemoryStore

SPEC = "service: web\ncount: 2\ncontainers: [{name: app, command: [sleep, '1'], memory: 32}]\n"


def deployer(writer: StateWriter) -> Deployer:
    return Deployer(writer.cache, writer, writer.clock)


def spec(memory: int = 32) -> ServiceSpec:
    return parse_specs(SPEC.replace("memory: 32", f"memory: {memory}"))[0]


@pytest.fixture(params=["sqlite", "memory"])
async def state(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Store, StateCache, StateWriter]]:
    store: Store = (
        await SqliteStore.open(":memory:") if request.param == "sqlite" else MemoryStore()
    )
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    try:
        yield store, cache, StateWriter(store, cache, clock=lambda: 100.0)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()


async def test_deploy_is_read_your_writes_and_idempotent(
    state: tuple[Store, StateCache, StateWriter],
) -> None:
    _store, cache, writer = state
    service, taskdef, created, first = await deployer(writer).deploy(spec())
    assert created and taskdef.revision == 1
    assert cache.services["web"] == service  # visible in the cache as soon as deploy returns
    assert first is not None and cache.deployments[first.id] == first
    assert (first.from_revision, first.to_revision, service.deployment_id) == (None, 1, first.id)
    _, again, created_again, none = await deployer(writer).deploy(spec())
    assert (again.revision, created_again, none) == (1, False, None)  # nothing to roll out
    _, third, created_third, second = await deployer(writer).deploy(spec(memory=64))
    assert (third.revision, created_third) == (2, True)
    assert second is not None and (second.from_revision, second.to_revision) == (1, 2)
    assert cache.deployments[first.id].status == "superseded"  # first was still running
    assert [td.revision for td in cache.taskdef_revisions("web")] == [1, 2]
    assert [e.type for e in cache.events] == ["service.deployed"] * 3


async def test_concurrent_registrations_get_distinct_revisions(
    state: tuple[Store, StateCache, StateWriter],
) -> None:
    _store, cache, writer = state
    results = await asyncio.gather(
        *(deployer(writer).register_taskdef(spec(memory=10 + i)) for i in range(8))
    )
    revisions = sorted(td.revision for td, _ in results)
    assert revisions == list(range(1, 9))
    assert len(cache.taskdef_revisions("web")) == 8


async def test_blocking_wait_wakes_only_its_topic(
    state: tuple[Store, StateCache, StateWriter],
) -> None:
    store, cache, writer = state
    await deployer(writer).deploy(spec())
    index = cache.index(Topic.service("web"))
    waiter = asyncio.create_task(cache.wait(Topic.service("web"), index, timeout=5))
    other = Task(id="api-1", service="api", family="api", revision=1, node="n1")
    await writer.commit([], [Put(kinds.TASK.key(other.id), kinds.encode(other))])
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert cache.index(Topic.node_tasks("n1")) > index
    mine = Task(id="web-1", service="web", family="web", revision=1, node="n2")
    revision = await writer.commit([], [Put(kinds.TASK.key(mine.id), kinds.encode(mine))])
    assert await asyncio.wait_for(waiter, 2) == revision
    assert [t.id for t in cache.tasks_on_node("n2")] == ["web-1"]
    # Moving a task between nodes updates both node indexes.
    moved = mine.model_copy(update={"node": "n3"})
    await writer.commit([], [Put(kinds.TASK.key(moved.id), kinds.encode(moved))])
    assert cache.tasks_on_node("n2") == [] and [t.id for t in cache.tasks_on_node("n3")] == [
        "web-1"
    ]
    assert await store.revision() == cache.revision


async def test_wait_times_out_with_the_same_index(
    state: tuple[Store, StateCache, StateWriter],
) -> None:
    _store, cache, _writer = state
    index = cache.index(Topic.NODES)
    assert await cache.wait(Topic.NODES, index, timeout=0.1) == index


async def test_update_retries_on_a_lost_cas_and_raises_from_the_change(
    state: tuple[Store, StateCache, StateWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _cache, writer = state
    await deployer(writer).deploy(spec())
    stale = await store.get(kinds.SERVICE.key("web"))
    assert stale is not None
    await store.put(
        kinds.SERVICE.key("web"), stale.value
    )  # someone else wrote since `stale` was read
    real_get, reads = store.get, []

    async def first_read_is_stale(key: str):  # type: ignore[no-untyped-def]
        reads.append(key)
        return stale if len(reads) == 1 else await real_get(key)

    monkeypatch.setattr(store, "get", first_read_is_stale)
    seen: list[int] = []

    def bump(current: Service | None) -> tuple[Service | None, list[Put]]:
        assert current is not None
        seen.append(current.count)
        return current.model_copy(update={"count": current.count + 1}), []

    result = await writer.update(kinds.SERVICE, "web", bump)
    assert len(reads) == 2, "the lost CAS must be retried with a fresh read"
    assert result is not None and result.count == 3

    def refuse(current: Service | None) -> tuple[Service | None, list[Put]]:
        raise Conflict("nope")

    with pytest.raises(Conflict):
        await writer.update(kinds.SERVICE, "web", refuse)


async def test_relist_after_compaction_keeps_the_cache_whole(
    state: tuple[Store, StateCache, StateWriter],
) -> None:
    store, cache, writer = state
    await deployer(writer).deploy(spec())
    revision = await store.revision()
    await store.compact(revision)
    await deployer(writer).deploy(spec(memory=48))
    assert cache.latest_taskdef("web") is not None
    assert cache.latest_taskdef("web").revision == 2  # type: ignore[union-attr]
