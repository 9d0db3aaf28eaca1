"""One `store` fixture per engine: the protocol suite runs unchanged against each.

An engine joins by adding a param here (etcd arrives as a second engine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.store import Store
from moorage.store.sqlite import SqliteStore
from moorage.testing.memstore import MemoryStore


class FakeClock:
    """Time that moves only when a test says so (lease expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "memory":
        opened = MemoryStore(clock=clock)
    else:
        opened = await SqliteStore.open(
            tmp_path / "state.db", history_limit=1_000, lease_check_interval=0.02, clock=clock
        )
    yield opened
    await opened.close()
