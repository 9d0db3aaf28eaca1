"""/metrics without a server process: the store's newest samples as gauges and counters, the
server's own histograms (the request middleware), DNS answers by type and rcode, watchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.message
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from moorage.dns import DnsConfig, DnsServer
from moorage.metrics.exposition import StoreCollector, label_name
from moorage.metrics.model import Query, Series
from moorage.server.exposition import Internals
from moorage.state import StateCache
from moorage.testing.memstore import MemoryStore

NOW = 1_700_000_000.0
Latest = list[tuple[str, dict[str, str], float, float]]


class FakeStore:
    def __init__(self, latest: Latest) -> None:
        self.rows = latest

    def ingest(self, points: object) -> int:
        return 0

    def query(self, query: Query) -> list[Series]:
        return []

    def latest(self, metric: str | None = None) -> Latest:
        return self.rows


def exposition(rows: Latest | None) -> str:
    registry = CollectorRegistry()
    store = FakeStore(rows) if rows is not None else None
    registry.register(StoreCollector(lambda: store, lambda: NOW, stale_after=60))
    return generate_latest(registry).decode()


def test_series_become_gauges_and_totals_counters_with_their_labels() -> None:
    task = {"node": "n1", "service": "web", "task": "web-1", "container": "app"}
    text = exposition(
        [
            ("task_cpu_percent", task, NOW - 5, 12.5),
            ("task_restarts_total", task, NOW - 5, 2),
            ("node_disk_free_bytes", {"node": "n1", "path": "/data"}, NOW - 1, 1e9),
            ("node_disk_free_bytes", {"node": "n1", "path": "/var"}, NOW - 1, 2e9),
        ]
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["task_cpu_percent"].type == "gauge"
    assert families["task_restarts"].type == "counter"  # the parser strips `_total`
    assert "# TYPE task_restarts_total counter" in text
    assert "# HELP task_cpu_percent CPU used by a task's container" in text
    sample = families["task_cpu_percent"].samples[0]
    assert sample.labels == task and sample.value == 12.5 and sample.timestamp is None
    disks = {s.labels["path"]: s.value for s in families["node_disk_free_bytes"].samples}
    assert disks == {"/data": 1e9, "/var": 2e9}
    assert "_created" not in text


def test_stale_series_and_reserved_names_are_left_out() -> None:
    text = exposition(
        [
            ("task_cpu_percent", {"task": "gone"}, NOW - 61, 1),
            ("task_cpu_percent", {"task": "live"}, NOW - 59, 2),
            ("moorage_http_request_duration_seconds", {}, NOW, 1),
        ]
    )
    assert 'task="live"' in text and 'task="gone"' not in text
    assert "moorage_" not in text


def test_odd_label_names_are_cleaned_so_the_scrape_still_parses() -> None:
    assert label_name("k8s.io/app") == "k8s_io_app"
    assert label_name("1st") == "_1st"
    assert label_name("__name__") == "_name__"
    text = exposition([("custom_metric", {"a-b": 'x"y\nz'}, NOW, 1)])
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"a_b": 'x"y\nz'}
    assert "moorage series custom_metric" in text


def test_no_store_yet_means_no_store_series() -> None:
    assert exposition(None) == ""


# ---- the server's own ----------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Internals]]:
    internals = Internals()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=[internals.middleware])
    app.router.add_get("/v1/services/{name}", ok)
    app.router.add_get("/v1/boom", boom)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, internals


async def test_requests_are_timed_by_route_pattern_method_and_status(
    client: tuple[TestClient[web.Request, web.Application], Internals],
) -> None:
    http, internals = client
    for name in ("a", "b", "c"):
        assert (await http.get(f"/v1/services/{name}")).status == 200
    assert (await http.get("/nowhere")).status == 404
    assert (await http.get("/v1/boom")).status == 500
    text = generate_latest(internals.registry).decode()
    count = "moorage_http_request_duration_seconds_count"
    assert f'{count}{{method="GET",route="/v1/services/{{name}}",status="200"}} 3.0' in text
    assert f'{count}{{method="GET",route="unmatched",status="404"}} 1.0' in text
    assert f'{count}{{method="GET",route="/v1/boom",status="500"}} 1.0' in text


def test_reconcile_rounds_and_commits_are_histograms() -> None:
    internals = Internals()
    internals.observe_round(0.001, 0.004)
    internals.commit.observe(0.002)
    text = generate_latest(internals.registry).decode()
    assert "moorage_reconcile_decision_duration_seconds_count 1.0" in text
    assert "moorage_reconcile_round_duration_seconds_sum 0.004" in text
    assert "moorage_store_commit_duration_seconds_count 1.0" in text
    assert "_created" not in text


async def test_dns_answers_are_counted_by_type_and_rcode_on_every_path() -> None:
    store = MemoryStore()
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    server = DnsServer(cache, DnsConfig(addr=("127.0.0.1", 0)))
    await server.start()
    internals = Internals()
    internals.watch(cache, lambda: server, None)
    try:
        query = dns.message.make_query("nope.service.moorage", "SRV")
        for _ in range(3):  # the first renders the answer, the next ones take the inlined path
            await dns.asyncquery.udp(query, "127.0.0.1", 2, server.port)
        await dns.asyncquery.tcp(query, "127.0.0.1", 2, server.port)
        other = dns.message.make_query("example.org", "A")
        await dns.asyncquery.udp(other, "127.0.0.1", 2, server.port)  # no recursor: REFUSED
        assert server.query_counts() == {("SRV", "NXDOMAIN"): 4, ("A", "REFUSED"): 1}
        text = generate_latest(internals.registry).decode()
        assert 'moorage_dns_queries_total{rcode="NXDOMAIN",type="SRV"} 4.0' in text
        assert 'moorage_watchers{kind="state"} 0.0' in text
    finally:
        await server.close()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()


async def test_watchers_count_parked_blocking_queries() -> None:
    store = MemoryStore()
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    try:
        waits = [asyncio.create_task(cache.wait("topic", 10**9, 5)) for _ in range(3)]
        waits.append(asyncio.create_task(cache.wait_any(["a", "b"], 10**9, 5)))
        await asyncio.sleep(0.01)
        assert cache.watchers == 4
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        assert cache.watchers == 0
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()
