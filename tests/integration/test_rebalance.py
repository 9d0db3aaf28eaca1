"""Explicit rebalancing: a node that comes back takes nothing by itself; `service rebalance`
moves tasks there, replacing each before stopping it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, http_spec, wait_for
from .test_deployments import Poller

pytestmark = pytest.mark.integration


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[Cluster]:
    """n1, n2, n3 in zones a, b, c."""
    cluster = Cluster(tmp_path, agents=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def spread(tasks: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(t["node"] for t in tasks).items()))


def deployment_done(cluster: Cluster) -> bool:
    latest = cluster.http.get("/v1/deployments", params={"service": "web"}).json()[0]
    return bool(latest["status"] == "successful")


def test_rebalance_moves_tasks_to_a_node_that_came_back(three_nodes: Cluster) -> None:
    cluster = three_nodes
    assert "n3: draining" in cluster.cli("node", "drain", "n3").stdout
    extra = "placement: {strategy: spread}\ndeployment: {min_healthy_time: 0s}"
    cluster.deploy(http_spec(count=6, extra=extra))
    before = cluster.wait_running("web", 6)
    assert spread(before) == {"n1": 3, "n2": 3}
    early = cluster.cli("service", "rebalance", "web", check=False)
    if early.returncode == 0:  # n3 takes nothing while it drains: 3+3 is as even as it gets
        assert early.stdout.strip() == "web: already balanced"
    else:  # the first deployment is still settling: refused (409, exit 1)
        assert early.returncode == 1 and "rebalance once it is done" in early.stderr
    wait_for(lambda: deployment_done(cluster), 20, 0.1, "the first deployment done")

    cluster.cli("node", "eligible", "n3")
    time.sleep(2.5)  # a couple of reconciler rounds: nothing moves by itself
    assert {t["id"]: t["node"] for t in cluster.running("web")} == {
        t["id"]: t["node"] for t in before
    }

    with Poller(cluster) as poller:
        result = cluster.cli("service", "rebalance", "web")
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 2, result.stdout
        assert sorted(line.rsplit(" ", 1)[-1] for line in lines) == ["n1", "n2"]
        assert all(line.startswith("web: moving web-") for line in lines)

        def balanced() -> bool:
            live = [t for t in cluster.tasks("web") if t["desired"] == "run"]
            running = [t for t in live if t["status"] == "running"]
            return (
                len(live) == 6
                and len(running) == 6
                and spread(running)
                == {
                    "n1": 2,
                    "n2": 2,
                    "n3": 2,
                }
            )

        wait_for(balanced, 30, 0.2, "2+2+2 running")
    assert min(poller.healthy) >= 6, poller.healthy  # replaced first, stopped after

    moved = {line.split()[2] for line in lines}
    stopped = {t["id"]: t for t in cluster.tasks("web") if t["id"] in moved}
    assert all(t["desired"] == "stop" for t in stopped.values())
    assert all(t["message"].startswith("moved off n") for t in stopped.values())
    rebalances = [e for e in cluster.events() if e["type"] == "service.rebalance"]
    assert len(rebalances) == 1
    assert "2 task(s)" in rebalances[0]["message"]
    assert "1 from n1" in rebalances[0]["message"] and "1 from n2" in rebalances[0]["message"]

    assert cluster.cli("service", "rebalance", "web").stdout.strip() == "web: already balanced"
    again = cluster.cli_json("service", "rebalance", "web")
    assert again["moves"] == [] and again["target"] == {"n1": 2, "n2": 2, "n3": 2}
    assert [e["type"] for e in cluster.events()].count("service.rebalance") == 1  # no writes

    missing = cluster.cli("service", "rebalance", "nope", check=False)
    assert missing.returncode == 1
    assert "no service named 'nope'" in missing.stderr
    response = cluster.http.post("/v1/services/nope/rebalance")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
