"""Secrets injected into tasks and never shown; `moorage exec` into process and Docker tasks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from .cluster import Cluster, http_spec

pytestmark = pytest.mark.integration

VALUE = "s3cr3t-Zq8-value-that-must-not-leak"


def set_secret(cluster: Cluster, name: str, value: str) -> None:
    result = cluster.cli("secret", "set", name, input=value + "\n")
    assert f"{name}: version" in result.stdout
    assert value not in result.stdout + result.stderr


def test_secret_is_injected_and_never_leaks(
    cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    set_secret(cluster, "db-url", VALUE)
    imported = tmp_path / "secrets.json"
    imported.write_text(json.dumps({"api-key": "k-" + VALUE, "other": "x"}))
    cluster.cli("secret", "import", str(imported))
    listed = cluster.cli("secret", "ls").stdout
    assert "db-url" in listed and "api-key" in listed and VALUE not in listed
    spec = tmp_path / "web.yaml"
    spec.write_text(f"""
service: web
count: 1
containers:
  - name: app
    image: {docker_image}
    memory: 32
    ports: [{{name: http, container: 8080}}]
    secrets: {{DATABASE_URL: db-url, API_KEY: api-key}}
deployment: {{min_healthy_time: 0s}}
""")
    outputs = [cluster.cli("deploy", "-f", str(spec)).stdout]
    (task,) = cluster.wait_running("web", 1)

    env = cluster.cli("exec", "web", "--", "env")
    assert f"DATABASE_URL={VALUE}" in env.stdout
    assert f"API_KEY=k-{VALUE}" in env.stdout

    # Nowhere else: API responses, CLI output, events, the store file, moorage's logs.
    for path in (
        "/v1/services",
        "/v1/services/web",
        "/v1/tasks",
        f"/v1/tasks/{task['id']}",
        "/v1/taskdefs/web/1",
        "/v1/events",
        "/v1/secrets",
        "/v1/deployments",
        "/v1/openapi.json",
    ):
        assert VALUE not in cluster.http.get(path).text, path
    for args in (
        ("services",),
        ("ps", "-a"),
        ("events",),
        ("deployments", "web"),
        ("secret", "ls"),
    ):
        outputs.append(cluster.cli(*args).stdout)
    for text in outputs:
        assert VALUE not in text
    for store in cluster.root.rglob("state.db*"):
        assert VALUE.encode() not in store.read_bytes(), store
    assert VALUE not in cluster.server.output() and VALUE not in cluster.agent.output()
    assert VALUE.encode() not in b"".join(
        p.read_bytes() for p in (cluster.root / "node1").rglob("*") if p.is_file()
    )


def test_a_spec_referencing_an_unknown_secret_is_refused(cluster: Cluster) -> None:
    response = cluster.http.post(
        "/v1/services",
        content=http_spec(count=1, container="secrets: {TOKEN: nope}").encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "containers[0].secrets.TOKEN", "message": "no secret named 'nope'"}
    ]
    assert cluster.http.get("/v1/services").json() == []


def test_exec_into_a_process_task_gets_its_environment_and_exit_code(cluster: Cluster) -> None:
    set_secret(cluster, "token", VALUE)
    cluster.deploy(http_spec(count=1, container="secrets: {TOKEN: token}"))
    (task,) = cluster.wait_running("web", 1)
    out = cluster.cli("exec", task["id"], "--", "sh", "-c", 'echo "$TOKEN $MOORAGE_TASK_ID"; pwd')
    lines = out.stdout.splitlines()
    assert lines[0] == f"{VALUE} {task['id']}"
    assert lines[1].endswith(f"/alloc/{task['id']}/app")
    failed = cluster.cli("exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3", check=False)
    assert failed.returncode == 3 and "oops" in failed.stderr
    piped = cluster.cli("exec", "-i", "web", "--", "wc", "-c", input="12345")
    assert piped.stdout.strip() == "5"


def test_exec_into_a_container(cluster: Cluster, docker_image: str) -> None:
    cluster.deploy(f"""
service: box
containers: [{{name: app, image: "{docker_image}", command: [sleep, "300"], memory: 32}}]
deployment: {{min_healthy_time: 0s}}
""")
    (task,) = cluster.wait_running("box", 1)
    hostname = cluster.cli("exec", "box", "--", "cat", "/etc/hostname").stdout.strip()
    container_id = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=moorage.task={task['id']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hostname and container_id.startswith(hostname)
    result = cluster.cli("exec", "box", "--", "sh", "-c", "exit 3", check=False)
    assert result.returncode == 3
    missing = cluster.cli("exec", "nothing-here", "--", "true", check=False)
    assert missing.returncode == 1 and "nothing-here" in missing.stderr


def test_the_agent_answers_logs_and_exec_only_to_a_server(cluster: Cluster) -> None:
    """The server checks users (ACLs) and relays to the agent with its certificate; the agent's
    own port, reachable from the network in a cluster, refuses anyone without one: no
    certificate, the join token, or a node's certificate."""
    import ssl

    cluster.deploy(http_spec(count=1))
    (task,) = cluster.wait_running("web", 1)
    node = next(n for n in cluster.http.get("/v1/nodes").json() if n["name"] == task["node"])
    trusting = ssl.create_default_context(cafile=str(cluster.ca))
    url = f"https://{node['agent_addr']}"
    logs, run = f"/v1/tasks/{task['id']}/logs", f"/v1/tasks/{task['id']}/exec"
    with httpx.Client(base_url=url, verify=trusting, timeout=10) as agent:
        assert agent.get("/v1/health").status_code == 200
        for headers in ({}, {"Authorization": f"Bearer {cluster.token}"}):
            for path, params in ((logs, {}), (run, {"cmd": "true"})):
                answer = agent.get(path, params=params, headers=headers)
                assert answer.status_code == 403, (path, answer.text)
    with httpx.Client(base_url=url, verify=cluster.node_tls("n7"), timeout=10) as other_node:
        assert other_node.get(logs).status_code == 403
    server = cluster.root / "server" / "tls"
    trusting.load_cert_chain(server / "server.pem", server / "server.key")
    with httpx.Client(base_url=url, verify=trusting, timeout=10) as the_server:
        assert the_server.get(logs).status_code == 200
    # Through the server, users need no certificate: it relays with its own.
    assert cluster.cli("exec", task["id"], "--", "true").returncode == 0
    assert cluster.http.get(logs).status_code == 200
