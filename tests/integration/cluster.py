"""Integration test helpers: the public test cluster (`moorage.testing.cluster`) and the test
HTTP server as a service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from moorage.testing.cluster import (
    MOORAGE,
    AgentSpec,
    Cluster,
    Proc,
    free_port,
    kill_tasks_under,
    remove_containers,
    task_processes,
    wait_for,
)

__all__ = [
    "MOORAGE",
    "REPO",
    "AgentSpec",
    "Cluster",
    "Proc",
    "containers_of",
    "dev_command",
    "free_port",
    "http_spec",
    "kill_tasks_under",
    "page",
    "pid_alive",
    "remove_containers",
    "task_processes",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]
HTTPSERVER = REPO / "tests" / "fixtures" / "httpserver.py"


def dev_command(data: Path, http_port: int, agent_port: int | None = None) -> list[str]:
    """`moorage dev --demo` on loopback ports of its own (the demo from examples/)."""
    return [
        *MOORAGE,
        "dev",
        "--demo",
        "--demo-dir",
        str(REPO / "examples"),
        "--data-dir",
        str(data),
        "--http-addr",
        f"127.0.0.1:{http_port}",
        "--agent-addr",
        f"127.0.0.1:{agent_port or free_port()}",
        "--dns-addr",
        f"127.0.0.1:{free_port()}",
        "--cluster-addr",
        f"127.0.0.1:{free_port()}",
    ]


def page(url: str) -> str | None:
    """The body of a 200 answer from url, or None (nothing listens yet, an error status):
    a task is running once its process started; the server in it listens a moment later."""
    try:
        answer = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return answer.text if answer.status_code == 200 else None


def http_spec(
    name: str = "web", count: int = 3, memory: int = 64, extra: str = "", container: str = ""
) -> str:
    """The test HTTP server as a service; `container` adds keys to its container (YAML)."""
    inner = "".join(f"    {line}\n" for line in container.strip().splitlines())
    return f"""
service: {name}
count: {count}
containers:
  - name: app
    command: ["{sys.executable}", "{HTTPSERVER}"]
    cpu: 50
    memory: {memory}
    ports: [{{name: http}}]
    stop_timeout: 3s
{inner}{extra}
"""


def containers_of(node: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=moorage.node={node}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False
