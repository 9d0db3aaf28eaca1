"""The agent's metrics through a real server and agent: process and Docker tasks' figures, the
disk buffer across a server outage, and a Docker engine whose stats never answer."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .cluster import AgentSpec, Cluster, wait_for

pytestmark = pytest.mark.integration

INTERVAL = "1s"
BURN = "while True: pass"
BURNER = f"""
service: burn
count: 1
containers:
  - name: app
    command: ["{sys.executable}", "-c", "{BURN}"]
    cpu: 100
    memory: 64
"""
SLEEPER = """
service: idle
count: 1
containers:
  - name: app
    command: ["sleep", "3600"]
    cpu: 10
    memory: 16
"""


def docker_spec(image: str) -> str:
    return f"""
service: box
count: 1
containers:
  - name: app
    image: {image}
    command: ["sh", "-c", "while true; do :; done"]
    cpu: 50
    memory: 32
"""


def metrics_cluster(tmp_path: Path, *extra: str) -> Cluster:
    agent = AgentSpec("n1", {"zone": "a"}, args=["--metrics-interval", INTERVAL, *extra])
    return Cluster(tmp_path, agents=[agent])


def series(cluster: Cluster, metric: str, **matchers: str) -> list[Any]:
    params = {"metric": metric, "from": "-5m", "step": "1s", "agg": "max", **matchers}
    response = cluster.http.get("/v1/metrics/query", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return list(body["series"] if isinstance(body, dict) else body)


def values(cluster: Cluster, metric: str, **matchers: str) -> list[float]:
    return [v for s in series(cluster, metric, **matchers) for _, v in s["points"]]


def timestamps(cluster: Cluster, metric: str, **matchers: str) -> list[float]:
    return sorted(ts for s in series(cluster, metric, **matchers) for ts, _ in s["points"])


# ---- process tasks -------------------------------------------------------------------------------
def test_a_busy_process_task_reports_its_cpu_and_memory(tmp_path: Path) -> None:
    with metrics_cluster(tmp_path) as cluster:
        cluster.deploy(BURNER)
        cluster.wait_running("burn", 1)
        busy = wait_for(
            lambda: [v for v in values(cluster, "task_cpu_percent", service="burn") if v > 50],
            30,
            0.5,
            "task_cpu_percent > 50 for the burner",
        )
        assert max(busy) < 400  # percent of one core, not a fraction nor a per-mille
        rss = wait_for(lambda: values(cluster, "task_memory_rss_bytes", service="burn"), 10)
        assert 0 < max(rss) < 64 * 1024 * 1024
        limit = values(cluster, "task_memory_limit_bytes", service="burn")
        assert limit and limit[-1] == 64 * 1024 * 1024
        assert values(cluster, "task_restarts_total", service="burn")[-1] == 0
        (found,) = series(cluster, "task_cpu_percent", service="burn")
        assert set(found["labels"]) >= {"node", "service", "task", "container"}
        assert found["labels"]["node"] == "n1" and found["labels"]["container"] == "app"
        for metric in ("node_cpu_percent", "node_memory_available_bytes", "node_disk_free_bytes"):
            assert values(cluster, metric, node="n1"), metric
        top_and_metrics_commands(cluster)


def top_and_metrics_commands(cluster: Cluster) -> None:
    """`moorage top --once` and `moorage metrics` over what the agent collected."""
    view = cluster.cli_json("top", "--once")
    (burn,) = [s for s in view["services"] if s["service"] == "burn"]
    assert burn["tasks"] == 1 and burn["healthy"] == 1
    assert burn["cpu_percent"] > 50 and burn["memory_rss_bytes"] > 0
    assert burn["memory_limit_bytes"] == 64 * 1024 * 1024
    (node,) = view["nodes"]
    assert node["node"] == "n1" and node["status"] == "ready" and node["tasks"] == 1
    assert node["memory_used_bytes"] > 0 and node["disk_free_bytes"] > 0
    table = cluster.cli("top", "--once").stdout
    assert "burn" in table and "n1" in table and "SERVICE" in table
    found = cluster.cli_json("metrics", "task_cpu_percent", "--service", "burn", "--step", "1s")
    assert len(found) == 1 and found[0]["max"] > 50 and found[0]["points"]
    text = cluster.cli("metrics", "task_cpu_percent", "--service", "burn", "--from", "-1m").stdout
    assert "service=burn" in text and "%" in text
    assert any(c in text for c in "▁▂▃▄▅▆▇█")
    nothing = cluster.cli("metrics", "task_cpu_percent", "--service", "nope")
    assert nothing.returncode == 0 and "no samples" in nothing.stderr
    bad = cluster.cli("metrics", "task_cpu_percent", "--from", "yesterday", check=False)
    assert bad.returncode == 2 and "from" in bad.stderr


# ---- Docker -------------------------------------------------------------------------------------
@pytest.mark.docker
def test_a_docker_tasks_stats_arrive(tmp_path: Path, docker_image: str) -> None:
    with metrics_cluster(tmp_path) as cluster:
        nodes = cluster.http.get("/v1/nodes").json()
        assert "docker" in nodes[0]["drivers"], nodes
        cluster.deploy(docker_spec(docker_image))
        cluster.wait_running("box", 1, timeout=60)
        wait_for(
            lambda: [v for v in values(cluster, "task_cpu_percent", service="box") if v > 30],
            30,
            0.5,
            "task_cpu_percent of the busy container",
        )
        assert max(values(cluster, "task_memory_rss_bytes", service="box")) > 0
        assert values(cluster, "task_memory_limit_bytes", service="box")[-1] == 32 * 1024 * 1024


# ---- the disk buffer across an outage --------------------------------------------------------------
def buffered_times(buffer: Path) -> list[float]:
    """When the node_cpu_percent samples waiting in the agent's buffer were taken."""
    return [
        p["ts"]
        for f in sorted(buffer.glob("*.json"))
        for p in json.loads(f.read_text())
        if p["metric"] == "node_cpu_percent"
    ]


