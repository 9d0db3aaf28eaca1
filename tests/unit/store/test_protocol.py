"""The Store protocol, run against every engine of the `store` fixture.

The expected behaviour is etcd v3's: the store revision is the header revision, KeyValue carries
create_revision / mod_revision / version like mvccpb.KeyValue, a transaction is
If(compares) Then(success) Else(failure) at one revision, watches replay history from a start
revision and raise `Compacted` below the compaction point, and keys die with their lease.

Revisions are relative to the revision a test starts at (`base`), so a fresh etcd (revision 1)
or a shared one passes the same assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from moorage.store import (
    Compacted,
    Compare,
    Delete,
    Get,
    KeyValue,
    LeaseNotFound,
    Put,
    Store,
    StoreClosed,
    StoreError,
    WatchEvent,
)

from .conftest import LeaseClock

TIMEOUT = 3.0


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def collect(store: Store, prefix: str, start: int, count: int) -> list[WatchEvent]:
    """The first `count` events of a watch (replayed or live), then close it."""
    events: list[WatchEvent] = []
    watch = store.watch(prefix, start)
    try:
        async with asyncio.timeout(TIMEOUT):
            async for event in watch:
                events.append(event)
                if len(events) == count:
                    break
    finally:
        await aclose(watch)
    return events


async def aclose(watch: AsyncIterator[WatchEvent]) -> None:
    closer = getattr(watch, "aclose", None)
    if closer is not None:
        await closer()


class Tap:
    """Consumes a watch in the background, so a test can write and then look at what arrived."""

    def __init__(self, store: Store, prefix: str, start: int) -> None:
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None
        self._watch = store.watch(prefix, start)
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for event in self._watch:
                self.events.append(event)
        except StoreError as exc:
            self.error = exc

    async def wait_for(self, count: int) -> list[WatchEvent]:
        async def arrived() -> bool:
            return len(self.events) >= count or self.error is not None

        await eventually(arrived)
        if self.error is not None:
            raise AssertionError(f"watch failed: {self.error!r}")
        return self.events

    async def wait_for_error(self) -> BaseException:
        async def failed() -> bool:
            return self.error is not None

        await eventually(failed)
        assert self.error is not None
        return self.error

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await aclose(self._watch)


def shape(events: list[WatchEvent], base: int) -> list[tuple[str, str, int, bytes]]:
    """Events as (type, key, mod_revision - base, value), for readable comparisons."""
    return [(e.type, e.kv.key, e.kv.mod_revision - base, e.kv.value) for e in events]


def keys(kvs: list[KeyValue]) -> list[str]:
    return [kv.key for kv in kvs]


async def must_get(store: Store, key: str) -> KeyValue:
    kv = await store.get(key)
    assert kv is not None, f"{key} is missing"
    return kv


async def snapshot(store: Store) -> tuple[list[KeyValue], int]:
    kvs, revision = await store.range("")
    assert revision == await store.revision()
    return kvs, revision


# ---- keys, ranges and revisions -----------------------------------------------------------
async def test_put_get_and_range_by_prefix(store: Store) -> None:
    base = await store.revision()
    for key in ("/t/b", "/t/a", "/t/a/x", "/t/ab", "/ta", "/u/a"):
        await store.put(key, key.encode())
    assert (await must_get(store, "/t/a")).value == b"/t/a"
    assert await store.get("/t") is None  # a prefix is not a key
    assert await store.get("/missing") is None

    kvs, revision = await store.range("/t/")
    assert keys(kvs) == ["/t/a", "/t/a/x", "/t/ab", "/t/b"]  # sorted; "/ta" is not under "/t/"
    assert [kv.value for kv in kvs] == [k.encode() for k in keys(kvs)]
    assert revision == base + 6 == await store.revision()
    assert keys((await store.range("/t/a"))[0]) == ["/t/a", "/t/a/x", "/t/ab"]
    assert keys((await store.range("/t/a/"))[0]) == ["/t/a/x"]
    assert (await store.range("/nothing/"))[0] == []
    assert keys((await store.range(""))[0]) == ["/t/a", "/t/a/x", "/t/ab", "/t/b", "/ta", "/u/a"]


async def test_values_are_bytes_kept_exactly(store: Store) -> None:
    blob = bytes(range(256)) * 40
    await store.put("/bin", blob)
    await store.put("/empty", b"")
    assert (await must_get(store, "/bin")).value == blob
    assert (await must_get(store, "/empty")).value == b""


async def test_reads_and_empty_writes_leave_the_revision_alone(store: Store) -> None:
    await store.put("/a", b"1")
    before = await snapshot(store)
    revision = before[1]
    assert await store.delete("/missing") == revision
    assert await store.delete("/missing/", prefix=True) == revision
    assert (await store.txn([], [Get("/a"), Get("/", prefix=True)])).revision == revision
    failed = await store.txn([Compare.absent("/a")], [Put("/b", b"2")])
    assert not failed.succeeded and failed.revision == revision
    await store.get("/a")
    await store.range("/")
    assert await snapshot(store) == before


async def test_each_write_transaction_bumps_the_revision_by_exactly_one(store: Store) -> None:
    base = await store.revision()
    assert await store.put("/a", b"1") == base + 1
    assert await store.put("/b", b"2") == base + 2
    assert await store.put("/a", b"1") == base + 3  # the same value is still a write
    assert await store.delete("/b") == base + 4
    many = await store.txn([], [Put(f"/m/{i}", b"x") for i in range(10)])
    assert many.succeeded and many.revision == base + 5
    assert await store.delete("/m/", prefix=True) == base + 6
    mixed = await store.txn([], [Put("/c", b"3"), Delete("/a"), Get("/c")])
    assert mixed.revision == base + 7
    assert await store.revision() == base + 7


async def test_all_writes_of_one_transaction_share_one_revision(store: Store) -> None:
    base = await store.revision()
    await store.put("/x/old", b"old")
    await store.put("/x/keep", b"keep")
    result = await store.txn(
        [], [Put("/x/b", b"B"), Put("/x/a", b"A"), Delete("/x/old"), Put("/x/keep", b"K")]
    )
    assert result.succeeded and result.revision == base + 3
    kvs, _ = await store.range("/x/")
    assert keys(kvs) == ["/x/a", "/x/b", "/x/keep"]
    assert {kv.mod_revision for kv in kvs} == {base + 3}
    # Watchers see the transaction's events at that one revision, in the order of its ops.
    events = await collect(store, "/x/", base + 3, 4)
    assert shape(events, base) == [
        ("put", "/x/b", 3, b"B"),
        ("put", "/x/a", 3, b"A"),
        ("delete", "/x/old", 3, b""),
        ("put", "/x/keep", 3, b"K"),
    ]


async def test_create_mod_revision_and_version_follow_etcd(store: Store) -> None:
    base = await store.revision()
    await store.put("/a", b"1")
    first = await must_get(store, "/a")
    assert (first.create_revision, first.mod_revision, first.version) == (base + 1, base + 1, 1)
    assert first.lease == 0

    await store.put("/other", b"x")
    await store.put("/a", b"2")
    await store.put("/a", b"3")
    kv = await must_get(store, "/a")
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"3",
        base + 1,  # creation does not move
        base + 4,
        3,
    )

    deleted = await store.txn([], [Delete("/a")])
    assert deleted.revision == base + 5
    assert deleted.responses == [[kv]]  # the delete returns the value it removed
    assert await store.get("/a") is None

    await store.put("/a", b"again")  # re-created: a new life, its version starts over
    kv = await must_get(store, "/a")
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"again",
        base + 6,
        base + 6,
        1,
    )

    events = await collect(store, "/a", base + 1, 5)  # "/other" is not under "/a"
    assert [(e.type, e.kv.create_revision, e.kv.mod_revision, e.kv.version) for e in events] == [
        ("put", base + 1, base + 1, 1),
        ("put", base + 1, base + 3, 2),
        ("put", base + 1, base + 4, 3),
        ("delete", 0, base + 5, 0),  # a delete event: create_revision 0, version 0, value b""
        ("put", base + 6, base + 6, 1),
    ]
    assert events[3].kv.value == b""


async def test_delete_by_prefix(store: Store) -> None:
    for key in ("/t/a", "/t/b", "/t/b/c", "/ta", "/u/a"):
        await store.put(key, key.encode())
    base = await store.revision()
    assert await store.delete("/t/", prefix=True) == base + 1  # one revision for all of them
    assert keys((await store.range(""))[0]) == ["/ta", "/u/a"]
    assert await store.delete("/t/", prefix=True) == base + 1  # nothing left: no new revision

    await store.put("/p/1", b"1")
    await store.put("/p/2", b"2")
    result = await store.txn([], [Delete("/p/", prefix=True)])
    assert [(kv.key, kv.value) for kv in result.responses[0]] == [("/p/1", b"1"), ("/p/2", b"2")]
    assert (await store.range("/p/"))[0] == []


# ---- transactions ----------------------------------------------------------------------------
# The key "/a" is put twice before each compare below: create = base+1, mod = base+2, version 2.
COMPARES = [
    pytest.param(lambda b: Compare("/a", "mod", "==", b + 2), True, id="mod==current"),
    pytest.param(lambda b: Compare("/a", "mod", "==", b + 1), False, id="mod==stale"),
    pytest.param(lambda b: Compare("/a", "mod", "!=", b + 2), False, id="mod!=current"),
    pytest.param(lambda b: Compare("/a", "mod", "<", b + 3), True, id="mod<next"),
    pytest.param(lambda b: Compare("/a", "mod", ">", b + 2), False, id="mod>current"),
    pytest.param(lambda b: Compare("/a", "create", "==", b + 1), True, id="create==first"),
    pytest.param(lambda b: Compare("/a", "create", ">", 0), True, id="create>0"),
    pytest.param(lambda b: Compare("/a", "version", "==", 2), True, id="version==2"),
    pytest.param(lambda b: Compare("/a", "version", ">", 1), True, id="version>1"),
    pytest.param(lambda b: Compare("/a", "version", "<", 2), False, id="version<2"),
    pytest.param(lambda b: Compare("/a", "value", "==", b"two"), True, id="value==current"),
    pytest.param(lambda b: Compare("/a", "value", "==", b"one"), False, id="value==old"),
    pytest.param(lambda b: Compare("/a", "value", "!=", b"two"), False, id="value!=current"),
    pytest.param(lambda b: Compare("/a", "value", ">", b"one"), True, id="value>bytes"),
    pytest.param(lambda b: Compare("/a", "value", "<", b"one"), False, id="value<bytes"),
    pytest.param(lambda b: Compare.unchanged("/a", b + 2), True, id="unchanged"),
    pytest.param(lambda b: Compare.absent("/a"), False, id="absent-but-present"),
    pytest.param(lambda b: Compare.absent("/missing"), True, id="absent"),
    pytest.param(lambda b: Compare("/missing", "mod", "==", 0), True, id="missing-mod==0"),
    pytest.param(lambda b: Compare("/missing", "version", "==", 0), True, id="missing-version==0"),
    pytest.param(lambda b: Compare("/missing", "version", ">", 0), False, id="missing-version>0"),
]


@pytest.mark.parametrize(("make", "holds"), COMPARES)
async def test_compare_targets_and_operators(
    store: Store, make: Callable[[int], Compare], holds: bool
) -> None:
    base = await store.revision()
    await store.put("/a", b"one")
    await store.put("/a", b"two")
    result = await store.txn([make(base)], [Get("/a")], [Get("/missing")])
    assert result.succeeded is holds
    assert result.revision == base + 2  # reads only: no new revision either way
    assert len(result.responses) == 1
    assert keys(result.responses[0]) == (["/a"] if holds else [])


async def test_compare_on_mod_revision_is_compare_and_swap(store: Store) -> None:
    await store.put("/a", b"1")
    seen = await must_get(store, "/a")
    won = await store.txn([Compare.unchanged("/a", seen.mod_revision)], [Put("/a", b"2")])
    lost = await store.txn([Compare.unchanged("/a", seen.mod_revision)], [Put("/a", b"3")])
    assert won.succeeded and won.revision == seen.mod_revision + 1
    assert not lost.succeeded and lost.revision == won.revision  # the loser wrote nothing
    current = await must_get(store, "/a")
    assert (current.value, current.mod_revision, current.version) == (b"2", won.revision, 2)


async def test_compare_absent_creates_only_once(store: Store) -> None:
    base = await store.revision()
    first = await store.txn(
        [Compare.absent("/lock")],
        [Put("/lock", b"me"), Get("/lock"), Put("/owner", b"me")],
        [Get("/lock")],
    )
    assert first.succeeded and first.revision == base + 1
    assert first.responses[0] == [] and first.responses[2] == []
    # A Get after a Put in the same transaction sees the new value (as in etcd).
    assert [(kv.key, kv.value, kv.mod_revision) for kv in first.responses[1]] == [
        ("/lock", b"me", base + 1)
    ]
    second = await store.txn(
        [Compare.absent("/lock")], [Put("/lock", b"you"), Put("/owner", b"you")], [Get("/lock")]
    )
    assert not second.succeeded and second.revision == base + 1
    assert [kv.value for kv in second.responses[0]] == [b"me"]  # the failure branch ran
    assert (await must_get(store, "/lock")).value == b"me"
    assert (await must_get(store, "/owner")).value == b"me"


async def test_failure_branch_runs_when_any_compare_fails(store: Store) -> None:
    await store.put("/a", b"1")
    a = await must_get(store, "/a")
    base = await store.revision()
    result = await store.txn(
        [Compare("/a", "value", "==", b"1"), Compare("/a", "version", "==", 7)],
        [Put("/ok", b"success"), Delete("/a")],
        [Get("/a"), Put("/fail", b"failure"), Get("/fail")],
    )
    assert not result.succeeded
    assert result.revision == base + 1  # the failure branch wrote
    assert result.responses[0] == [a]
    assert result.responses[1] == []
    assert [(kv.value, kv.mod_revision) for kv in result.responses[2]] == [(b"failure", base + 1)]
    assert await store.get("/ok") is None
    assert await store.get("/a") == a  # the success branch's delete did not run


async def test_a_failed_transaction_without_failure_ops_changes_nothing(store: Store) -> None:
    lease = await store.lease_grant(60)
    await store.put("/a", b"1")
    await store.put("/b", b"2", lease=lease)
    before = await snapshot(store)
    result = await store.txn(  # (no put under a delete of its branch: etcd refuses that)
        [Compare("/a", "value", "==", b"1"), Compare.absent("/a")],
        [Put("/a", b"2"), Delete("/b", prefix=True), Put("/c", b"3", lease=lease)],
    )
    assert not result.succeeded
    assert result.revision == before[1]
    assert result.responses == []
    assert await snapshot(store) == before
    # Nothing reached the history either: the next event after it is the next real write.
    await store.put("/z", b"z")
    events = await collect(store, "", before[1] + 1, 1)
    assert shape(events, before[1]) == [("put", "/z", 1, b"z")]


async def test_a_transaction_putting_one_key_twice_is_refused(store: Store) -> None:
    await store.put("/d", b"0")
    before = await snapshot(store)
    with pytest.raises(StoreError):
        await store.txn([], [Put("/other", b"x"), Put("/d", b"1"), Put("/d", b"2")])
    assert await snapshot(store) == before


async def test_concurrent_compare_and_swap_increments_lose_no_update(store: Store) -> None:
    workers = 20
    await store.put("/counter", b"0")
    base = await store.revision()
    conflicts = 0

    async def increment() -> None:
        nonlocal conflicts
        while True:
            kv = await must_get(store, "/counter")
            await asyncio.sleep(0)  # let the other writers read the same value
            result = await store.txn(
                [Compare.unchanged("/counter", kv.mod_revision)],
                [Put("/counter", str(int(kv.value) + 1).encode())],
                [Get("/counter")],
            )
            if result.succeeded:
                return
            conflicts += 1
            assert result.responses[0][0].mod_revision > kv.mod_revision  # someone else won

    async with asyncio.timeout(10):
        await asyncio.gather(*(increment() for _ in range(workers)))
    kv = await must_get(store, "/counter")
    assert kv.value == str(workers).encode()
    assert kv.version == workers + 1
    assert kv.mod_revision == base + workers == await store.revision()  # losers wrote nothing
    assert conflicts > 0  # the race really happened, and compare-and-swap resolved it


# ---- watches ---------------------------------------------------------------------------------
async def test_watch_delivers_every_later_event_in_order_including_deletes(store: Store) -> None:
    await store.put("/w/before", b"0")
    base = await store.revision()
    tap = Tap(store, "/w/", base + 1)
    single = Tap(store, "/w/a", base + 1)
    try:
        await store.put("/w/a", b"1")  # +1
        await store.put("/elsewhere", b"x")  # +2, not under "/w/"
        await store.put("/w/a", b"2")  # +3
        await store.delete("/w/before")  # +4
        await store.txn([], [Put("/w/b", b"3"), Put("/w/c", b"4")])  # +5
        await store.delete("/w/", prefix=True)  # +6
        events = await tap.wait_for(8)
        assert shape(events, base) == [
            ("put", "/w/a", 1, b"1"),
            ("put", "/w/a", 3, b"2"),
            ("delete", "/w/before", 4, b""),
            ("put", "/w/b", 5, b"3"),
            ("put", "/w/c", 5, b"4"),
            ("delete", "/w/a", 6, b""),
            ("delete", "/w/b", 6, b""),
            ("delete", "/w/c", 6, b""),
        ]
        second_put = events[1].kv
        assert (second_put.create_revision, second_put.version) == (base + 1, 2)
        assert shape(await single.wait_for(3), base) == [
            ("put", "/w/a", 1, b"1"),
            ("put", "/w/a", 3, b"2"),
            ("delete", "/w/a", 6, b""),
        ]
        await asyncio.sleep(0.05)
        assert len(tap.events) == 8 and len(single.events) == 3  # and nothing else
    finally:
        await tap.close()
        await single.close()


async def test_watch_from_an_old_revision_replays_history_then_follows(store: Store) -> None:
    base = await store.revision()
    await store.put("/h/a", b"1")  # +1
    await store.put("/h/b", b"2")  # +2
    await store.put("/h/a", b"3")  # +3
    await store.delete("/h/b")  # +4
    await store.put("/x", b"0")  # +5
    tap = Tap(store, "/h/", base + 2)  # from the middle of the history
    try:
        assert shape(await tap.wait_for(3), base) == [
            ("put", "/h/b", 2, b"2"),
            ("put", "/h/a", 3, b"3"),
            ("delete", "/h/b", 4, b""),
        ]
        await store.put("/h/c", b"live")  # +6
        assert shape(await tap.wait_for(4), base)[3] == ("put", "/h/c", 6, b"live")
    finally:
        await tap.close()
    everything = await collect(store, "/h/", base + 1, 5)
    assert [e.kv.mod_revision - base for e in everything] == [1, 2, 3, 4, 6]


async def test_watch_replays_a_long_history_in_order(store: Store) -> None:
    base = await store.revision()
    txns, per_txn = 36, 70  # 2520 events, more than one read batch of an engine
    for n in range(txns):
        await store.txn([], [Put(f"/big/{n:02d}/{i:02d}", b"%d" % n) for i in range(per_txn)])
    events = await collect(store, "/big/", base + 1, txns * per_txn)
    assert [(e.kv.mod_revision - base, e.kv.key) for e in events] == [
        (n + 1, f"/big/{n:02d}/{i:02d}") for n in range(txns) for i in range(per_txn)
    ]


async def test_watch_from_a_compacted_revision_raises_compacted(store: Store) -> None:
    base = await store.revision()
    for number in range(1, 6):
        await store.put("/w/a", str(number).encode())  # base+1 .. base+5
    await store.compact(base + 3)
    for start in (base + 1, base + 3):  # below and at the compaction point
        with pytest.raises(Compacted) as caught:
            await collect(store, "/w/", start, 1)
        assert caught.value.requested == start
        assert caught.value.compact_revision == base + 3
    events = await collect(store, "/w/", base + 4, 2)  # above it: still served
    assert shape(events, base) == [("put", "/w/a", 4, b"4"), ("put", "/w/a", 5, b"5")]
    # Compaction forgets history, not the current state, and revisions go on.
    kv = await must_get(store, "/w/a")
    assert (kv.value, kv.create_revision, kv.version) == (b"5", base + 1, 5)
    assert await store.put("/w/a", b"6") == base + 6


async def test_a_lagging_watcher_never_skips_compacted_events_silently(store: Store) -> None:
    base = await store.revision()
    await store.put("/w/a", b"1")
    watch = store.watch("/w/", base + 1)
    try:
        seen = [(await anext(watch)).kv.mod_revision]
        # The consumer stalls; the writers move on and history below base+3 is compacted.
        await store.put("/w/a", b"2")
        await store.put("/w/a", b"3")
        await store.compact(base + 3)
        await store.put("/w/a", b"4")
        told: Compacted | None = None
        try:
            async with asyncio.timeout(TIMEOUT):
                while seen[-1] < base + 4:
                    seen.append((await anext(watch)).kv.mod_revision)
        except Compacted as exc:
            told = exc
        if told is not None:  # the watcher must re-list: it was told
            assert (told.requested, told.compact_revision) == (base + 2, base + 3)
        else:  # or the engine had delivered them before the compaction: then all of them
            assert seen == [base + 1, base + 2, base + 3, base + 4]
    finally:
        await aclose(watch)


async def test_compaction_behind_a_watcher_does_not_lose_its_live_events(store: Store) -> None:
    base = await store.revision()
    await store.put("/w/a", b"1")
    watch = store.watch("/w/", base + 1)
    try:
        first = await anext(watch)  # the consumer holds the watch mid-stream
        assert first.kv.mod_revision == base + 1
        await store.compact(base + 1)  # only what it has already seen
        await store.put("/w/b", b"2")
        async with asyncio.timeout(TIMEOUT):
            event = await anext(watch)
        assert shape([event], base) == [("put", "/w/b", 2, b"2")]
    finally:
        await aclose(watch)


async def test_a_caught_up_watcher_survives_compaction_of_other_keys(store: Store) -> None:
    base = await store.revision()
    tap = Tap(store, "/quiet/", base + 1)
    try:
        for i in range(5):
            await store.put(f"/busy/{i}", b"x")
        await asyncio.sleep(0.1)  # the watcher looks at (and skips) the unrelated writes
        await store.compact(await store.revision())
        await store.put("/quiet/x", b"y")
        assert shape(await tap.wait_for(1), base) == [("put", "/quiet/x", 6, b"y")]
    finally:
        await tap.close()


async def test_closing_a_watch_ends_it(store: Store) -> None:
    base = await store.revision()
    await store.put("/w/a", b"1")
    watch = store.watch("/w/", base + 1)
    assert (await anext(watch)).kv.key == "/w/a"
    await aclose(watch)
    await store.put("/w/b", b"2")  # writers do not care
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


async def test_a_pending_watch_ends_with_store_closed(store: Store) -> None:
    tap = Tap(store, "/w/", await store.revision() + 1)
    try:
        await asyncio.sleep(0.05)
        await store.close()
        assert isinstance(await tap.wait_for_error(), StoreClosed)
    finally:
        await tap.close()


# ---- leases ----------------------------------------------------------------------------------
async def test_lease_ids_are_distinct_and_positive(store: Store) -> None:
    leases = [await store.lease_grant(30) for _ in range(5)]
    assert len(set(leases)) == 5 and min(leases) > 0


async def test_keys_of_an_expired_lease_are_deleted(store: Store, clock: LeaseClock) -> None:
    base = await store.revision()
    lease = await store.lease_grant(3)
    await store.put("/nodes/b", b"b", lease=lease)  # +1
    await store.put("/nodes/a", b"a", lease=lease)  # +2
    await store.put("/nodes/c", b"no lease")  # +3
    assert (await must_get(store, "/nodes/a")).lease == lease
    tap = Tap(store, "/nodes/", base + 1)
    try:
        await clock.advance(4)

        async def gone() -> bool:
            return await store.get("/nodes/a") is None

        await eventually(gone)
        assert keys((await store.range("/nodes/"))[0]) == ["/nodes/c"]
        # One revision deletes every key of the lease, in key order (as etcd's revoke).
        assert shape((await tap.wait_for(5))[3:], base) == [
            ("delete", "/nodes/a", 4, b""),
            ("delete", "/nodes/b", 4, b""),
        ]
        assert await store.revision() == base + 4
    finally:
        await tap.close()
    with pytest.raises(LeaseNotFound):
        await store.lease_keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await store.put("/nodes/a", b"again", lease=lease)
    with pytest.raises(LeaseNotFound):
        await store.lease_revoke(lease)


async def test_keepalive_extends_a_lease(store: Store, clock: LeaseClock) -> None:
    lease = await store.lease_grant(3)
    await store.put("/k", b"v", lease=lease)
    await clock.advance(2)
    assert await store.lease_keepalive(lease) == 3
    await clock.advance(2)  # 4 s after the grant, 2 s after the keepalive
    await asyncio.sleep(0.1)  # room for an engine's expiry sweep to (wrongly) strike
    assert (await must_get(store, "/k")).lease == lease
    assert await store.lease_keepalive(lease) == 3
    await clock.advance(2)
    await asyncio.sleep(0.05)
    assert await store.get("/k") is not None
    await clock.advance(2)  # 4 s after the last keepalive: expired

    async def gone() -> bool:
        return await store.get("/k") is None

    await eventually(gone)


async def test_revoke_deletes_the_keys_at_once_in_one_revision(store: Store) -> None:
    lease = await store.lease_grant(60)
    await store.put("/a", b"1", lease=lease)
    await store.put("/b", b"2", lease=lease)
    await store.put("/c", b"3")
    base = await store.revision()
    tap = Tap(store, "", base + 1)
    try:
        await store.lease_revoke(lease)
        assert await store.revision() == base + 1
        assert keys((await store.range(""))[0]) == ["/c"]
        assert shape(await tap.wait_for(2), base) == [
            ("delete", "/a", 1, b""),
            ("delete", "/b", 1, b""),
        ]
    finally:
        await tap.close()
    with pytest.raises(LeaseNotFound):
        await store.lease_revoke(lease)
    with pytest.raises(LeaseNotFound):
        await store.lease_keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await store.put("/a", b"1", lease=lease)
    # A lease without keys goes without a new revision.
    empty = await store.lease_grant(60)
    await store.lease_revoke(empty)
    assert await store.revision() == base + 1


async def test_put_with_an_unknown_lease_raises_and_writes_nothing(store: Store) -> None:
    await store.put("/a", b"0")
    before = await snapshot(store)
    with pytest.raises(LeaseNotFound) as caught:
        await store.put("/a", b"1", lease=424242)
    assert caught.value.lease == 424242
    with pytest.raises(LeaseNotFound):
        await store.txn([], [Put("/b", b"1"), Put("/c", b"2", lease=424242)])
    with pytest.raises(LeaseNotFound):
        await store.lease_keepalive(424242)
    with pytest.raises(LeaseNotFound):
        await store.lease_revoke(424242)
    assert await snapshot(store) == before


async def test_a_put_without_lease_detaches_the_key_from_its_lease(store: Store) -> None:
    lease = await store.lease_grant(60)
    await store.put("/a", b"1", lease=lease)
    await store.put("/a", b"2")  # etcd: a put sets the lease, 0 included
    assert (await must_get(store, "/a")).lease == 0
    await store.lease_revoke(lease)
    assert (await must_get(store, "/a")).value == b"2"


# ---- lifecycle -------------------------------------------------------------------------------
async def test_a_closed_store_refuses_every_call(store: Store) -> None:
    lease = await store.lease_grant(60)
    await store.close()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("/a"),
        lambda: store.range("/"),
        lambda: store.put("/a", b"1"),
        lambda: store.delete("/a"),
        lambda: store.txn([], [Put("/a", b"1")]),
        lambda: store.revision(),
        lambda: store.compact(1),
        lambda: store.lease_grant(10),
        lambda: store.lease_keepalive(lease),
        lambda: store.lease_revoke(lease),
        lambda: anext(store.watch("/", 1)),
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            await call()
    await store.close()  # idempotent


async def test_calls_racing_close_fail_only_with_store_closed(store: Store) -> None:
    await store.put("/a", b"1")

    async def busy() -> None:
        while True:
            try:
                await store.get("/a")
                await store.put("/b", b"x")
            except StoreClosed:
                return
            await asyncio.sleep(0)

    workers = [asyncio.create_task(busy()) for _ in range(5)]
    await asyncio.sleep(0.05)
    await store.close()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*workers)  # any other exception fails the test
