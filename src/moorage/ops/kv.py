"""KV writes with Consul's semantics (docs/kv.md): one store transaction each.

    put(key, value, flags, cas)     cas None: always; 0: only if absent; N: only if the key's
                                    ModifyIndex is N
    delete(key, recurse, cas)       recurse: every key under the prefix; cas N: only if the
                                    key's ModifyIndex is N (a missing key answers True)

Each answers (done, revision) once the cache has applied the revision, so a client reads its
own writes, and a lost CAS is visible in the cache too when the answer comes. Reads answer
from the cache's `KvState` (server/kv.py).
"""

from __future__ import annotations

from moorage.state import StateCache, StateWriter
from moorage.state.kv import encode_value, kv_key
from moorage.store import Compare, Delete, Get, Op, Put


class Kv:
    def __init__(self, cache: StateCache, writer: StateWriter) -> None:
        self.cache = cache
        self.writer = writer

    async def put(self, key: str, value: bytes, flags: int, cas: int | None) -> tuple[bool, int]:
        stored = kv_key(key)
        compares: list[Compare] = []
        if cas is not None:
            compares.append(
                Compare.absent(stored) if cas == 0 else Compare(stored, "mod", "==", cas)
            )
        return await self._commit(compares, [Put(stored, encode_value(value, flags))])

    async def delete(self, key: str, recurse: bool, cas: int | None) -> tuple[bool, int]:
        stored = kv_key(key)
        if cas is None:
            return await self._commit([], [Delete(stored, prefix=recurse)])
        # As Consul: the key goes only if its ModifyIndex is `cas`; a missing key answers true.
        return await self._commit(
            [Compare(stored, "mod", "==", cas)], [Delete(stored)], [Get(stored)]
        )

    async def _commit(
        self, compares: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> tuple[bool, int]:
        result = await self.writer.store.txn(compares, success, failure or [])
        await self.cache.wait_revision(result.revision)
        done = result.succeeded or (failure is not None and not result.responses[0])
        return done, result.revision
