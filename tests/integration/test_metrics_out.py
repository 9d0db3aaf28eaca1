"""Metrics out, against the real tools: `promtool check metrics` on a running cluster's /metrics,
a real Prometheus scraping it (also through ACLs, with a token in its scrape config), and a
real InfluxDB 1.x receiving every ingested point — also across 30 s of InfluxDB being down.

The binaries come from Debian (`prometheus`, which ships `promtool`, and `influxdb`); .ci/run
installs them and sets MOORAGE_REQUIRE_PEERS=1, which turns a missing one into a failure."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage.metrics.model import Point

from .cluster import Cluster, free_port, http_spec, wait_for

pytestmark = pytest.mark.integration

OUTAGE = 30.0  # seconds InfluxDB stays down while points keep coming


def binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        why = f"{name} not found (apt-get install {package}; .ci/run does)"
        if os.environ.get("MOORAGE_REQUIRE_PEERS") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_PEERS=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why}")
    return found


# ---- Prometheus ------------------------------------------------------------------------------


def promtool_check(text: str, tmp_path: Path) -> None:
    promtool = binary("promtool", "prometheus")
    path = tmp_path / "metrics.txt"
    path.write_text(text)
    with path.open("rb") as stdin:
        checked = subprocess.run(
            [promtool, "check", "metrics"], stdin=stdin, capture_output=True, text=True
        )
    assert checked.returncode == 0 and not checked.stdout.strip(), (
        f"promtool check metrics: exit {checked.returncode}\n{checked.stdout}{checked.stderr}"
    )


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str, auth: str = "") -> Iterator[str]:
    """A real Prometheus scraping `target`'s /metrics every second; yields its URL."""
    executable = binary("prometheus", "prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: moorage
    metrics_path: /metrics
    static_configs: [{{targets: ["{target}"]}}]
{auth}"""
    )
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                executable,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(20)
        if proc.returncode not in (0, -15):
            raise AssertionError(log_path.read_text())


def scraped_up(url: str) -> dict[str, Any]:
    """Wait until Prometheus has scraped the target and finds it up; its target entry."""

    def up() -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"{url}/api/v1/targets", timeout=2)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:  # 503 while Prometheus starts
            return None
        body = answer.json()
        active = body["data"]["activeTargets"]
        return active[0] if active and active[0]["health"] == "up" else None

    target: dict[str, Any] = wait_for(up, 60, 0.5, "the /metrics target up in Prometheus")
    query = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=5).json()
    assert [r["value"][1] for r in query["data"]["result"]] == ["1"]
    return target


def test_promtool_passes_and_prometheus_scrapes_the_target_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.deploy(http_spec(count=2))
    cluster.wait_running("web", 2)

    def exposition() -> str | None:
        text = cluster.http.get("/metrics").text
        return text if "task_cpu_percent{" in text else None

    # the agent's first samples (it collects every 10 s)
    text = wait_for(exposition, 40, 0.5, "node and task series on /metrics")
    promtool_check(text, tmp_path)
    for series in (
        "moorage_http_request_duration_seconds_bucket{",
        "moorage_reconcile_decision_duration_seconds_count ",
        "moorage_reconcile_round_duration_seconds_count ",
        "moorage_store_commit_duration_seconds_count ",
        'moorage_watchers{kind="state"}',
        "# TYPE moorage_dns_queries_total counter",
    ):
        assert series in text, series
    assert "_created" not in text
    assert 'node_memory_used_bytes{node="n1"}' in text
    assert re.search(r'task_memory_rss_bytes\{[^}]*service="web"', text)

    with prometheus(tmp_path, cluster.addr.removeprefix("http://")) as url:
        target = scraped_up(url)
        assert target["scrapeUrl"] == f"{cluster.addr}/metrics"
        assert target["lastError"] == ""
        found = httpx.get(
            f"{url}/api/v1/query",
            params={"query": "moorage_store_commit_duration_seconds_count"},
            timeout=5,
        ).json()
        assert found["data"]["result"], found


def test_under_acls_prometheus_scrapes_with_a_token_that_reads_nodes_and_services(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path, server_args=["--acl"]) as cluster:
        assert httpx.get(f"{cluster.addr}/metrics", timeout=10).status_code == 403
        management = cluster.management_token()
        cluster.env["MOORAGE_HTTP_TOKEN"] = management
        cluster.cli("acl", "policy", "create", "prometheus", "--rule", "node=read")
        created = cluster.cli_json("acl", "token", "create", "--policy", "prometheus")
        nodes_only = {"Authorization": f"Bearer {created['SecretID']}"}
        assert httpx.get(f"{cluster.addr}/metrics", headers=nodes_only).status_code == 403
        cluster.cli(
            "acl", "policy", "create", "scraper", "--rule", "node=read", "--rule", "service=read"
        )
        token = cluster.cli_json("acl", "token", "create", "--policy", "scraper")["SecretID"]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{cluster.addr}/metrics", headers=headers).status_code == 200
        secret = tmp_path / "prometheus-token"
        secret.write_text(token)
        auth = f"    authorization: {{type: Bearer, credentials_file: {secret}}}\n"
        with prometheus(tmp_path, cluster.addr.removeprefix("http://"), auth) as url:
            scraped_up(url)


# ---- InfluxDB --------------------------------------------------------------------------------


class Influx:
    """A real influxd (1.x) on free loopback ports, its data in a temp dir; stop and start it."""

    def __init__(self, root: Path) -> None:
        self.executable = binary("influxd", "influxdb")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = root / "influxdb.conf"
        self.config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{root / "meta"}"
[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.root / "influxd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.executable, "-config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def pinged() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/ping", timeout=1).status_code == 204
            return False

        wait_for(pinged, 30, 0.1, "influxd to answer /ping")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def log(self) -> str:
        return (self.root / "influxd.log").read_text(errors="replace")

    def select(self, statement: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.url}/query", params={"db": "moorage", "q": statement}, timeout=5
        ).json()
        result = answer["results"][0]
        if "database not found" in result.get("error", ""):
            return []  # moorage creates it with its first write
        assert "error" not in result, result
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def count(self, measurement: str) -> int:
        series = self.select(f'SELECT count("value") FROM "{measurement}"')
        return int(series[0]["values"][0][1]) if series else 0


class Moorage:
    """A server (and agent) with `--influx-url`; points enter through `POST /v1/metrics/ingest`
    as the agents send them (a node certificate, on the cluster port)."""

    def __init__(self, root: Path, influx_url: str) -> None:
        args = ["--influx-url", f"{influx_url}/write?db=moorage", "--influx-buffer", "5000"]
        self.cluster = Cluster(root, server_args=args)
        self.node: httpx.Client | None = None  # a node's client of the cluster port

    def __enter__(self) -> Moorage:
        self.cluster.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.stop()

    def ingest(self, points: list[Point]) -> None:
        # as node n1 sends its own points (a node may send only points labelled with itself)
        body = {"node": "n1", "points": [p.model_dump() for p in points]}
        node = self.node or self.cluster.as_node("n1")
        self.node = node
        answer = node.post("/v1/metrics/ingest", json=body)
        assert answer.status_code == 200 and answer.json()["kept"] == len(points), answer.text

    def influx_series(self) -> dict[str, float]:
        text = self.cluster.http.get("/metrics").text
        found = re.findall(r"^(moorage_influx_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)
        return {name: float(value) for name, value in found}


def batch(start: int, count: int, base: float) -> list[Point]:
    return [
        Point(metric="test_points", labels={"node": "n1", "k": str(i % 3)}, ts=base + i, value=i)
        for i in range(start, start + count)
    ]


def test_points_arrive_in_influxdb_and_survive_30_seconds_of_it_being_down(
    tmp_path: Path,
) -> None:
    influx = Influx(tmp_path / "influx")
    influx.start()
    base = time.time() - 3600.0  # an hour ago, one second apart: every point is distinct
    try:
        with Moorage(tmp_path / "moorage", influx.url) as moorage:
            weird = {"node": "n1", "path": "/var/lib/my data,x=1", "quote": 'say "hi"'}
            moorage.ingest([Point(metric="weird", labels=weird, ts=base, value=0.5)])
            moorage.ingest(batch(0, 100, base))
            wait_for(lambda: influx.count("test_points") == 100, 30, 0.2, "the first points")
            (row,) = influx.select("SELECT * FROM weird")
            columns = dict(zip(row["columns"], row["values"][0], strict=True))
            assert columns["path"] == weird["path"] and columns["quote"] == weird["quote"]
            assert columns["value"] == 0.5

            influx.stop()
            sent, deadline = 100, time.monotonic() + OUTAGE
            while time.monotonic() < deadline:  # 30 s: 20 points every 0.25 s
                moorage.ingest(batch(sent, 20, base))
                sent += 20
                time.sleep(0.25)
            during = moorage.influx_series()
            assert during["moorage_influx_buffered"] > 1000, during
            assert during["moorage_influx_errors_total"] > 0, during
            influx.start()

            wait_for(lambda: influx.count("test_points") == sent, 60, 0.5, "the buffered points")
            after = moorage.influx_series()
            assert after['moorage_influx_dropped_total{reason="buffer_full"}'] == 0, after
            assert after['moorage_influx_dropped_total{reason="rejected"}'] == 0, after
            # The agent's own points keep arriving and wait up to the flush interval, so the
            # buffer is empty between two of its pushes, not at any given instant.
            wait_for(
                lambda: moorage.influx_series()["moorage_influx_buffered"] == 0,
                30,
                0.1,
                "an empty buffer",
            )
            # ours, plus what the agent collected meanwhile (also ingested, so also pushed)
            assert after["moorage_influx_sent_total"] >= sent + 1, after
            values = influx.select('SELECT sum("value") FROM "test_points"')[0]["values"]
            assert values[0][1] == sum(range(sent))  # each point exactly once
    finally:
        influx.stop()
