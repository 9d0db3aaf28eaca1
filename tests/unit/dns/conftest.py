"""The `world` fixture: a StateCache fed by a MemoryStore, empty until a test fills it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from moorage.state import StateCache
from moorage.testing.memstore import MemoryStore

from .world import World


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = MemoryStore()
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    try:
        yield World(store, cache)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()
