"""The SQLite engine's write path under KV load: group commit and watches served from memory.

Concurrent transactions are committed together (one fsync per batch) yet each keeps its own
revision and atomicity; a caught-up watcher gets the batch's events from memory, a lagging one
from the history table, and both see exactly the same events.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moorage.store import Compare, Delete, Put, StoreError, TxnResult, WatchEvent
from moorage.store.sqlite import SqliteStore


async def collect(store: SqliteStore, prefix: str, start: int, count: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async with asyncio.timeout(5):
        async for event in store.watch(prefix, start):
            out.append(event)
            if len(out) == count:
                break
    return out


def shape(events: list[WatchEvent]) -> list[tuple[str, str, bytes, int, int, int]]:
    return [
        (e.type, e.kv.key, e.kv.value, e.kv.mod_revision, e.kv.create_revision, e.kv.version)
        for e in events
    ]


async def test_concurrent_transactions_commit_in_batches_each_with_its_revision(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    batches: list[int] = []
    original = store._batch_sync

    def counted(batch: list[tuple[list[Compare], list[Put], list[Put]]]) -> object:
        batches.append(len(batch))
        return original(batch)  # type: ignore[arg-type]

    store._batch_sync = counted  # type: ignore[assignment,method-assign]
    try:
        results = await asyncio.gather(
            *(store.txn([], [Put(f"/k/{i % 10}", f"v{i}".encode())]) for i in range(200))
        )
        assert sorted(r.revision for r in results) == list(range(1, 201))
        assert len(batches) < 200 and sum(batches) == 200  # grouped, none lost
        kvs, revision = await store.range("/k/")
        assert revision == 200 and len(kvs) == 10
        assert all(kv.version == 20 for kv in kvs)  # every write of a key counted once
    finally:
        await store.close()


async def test_a_refused_transaction_leaves_its_batch_mates_alone(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        good = store.txn([], [Put("/a", b"1")])
        duplicate = store.txn([], [Put("/b", b"1"), Put("/b", b"2")])  # refused: same key twice
        cas_lost = store.txn([Compare("/a", "mod", "==", 99)], [Delete("/a")], [Put("/c", b"x")])
        also_good = store.txn([], [Put("/a", b"2"), Put("/d", b"1")])
        outcomes = await asyncio.gather(
            good, duplicate, cas_lost, also_good, return_exceptions=True
        )
        assert isinstance(outcomes[1], StoreError)
        first, lost, last = outcomes[0], outcomes[2], outcomes[3]
        assert isinstance(first, TxnResult) and isinstance(lost, TxnResult)
        assert isinstance(last, TxnResult)
        assert (first.revision, lost.succeeded, lost.revision, last.revision) == (1, False, 2, 3)
        kvs, _ = await store.range("/")
        assert {kv.key: (kv.value, kv.version) for kv in kvs} == {
            "/a": (b"2", 2),
            "/c": (b"x", 1),
            "/d": (b"1", 1),
        }
    finally:
        await store.close()


async def test_watchers_from_memory_and_from_history_see_the_same_events(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        live = asyncio.ensure_future(collect(store, "/k/", 0, 60))
        await asyncio.sleep(0.01)
        writes = [store.txn([], [Put(f"/k/{i % 3}", f"v{i}".encode())]) for i in range(50)]
        writes.append(store.txn([], [Delete("/k/", prefix=True)]))
        writes += [store.txn([], [Put(f"/k/{i}", b"again")]) for i in range(7)]
        await asyncio.gather(*writes)
        from_memory = await live
        from_disk = await collect(store, "/k/", 1, 60)
        assert shape(from_memory) == shape(from_disk)
        assert [e.kv.mod_revision for e in from_memory] == sorted(
            e.kv.mod_revision for e in from_memory
        )
        assert from_memory[0].kv.value == b"v0" and from_memory[2].kv.version == 1
    finally:
        await store.close()


async def test_a_watcher_that_lags_past_memory_reads_the_rest_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("moorage.store._recent.RECENT", 4)
    monkeypatch.setattr("moorage.store._recent.RECENT_BYTES", 64)
    monkeypatch.setattr("moorage.store.sqlite.RECENT_BYTES", 64)
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        await store.txn([], [Put("/k/first", b"0")])
        slow = store.watch("/k/", 1)
        assert (await anext(slow)).kv.key == "/k/first"
        for number in range(30):  # memory keeps the newest few: the slow watcher falls behind
            await store.txn([], [Put(f"/k/{number:02d}", b"x" * (number % 7) * 5)])
        assert len(store._recent._rows) <= 8
        rest = [await anext(slow) for _ in range(30)]
        assert [e.kv.key for e in rest] == [f"/k/{n:02d}" for n in range(30)]
        assert [e.kv.mod_revision for e in rest] == list(range(2, 32))
        await slow.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_bulk_batch_is_read_from_disk_and_the_next_small_one_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("moorage.store.sqlite.RECENT_BATCH", 10)
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        await store.txn([], [Put("/k/first", b"0")])
        watcher = store.watch("/k/", 1)
        assert (await anext(watcher)).kv.key == "/k/first"
        await store.txn([], [Put(f"/k/bulk-{i:02d}", b"b") for i in range(25)])
        assert store._recent._rows == []  # 25 events: not kept, the watcher goes to the disk
        await store.txn([], [Put("/k/small", b"s")])
        assert [row[2].kv.key for row in store._recent._rows] == ["/k/small"]
        seen = [await anext(watcher) for _ in range(26)]
        assert [e.kv.key for e in seen] == [f"/k/bulk-{i:02d}" for i in range(25)] + ["/k/small"]
        assert [e.kv.mod_revision for e in seen] == [2] * 25 + [3]
        await watcher.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_lease_expiry_between_batches_reaches_memory_watchers(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db", lease_check_interval=0.02)
    try:
        lease = await store.lease_grant(0.05)
        await store.txn([], [Put("/l/held", b"x", lease)])
        watcher = asyncio.ensure_future(collect(store, "/l/", 0, 2))
        await asyncio.sleep(0.2)  # the lease expires: a delete written outside any batch
        await store.txn([], [Put("/l/after", b"y")])
        events = await watcher
        assert [(e.type, e.kv.key) for e in events] == [("delete", "/l/held"), ("put", "/l/after")]
    finally:
        await store.close()


@pytest.mark.parametrize("count", [1, 3])
async def test_writes_are_durable_across_a_reopen(tmp_path: Path, count: int) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    await asyncio.gather(*(store.txn([], [Put(f"/d/{i}", b"v")]) for i in range(count)))
    await store.close()
    again = await SqliteStore.open(tmp_path / "s.db")
    try:
        kvs, revision = await again.range("/d/")
        assert (len(kvs), revision) == (count, count)
    finally:
        await again.close()
