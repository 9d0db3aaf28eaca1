"""An in-memory Store with the protocol's full semantics, for hermetic tests.

Same contract as the SQLite engine (the protocol suite runs against both); nothing is durable.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence

from moorage.store.base import (
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


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._kv: dict[str, KeyValue] = {}
        self._keys: list[str] = []
        self._history: list[WatchEvent] = []
        self._revision = 0
        self._compacted = 0
        self._leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expires_at)
        self._lease_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._closed = False
        self._clock = clock

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")
        self._expire()

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return self._kv.get(key)

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        self._check()
        return self._range(prefix), self._revision

    def _range(self, prefix: str) -> list[KeyValue]:
        start = bisect.bisect_left(self._keys, prefix)
        out = []
        for key in self._keys[start:]:
            if not key.startswith(prefix):
                break
            out.append(self._kv[key])
        return out

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return (await self.txn([], [Put(key, value, lease)])).revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        return (await self.txn([], [Delete(key, prefix)])).revision

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._check()
        ok = all(self._holds(c) for c in compares)
        ops = success if ok else failure
        put_keys = [op.key for op in ops if isinstance(op, Put)]
        if len(set(put_keys)) != len(put_keys):  # as etcd and the SQLite engine
            raise StoreError("duplicate key given in a transaction")
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise LeaseNotFound(op.lease)
        revision = self._revision + 1
        wrote = False
        responses: list[list[KeyValue]] = []
        for op in ops:
            if isinstance(op, Get):
                responses.append(
                    self._range(op.key)
                    if op.prefix
                    else [kv for kv in [self._kv.get(op.key)] if kv]
                )
            elif isinstance(op, Put):
                self._put(op, revision)
                wrote = True
                responses.append([])
            else:
                removed = self._delete(op, revision)
                wrote = wrote or bool(removed)
                responses.append(removed)
        if wrote:
            self._revision = revision
            self._notify()
        return TxnResult(ok, self._revision, responses)

    def _holds(self, c: Compare) -> bool:
        kv = self._kv.get(c.key)
        actual: int | bytes
        if c.target == "value":
            actual = kv.value if kv else b""
        else:
            attr = {"mod": "mod_revision", "create": "create_revision", "version": "version"}[
                c.target
            ]
            actual = getattr(kv, attr) if kv else 0
        if c.op == "==":
            return actual == c.value
        if c.op == "!=":
            return actual != c.value
        if c.op == "<":
            return actual < c.value  # type: ignore[operator]
        return actual > c.value  # type: ignore[operator]

    def _put(self, op: Put, revision: int) -> None:
        prev = self._kv.get(op.key)
        kv = KeyValue(
            op.key,
            op.value,
            prev.create_revision if prev else revision,
            revision,
            prev.version + 1 if prev else 1,
            op.lease,
        )
        if prev is None:
            bisect.insort(self._keys, op.key)
        self._kv[op.key] = kv
        self._history.append(WatchEvent("put", kv, prev))

    def _delete(self, op: Delete, revision: int) -> list[KeyValue]:
        victims = self._range(op.key) if op.prefix else [kv for kv in [self._kv.get(op.key)] if kv]
        for kv in victims:
            del self._kv[kv.key]
            self._keys.remove(kv.key)
            self._history.append(WatchEvent("delete", KeyValue(kv.key, b"", 0, revision, 0), kv))
        return victims

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        self._check()
        if 0 < start_revision <= self._compacted:
            raise Compacted(start_revision, self._compacted)
        next_rev = start_revision if start_revision > 0 else self._revision + 1
        while True:
            changed = self._changed
            if self._closed:
                raise StoreClosed("store is closed")
            if next_rev <= self._compacted:  # events this watcher has not seen yet are gone
                raise Compacted(next_rev, self._compacted)
            # A snapshot: history may be appended to or compacted while the consumer holds us.
            batch = [
                e
                for e in self._history
                if e.kv.mod_revision >= next_rev and e.kv.key.startswith(prefix)
            ]
            next_rev = self._revision + 1
            for event in batch:
                yield event
            await changed.wait()

    async def revision(self) -> int:
        self._check()
        return self._revision

    async def compact(self, revision: int) -> None:
        self._check()
        self._compacted = max(self._compacted, revision)
        self._history = [e for e in self._history if e.kv.mod_revision > revision]

    async def lease_grant(self, ttl: float) -> int:
        self._check()
        lease = next(self._lease_ids)
        self._leases[lease] = (ttl, self._clock() + ttl)
        return lease

    async def lease_keepalive(self, lease: int) -> float:
        self._check()
        if lease not in self._leases:
            raise LeaseNotFound(lease)
        ttl = self._leases[lease][0]
        self._leases[lease] = (ttl, self._clock() + ttl)
        return ttl

    async def lease_revoke(self, lease: int) -> None:
        self._check()
        if self._leases.pop(lease, None) is None:
            raise LeaseNotFound(lease)
        self._drop_lease_keys({lease})

    def _expire(self) -> None:
        now = self._clock()
        expired = {lease for lease, (_, at) in self._leases.items() if at <= now}
        for lease in expired:
            del self._leases[lease]
        if expired:
            self._drop_lease_keys(expired)

    def _drop_lease_keys(self, leases: set[int]) -> None:
        doomed = [Delete(key) for key in self._keys if self._kv[key].lease in leases]  # key order
        if doomed:
            revision = self._revision + 1
            for op in doomed:
                self._delete(op, revision)
            self._revision = revision
            self._notify()

    async def close(self) -> None:
        self._closed = True
        self._notify()
