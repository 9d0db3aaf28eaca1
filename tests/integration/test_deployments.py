"""Deployments against real processes: health-gated rolling and blue/green, rollback, TTL checks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, http_spec, wait_for

pytestmark = pytest.mark.integration

CHECK = "health: {http: /health, port: http, interval: 1s, timeout: 1s, retries: 2}"
FAST = "deployment: {min_healthy_time: 1s, progress_deadline: 60s, strategy: %s}"


def spec(version: int, strategy: str = "rolling", env: str = "") -> str:
    return http_spec(
        count=3,
        container=f'env: {{VERSION: "{version}"{env}}}\n{CHECK}',
        extra=FAST % strategy,
    )


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class Poller:
    """Watches the service from another thread: healthy count and live tasks per revision."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.healthy: list[int] = []
        self.revisions: list[dict[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            summary = self.cluster.http.get("/v1/services/web").json()["summary"]
            self.healthy.append(summary["healthy"])
            live: dict[int, int] = {}
            for task in self.cluster.tasks("web"):
                if task["desired"] == "run" or task["status"] == "running":
                    live[task["revision"]] = live.get(task["revision"], 0) + 1
            self.revisions.append(live)
            time.sleep(0.05)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def v1(cluster: Cluster, tmp_path: Path) -> Cluster:
    result = cluster.cli("deploy", "-f", str(write(tmp_path, spec(1), "v1.yaml")))
    assert "successful" in result.stdout, result.stdout
    assert summary(cluster)["healthy"] == 3
    return cluster


def summary(cluster: Cluster) -> dict[str, Any]:
    result: dict[str, Any] = cluster.http.get("/v1/services/web").json()["summary"]
    return result


def revisions_running(cluster: Cluster) -> set[int]:
    return {t["revision"] for t in cluster.running("web")}


def test_rolling_update_keeps_count_healthy_throughout(v1: Cluster, tmp_path: Path) -> None:
    with Poller(v1) as poller:
        result = v1.cli("deploy", "-f", str(write(tmp_path, spec(2), "v2.yaml")))
    assert result.returncode == 0
    assert "web: revision 2: 3/3 healthy — successful" in result.stdout, result.stdout
    assert len(poller.healthy) > 20
    assert min(poller.healthy) >= 3, poller.healthy
    assert revisions_running(v1) == {2} and len(v1.running("web")) == 3
    types = [e["type"] for e in v1.events()]
    assert "deployment.progress" in types and types.count("deployment.successful") == 2
    listed = v1.cli_json("deployments", "web")
    assert [d["status"] for d in listed] == ["successful", "successful"]
    assert summary(v1)["deployment"] == "successful"


def test_a_revision_that_never_turns_healthy_is_rolled_back(v1: Cluster, tmp_path: Path) -> None:
    bad = write(tmp_path, spec(2, env=', FAIL_HEALTH: "1"'), "bad.yaml")
    with Poller(v1) as poller:
        result = v1.cli("deploy", "-f", str(bad), check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "rolled_back" in result.stdout + result.stderr
    assert "rolling back to revision 1" in result.stdout + result.stderr
    assert min(poller.healthy) >= 3  # v1 served at full count all along
    assert (summary(v1)["revision"], summary(v1)["healthy"]) == (1, 3)
    wait_for(lambda: revisions_running(v1) == {1}, 10, what="only revision 1 left")
    failed = v1.cli_json("deployments", "web")[1]
    assert failed["status"] == "rolled_back" and len(failed["failures"]) >= 3
    ps = v1.cli("ps", "web", "-a").stdout
    assert "critical" in ps or "stopped" in ps


def test_blue_green_runs_both_sets_only_during_the_switch(v1: Cluster, tmp_path: Path) -> None:
    with Poller(v1) as poller:
        result = v1.cli("deploy", "-f", str(write(tmp_path, spec(2, "blue_green"), "bg.yaml")))
    assert result.returncode == 0, result.stdout
    assert min(poller.healthy) >= 3
    both = [r for r in poller.revisions if r.get(1) and r.get(2)]
    assert both, "the new set started beside the old one"
    assert all(r.get(2, 0) <= 3 and r.get(1, 0) <= 3 for r in poller.revisions)
    first_both = poller.revisions.index(both[0])
    assert all(r.get(1, 0) == 3 for r in poller.revisions[:first_both])  # old set whole until then
    assert poller.revisions[-1] == {2: 3}


def test_rollback_command_returns_to_the_stable_revision(v1: Cluster, tmp_path: Path) -> None:
    v1.cli("deploy", "-f", str(write(tmp_path, spec(2), "v2.yaml")))
    result = v1.cli("rollback", "web")
    assert "rolling back to revision 1" in result.stdout
    assert "successful" in result.stdout
    assert revisions_running(v1) == {1}
    assert summary(v1)["revision"] == 1


def test_ttl_check_is_driven_through_the_api(cluster: Cluster) -> None:
    cluster.deploy(
        http_spec(
            count=1, container="health: {ttl: 3s}", extra="deployment: {min_healthy_time: 0s}"
        )
    )
    (task,) = cluster.wait_running("web", 1)
    wait_for(lambda: cluster.http.get(f"/v1/tasks/{task['id']}").json()["health"] == "critical", 10)

    def ttl(status: str) -> None:
        response = cluster.http.put(
            f"/v1/tasks/{task['id']}/checks/app/ttl", json={"status": status, "output": "from test"}
        )
        assert response.status_code == 200, response.text

    ttl("passing")
    wait_for(lambda: cluster.http.get(f"/v1/tasks/{task['id']}").json()["health"] == "passing", 10)
    # Not refreshed within the ttl: critical again.
    wait_for(lambda: cluster.http.get(f"/v1/tasks/{task['id']}").json()["health"] == "critical", 15)
    bad = cluster.http.put(f"/v1/tasks/{task['id']}/checks/app/ttl", json={"status": "fine"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "status"
