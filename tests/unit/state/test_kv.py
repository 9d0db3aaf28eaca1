"""The KV store in the state cache: sorted listing, per-key / per-prefix indexes, and which
blocking queries a write wakes (only the key's own and its prefixes')."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from moorage.state import StateCache
from moorage.state.kv import KvState, decode_value, encode_value, kv_key
from moorage.store import Compare, Delete, KeyValue, Put, Store, WatchEvent
from moorage.store.sqlite import SqliteStore
from moorage.testing.memstore import MemoryStore


# ---- KvState alone: events in, answers out -------------------------------------------------
def put(state: KvState, key: str, revision: int, value: bytes = b"v", created: int = 0) -> None:
    kv = KeyValue(kv_key(key), encode_value(value), created or revision, revision, 1)
    state.apply(WatchEvent("put", kv))


def delete(state: KvState, key: str, revision: int) -> None:
    state.apply(WatchEvent("delete", KeyValue(kv_key(key), b"", 0, revision, 0)))


def test_value_header_round_trips_flags_and_raw_bytes() -> None:
    for value, flags in ((b"", 0), (b"\x00\xffbinary", 42), (b"x" * 1000, (1 << 64) - 1)):
        assert decode_value(encode_value(value, flags)) == (value, flags)


def test_listing_is_sorted_and_by_string_prefix() -> None:
    state = KvState()
    for revision, key in enumerate(["b/2", "a/b/c", "a/bc", "a/b/d", "a/", "c"], start=1):
        put(state, key, revision)
    assert state.keys_under("") == ["a/", "a/b/c", "a/b/d", "a/bc", "b/2", "c"]
    assert state.keys_under("a/b") == ["a/b/c", "a/b/d", "a/bc"]  # Consul: a string prefix
    assert state.keys_under("a/b/") == ["a/b/c", "a/b/d"]
    assert [e.key for e in state.entries_under("a/b/")] == ["a/b/c", "a/b/d"]
    assert state.keys("", "/") == ["a/", "b/", "c"]
    assert state.keys("a/", "/") == ["a/", "a/b/", "a/bc"]  # the folder key itself, then a level
    assert state.keys("a/b/", "/") == ["a/b/c", "a/b/d"]
    assert state.keys("zzz", "/") == []
    delete(state, "a/b/c", 7)
    assert state.keys_under("a/") == ["a/", "a/b/d", "a/bc"]


def test_indexes_follow_puts_and_deletes_of_their_key_or_prefix_only() -> None:
    state = KvState()
    put(state, "a/b/c", 3)
    put(state, "a/x", 5)
    put(state, "c/d", 6)
    assert state.key_index("a/b/c") == 3  # ModifyIndex
    assert state.key_index("never") == 0
    assert (state.prefix_index(""), state.prefix_index("a/"), state.prefix_index("a/b/")) == (
        6,
        5,
        3,
    )
    assert state.prefix_index("a/b") == 3  # not on a "/" boundary: computed from the keys
    assert state.prefix_index("zz/") == 0
    delete(state, "a/b/c", 9)  # a delete moves the index of the key and of every prefix of it
    assert state.key_index("a/b/c") == 9
    assert (state.prefix_index("a/"), state.prefix_index("a/b/"), state.prefix_index("a/b")) == (
        9,
        9,
        9,
    )
    assert state.prefix_index("c/") == 6  # untouched
    put(state, "a/b/c", 11)  # created again: its ModifyIndex, and the tombstone is gone
    assert state.key_index("a/b/c") == 11 and state.entries["a/b/c"].create_index == 11


def test_reaped_tombstones_and_relists_raise_a_floor_under_missing_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("moorage.state.kv.TOMBSTONES", 2)
    state = KvState()
    for revision, key in enumerate(["k1", "k2", "k3", "live"], start=1):
        put(state, key, revision)
    delete(state, "k1", 10)
    delete(state, "k2", 11)
    delete(state, "k3", 12)  # k1's tombstone is reaped: its delete is only known as "≤ 10"
    assert state.key_index("k1") == 10 and state.key_index("k3") == 12
    assert state.key_index("live") == 4  # a live key answers its ModifyIndex, never the floor
    assert state.prefix_index("k") == 12
    state.clear()
    state.relisted(20, first=False)  # after compaction: deletes in between are unknown
    assert state.key_index("k2") == 20 and state.prefix_index("q") == 20


async def later(change: Callable[[], None]) -> None:
    change()


async def wakes(waits: dict[str, Awaitable[int]], write: Awaitable[object]) -> set[str]:
    """Start the waits, run the write, return the names of the waits it woke."""
    tasks = {name: asyncio.ensure_future(wait) for name, wait in waits.items()}
    await asyncio.sleep(0.01)
    early = {name for name, task in tasks.items() if task.done()}
    assert not early, f"returned before the write: {early}"
    await write
    await asyncio.sleep(0.01)
    woken = {name for name, task in tasks.items() if task.done()}
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    return woken


async def test_a_change_wakes_only_its_key_and_its_prefixes() -> None:
    state = KvState()
    for revision, key in enumerate(["a/b", "a/c", "c/d", "a/bc"], start=1):
        put(state, key, revision)

    def waits() -> dict[str, Awaitable[int]]:
        return {
            "key a/b": state.wait_key("a/b", state.key_index("a/b"), 5),
            "key a/c": state.wait_key("a/c", state.key_index("a/c"), 5),
            "key a/bc": state.wait_key("a/bc", state.key_index("a/bc"), 5),
            "prefix ''": state.wait_prefix("", state.prefix_index(""), 5),
            "prefix a/": state.wait_prefix("a/", state.prefix_index("a/"), 5),
            "prefix a": state.wait_prefix("a", state.prefix_index("a"), 5),
            "prefix a/b": state.wait_prefix("a/b", state.prefix_index("a/b"), 5),
            "prefix a/bc": state.wait_prefix("a/bc", state.prefix_index("a/bc"), 5),
            "prefix c/": state.wait_prefix("c/", state.prefix_index("c/"), 5),
            "prefix b": state.wait_prefix("b", state.prefix_index("b"), 5),
        }

    woken = await wakes(waits(), later(lambda: put(state, "a/b", 10)))
    assert woken == {"key a/b", "prefix ''", "prefix a/", "prefix a", "prefix a/b"}
    woken = await wakes(waits(), later(lambda: delete(state, "c/d", 11)))
    assert woken == {"prefix ''", "prefix c/"}
    assert state.waiting() == 0  # woken, timed out or cancelled: no waiter is left behind


async def test_wait_returns_at_once_for_an_old_index_and_times_out_unchanged() -> None:
    state = KvState()
    put(state, "k", 5)
    assert await asyncio.wait_for(state.wait_key("k", 4, 5), 1) == 5
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await state.wait_key("k", 5, 0.1) == 5
    assert 0.09 <= loop.time() - began < 0.5
    assert state.waiting() == 0


async def test_a_key_never_seen_wakes_at_its_first_write_whatever_the_index() -> None:
    state = KvState()
    # A fresh store's first write may be revision 1, the index a missing key answers.
    woken = await wakes({"key": state.wait_key("new", 1, 5)}, later(lambda: put(state, "new", 1)))
    assert woken == {"key"}


# ---- through the cache, fed by a real store's watch ----------------------------------------
@pytest.fixture(params=["sqlite", "memory"])
async def cached(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, StateCache]]:
    store: Store = (
        await SqliteStore.open(":memory:") if request.param == "sqlite" else MemoryStore()
    )
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    try:
        yield store, cache
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()


async def commit(store: Store, cache: StateCache, *ops: Put | Delete) -> int:
    result = await store.txn([], list(ops))
    await cache.wait_revision(result.revision)
    return result.revision


async def test_cache_writes_wake_only_the_right_watchers(cached: tuple[Store, StateCache]) -> None:
    store, cache = cached
    kv = cache.kv
    await commit(store, cache, Put(kv_key("a/b"), encode_value(b"1")))
    await commit(store, cache, Put(kv_key("c/x"), encode_value(b"2")))
    waits: dict[str, Awaitable[int]] = {
        "c/": kv.wait_prefix("c/", kv.prefix_index("c/"), 5),
        "a/ recurse": kv.wait_prefix("a/", kv.prefix_index("a/"), 5),
        "a/b key": kv.wait_key("a/b", kv.key_index("a/b"), 5),
        "a/b recurse": kv.wait_prefix("a/b", kv.prefix_index("a/b"), 5),
        "root": kv.wait_prefix("", kv.prefix_index(""), 5),
        "a/c key": kv.wait_key("a/c", kv.key_index("a/c"), 5),
    }
    woken = await wakes(waits, commit(store, cache, Put(kv_key("a/b"), encode_value(b"3", 9))))
    assert woken == {"a/ recurse", "a/b key", "a/b recurse", "root"}  # never c/ nor a/c
    entry = kv.get("a/b")
    assert entry is not None
    assert (entry.value, entry.flags, entry.modify_index) == (b"3", 9, await store.revision())
    assert entry.consul()["Value"] == "Mw=="


async def test_cache_delete_under_a_prefix_moves_its_index(
    cached: tuple[Store, StateCache],
) -> None:
    store, cache = cached
    kv = cache.kv
    await commit(store, cache, *(Put(kv_key(f"p/{i}"), encode_value(b"x")) for i in range(3)))
    await commit(store, cache, Put(kv_key("q"), encode_value(b"x")))
    before = kv.prefix_index("p/")
    waiter = asyncio.ensure_future(kv.wait_prefix("p/", before, 5))
    revision = await commit(store, cache, Delete(kv_key("p/"), prefix=True))
    assert await asyncio.wait_for(waiter, 1) == revision > before
    assert kv.keys_under("p/") == [] and kv.keys_under("") == ["q"]
    assert kv.key_index("p/1") == revision  # what a GET of the deleted key answers


async def test_kv_writes_do_not_wake_the_control_loops(cached: tuple[Store, StateCache]) -> None:
    store, cache = cached
    seen = cache.index("*")
    waiter = asyncio.ensure_future(cache.wait("*", seen, 5))
    await commit(store, cache, Put(kv_key("k"), encode_value(b"v")))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # the reconciler waits on "*": KV is not its business
    waiter.cancel()


async def test_cas_create_only_and_relist_keep_kv(cached: tuple[Store, StateCache]) -> None:
    store, cache = cached
    key = kv_key("lock")
    first = await store.txn([Compare.absent(key)], [Put(key, encode_value(b"me"))])
    second = await store.txn([Compare.absent(key)], [Put(key, encode_value(b"you"))])
    assert first.succeeded and not second.succeeded
    await cache.wait_revision(first.revision)
    fresh = StateCache(store)  # a restarted server lists the store: the KV comes back whole
    runner = asyncio.create_task(fresh.run())
    await fresh.wait_synced()
    try:
        entry = fresh.kv.get("lock")
        assert entry is not None and entry.value == b"me"
        assert fresh.kv.prefix_index("") == first.revision
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