def test_points_collected_while_the_server_is_down_arrive_once_it_is_back(tmp_path: Path) -> None:
    with metrics_cluster(tmp_path) as cluster:
        cluster.deploy(SLEEPER)
        cluster.wait_running("idle", 1)
        wait_for(lambda: values(cluster, "task_memory_rss_bytes", service="idle"), 15)
        cluster.server.stop()
        buffer = tmp_path / "node1" / "agent" / "metrics-buffer"
        wait_for(lambda: len(list(buffer.glob("*.json"))) >= 4, 15, 0.2, "buffered batches")
        taken = buffered_times(buffer)
        cluster.server.start()
        wait_for(lambda: not list(buffer.glob("*.json")), 20, 0.2, "the buffer replayed")
        stored = set(timestamps(cluster, "node_cpu_percent", node="n1"))  # 1 s buckets
        assert len(taken) >= 4 and {math.floor(ts) for ts in taken} <= stored, (taken, stored)
        dropped = wait_for(
            lambda: values(cluster, "agent_metrics_dropped_total", node="n1"), 10, 0.2
        )
        assert max(dropped) == 0
        log = cluster.agent.output()
        assert log.count("buffering them in") == 1, log  # said once per outage
        assert "takes them again" in log and ", 0 dropped" in log


# ---- a Docker engine that never answers stats --------------------------------------------------------
class FakeEngine:
    """Just enough of the Docker Engine API on a unix socket to run a container that never
    ends, and whose `stats` never answer."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.stats_calls = 0
        self.labels: dict[str, dict[str, str]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeEngine:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.UnixSite(runner, str(self.socket)).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if parts[0].startswith("v1."):
            parts = parts[1:]
        if parts == ["version"] or parts == ["_ping"]:
            return web.json_response({"ApiVersion": "1.41", "Version": "fake"})
        if parts == ["containers", "json"]:
            return web.json_response([])
        if parts[0] == "images":
            return web.json_response({"Id": "sha256:fake"})
        if parts == ["containers", "create"]:
            body = await request.json()
            cid = f"fake{len(self.labels):060d}"
            self.labels[cid] = body.get("Labels", {})
            return web.json_response({"Id": cid}, status=201)
        cid, action = parts[1], parts[2] if len(parts) > 2 else ""
        if cid not in self.labels:
            return web.json_response({"message": f"No such container: {cid}"}, status=404)
        if action == "json":
            state = {"Running": True, "Pid": 0, "ExitCode": 0}
            return web.json_response(
                {"Id": cid, "State": state, "Config": {"Labels": self.labels[cid]}}
            )
        if action in ("start", "stop", "kill") or request.method == "DELETE":
            return web.Response(status=204)
        if action == "stats":
            self.stats_calls += 1
        await asyncio.Event().wait()  # logs, wait and stats: never answered
        raise AssertionError("unreachable")


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[FakeEngine]:
    with FakeEngine(tmp_path / "docker.sock") as engine:
        yield engine


def test_a_hung_docker_stats_call_does_not_stall_task_metrics(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    cluster = metrics_cluster(tmp_path / "c")
    cluster.agent.env["DOCKER_HOST"] = f"unix://{fake_engine.socket}"
    with cluster:
        assert "docker" in cluster.http.get("/v1/nodes").json()[0]["drivers"]
        cluster.deploy(docker_spec("moorage-test/fake:1"))
        cluster.deploy(SLEEPER)
        cluster.wait_running("box", 1)
        cluster.wait_running("idle", 1)
        wait_for(lambda: fake_engine.stats_calls >= 2, 30, 0.2, "stats calls that hang")
        start = time.time()
        time.sleep(6)
        recent = [
            ts for ts in timestamps(cluster, "task_memory_rss_bytes", service="idle") if ts >= start
        ]
        # One sample a second: the hung engine (5 s timeouts) holds none of them back.
        assert len(recent) >= 4, recent
        assert fake_engine.stats_calls >= 2
        assert "docker stats of" in cluster.agent.output()
        nodes = {n["name"]: n["status"] for n in cluster.http.get("/v1/nodes").json()}
        assert nodes["n1"] == "ready", nodes
