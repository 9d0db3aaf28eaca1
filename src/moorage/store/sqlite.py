"""The embedded engine of the Store protocol: SQLite in WAL mode, durable on commit.

    kv        (key) → value, create_rev, mod_rev, version, lease       the current state
    history   (rev, idx) → key, type, value, create_rev, version, lease   what watches replay
    meta      revision, compact                                       counters
    leases    id → ttl, expires (wall clock, so leases survive a restart)

Every SQLite call runs on one dedicated thread that owns the connection, so the event loop
never waits on the disk. Writes are group-committed: transactions that arrive while a batch is
being written queue, then commit together in one `BEGIN IMMEDIATE … COMMIT` with
`synchronous=FULL` (one fsync for the batch), each atomic with its own revision (a refused one
writes nothing; an engine error rolls the whole batch back); none is acknowledged before its
batch is on disk, so an acknowledged write survives a crash. Watchers are woken in-process
after each commit; one that is caught up reads the batch's events from memory (the newest
RECENT are kept, from batches of at most RECENT_BATCH events), one that lags (or follows a
bulk batch) reads history rows in batches: a slow watcher never blocks writers, and one that
falls below the compaction point gets `Compacted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ._recent import RECENT_BYTES, RecentEvents, Row
from .base import (
    Compacted,
    Compare,
    Delete,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    StoreClosed,
    StoreError,
    TxnResult,
    WatchEvent,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS history (
    rev INTEGER NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL,
    value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER NOT NULL, PRIMARY KEY (rev, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compact', 0), ('lease_seq', 0);
"""

_PUT = 0
_DELETE = 1
WATCH_BATCH = 1000
# A batch's events are read back and kept in memory only up to this many: that saves the many
# small commits of a busy API a trip to the SQLite thread each, while a bulk write (thousands
# of tasks placed at once) is read from history once, by the watchers, instead of twice.
RECENT_BATCH = 1_000

Written = tuple[int, int, list[Row] | None]  # a batch's first and last revision, its events
Pending = tuple[list[Compare], list[Op], list[Op], "asyncio.Future[TxnResult]"]


