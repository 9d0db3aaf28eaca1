"""Volumes in the state: the cache holds them and their topics wake blocking queries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from moorage.model.volume import Volume, VolumeCreate, claim, new_volume
from moorage.state import StateCache, StateWriter, Topic, kinds
from moorage.store import Op
from moorage.testing.memstore import MemoryStore


@pytest.fixture
async def state() -> AsyncIterator[tuple[StateCache, StateWriter]]:
    store = MemoryStore()
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    try:
        yield cache, StateWriter(store, cache, clock=lambda: 100.0)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()


async def test_volumes_are_cached_and_bump_their_topics(
    state: tuple[StateCache, StateWriter],
) -> None:
    cache, writer = state
    assert kinds.kind_of(kinds.VOLUME.key("data")) is kinds.VOLUME
    created = new_volume(VolumeCreate(name="data", driver="shared"), now=100.0)

    def create(current: Volume | None) -> tuple[Volume, list[Op]]:
        assert current is None
        return created, []

    await writer.update(kinds.VOLUME, "data", create)
    assert cache.volumes["data"] == created
    first = cache.index(Topic.volume("data"))
    assert first == cache.index(Topic.VOLUMES) == cache.revision

    def grant(current: Volume | None) -> tuple[Volume, list[Op]]:
        assert current is not None
        return claim(current, "n1", "t1", now=100.0), []

    await writer.update(kinds.VOLUME, "data", grant)
    assert cache.volumes["data"].epoch == 1
    assert cache.index(Topic.volume("data")) > first
    assert cache.index(Topic.volume("other")) == 1  # another volume's watchers sleep on

    def delete(current: Volume | None) -> tuple[None, list[Op]]:
        return None, []

    await writer.update(kinds.VOLUME, "data", delete)
    assert "data" not in cache.volumes
