"""A server on etcd (`moorage server --store etcd://…`): the same cluster, its state in etcd,
surviving a SIGKILL of the server and of the etcd member."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moorage.store.etcd import EtcdStore
from moorage.testing.etcd import EtcdServer, etcd_supported

from .cluster import Cluster, wait_for

pytestmark = pytest.mark.integration

SPEC = f"""
service: web
count: 2
containers:
  - name: app
    command: ["{sys.executable}", "-m", "http.server", "${{PORT}}", "--bind", "127.0.0.1"]
    cpu: 50
    memory: 64
    ports: [{{name: http}}]
    health: {{http: /, port: http, interval: 1s}}
"""


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    why = etcd_supported()
    if why is not None:
        if os.environ.get("MOORAGE_REQUIRE_PEERS") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_PEERS=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why} (CI runs these)")
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


async def _keys(endpoint: str, prefix: str) -> list[str]:
    store = await EtcdStore.open([endpoint], namespace="/moorage-it")
    try:
        kvs, _ = await store.range(prefix)
        return [kv.key for kv in kvs]
    finally:
        await store.close()


def test_a_server_keeps_its_state_in_etcd(etcd: EtcdServer, tmp_path: Path) -> None:
    url = f"etcd://127.0.0.1:{etcd.client_port}/moorage-it"
    with Cluster(tmp_path / "cluster", agents=1, server_args=["--store", url]) as cluster:
        cluster.deploy(SPEC)
        before = {t["id"] for t in cluster.wait_running("web", 2, timeout=30)}
        keys = asyncio.run(_keys(etcd.endpoint, "/moorage/"))
        assert any(key.startswith("/moorage/tasks/web-") for key in keys)
        assert not (tmp_path / "cluster" / "server" / "state.db").exists()

        cluster.server.kill9()  # the server's memory is gone; etcd has the state
        cluster.server.start()
        wait_for(lambda: {t["id"] for t in cluster.running("web")} == before, 30)
        services = cluster.http.get("/v1/services").json()
        assert [(s["name"], s["revision"]) for s in services] == [("web", 1)]

        etcd.kill()  # the store itself dies and comes back: the server rides it out
        etcd.start()
        cluster.cli("scale", "web", "3")
        cluster.wait_running("web", 3, timeout=30)