def _prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with prefix (etcd's range_end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


class SqliteStore:
    """`Store` over one SQLite file. Open with `await SqliteStore.open(path)`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        history_limit: int,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._history_limit = history_limit
        self._clock = clock
        self._closed = False
        self._changed = asyncio.Event()
        self._expiry: asyncio.Task[None] | None = None
        # Group commit: transactions queue here while a batch commits, then commit together.
        # Shared with the SQLite thread, under _lock: the queue, and whether the thread drains it.
        self._lock = threading.Lock()
        self._queue: list[Pending] = []
        self._committing = False
        self._recent = RecentEvents()  # caught-up watchers read these, not the disk

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        history_limit: int = 200_000,
        lease_check_interval: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> SqliteStore:
        """Open (creating if needed) the store at path; `":memory:"` for a throwaway one."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moorage-sqlite")
        conn = await asyncio.get_running_loop().run_in_executor(executor, _connect, str(path))
        store = cls(conn, executor, history_limit, clock)
        store._recent.start(await store._run(store._meta, "revision"))
        store._expiry = asyncio.create_task(
            store._expire_loop(lease_check_interval), name="sqlite-lease-expiry"
        )
        return store

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreClosed("store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- reads ---------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        return await self._run(self._get_sync, key)

    def _get_sync(self, key: str) -> KeyValue | None:
        row = self._conn.execute(
            "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?", (key,)
        ).fetchone()
        return KeyValue(*row) if row else None

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self._run(self._range_sync, prefix)

    def _range_sync(self, prefix: str) -> tuple[list[KeyValue], int]:
        self._conn.execute("BEGIN")  # one read transaction: the rows and the revision agree
        try:
            return self._rows(prefix), self._meta("revision")
        finally:
            self._conn.execute("COMMIT")

    def _rows(self, prefix: str) -> list[KeyValue]:
        rows = self._conn.execute(
            "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, _prefix_end(prefix)),
        ).fetchall()
        return [KeyValue(*r) for r in rows]

    def _meta(self, name: str) -> int:
        return int(
            self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]
        )

    async def revision(self) -> int:
        return await self._run(self._meta, "revision")

    # ---- writes --------------------------------------------------------------------------
    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return (await self.txn([], [Put(key, value, lease)])).revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        return (await self.txn([], [Delete(key, prefix)])).revision

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Group commit: while one batch of transactions is being written, the next ones queue;
        then they commit together as one SQLite transaction (one fsync). Each keeps its own
        revision and stays atomic (one refused writes nothing; an engine error fails the batch),
        and none is acknowledged before the batch is durable."""
        if self._closed:
            raise StoreClosed("store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TxnResult] = loop.create_future()
        item = (list(compares), list(success), list(failure), future)
        with self._lock:
            self._queue.append(item)
            start, self._committing = not self._committing, True
        if start:
            self._executor.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """SQLite thread: commit what is queued as one batch, hand the outcomes to the loop.
        More queued meanwhile: the next batch goes behind the reads already waiting for the
        thread (they are not starved), but without a trip through the event loop."""
        with self._lock:
            batch, self._queue = self._queue, []
            if not batch:
                self._committing = False
                return
        done: tuple[list[TxnResult | Exception], Written | None] | BaseException
        try:
            if self._closed:
                raise StoreClosed("store is closed")
            done = self._batch_sync([item[:3] for item in batch])
        except BaseException as exc:  # the batch as a whole failed (COMMIT, disk, closed)
            done = exc
        loop.call_soon_threadsafe(self._committed, batch, done)
        with self._lock:
            if not self._queue:
                self._committing = False
                return
        self._executor.submit(self._drain, loop)

    def _committed(
        self,
        batch: list[Pending],
        done: tuple[list[TxnResult | Exception], Written | None] | BaseException,
    ) -> None:
        if isinstance(done, BaseException):
            for *_, future in batch:
                if not future.done():
                    future.set_exception(done)
        else:
            outcomes, written = done
            wrote = False
            for (_, success, failure, _), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, TxnResult) and outcome.revision:
                    ops = success if outcome.succeeded else failure
                    wrote |= any(not isinstance(op, Get) for op in ops)
            if written is not None:
                self._recent.remember(*written)
            if wrote:  # first: the cache's watcher runs before the writers resume
                self._notify()
            for (*_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, TxnResult):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)

    def _batch_sync(
        self, batch: list[tuple[list[Compare], list[Op], list[Op]]]
    ) -> tuple[list[TxnResult | Exception], Written | None]:
        """Commit a batch; each transaction's outcome, and the events it wrote (first and last
        revision, the rows; None for the rows when there are too many to keep in memory)."""
        conn = self._conn
        outcomes: list[TxnResult | Exception] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = after = self._meta("revision")
            # Consecutive blind writes (puts of distinct keys, no compare, no lease) are written
            # with one statement for all of them: they read nothing another could have changed.
            blind: list[tuple[Put, int, int]] = []  # (put, its revision, its index)
            blind_keys: set[str] = set()
            for compares, success, failure in batch:
                puts = [op for op in success if isinstance(op, Put) and not op.lease]
                keys = {op.key for op in puts}
                if not compares and success and len(puts) == len(keys) == len(success):
                    if blind_keys & keys:
                        self._flush_blind(blind)
                        blind, blind_keys = [], set()
                    after += 1
                    blind.extend((op, after, i) for i, op in enumerate(puts))
                    blind_keys |= keys
                    outcomes.append(TxnResult(True, after, [[] for _ in success]))
                    continue
                self._flush_blind(blind)
                blind, blind_keys = [], set()
                try:
                    result = self._txn_body(compares, success, failure, after)
                except StoreError as exc:  # raised before that transaction wrote anything
                    outcomes.append(exc)
                    continue
                outcomes.append(result)
                after = result.revision
            self._flush_blind(blind)
            written: Written | None = None
            if after > before:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (after,))
                self._maybe_compact(after)
                rows = conn.execute(
                    "SELECT rev, idx, key, type, value, create_rev, version, lease FROM history "
                    "WHERE rev > ? AND rev <= ? ORDER BY rev, idx LIMIT ?",
                    (before, after, RECENT_BATCH + 1),
                ).fetchall()
                keep = len(rows) <= RECENT_BATCH and sum(len(r[4]) for r in rows) <= RECENT_BYTES
                written = (before + 1, after, _events(rows) if keep else None)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return outcomes, written

    def _flush_blind(self, puts: list[tuple[Put, int, int]]) -> None:
        if not puts:
            return
        self._conn.executemany(
            "INSERT INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES (?, ?, ?, ?, 1, 0) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev, "
            "version = kv.version + 1, lease = 0",
            [(p.key, p.value, rev, rev) for p, rev, _ in puts],
        )
        self._conn.executemany(
            "INSERT INTO history (rev, idx, key, type, value, create_rev, version, lease) "
            "SELECT ?, ?, key, 0, value, create_rev, version, lease FROM kv WHERE key = ?",
            [(rev, idx, p.key) for p, rev, idx in puts],
        )

    def _txn_body(
        self, compares: list[Compare], success: list[Op], failure: list[Op], revision: int
    ) -> TxnResult:
        """One transaction of a batch, on top of `revision`. Everything that can refuse it
        (a compare of mismatched types, a duplicate key, a missing lease) raises StoreError
        before its first write; any other error fails the whole batch (rolled back)."""
        ok = all(self._holds(c) for c in compares)
        ops = success if ok else failure
        responses, wrote = self._apply(ops, revision + 1)
        return TxnResult(ok, revision + 1 if wrote else revision, responses)

    def _holds(self, c: Compare) -> bool:
        kv = self._get_sync(c.key)
        actual: int | bytes
        if c.target == "value":
            actual = kv.value if kv else b""
        else:
            actual = (
                {"mod": kv.mod_revision, "create": kv.create_revision, "version": kv.version}[
                    c.target
                ]
                if kv
                else 0
            )
        if c.op == "==":
            return actual == c.value
        if c.op == "!=":
            return actual != c.value
        if type(actual) is not type(c.value):
            raise StoreError(f"cannot compare {c.target} of {c.key!r} with {c.value!r}")
        return actual < c.value if c.op == "<" else actual > c.value  # type: ignore[operator]

    def _apply(self, ops: list[Op], revision: int) -> tuple[list[list[KeyValue]], bool]:
        puts = [op for op in ops if isinstance(op, Put)]
        if len({p.key for p in puts}) != len(puts):
            raise StoreError("duplicate key given in a transaction")
        leases = {p.lease for p in puts if p.lease}
        for lease in leases:
            if not self._conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone():
                raise LeaseNotFound(lease)
        responses: list[list[KeyValue]] = []
        counter = [0]
        wrote = False
        pending: list[Put] = []
        for op in ops:
            if isinstance(op, Put):
                pending.append(op)
                responses.append([])
                continue
            wrote |= self._flush_puts(pending, revision, counter)
            pending = []
            if isinstance(op, Get):
                responses.append(self._read(op))
            else:
                removed = self._delete_sync(op, revision, counter)
                wrote |= bool(removed)
                responses.append(removed)
        wrote |= self._flush_puts(pending, revision, counter)
        return responses, wrote

    def _read(self, op: Get) -> list[KeyValue]:
        if op.prefix:
            return self._rows(op.key)
        kv = self._get_sync(op.key)
        return [kv] if kv else []

    def _flush_puts(self, puts: list[Put], revision: int, counter: list[int]) -> bool:
        if not puts:
            return False
        conn = self._conn
        conn.executemany(
            "INSERT INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES (?, ?, ?, ?, 1, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev, "
            "version = kv.version + 1, lease = excluded.lease",
            [(p.key, p.value, revision, revision, p.lease) for p in puts],
        )
        start = counter[0]
        counter[0] += len(puts)
        conn.executemany(
            "INSERT INTO history (rev, idx, key, type, value, create_rev, version, lease) "
            "SELECT ?, ?, key, 0, value, create_rev, version, lease FROM kv WHERE key = ?",
            [(revision, start + i, p.key) for i, p in enumerate(puts)],
        )
        return True

    def _delete_sync(self, op: Delete, revision: int, counter: list[int]) -> list[KeyValue]:
        victims = self._rows(op.key) if op.prefix else [kv for kv in [self._get_sync(op.key)] if kv]
        if not victims:
            return []
        self._conn.executemany("DELETE FROM kv WHERE key = ?", [(kv.key,) for kv in victims])
        start = counter[0]
        counter[0] += len(victims)
        self._conn.executemany(
            "INSERT INTO history (rev, idx, key, type, value, create_rev, version, lease) VALUES (?, ?, ?, 1, x'', 0, 0, 0)",
            [(revision, start + i, kv.key) for i, kv in enumerate(victims)],
        )
        return victims

    # ---- compaction ----------------------------------------------------------------------
    def _maybe_compact(self, revision: int) -> None:
        compact = self._meta("compact")
        if revision - compact > self._history_limit + self._history_limit // 10:
            self._compact_sync(revision - self._history_limit, in_txn=True)

    def _compact_sync(self, revision: int, in_txn: bool = False) -> None:
        if revision <= self._meta("compact"):
            return
        if not in_txn:
            self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute("DELETE FROM history WHERE rev <= ?", (revision,))
        self._conn.execute("UPDATE meta SET value = ? WHERE name = 'compact'", (revision,))
        if not in_txn:
            self._conn.execute("COMMIT")

    async def compact(self, revision: int) -> None:
        await self._run(self._compact_sync, revision)

    # ---- watches -------------------------------------------------------------------------
    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        first = start_revision if start_revision > 0 else await self.revision() + 1
        cursor = (first - 1, 1 << 62)  # everything at or before this (rev, idx) was yielded
        end = _prefix_end(prefix)
        fresh = True  # the first read always asks the disk (the start may be compacted)
        while True:
            changed = self._changed
            if self._closed:
                raise StoreClosed("store is closed")
            recent = None if fresh else self._recent.after(prefix, end, cursor, WATCH_BATCH)
            fresh = False
            if recent is not None:
                rows, head = recent
            else:
                rows, compact, head = await self._run(self._history_sync, prefix, end, cursor)
                if cursor[0] < compact:  # the next revision this watcher needs is gone
                    raise Compacted(cursor[0] + 1, compact)
            for rev, idx, event in rows:
                cursor = (rev, idx)
                yield event
            if len(rows) < WATCH_BATCH:
                # Caught up: nothing under prefix is left up to head, so compacting below it
                # later must not cancel this watcher (etcd only cancels watchers that lag).
                cursor = max(cursor, (head, 1 << 62))
                await changed.wait()

    def _history_sync(
        self, prefix: str, end: str, cursor: tuple[int, int]
    ) -> tuple[list[Row], int, int]:
        self._conn.execute("BEGIN")
        try:
            compact = self._meta("compact")
            head = self._meta("revision")
            rows = self._conn.execute(
                "SELECT rev, idx, key, type, value, create_rev, version, lease FROM history "
                "WHERE (rev, idx) > (?, ?) AND key >= ? AND key < ? ORDER BY rev, idx LIMIT ?",
                (*cursor, prefix, end, WATCH_BATCH),
            ).fetchall()
        finally:
            self._conn.execute("COMMIT")
        return _events(rows), compact, head

    # ---- leases --------------------------------------------------------------------------
    async def lease_grant(self, ttl: float) -> int:
        return await self._run(self._grant_sync, ttl)

    def _grant_sync(self, ttl: float) -> int:
        with self._conn:
            lease = self._meta("lease_seq") + 1
            self._conn.execute("UPDATE meta SET value = ? WHERE name = 'lease_seq'", (lease,))
            self._conn.execute(
                "INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, self._clock() + ttl)
            )
        return lease

    async def lease_keepalive(self, lease: int) -> float:
        return await self._run(self._keepalive_sync, lease)

    def _keepalive_sync(self, lease: int) -> float:
        with self._conn:
            row = self._conn.execute(
                "SELECT ttl, expires FROM leases WHERE id = ?", (lease,)
            ).fetchone()
            if row is None or row[1] <= self._clock():
                raise LeaseNotFound(lease)
            self._conn.execute(
                "UPDATE leases SET expires = ? WHERE id = ?", (self._clock() + row[0], lease)
            )
            return float(row[0])

    async def lease_revoke(self, lease: int) -> None:
        revision = await self._run(self._revoke_sync, [lease], True)
        if revision:
            self._recent.forget(revision)
        self._notify()

    def _revoke_sync(self, leases: list[int], must_exist: bool) -> int:
        """Revoke leases and delete their keys; the revision of the deletes (0: none)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if (
                must_exist
                and not conn.execute("SELECT 1 FROM leases WHERE id = ?", (leases[0],)).fetchone()
            ):
                raise LeaseNotFound(leases[0])
            marks = ",".join("?" * len(leases))
            keys = [
                r[0]
                for r in conn.execute(
                    f"SELECT key FROM kv WHERE lease IN ({marks}) ORDER BY key", leases
                )
            ]
            conn.execute(f"DELETE FROM leases WHERE id IN ({marks})", leases)
            revision = 0
            if keys:
                revision = self._meta("revision") + 1
                counter = [0]
                for key in keys:
                    self._delete_sync(Delete(key), revision, counter)
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            conn.execute("COMMIT")
            return revision
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _expired_sync(self) -> list[int]:
        return [
            r[0]
            for r in self._conn.execute(
                "SELECT id FROM leases WHERE expires <= ?", (self._clock(),)
            )
        ]

    async def _expire_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(StoreClosed):
                expired: list[int] = await self._run(self._expired_sync)
                if expired and await self._revoke(expired):
                    self._notify()

    async def _revoke(self, leases: list[int]) -> bool:
        revision = await self._run(self._revoke_sync, leases, False)
        if revision:
            self._recent.forget(revision)
        return bool(revision)

    # ---- lifecycle -----------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # first: calls arriving while the connection closes get StoreClosed
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._notify()
        self._executor.shutdown(wait=True)


def _events(rows: list[tuple[Any, ...]]) -> list[Row]:
    """History rows (rev, idx, key, type, value, create_rev, version, lease) as watch events."""
    events = []
    for rev, idx, key, kind, value, create_rev, version, lease in rows:
        kv = KeyValue(key, value, create_rev, rev, version, lease)
        events.append((rev, idx, WatchEvent("put" if kind == _PUT else "delete", kv)))
    return events


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    return conn
