"""One `store` fixture, parametrized over the engines: the protocol suite runs unchanged on each.

An engine joins by adding one param (and one branch) to `store`. The suite is written so that
an etcd engine fits without touching the tests:

* revisions are always relative to `await store.revision()` at the start of a test (a fresh
  etcd is at revision 1, not 0, and a shared one is wherever the last test left it);
* lease time goes through the `clock` fixture: engines that accept a clock get it and time moves
  only when a test calls `await clock.advance(s)`; an engine that keeps its own time (etcd)
  calls `clock.real_time()` in its branch, and `advance` then really sleeps;
* an engine shared between tests must start each test empty (etcd: delete the "" prefix).

etcd would arrive as `pytest.param("etcd", marks=pytest.mark.etcd)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.store import Store
from moorage.store.sqlite import SqliteStore
from moorage.testing.memstore import MemoryStore

ENGINES = ["memory", "sqlite-file"]


class LeaseClock:
    """Lease time as the store sees it: a fake clock unless the engine keeps real time."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.real = False

    def __call__(self) -> float:
        return self.now

    def real_time(self) -> None:
        self.real = True

    async def advance(self, seconds: float) -> None:
        if self.real:
            await asyncio.sleep(seconds)
        else:
            self.now += seconds


@pytest.fixture
def clock() -> LeaseClock:
    return LeaseClock()


@pytest.fixture(params=ENGINES)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: LeaseClock
) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "memory":
        opened = MemoryStore(clock=clock)
    elif request.param == "sqlite-file":
        opened = await SqliteStore.open(
            tmp_path / "store.db", history_limit=10_000, lease_check_interval=0.01, clock=clock
        )
    else:  # pragma: no cover - a param without a branch
        raise AssertionError(f"unknown engine {request.param!r}")
    assert isinstance(opened, Store)
    try:
        yield opened
    finally:
        await opened.close()
