"""One `store` fixture, parametrized over the engines: the protocol suite runs unchanged on each.

An engine joins by adding one param (and one branch) to `store`. The suite is written so that
an etcd engine fits without touching the tests:

* revisions are always relative to `await store.revision()` at the start of a test (a fresh
  etcd is at revision 1, not 0, and a shared one is wherever the last test left it);
* lease time goes through the `clock` fixture: engines that accept a clock get it and time moves
  only when a test calls `await clock.advance(s)`; an engine that keeps its own time (etcd)
  calls `clock.real_time()` in its branch, and `advance` then really sleeps;
* an engine shared between tests must start each test empty (etcd: each test gets a fresh
  namespace, `/t-<uuid>`, on one etcd member started for the session).

etcd needs `/usr/bin/etcd` (Debian's etcd-server): without it its tests skip, loudly, unless
MOORAGE_REQUIRE_PEERS=1 (CI), where a missing etcd is an error.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from moorage.store import Store
from moorage.store.etcd import EtcdStore
from moorage.store.sqlite import SqliteStore
from moorage.testing.etcd import EtcdServer, etcd_supported
from moorage.testing.memstore import MemoryStore

ENGINES = ["memory", "sqlite-file", pytest.param("etcd", marks=pytest.mark.etcd)]


def require_etcd() -> None:
    """Skip loudly without etcd; with MOORAGE_REQUIRE_PEERS=1 (CI) fail instead."""
    why = etcd_supported()
    if why is not None:
        if os.environ.get("MOORAGE_REQUIRE_PEERS") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_PEERS=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why} (CI runs these with etcd)")


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd member for the session; tests keep apart by namespace (`etcd_namespace`)."""
    require_etcd()
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def etcd_namespace() -> str:
    return f"/t-{uuid.uuid4().hex}"


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
    elif request.param == "etcd":
        clock.real_time()  # etcd keeps its own lease time
        server: EtcdServer = request.getfixturevalue("etcd_server")
        namespace: str = request.getfixturevalue("etcd_namespace")
        opened = await EtcdStore.open([server.endpoint], namespace=namespace)
    else:  # pragma: no cover - a param without a branch
        raise AssertionError(f"unknown engine {request.param!r}")
    assert isinstance(opened, Store)
    try:
        yield opened
    finally:
        await opened.close()
