"""Real moorage processes for integration tests: a server and agents, each its own process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
MOORAGE = [sys.executable, "-m", "moorage"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}"
    )


class Proc:
    """One moorage process whose output goes to a file; started, stopped and killed by pid."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 20.0) -> Proc:
        self.log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
        )
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        wait_for(lambda: self._ready_since(start), ready_timeout, 0.05, f"{self.args[3:5]} ready")
        return self

    def _ready_since(self, offset: int) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.args} exited with {self.popen.returncode}:\n{self.output()}"
            )
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return b"\nready\n" in b"\n" + f.read()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self.log.close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGINT)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(10)
        self.log.close()
        return code


class Cluster:
    """A server process and one agent process on loopback, in a temporary data dir."""

    def __init__(self, root: Path, agent_memory: int | None = None, agents: int = 1) -> None:
        self.root = root
        self.http_port = free_port()
        self.agent_port = free_port()
        self.addr = f"http://127.0.0.1:{self.http_port}"
        self.env = {"MOORAGE_ADDR": self.addr}
        self.server = Proc(
            [
                *MOORAGE,
                "server",
                "--data-dir",
                str(root / "server"),
                "--http-addr",
                f"127.0.0.1:{self.http_port}",
                "--dns-addr",
                f"127.0.0.1:{free_port()}",
            ],
            root / "server.log",
        )
        extra = ["--memory", str(agent_memory)] if agent_memory else []
        self.agents = [self._agent(i, extra) for i in range(1, agents + 1)]
        self.agent = self.agents[0]
        self.http = httpx.Client(base_url=self.addr, timeout=30)

    def _agent(self, number: int, extra: list[str]) -> Proc:
        """Agent n<number>, zone a/b/c in turn, its own data dir and port."""
        return Proc(
            [
                *MOORAGE,
                "agent",
                "--server",
                self.addr,
                "--name",
                f"n{number}",
                "--data-dir",
                str(self.root / f"node{number}"),
                "--agent-addr",
                f"127.0.0.1:{free_port()}",
                "--attr",
                f"zone={'abc'[(number - 1) % 3]}",
                *extra,
            ],
            self.root / f"agent{number}.log",
        )

    def start(self) -> Cluster:
        self.server.start()
        self.token = (self.root / "server" / "join-token").read_text().strip()
        for agent in self.agents:
            agent.env["MOORAGE_TOKEN"] = self.token
            agent.start()
        return self

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.stop()
        self.http.close()
        kill_tasks_under(self.root)
        for number in range(1, len(self.agents) + 1):
            remove_containers(f"n{number}")

    # ---- helpers -----------------------------------------------------------------------
    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*MOORAGE, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            input=input,
            timeout=60,
            cwd=REPO,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"moorage {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def deploy(self, spec: str) -> Any:
        response = self.http.post(
            "/v1/services", content=spec.encode(), headers={"Content-Type": "application/yaml"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    def tasks(self, service: str) -> list[dict[str, Any]]:
        return list(self.http.get("/v1/tasks", params={"service": service}).json())

    def running(self, service: str) -> list[dict[str, Any]]:
        return [
            t for t in self.tasks(service) if t["desired"] == "run" and t["status"] == "running"
        ]

    def wait_running(self, service: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        def check() -> tuple[list[dict[str, Any]]] | None:
            live = [t for t in self.tasks(service) if t["desired"] == "run"]
            running = [t for t in live if t["status"] == "running"]
            return (running,) if len(running) == count and len(live) == count else None

        result: tuple[list[dict[str, Any]]] = wait_for(
            check, timeout, what=f"{count} running tasks of {service}"
        )
        return result[0]

    def events(self) -> list[dict[str, Any]]:
        return list(self.http.get("/v1/events").json())


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
    command: ["{sys.executable}", "{REPO / "tests" / "fixtures" / "httpserver.py"}"]
    cpu: 50
    memory: {memory}
    ports: [{{name: http}}]
    stop_timeout: 3s
{inner}{extra}
"""


def kill_tasks_under(root: Path) -> None:
    """Task processes outlive their agent by design; a test cluster kills the ones it started:
    executors and tasks, found by their working directory inside the cluster's data dir."""
    mine = str(root)
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if cwd.startswith(mine) or ("moorage.drivers._executor" in cmdline and mine in cmdline):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()


def remove_containers(node: str) -> None:
    """The test agent's containers (they outlive the agent by design)."""
    if shutil.which("docker") is None:
        return
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=moorage.node={node}"],
        capture_output=True,
        text=True,
    )
    ids = listed.stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


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
