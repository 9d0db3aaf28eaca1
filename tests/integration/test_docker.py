"""Services as Docker containers through a real server and agent, against the real engine."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import Cluster, containers_of, wait_for
from .test_deployments import Poller, revisions_running, summary, write

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def image_spec(version: int, image: str, extra_env: str = "", strategy: str = "rolling") -> str:
    return f"""
service: web
count: 3
containers:
  - name: app
    image: {image}
    cpu: 50
    memory: 32
    env: {{VERSION: "{version}"{extra_env}}}
    ports: [{{name: http, container: 8080}}]
    health: {{http: /health, port: http, interval: 1s, timeout: 1s, retries: 2}}
    stop_timeout: 2s
deployment: {{min_healthy_time: 1s, progress_deadline: 60s, strategy: {strategy}}}
"""


@pytest.fixture
def docker_cluster(cluster: Cluster, docker_image: str, tmp_path: Path) -> Cluster:
    nodes = cluster.http.get("/v1/nodes").json()
    assert "docker" in nodes[0]["drivers"], nodes
    return cluster


def answers(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
    except httpx.HTTPError:
        return None


def test_containers_come_up_on_their_host_ports_with_logs(
    docker_cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    result = docker_cluster.cli(
        "deploy", "-f", str(write(tmp_path, image_spec(1, docker_image), "v1.yaml"))
    )
    assert "successful" in result.stdout
    tasks = docker_cluster.running("web")
    assert len(tasks) == 3 and len(containers_of("n1")) == 3
    for task in tasks:
        assert (
            wait_for(lambda t=task: answers(t["ports"]["http"]), 10)
            == "hello from the test image\n"
        )
        assert task["health"] == "passing"
    logs = docker_cluster.cli("logs", "web").stdout
    assert "serving version 1 on 8080" in logs
    docker_cluster.cli("stop", "web")
    wait_for(lambda: containers_of("n1") == [], 20, what="containers removed")


def test_rolling_update_of_an_image_keeps_count_healthy(
    docker_cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    docker_cluster.cli("deploy", "-f", str(write(tmp_path, image_spec(1, docker_image), "v1.yaml")))
    with Poller(docker_cluster) as poller:
        result = docker_cluster.cli(
            "deploy", "-f", str(write(tmp_path, image_spec(2, docker_image), "v2.yaml"))
        )
    assert "revision 2: 3/3 healthy — successful" in result.stdout, result.stdout
    assert min(poller.healthy) >= 3, poller.healthy
    assert revisions_running(docker_cluster) == {2}
    wait_for(lambda: len(containers_of("n1")) == 3, 15, what="old containers removed")


def test_an_image_revision_failing_its_check_is_rolled_back(
    docker_cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    docker_cluster.cli("deploy", "-f", str(write(tmp_path, image_spec(1, docker_image), "v1.yaml")))
    bad = write(tmp_path, image_spec(2, docker_image, ', FAIL_HEALTH: "1"'), "bad.yaml")
    with Poller(docker_cluster) as poller:
        result = docker_cluster.cli("deploy", "-f", str(bad), check=False)
    assert result.returncode == 1, result.stdout
    assert "rolled_back" in result.stdout + result.stderr
    assert min(poller.healthy) >= 3
    assert summary(docker_cluster)["revision"] == 1
    wait_for(lambda: revisions_running(docker_cluster) == {1}, 15)
    wait_for(lambda: len(containers_of("n1")) == 3, 15, what="failed containers removed")


def test_agent_killed_mid_deployment_then_restarted_completes_without_duplicates(
    docker_cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    docker_cluster.cli("deploy", "-f", str(write(tmp_path, image_spec(1, docker_image), "v1.yaml")))
    v2 = write(tmp_path, image_spec(2, docker_image), "v2.yaml")
    follower = subprocess.Popen(
        [*docker_cluster_cli(docker_cluster), "deploy", "-f", str(v2)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: any(t["revision"] == 2 for t in docker_cluster.running("web")), 20)
    docker_cluster.agent.kill9()
    time.sleep(1)
    docker_cluster.agent.start()
    out, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0, out
    assert "successful" in out
    assert revisions_running(docker_cluster) == {2}
    wait_for(lambda: len(containers_of("n1")) == 3, 20, what="exactly 3 containers")
    ids = {t["id"] for t in docker_cluster.running("web")}
    labels = container_tasks()
    assert set(labels) == ids and len(labels) == 3  # none duplicated, none orphaned


def test_server_killed_mid_deployment_then_restarted_completes(
    docker_cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    docker_cluster.cli("deploy", "-f", str(write(tmp_path, image_spec(1, docker_image), "v1.yaml")))
    deployed = docker_cluster.deploy(image_spec(2, docker_image))
    deployment_id = deployed[0]["deployment"]
    wait_for(lambda: any(t["revision"] == 2 for t in docker_cluster.running("web")), 20)
    docker_cluster.server.kill9()
    docker_cluster.server.start()

    def done() -> dict[str, Any] | None:
        d: dict[str, Any] = docker_cluster.http.get(f"/v1/deployments/{deployment_id}").json()
        return d if d["status"] != "running" else None

    assert wait_for(done, 60, 0.2)["status"] == "successful"
    wait_for(lambda: len(containers_of("n1")) == 3, 20, what="exactly 3 containers")
    assert set(container_tasks()) == {t["id"] for t in docker_cluster.running("web")}


def test_unknown_moorage_containers_are_removed_when_the_agent_starts(
    docker_cluster: Cluster, docker_image: str
) -> None:
    stray = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--label",
            "moorage.node=n1",
            "--label",
            "moorage.task=ghost-1",
            docker_image,
            "sleep",
            "300",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    docker_cluster.agent.stop()
    docker_cluster.agent.start()
    wait_for(lambda: stray[:12] not in " ".join(containers_of("n1")), 15, what="stray removed")
    log = docker_cluster.agent.output()
    assert "ghost-1" in log and "unknown here" in log


def container_tasks() -> list[str]:
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "--filter",
            "label=moorage.node=n1",
            "--format",
            '{{.Label "moorage.task"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def docker_cluster_cli(cluster: Cluster) -> list[str]:
    from .cluster import MOORAGE

    return [*MOORAGE, "--addr", cluster.addr]


def test_one_command_image_update_and_a_missing_image_rolled_back(
    docker_cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    subprocess.run(["docker", "tag", docker_image, "moorage-test/busybox:2"], check=True)
    docker_cluster.cli("deploy", "-f", str(write(tmp_path, image_spec(1, docker_image), "v1.yaml")))
    result = docker_cluster.cli(
        "deploy", "--service", "web", "--image", "app=moorage-test/busybox:2"
    )
    assert "web: registered revision 2" in result.stdout and "successful" in result.stdout
    old, new = (docker_cluster.http.get(f"/v1/taskdefs/web/{r}").json() for r in (1, 2))
    assert new["containers"][0]["image"] == "moorage-test/busybox:2"
    assert {**new["containers"][0], "image": None} == {**old["containers"][0], "image": None}
    assert {t["revision"] for t in docker_cluster.running("web")} == {2}

    missing = docker_cluster.cli(
        "deploy", "--service", "web", "--image", "app=moorage-test/absent:9", check=False
    )
    assert missing.returncode == 1 and "rolled_back" in missing.stdout + missing.stderr
    events = " ".join(e["message"] for e in docker_cluster.events())
    assert "moorage-test/absent:9 is not on this node and cannot be pulled" in events
    assert "pulling image moorage-test/absent:9" in events  # progress, as events
    assert {t["revision"] for t in docker_cluster.running("web")} == {2}
    bad = docker_cluster.cli("deploy", "--service", "web", "--image", "nope=x:1", check=False)
    assert bad.returncode == 2 and "images.nope" in bad.stderr
