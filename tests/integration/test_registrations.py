"""Services registered from outside through Consul's agent API: they join the catalog, their
HTTP checks run on the node's agent, TTL checks are set through the API and expire."""

from __future__ import annotations

from typing import Any

import pytest

from .cluster import Cluster, wait_for

pytestmark = pytest.mark.integration


def db_checks(cluster: Cluster, passing: bool = False) -> list[dict[str, Any]]:
    params = {"passing": "1"} if passing else {}
    return list(cluster.http.get("/v1/health/service/db", params=params).json())


def statuses(cluster: Cluster) -> dict[str, str]:
    [entry] = db_checks(cluster)
    return {c["CheckID"]: c["Status"] for c in entry["Checks"]}


def test_an_external_service_with_http_and_ttl_checks(cluster: Cluster) -> None:
    body = {
        "ID": "db1",
        "Name": "db",
        "Tags": ["primary"],
        "Address": "10.1.2.3",
        "Port": 5432,
        "Meta": {"version": "15"},
        "Checks": [
            {"HTTP": f"{cluster.addr}/v1/status", "Interval": "1s", "Timeout": "1s"},
            {"CheckID": "db1-ttl", "TTL": "3s"},
        ],
    }
    registered = cluster.http.put("/v1/agent/service/register", json=body)
    assert registered.status_code == 200, registered.text
    [entry] = db_checks(cluster)
    assert entry["Service"]["ID"] == "db1" and entry["Service"]["Address"] == "10.1.2.3"
    assert entry["Service"]["Port"] == 5432 and entry["Service"]["Tags"] == ["primary"]
    assert entry["Node"]["Node"] == "n1"
    assert cluster.http.get("/v1/catalog/services").json() == {"db": ["primary"]}
    assert set(cluster.http.get("/v1/agent/services").json()) == {"db1"}

    # the agent of n1 runs the HTTP check; the TTL check waits for the API
    wait_for(lambda: statuses(cluster)["service:db1:1"] == "passing", 15, 0.2, "http check")
    assert statuses(cluster)["db1-ttl"] == "critical" and db_checks(cluster, passing=True) == []
    assert cluster.http.put("/v1/agent/check/pass/db1-ttl?note=ok").status_code == 200
    assert [e["Service"]["ID"] for e in db_checks(cluster, passing=True)] == ["db1"]
    # not refreshed within its TTL: critical again
    wait_for(lambda: statuses(cluster)["db1-ttl"] == "critical", 15, 0.2, "ttl expiry")
    [check] = [c for c in db_checks(cluster)[0]["Checks"] if c["CheckID"] == "db1-ttl"]
    assert check["Output"] == "TTL expired"
    not_ttl = cluster.http.put("/v1/agent/check/pass/service:db1:1")
    assert not_ttl.status_code == 400 and "TTL" in not_ttl.text

    assert cluster.http.put("/v1/agent/service/deregister/db1").status_code == 200
    assert db_checks(cluster) == []
    assert cluster.http.put("/v1/agent/service/deregister/db1").status_code == 404


def test_a_bad_registration_names_its_fields_and_stores_nothing(cluster: Cluster) -> None:
    before = cluster.http.get("/v1/status").json()["revision"]
    bad = cluster.http.put(
        "/v1/agent/service/register",
        json={"Name": "Not A Label", "Port": 70000, "Checks": [{"Interval": "10s"}]},
    )
    assert bad.status_code == 400
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"Name", "Port", "Checks[0]"}
    unknown_node = cluster.http.put(
        "/v1/agent/service/register", params={"node": "nope"}, json={"Name": "x"}
    )
    assert unknown_node.status_code == 400 and "node" in unknown_node.text
    assert cluster.http.get("/v1/status").json()["revision"] == before
