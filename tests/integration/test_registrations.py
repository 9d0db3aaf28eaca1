"""Services registered from outside through Consul's agent API: they join the catalog, their
HTTP checks run on the node's agent, TTL checks are set through the API and expire."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .cluster import AgentSpec, Cluster, free_port, wait_for

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


def test_tcp_and_script_checks_and_replace_existing_checks(tmp_path: Path) -> None:
    """TCP and command (`Args`, Consul's "script") checks run on the node's agent; command
    checks only where the agent allows them; re-registering keeps the checks it does not name
    unless `replace-existing-checks` is set."""
    agents = [
        AgentSpec("n1", {"zone": "a"}, args=["--enable-script-checks"]),
        AgentSpec("n2", {"zone": "b"}),
    ]
    with Cluster(tmp_path, agents=agents) as cluster:
        host, port = cluster.addr.removeprefix("http://").rsplit(":", 1)
        flag = tmp_path / "healthy"
        script = {"CheckID": "db1-script", "Args": ["test", "-e", str(flag)], "Interval": "1s"}
        body = {
            "ID": "db1",
            "Name": "db",
            "Port": 5432,
            "Checks": [
                {"CheckID": "db1-tcp", "TCP": f"{host}:{port}", "Interval": "1s"},
                {"CheckID": "db1-closed", "TCP": f"{host}:{free_port(host)}", "Interval": "1s"},
                script,
            ],
        }
        put = cluster.http.put("/v1/agent/service/register", params={"node": "n1"}, json=body)
        assert put.status_code == 200, put.text
        wait_for(lambda: statuses(cluster)["db1-tcp"] == "passing", 15, 0.2, "tcp check")
        assert statuses(cluster)["db1-closed"] == "critical"
        # exit 1: Consul's warning
        wait_for(lambda: statuses(cluster)["db1-script"] == "warning", 15, 0.2, "script warning")
        flag.touch()
        wait_for(lambda: statuses(cluster)["db1-script"] == "passing", 15, 0.2, "script check")
        [entry] = db_checks(cluster)
        types = {c["CheckID"]: c["Type"] for c in entry["Checks"]}
        assert types["db1-script"] == "script" and types["db1-tcp"] == "tcp"

        # without replace-existing-checks the checks not named again are kept
        again = {**body, "Checks": [body["Checks"][0]]}
        kept = cluster.http.put("/v1/agent/service/register", json=again, params={"node": "n1"})
        assert kept.status_code == 200
        assert set(statuses(cluster)) >= {"db1-tcp", "db1-closed", "db1-script"}
        replaced = cluster.http.put(
            "/v1/agent/service/register",
            json=again,
            params={"node": "n1", "replace-existing-checks": "true"},
        )
        assert replaced.status_code == 200
        assert {c for c in statuses(cluster) if c.startswith("db1")} == {"db1-tcp"}

        # n2 was not started with --enable-script-checks: the command never runs there
        marker = tmp_path / "ran-on-n2"
        other = {
            "ID": "db2",
            "Name": "db",
            "Port": 5433,
            "Checks": [{**script, "CheckID": "db2-script", "Args": ["touch", str(marker)]}],
        }
        put = cluster.http.put("/v1/agent/service/register", params={"node": "n2"}, json=other)
        assert put.status_code == 200

        def db2_check() -> dict[str, Any] | None:
            for entry in db_checks(cluster):
                for check in entry["Checks"]:
                    if check["CheckID"] == "db2-script" and check["Output"]:
                        return dict(check)
            return None

        check = wait_for(db2_check, 15, 0.2, "script check refused")
        assert check["Status"] == "critical" and "--enable-script-checks" in check["Output"]
        time.sleep(2)
        assert not marker.exists()
