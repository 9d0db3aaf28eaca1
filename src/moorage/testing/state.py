"""State over the in-memory store, running, for hermetic tests of operations and loops.

async with memory_state() as world:          # MemoryStore + a running StateCache + writer
    await Services(world.cache, world.writer, world.clock, ...).deploy(...)
    world.clock.advance(30)                  # the clock the writer and operations read
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from moorage.state import StateCache, StateWriter

from .memstore import MemoryStore


class Clock:
    """A clock that moves only when told to (`advance`)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    store: MemoryStore
    cache: StateCache
    writer: StateWriter
    clock: Clock


@contextlib.asynccontextmanager
async def memory_state(clock: Clock | None = None) -> AsyncIterator[World]:
    """A MemoryStore with its cache following it; the cache has synced when this yields."""
    store = MemoryStore()
    cache = StateCache(store)
    follower = asyncio.create_task(cache.run(), name="state-cache")
    await cache.wait_synced()
    clock = clock or Clock()
    try:
        yield World(store, cache, StateWriter(store, cache, clock), clock)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await store.close()
