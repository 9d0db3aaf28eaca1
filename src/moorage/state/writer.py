"""Every write to moorage state goes through here: compare-and-swap on the store revision.

Writers never trust the cache for the value they replace: a CAS loop reads the key from the
store, applies a pure function, and commits only if the key's mod_revision did not move. After
a commit the writer waits until the cache has applied it, so callers read their own writes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from moorage.model import Conflict, Event, Task
from moorage.store import Compare, Delete, Op, Put, Store

from . import kinds
from .cache import StateCache
from .kinds import StoredKind

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")

MAX_ATTEMPTS = 50


def _unobserved(seconds: float) -> None:
    pass


def new_event(
    type_: str,
    message: str,
    *,
    now: float,
    service: str | None = None,
    task: str | None = None,
    node: str | None = None,
) -> Put:
    """A Put op that records one cluster event (commit it in the same txn as its cause)."""
    event_id = f"{int(now * 1e9):020d}-{secrets.token_hex(3)}"
    event = Event(
        id=event_id, time=now, type=type_, message=message, service=service, task=task, node=node
    )
    return kinds.EVENT.put(event)


class StateWriter:
    def __init__(
        self, store: Store, cache: StateCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.observe_commit: Callable[[float], None] = _unobserved  # store txn seconds (/metrics)

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        """Run one CAS transaction; return its revision (cache caught up) or None if it lost."""
        started = time.perf_counter()
        result = await self.store.txn(compares, ops)
        self.observe_commit(time.perf_counter() - started)
        if not result.succeeded:
            return None
        await self.cache.wait_revision(result.revision)
        return result.revision

    async def update(
        self,
        kind: StoredKind[K, M],
        ident: K,
        change: Callable[[M | None], tuple[M | None, Sequence[Op]]],
    ) -> M | None:
        """CAS loop on one stored object: `change(current)` is a pure function returning (the
        new value, or None to delete it; extra ops such as events). Rules that decide how an
        object changes live in such functions, in `moorage.ops` and `moorage.model`."""
        key = kind.key(ident)
        for _ in range(MAX_ATTEMPTS):
            kv = await self.store.get(key)
            current = kind.decode(kv.value) if kv is not None else None
            new, extra = change(current)
            ops: list[Op] = [Put(key, kind.dump(new)) if new is not None else Delete(key)]
            ops.extend(extra)
            mod = kv.mod_revision if kv is not None else 0
            if await self.commit([Compare(key, "mod", "==", mod)], ops) is not None:
                return new
        raise Conflict(f"{key} is changing too fast; gave up after {MAX_ATTEMPTS} attempts")

    async def event(self, type_: str, message: str, **about: str | None) -> None:
        await self.commit([], [new_event(type_, message, now=self.clock(), **about)])

    async def set_task(self, task: Task, mod_revision: int, extra: Sequence[Op] = ()) -> bool:
        put = kinds.TASK.put(task)
        key = put.key
        ops: list[Op] = [put, *extra]
        return await self.commit([Compare(key, "mod", "==", mod_revision)], ops) is not None
