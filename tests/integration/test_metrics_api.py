"""The metrics API on a real server: agents' batches in (node certificate on the cluster port), queries and series out,
the dropped counter, bad input, and the samples surviving a server restart."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx
import pytest

from .cluster import Cluster

pytestmark = pytest.mark.integration


def batch(node: str, now: float, dropped: int = 0) -> dict[str, Any]:
    points = [
        {
            "metric": "task_cpu_percent",
            "labels": {"node": node, "service": svc, "task": f"{svc}-{node}", "container": "app"},
            "ts": now - 60 + i * 10,
            "value": float(i),
        }
        for svc in ("itest-web", "itest-db")
        for i in range(6)
    ]
    return {"node": node, "points": points, "dropped": dropped}


def test_ingest_query_series_and_restart(cluster: Cluster) -> None:
    now = time.time()
    body = batch("mx1", now, dropped=3)
    # users' API port: the route is not there; the join token alone is not a node
    assert cluster.http.post("/v1/metrics/ingest", json=body).status_code == 404
    context = ssl.create_default_context(cafile=str(cluster.ca))
    with httpx.Client(base_url=cluster.cluster_url, verify=context, timeout=30) as joiner:
        refused = joiner.post(
            "/v1/metrics/ingest", json=body, headers={"Authorization": f"Bearer {cluster.token}"}
        )
        assert refused.status_code in (401, 403), refused.text
    with cluster.as_node("mx1") as agent:
        sent = agent.post("/v1/metrics/ingest", json=body)
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"received": 12, "kept": 12}
        again = agent.post("/v1/metrics/ingest", json={**batch("mx1", now), "dropped": 2})
        assert again.json()["kept"] == 12  # rewrites of the same samples
        forged = agent.post("/v1/metrics/ingest", json=batch("mx2", now))
        assert forged.status_code == 403, forged.text
        relabelled = {**body, "points": [{**body["points"][0], "labels": {"node": "mx2"}}]}
        assert agent.post("/v1/metrics/ingest", json=relabelled).status_code == 403
        bad = agent.post("/v1/metrics/ingest", json={"node": "", "points": [{"metric": "1x"}]})
        assert bad.status_code == 400
        assert {e["field"] for e in bad.json()["errors"]} >= {"node", "points[0].metric"}

    params = {"metric": "task_cpu_percent", "service": "itest-web", "from": "-5m", "step": "10s"}
    found = cluster.http.get("/v1/metrics/query", params=params)
    assert found.status_code == 200, found.text
    [series] = found.json()
    assert series["labels"]["task"] == "itest-web-mx1"
    assert [v for _, v in series["points"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    grouped = cluster.http.get(
        "/v1/metrics/query",
        params={
            "metric": "task_cpu_percent",
            "node": "mx1",
            "by": "service",
            "agg": "max",
            "step": "5m",
        },
    ).json()
    assert sorted((g["labels"]["service"], max(v for _, v in g["points"])) for g in grouped) == [
        ("itest-db", 5.0),
        ("itest-web", 5.0),
    ]
    wrong = cluster.http.get("/v1/metrics/query", params={"metric": "m", "agg": "p99", "from": "x"})
    assert wrong.status_code == 400
    assert {e["field"] for e in wrong.json()["errors"]} == {"agg", "from"}

    listed = cluster.http.get(
        "/v1/metrics/series", params={"metric": "task_cpu_percent", "node": "mx1"}
    )
    assert sorted(s["labels"]["service"] for s in listed.json()) == ["itest-db", "itest-web"]
    assert all(s["last_value"] == 5.0 for s in listed.json())
    dropped = cluster.http.get(
        "/v1/metrics/series", params={"metric": "agent_metrics_dropped_total", "node": "mx1"}
    ).json()
    assert [s["last_value"] for s in dropped] == [5.0]

    paths = cluster.http.get("/v1/openapi.json").json()["paths"]
    assert {"/v1/metrics/query", "/v1/metrics/series"} <= set(paths)
    assert "/v1/metrics/ingest" not in paths  # a cluster-port route

    # a clean restart flushes; the new process reads the samples back
    cluster.server.stop()
    cluster.server.start()
    after = cluster.http.get("/v1/metrics/query", params=params).json()
    assert after == [series]
    with cluster.as_node("mx1") as agent:
        assert (
            agent.post("/v1/metrics/ingest", json=batch("mx1", now, dropped=1)).status_code == 200
        )
    dropped = cluster.http.get(
        "/v1/metrics/series", params={"metric": "agent_metrics_dropped_total", "node": "mx1"}
    ).json()
    assert [s["last_value"] for s in dropped] == [6.0]  # the counter carries on
