"""Tasks of several containers: start order by depends_on, and the essential flag."""

from __future__ import annotations

import sys

import pytest

from .cluster import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration

SERVER = f'["{sys.executable}", "{REPO / "tests" / "fixtures" / "httpserver.py"}"]'
FETCH = (
    "import os, time, urllib.request; "
    "print('db says', urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT_DB']).read().decode().strip(), flush=True); "
    "time.sleep(300)"
)


def test_a_container_waits_for_its_dependency_to_be_healthy(cluster: Cluster) -> None:
    cluster.deploy(f"""
service: pair
containers:
  - name: app
    command: ["{sys.executable}", "-c", "{FETCH}"]
    memory: 64
    depends_on: [{{container: db, condition: healthy}}]
  - name: db
    command: {SERVER}
    memory: 64
    env: {{START_DELAY: "2"}}
    ports: [{{name: db}}]
    health: {{http: /health, port: db, interval: 1s, timeout: 1s}}
deployment: {{min_healthy_time: 0s}}
""")
    (task,) = cluster.wait_running("pair", 1, timeout=30)

    def logs() -> str | None:
        text = cluster.cli("logs", task["id"]).stdout
        return text if "db says" in text else None

    out = wait_for(logs, 15)
    assert f"db says task={task['id']} port={task['ports']['db']}" in out
    assert [c["name"] for c in task["containers"]] == ["db", "app"]  # started in that order


def test_an_essential_container_ending_ends_the_task_a_sidecar_does_not(cluster: Cluster) -> None:
    cluster.deploy("""
service: duo
containers:
  - name: main
    command: [sh, -c, "sleep 3; exit 4"]
    memory: 32
  - name: sidecar
    command: [sh, -c, "exit 0"]
    memory: 32
    essential: false
restart: {attempts: 0}
""")

    def ended() -> dict | None:
        tasks = [t for t in cluster.tasks("duo") if t["status"] in ("exited", "failed")]
        return tasks[0] if tasks else None

    running = wait_for(lambda: [t for t in cluster.tasks("duo") if t["status"] == "running"], 15)
    assert running  # the sidecar's exit did not end the task
    task = wait_for(ended, 20)
    assert task["exit_code"] == 4
    exits = [e["message"] for e in cluster.events() if e["type"] == "task.exited"]
    assert any("main: exit code 4" in m for m in exits), exits


def test_dependency_cycles_and_checkless_healthy_waits_are_refused(cluster: Cluster) -> None:
    spec = """
service: loop
containers:
  - {name: a, command: [x], depends_on: [{container: b}]}
  - {name: b, command: [y], depends_on: [{container: a, condition: healthy}]}
"""
    response = cluster.http.post(
        "/v1/services", content=spec, headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"containers", "containers[1].depends_on[0].condition"}
