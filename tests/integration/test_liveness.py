"""Node failure: a silent agent's node goes down, its tasks are replaced; nothing runs twice.

Agents run in their own network namespaces (`moorage.testing.cluster`, root), as on machines of
their own; the faults of a three-zone cluster are in test_cluster_faults.py."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from .cluster import MOORAGE, Cluster, free_port, http_spec, page, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def two_nodes(tmp_path: Path, netns: None) -> Any:
    with Cluster(tmp_path, agents=2, netns=True) as cluster:
        yield cluster


@pytest.fixture
def one_node(tmp_path: Path, netns: None) -> Any:
    with Cluster(tmp_path / "cluster", agents=1, netns=True) as cluster:
        yield cluster


def task_processes(root: Path) -> list[psutil.Process]:
    """The test HTTP servers this cluster runs (their working dirs are inside its data dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "httpserver.py" in cmdline and (proc.info["cwd"] or "").startswith(str(root)):
            found.append(proc)
    return found


def test_a_dead_node_is_detected_and_its_tasks_replaced_without_duplicates(
    two_nodes: Cluster,
) -> None:
    cluster = two_nodes
    cluster.deploy(http_spec(count=4, extra="placement: {strategy: spread}"))
    tasks = cluster.wait_running("web", 4)
    assert sorted(t["node"] for t in tasks) == ["n1", "n1", "n2", "n2"]
    cluster.agents[1].kill9()
    killed = time.monotonic()

    def replaced() -> list[dict[str, Any]] | None:
        running = cluster.running("web")
        return running if len(running) == 4 and {t["node"] for t in running} == {"n1"} else None

    wait_for(replaced, 30, 0.1, "4 running tasks on n1")
    took = time.monotonic() - killed
    assert took < 15, f"replaced after {took:.1f}s"
    nodes = {n["name"]: n["status"] for n in cluster.http.get("/v1/nodes").json()}
    assert nodes == {"n1": "ready", "n2": "down"}
    types = [e["type"] for e in cluster.events()]
    assert "node.down" in types and types.count("task.lost") == 2
    assert len(task_processes(cluster.root)) == 6  # n2's old tasks still run, its agent is dead

    cluster.agents[1].start()  # back: its lost tasks are stopped there, the replacements win
    wait_for(lambda: len(task_processes(cluster.root)) == 4, 20, 0.2, "no duplicates left")
    wait_for(
        lambda: (
            {n["name"]: n["status"] for n in cluster.http.get("/v1/nodes").json()}["n2"] == "ready"
        ),
        10,
    )
    assert len(cluster.running("web")) == 4


def test_twenty_agent_kills_in_a_row_cost_no_restart_and_no_lost_task(one_node: Cluster) -> None:
    cluster = one_node
    cluster.deploy(http_spec(count=5))
    before = {t["id"]: t["containers"][0]["pid"] for t in cluster.wait_running("web", 5)}
    for _ in range(20):
        cluster.agent.kill9()
        cluster.agent.start()
    time.sleep(1)
    after = cluster.wait_running("web", 5)
    assert {t["id"]: t["containers"][0]["pid"] for t in after} == before
    assert all(t["restarts"] == 0 for t in after)
    assert not [t for t in cluster.tasks("web") if t["status"] == "lost"]
    assert "task.lost" not in [e["type"] for e in cluster.events()]


def test_an_agent_with_a_wrong_join_token_is_refused_and_leaves_no_trace(
    one_node: Cluster, tmp_path: Path
) -> None:
    cluster = one_node
    before = cluster.http.get("/v1/status").json()["revision"]
    node = {"name": "intruder", "cpu": 1000, "memory": 1000}
    context = ssl.create_default_context(cafile=str(cluster.ca))
    with httpx.Client(base_url=cluster.cluster_url, verify=context, timeout=10) as stranger:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = stranger.put("/v1/nodes/intruder", json=node, headers=headers)
            assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
            joined = stranger.post(
                "/v1/join", json={"name": "intruder", "csr": "x"}, headers=headers
            )
            assert joined.status_code == 401 and joined.json()["code"] == "unauthorized"
        assert stranger.post("/v1/nodes/n1/heartbeat").status_code == 403
        assert stranger.get("/v1/nodes/n1/tasks").status_code == 403
    log = (tmp_path / "intruder.log").open("wb")
    agent = subprocess.Popen(
        [
            *MOORAGE,
            "agent",
            "--server",
            cluster.cluster_url,
            "--name",
            "intruder",
            "--ca-cert",
            str(cluster.ca),
            "--data-dir",
            str(tmp_path / "intruder"),
            "--agent-addr",
            f"127.0.0.1:{free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MOORAGE_TOKEN": "wrong"},
    )
    try:
        wait_for(lambda: b"refused" in (tmp_path / "intruder.log").read_bytes(), 15)
    finally:
        agent.kill()
        agent.wait()
        log.close()
    assert [n["name"] for n in cluster.http.get("/v1/nodes").json()] == ["n1"]
    assert cluster.http.get("/v1/status").json()["revision"] == before
    token_file = cluster.root / "server" / "join-token"
    assert token_file.stat().st_mode & 0o777 == 0o600


def test_drain_moves_every_task_and_never_drops_below_min_healthy(two_nodes: Cluster) -> None:
    from .test_deployments import CHECK, Poller

    cluster = two_nodes
    spec = http_spec(
        count=4,
        container=CHECK,
        extra="placement: {strategy: spread}\ndeployment: {min_healthy_time: 0s}",
    )
    cluster.deploy(spec)
    tasks = cluster.wait_running("web", 4)
    wait_for(lambda: sum(t["health"] == "passing" for t in cluster.tasks("web")) == 4, 20)
    assert sorted(t["node"] for t in tasks) == ["n1", "n1", "n2", "n2"]
    with Poller(cluster) as poller:
        assert "n2: draining" in cluster.cli("node", "drain", "n2").stdout

        def moved() -> bool:
            running = cluster.running("web")
            return (
                len(running) == 4
                and {t["node"] for t in running} == {"n1"}
                and all(t["health"] == "passing" for t in running)
            )

        wait_for(moved, 30, 0.2, "every task moved to n1")
    assert min(poller.healthy) >= 4, poller.healthy
    n2 = node(cluster, "n2")
    assert (n2["status"], n2["eligibility"]) == ("ready", "ineligible") and n2["drain_deadline"]
    cluster.cli("scale", "web", "6")
    cluster.wait_running("web", 6)
    assert {t["node"] for t in cluster.running("web")} == {"n1"}  # a draining node takes nothing
    cluster.cli("node", "eligible", "n2")
    n2 = node(cluster, "n2")
    assert (n2["status"], n2["eligibility"], n2["drain_deadline"]) == ("ready", "eligible", None)


def node(cluster: Cluster, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        n for n in cluster.http.get("/v1/nodes").json() if n["name"] == name
    )
    return found


def test_a_drain_outlives_a_network_cut_and_an_agent_restart(two_nodes: Cluster) -> None:
    """Liveness and scheduling eligibility are apart: a drained node that goes down and comes
    back (its heartbeats resume, or its agent registers again) is still drained."""
    cluster = two_nodes
    cluster.deploy(http_spec(count=2, extra="placement: {strategy: spread}"))
    assert sorted(t["node"] for t in cluster.wait_running("web", 2)) == ["n1", "n2"]
    cluster.cli("node", "drain", "n2", "--spot-notice")
    wait_for(lambda: [t["node"] for t in cluster.running("web")] == ["n1", "n1"], 30, 0.2)
    deadline = node(cluster, "n2")["drain_deadline"]

    def still_drained() -> None:
        n2 = node(cluster, "n2")
        assert (n2["status"], n2["eligibility"], n2["drain_deadline"]) == (
            "ready",
            "ineligible",
            deadline,
        )
        row = next(line for line in cluster.cli("nodes").stdout.splitlines() if "n2" in line)
        assert "ready, draining" in row

    cluster.cut("n2")  # beyond the TTL: down
    wait_for(lambda: cluster.nodes()["n2"] == "down", 30, 0.2, "n2 down")
    cluster.heal("n2")  # its heartbeats bring it back
    wait_for(lambda: cluster.nodes()["n2"] == "ready", 30, 0.2, "n2 back")
    still_drained()
    cluster.kill("n2")
    wait_for(lambda: cluster.nodes()["n2"] == "down", 30, 0.2, "n2 down")
    cluster.restart("n2")  # its agent registers again
    wait_for(lambda: cluster.nodes()["n2"] == "ready", 30, 0.2, "n2 back")
    still_drained()
    back = [e for e in cluster.events() if e["type"] == "node.up"]
    assert back and all("still draining" in e["message"] for e in back)
    # Spread would put two of four on n2: it takes none while drained.
    cluster.cli("scale", "web", "4")
    wait_for(lambda: len(cluster.running("web")) == 4, 30, 0.2, "4 running")
    assert {t["node"] for t in cluster.running("web")} == {"n1"}
    cluster.cli("node", "eligible", "n2")
    assert node(cluster, "n2")["eligibility"] == "eligible"
    cluster.cli("scale", "web", "6")
    wait_for(lambda: "n2" in {t["node"] for t in cluster.wait_running("web", 6)}, 30, 0.2)


def test_an_agent_given_only_the_server_advertises_and_serves_its_own_ip(
    tmp_path: Path, netns: None
) -> None:
    """`moorage agent --server HOST:7072 --token-file F --name n1`, as the join line says:
    the node's address is the one its traffic to the server leaves from (its namespace's IP),
    its agent listens there on 7071, and the server relays logs to it."""
    from .cluster import AgentSpec

    with Cluster(tmp_path, agents=[AgentSpec("n1", auto_address=True)], netns=True) as cluster:
        ip = cluster.addresses["n1"]
        assert ip != "127.0.0.1" and "--advertise" not in cluster.agent.args
        n1 = node(cluster, "n1")
        assert (n1["address"], n1["agent_addr"]) == (ip, f"{ip}:7071")
        cluster.deploy(http_spec(count=1))
        (task,) = cluster.wait_running("web", 1)
        port = task["ports"]["http"]
        # the task listens on the node's IP (MOORAGE_NODE_IP), reachable from the host
        wait_for(lambda: page(f"http://{ip}:{port}/health"), 15, 0.2, "the task answers")

        def logs() -> str | None:
            out = cluster.cli("logs", "web").stdout
            return out if f"listening on {port}" in out else None

        wait_for(logs, 15, 0.2, "the task's log through the server")


def test_an_agent_given_several_servers_joins_the_one_that_answers(
    cluster: Cluster, tmp_path: Path
) -> None:
    from .cluster import MOORAGE, Proc, free_port

    dead = f"https://127.0.0.1:{free_port()}"
    agent = Proc(
        [
            *MOORAGE,
            "agent",
            "--server",
            f"{dead},{cluster.cluster_url}",
            "--name",
            "second",
            "--data-dir",
            str(tmp_path / "second"),
            "--agent-addr",
            f"127.0.0.1:{free_port()}",
            "--attr",
            "role=extra",
        ],
        tmp_path / "second.log",
        env={"MOORAGE_TOKEN": cluster.token},
    )
    agent.start()
    try:
        assert cluster.nodes() == {"n1": "ready", "second": "ready"}
        cluster.deploy(http_spec(count=1, extra='placement: {constraints: ["role == extra"]}'))
        assert [t["node"] for t in cluster.wait_running("web", 1)] == ["second"]
        assert f"registered with {cluster.cluster_url}" in agent.output()
    finally:
        agent.stop()


def test_a_spot_interruption_notice_drains_within_two_minutes(two_nodes: Cluster) -> None:
    cluster = two_nodes
    cluster.deploy(http_spec(count=4, extra="placement: {strategy: spread}"))
    assert sorted(t["node"] for t in cluster.wait_running("web", 4)) == ["n1", "n1", "n2", "n2"]
    out = cluster.cli("node", "drain", "n2", "--spot-notice").stdout
    assert "n2: draining (spot interruption notice)" in out
    left = int(out.split(" in ")[1].split("s")[0])
    assert 110 <= left <= 120, out
    node = next(n for n in cluster.http.get("/v1/nodes").json() if n["name"] == "n2")
    assert 110 <= node["drain_deadline"] - time.time() <= 120
    wait_for(lambda: {t["node"] for t in cluster.running("web")} == {"n1"}, 30, 0.2)
    assert len(cluster.wait_running("web", 4)) == 4
    [event] = [e for e in cluster.events() if e["type"] == "node.draining"]
    assert "spot interruption notice" in event["message"] and "120s" in event["message"]
    # An earlier deadline given with the notice is kept.
    cluster.cli("node", "eligible", "n2")
    cluster.cli("node", "drain", "n2", "--spot-notice", "--deadline", "30s")
    node = next(n for n in cluster.http.get("/v1/nodes").json() if n["name"] == "n2")
    assert 20 <= node["drain_deadline"] - time.time() <= 30
