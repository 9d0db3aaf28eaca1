"""The Store protocol, with etcd v3's semantics: revisions, CAS transactions, watches, leases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from moorage.store import (
    Compacted,
    Compare,
    Delete,
    Get,
    LeaseNotFound,
    Put,
    Store,
    StoreClosed,
    WatchEvent,
)

from .conftest import FakeClock


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def collect(store: Store, prefix: str, start: int, count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    watch = store.watch(prefix, start)
    try:
        async with asyncio.timeout(3):
            async for event in watch:
                events.append(event)
                if len(events) == count:
                    break
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
    return events


# ---- keys and revisions -----------------------------------------------------------------
async def test_an_empty_store_is_at_revision_zero(store: Store) -> None:
    assert await store.revision() == 0
    assert await store.get("/a") is None
    assert await store.range("/") == ([], 0)


async def test_each_write_bumps_the_revision_by_one(store: Store) -> None:
    assert await store.put("/a", b"1") == 1
    assert await store.put("/b", b"2") == 2
    assert await store.put("/a", b"3") == 3
    assert await store.delete("/b") == 4
    assert await store.revision() == 4


async def test_create_mod_revision_and_version_follow_etcd(store: Store) -> None:
    await store.put("/a", b"1")
    await store.put("/other", b"x")
    await store.put("/a", b"2")
    kv = await store.get("/a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", 1, 3, 2)
    await store.delete("/a")
    assert await store.get("/a") is None
    await store.put("/a", b"again")  # re-created: a new life, version starts over
    kv = await store.get("/a")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)


async def test_range_lists_a_prefix_sorted_by_key(store: Store) -> None:
    for key in ("/t/b", "/t/a", "/t/c", "/u/a", "/ta"):
        await store.put(key, key.encode())
    kvs, revision = await store.range("/t/")
    assert [kv.key for kv in kvs] == ["/t/a", "/t/b", "/t/c"]
    assert revision == 5


async def test_deleting_what_does_not_exist_writes_nothing(store: Store) -> None:
    await store.put("/a", b"1")
    assert await store.delete("/missing") == 1
    assert await store.revision() == 1


async def test_delete_by_prefix_is_one_revision(store: Store) -> None:
    for key in ("/t/a", "/t/b", "/u/a"):
        await store.put(key, b"x")
    assert await store.delete("/t/", prefix=True) == 4
    assert [kv.key for kv in (await store.range("/"))[0]] == ["/u/a"]


# ---- transactions -----------------------------------------------------------------------
async def test_a_transaction_writes_every_key_at_one_revision(store: Store) -> None:
    result = await store.txn([], [Put("/a", b"1"), Put("/b", b"2"), Put("/c", b"3")])
    assert result.succeeded and result.revision == 1
    kvs, _ = await store.range("/")
    assert {kv.mod_revision for kv in kvs} == {1}


async def test_compare_on_mod_revision_is_compare_and_swap(store: Store) -> None:
    await store.put("/a", b"1")
    kv = await store.get("/a")
    assert kv is not None
    won = await store.txn([Compare.unchanged("/a", kv.mod_revision)], [Put("/a", b"2")])
    lost = await store.txn([Compare.unchanged("/a", kv.mod_revision)], [Put("/a", b"3")])
    assert won.succeeded and not lost.succeeded
    assert lost.revision == won.revision  # the failed branch wrote nothing
    current = await store.get("/a")
    assert current is not None and current.value == b"2"


async def test_compare_absent_creates_only_once(store: Store) -> None:
    first = await store.txn([Compare.absent("/lock")], [Put("/lock", b"me")])
    second = await store.txn([Compare.absent("/lock")], [Put("/lock", b"you")])
    assert first.succeeded and not second.succeeded
    kv = await store.get("/lock")
    assert kv is not None and kv.value == b"me"


async def test_failure_branch_runs_when_a_compare_fails(store: Store) -> None:
    await store.put("/a", b"1")
    result = await store.txn(
        [Compare("/a", "value", "==", b"nope"), Compare("/a", "version", "==", 1)],
        [Put("/b", b"success")],
        [Get("/a"), Put("/c", b"failure")],
    )
    assert not result.succeeded
    assert [kv.value for kv in result.responses[0]] == [b"1"]
    assert await store.get("/b") is None
    assert await store.get("/c") is not None


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare("/a", "version", ">", 1), True),
        (Compare("/a", "version", "<", 2), False),
        (Compare("/a", "create", "==", 1), True),
        (Compare("/a", "mod", "!=", 2), False),
        (Compare("/a", "value", "==", b"two"), True),
        (Compare("/missing", "mod", "==", 0), True),
        (Compare("/missing", "version", "==", 0), True),
    ],
)
async def test_compare_targets_and_operators(store: Store, compare: Compare, holds: bool) -> None:
    await store.put("/a", b"one")
    await store.put("/a", b"two")
    assert (await store.txn([compare], [])).succeeded is holds


async def test_delete_in_a_transaction_returns_the_previous_values(store: Store) -> None:
    await store.put("/t/a", b"1")
    await store.put("/t/b", b"2")
    result = await store.txn([], [Delete("/t/", prefix=True)])
    assert sorted(kv.value for kv in result.responses[0]) == [b"1", b"2"]
    assert (await store.range("/t/"))[0] == []


async def test_concurrent_read_modify_write_loses_no_update(store: Store) -> None:
    await store.put("/counter", b"0")

    async def increment() -> None:
        while True:
            kv = await store.get("/counter")
            assert kv is not None
            bumped = str(int(kv.value) + 1).encode()
            result = await store.txn(
                [Compare.unchanged("/counter", kv.mod_revision)], [Put("/counter", bumped)]
            )
            if result.succeeded:
                return

    await asyncio.gather(*(increment() for _ in range(25)))
    kv = await store.get("/counter")
    assert kv is not None and kv.value == b"25"
    assert kv.version == 26


# ---- watches ----------------------------------------------------------------------------
async def test_watch_replays_history_then_follows_live_changes(store: Store) -> None:
    await store.put("/w/a", b"1")
    await store.put("/x/ignored", b"x")
    await store.put("/w/b", b"2")

    async def later() -> None:
        await asyncio.sleep(0.05)
        await store.delete("/w/a")
        await store.txn([], [Put("/w/c", b"3"), Put("/w/d", b"4")])

    writer = asyncio.create_task(later())
    events = await collect(store, "/w/", 1, 5)
    await writer
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        ("put", "/w/a", 1),
        ("put", "/w/b", 3),
        ("delete", "/w/a", 4),
        ("put", "/w/c", 5),
        ("put", "/w/d", 5),
    ]
    assert events[0].kv.value == b"1" and events[2].kv.value == b""


async def test_watch_from_a_revision_skips_older_events(store: Store) -> None:
    for value in (b"1", b"2", b"3"):
        await store.put("/w/a", value)
    events = await collect(store, "/w/", 3, 1)
    assert events[0].kv.value == b"3" and events[0].kv.version == 3


async def test_watch_below_the_compaction_point_raises_compacted(store: Store) -> None:
    for number in range(5):
        await store.put("/w/a", str(number).encode())
    await store.compact(3)
    with pytest.raises(Compacted) as caught:
        await collect(store, "/w/", 2, 1)
    assert caught.value.compact_revision >= 3
    events = await collect(store, "/w/", 4, 2)  # above it: still served
    assert [e.kv.mod_revision for e in events] == [4, 5]


async def test_a_watch_ends_with_store_closed(store: Store) -> None:
    watch = store.watch("/w/", 1)

    async def consume() -> None:
        async for _ in watch:
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(StoreClosed):
        await asyncio.wait_for(consumer, 3)


# ---- leases -----------------------------------------------------------------------------
async def test_keys_of_an_expired_lease_are_deleted(store: Store, clock: FakeClock) -> None:
    lease = await store.lease_grant(10)
    await store.put("/nodes/n1", b"alive", lease=lease)
    await store.put("/nodes/n2", b"no lease")
    clock.advance(5)
    assert await store.lease_keepalive(lease) == 10
    clock.advance(9)  # 14 s after the grant, 9 s after the keepalive: still alive
    await asyncio.sleep(0.05)
    kv = await store.get("/nodes/n1")
    assert kv is not None and kv.lease == lease
    clock.advance(2)

    async def gone() -> bool:
        return await store.get("/nodes/n1") is None

    await eventually(gone)
    assert await store.get("/nodes/n2") is not None
    with pytest.raises(LeaseNotFound):
        await store.lease_keepalive(lease)


async def test_revoking_a_lease_deletes_its_keys_at_one_revision(store: Store) -> None:
    lease = await store.lease_grant(60)
    await store.put("/a", b"1", lease=lease)
    await store.put("/b", b"2", lease=lease)
    before = await store.revision()
    await store.lease_revoke(lease)
    assert await store.revision() == before + 1
    assert (await store.range("/"))[0] == []
    with pytest.raises(LeaseNotFound):
        await store.lease_revoke(lease)


async def test_put_with_an_unknown_lease_fails_and_writes_nothing(store: Store) -> None:
    with pytest.raises(LeaseNotFound):
        await store.put("/a", b"1", lease=424242)
    assert await store.revision() == 0
    with pytest.raises(LeaseNotFound):
        await store.txn([], [Put("/a", b"1"), Put("/b", b"2", lease=424242)])
    assert await store.get("/a") is None


async def test_lease_ids_are_distinct_and_positive(store: Store) -> None:
    leases = {await store.lease_grant(30) for _ in range(5)}
    assert len(leases) == 5 and min(leases) > 0


# ---- lifecycle --------------------------------------------------------------------------
async def test_a_closed_store_refuses_every_call(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreClosed):
        await store.get("/a")
    with pytest.raises(StoreClosed):
        await store.put("/a", b"1")
    await store.close()  # idempotent
