"""A moorage cluster on one machine, for tests, benchmarks and demos.

    with Cluster(tmp_path, agents=3, netns=True) as cluster:   # root: one namespace per agent
        cluster.deploy(spec)
        cluster.kill("n2")                                     # SIGKILL the agent
        cluster.freeze("n3"); cluster.thaw("n3")               # SIGSTOP / SIGCONT
        cluster.cut("n1"); cluster.heal("n1")                  # its link down / up

One `moorage server` process and N `moorage agent` processes, each with its own data dir under
`root` and its own log file (`server.log`, `agent<i>.log`). Agent i is node `n<i>` with
`zone=a|b|c` in turn, unless `agents` lists `AgentSpec`s.

With `netns=True` (root, Linux, `ip` and `nsenter`) each agent lives in its own network
namespace (`moorage-<tag>-n<i>`), joined to the server by a veth pair on a bridge (`mg<tag>br`)
in the host namespace: the server listens on the bridge's address, agent i on `10.X.Y.(10+i)`,
and the process-driver tasks it starts share its namespace, so they listen on their node's IP.
`cut` sets the host end of the agent's veth down: the agent and its tasks lose the network,
nothing else changes. Every agent keeps its `shared` volumes under one common
`<root>/shared-volumes` (`--shared-volume-root`), as the nodes of a real cluster share an NFS
export; `AgentSpec.args` adds options such as `--volume-lease 2s`. Everything the cluster created is removed by `stop()`: processes (by pid,
and task processes by their working directory under `root`), namespaces, links.

With `node_engines=True` as well, each node gets a Docker engine of its own inside its
namespace (its agent's DOCKER_HOST; `docker_host(node)`), and the engines share an image
registry on the bridge (`engines.registry`): see `moorage.testing.dockerd`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from .dockerd import NodeEngines
from .network import Network, NodeLink, netns_supported

__all__ = [
    "MOORAGE",
    "AgentSpec",
    "Cluster",
    "Network",
    "NodeLink",
    "Proc",
    "free_port",
    "kill_tasks_under",
    "netns_supported",
    "remove_containers",
    "task_processes",
    "wait_for",
]

MOORAGE = [sys.executable, "-m", "moorage"]
AGENT_PORT = 7071  # inside its own namespace every agent can use the default port


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout`."""
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
    """One moorage process whose output goes to a file; started, stopped and killed by pid.

    `start` returns once the process printed a line `ready`."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.args = args
        self.prefix = list(prefix)  # e.g. nsenter into a namespace; it execs, so pids match
        self.log_path = log_path
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, ready_timeout: float = 20.0) -> Proc:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [*self.prefix, *self.args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
        )
        wait_for(lambda: self._ready_since(offset), ready_timeout, 0.05, f"{self.args[3:5]} ready")
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
        """SIGKILL, and reap."""
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGCONT)  # a frozen process dies as well
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self.log.close()

    def freeze(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT (a clean shutdown), SIGKILL after `timeout`; the exit code."""
        if self.popen is None or self.popen.poll() is not None:
            if self.popen is not None:
                self.log.close()
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGCONT)
        self.popen.send_signal(signal.SIGINT)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(10)
        self.log.close()
        return code


# ---- the cluster ----------------------------------------------------------------------------
@dataclass
class AgentSpec:
    """One agent of a test cluster: node name, attributes, and what it offers."""

    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    cpu: int | None = None
    memory: int | None = None
    args: list[str] = field(default_factory=list)
    # True: no --advertise nor --agent-addr, the agent picks its defaults as a user's would
    # (in a namespace: its IP, port 7071; without one 127.0.0.1:7071, for one agent at most).
    auto_address: bool = False


def default_agents(count: int, memory: int | None = None) -> list[AgentSpec]:
    """n1..n<count>, in zones a, b, c in turn."""
    return [
        AgentSpec(f"n{i}", {"zone": "abc"[(i - 1) % 3]}, memory=memory) for i in range(1, count + 1)
    ]


class Cluster:
    """A server process and agent processes, in a temporary data dir `root`."""

    def __init__(
        self,
        root: Path,
        agent_memory: int | None = None,
        agents: int | Sequence[AgentSpec] = 1,
        *,
        netns: bool = False,
        node_engines: bool = False,
        server_args: Sequence[str] = (),
    ) -> None:
        self.root = root
        assert netns or not node_engines, "node engines live in the nodes' namespaces: netns=True"
        self.network = Network() if netns else None
        self.engines = NodeEngines(self.network, root) if self.network and node_engines else None
        try:
            self._setup(agent_memory, agents, server_args)
        except BaseException:
            if self.network is not None:
                self.network.destroy()
            raise

    def _setup(
        self,
        agent_memory: int | None,
        agents: int | Sequence[AgentSpec],
        server_args: Sequence[str],
    ) -> None:
        host = self.network.gateway if self.network else "127.0.0.1"
        self.http_port = free_port(host)
        self.cluster_port = free_port(host)
        self.dns_port = free_port()  # the server's DNS (UDP and TCP) on 127.0.0.1
        # Beyond loopback (a netns cluster) the API speaks HTTPS: clients trust the cluster CA.
        self.tls = self.network is not None
        self.addr = f"{'https' if self.tls else 'http'}://{host}:{self.http_port}"
        self.cluster_url = f"https://{host}:{self.cluster_port}"  # the nodes' port (mTLS)
        self.ca = self.root / "server" / "tls" / "ca.pem"
        self.token_file = self.root / "server" / "join-token"
        self.shared_volume_root = self.root / "shared-volumes"  # what every node mounts
        self.env = {"MOORAGE_ADDR": self.addr}
        if self.tls:
            self.env["MOORAGE_CACERT"] = str(self.ca)
        insecure = ["--insecure"] if self.tls and "--acl" not in server_args else []
        self.server = Proc(
            [
                *MOORAGE,
                "server",
                "--data-dir",
                str(self.root / "server"),
                "--http-addr",
                f"{host}:{self.http_port}",
                "--cluster-addr",
                f"{host}:{self.cluster_port}",
                "--dns-addr",
                f"127.0.0.1:{self.dns_port}",
                *insecure,
                *server_args,
            ],
            self.root / "server.log",
            cwd=self.root,
        )
        specs = default_agents(agents, agent_memory) if isinstance(agents, int) else list(agents)
        self.specs = {spec.name: spec for spec in specs}
        self.addresses: dict[str, str] = {}
        self.agents = [self._agent(i, spec) for i, spec in enumerate(specs, start=1)]
        self.by_name = {spec.name: proc for spec, proc in zip(specs, self.agents, strict=True)}
        self.agent = self.agents[0]
        self.http = httpx.Client(base_url=self.addr, timeout=30)  # made anew once started
        self.token = ""
        self._nodes: list[httpx.Client] = []
        self._stopping = threading.Event()

    def _agent(self, number: int, spec: AgentSpec) -> Proc:
        if self.network is not None:
            link = self.network.add(spec.name, number)
            address, port, prefix = link.address, AGENT_PORT, self.network.prefix(spec.name)
        else:
            address, port, prefix = "127.0.0.1", free_port(), []
        self.addresses[spec.name] = address
        env = {"DOCKER_HOST": self.engines.add(spec.name).host} if self.engines else None
        args = [
            *MOORAGE,
            "agent",
            "--server",
            self.cluster_url,
            "--token-file",
            str(self.token_file),
            "--name",
            spec.name,
            "--data-dir",
            str(self.root / f"node{number}"),
            "--shared-volume-root",
            str(self.shared_volume_root),
        ]
        if not spec.auto_address:
            args += ["--agent-addr", f"{address}:{port}", "--advertise", address]
        for key, value in spec.attrs.items():
            args += ["--attr", f"{key}={value}"]
        if spec.cpu:
            args += ["--cpu", str(spec.cpu)]
        if spec.memory:
            args += ["--memory", str(spec.memory)]
        return Proc(
            [*args, *spec.args],
            self.root / f"agent{number}.log",
            env=env,
            cwd=self.root,
            prefix=prefix,
        )

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        try:
            if self.engines is not None:
                self.engines.start()
            self.server.start()
            self.token = self.token_file.read_text().strip()
            self.http.close()
            self.http = self.client()
            for agent in self.agents:
                agent.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process, then what outlives them by design (tasks, containers), then
        the network."""
        self._stopping.set()
        for agent in self.agents:
            agent.stop()
        if self.engines is not None:  # with their containers, before task processes are hunted
            self.engines.stop()
        self.server.stop()
        self.http.close()
        for client in self._nodes:
            client.close()
        kill_tasks_under(self.root)
        for name in self.specs:
            remove_containers(name)
        unmount_under(self.root)
        if self.network is not None:
            self.network.destroy()

    # ---- faults ----------------------------------------------------------------------------
    def kill(self, node: str) -> None:
        """SIGKILL the node's agent (its tasks keep running, as on a machine whose agent died)."""
        self.by_name[node].kill9()

    def restart(self, node: str) -> None:
        """Start the node's agent again (after `kill`)."""
        self.by_name[node].start()

    def freeze(self, node: str) -> None:
        """SIGSTOP the node's agent."""
        self.by_name[node].freeze()

    def thaw(self, node: str) -> None:
        """SIGCONT the node's agent."""
        self.by_name[node].thaw()

    def cut(self, node: str) -> None:
        """Take the node off the network (netns clusters only)."""
        assert self.network is not None, "cut/heal need Cluster(..., netns=True)"
        self.network.cut(node)

    def heal(self, node: str) -> None:
        assert self.network is not None, "cut/heal need Cluster(..., netns=True)"
        self.network.heal(node)

    # ---- clients ---------------------------------------------------------------------------
    def management_token(self) -> str:
        """The management token a server started with --acl wrote on its first start."""
        return (self.root / "server" / "acl-bootstrap-token").read_text().strip()

    def client(self, **options: Any) -> httpx.Client:
        """An HTTP client of the API (trusting the cluster CA when the API speaks HTTPS)."""
        options.setdefault("timeout", 30)
        if self.tls:
            options.setdefault("verify", ssl.create_default_context(cafile=str(self.ca)))
        return httpx.Client(base_url=self.addr, **options)

    def as_node(self, name: str, **options: Any) -> httpx.Client:
        """A client of the cluster port holding a certificate for node `name`: it joins as
        that node with the join token, as an agent does on its first start."""
        options.setdefault("timeout", 30)
        client = httpx.Client(base_url=self.cluster_url, verify=self.node_tls(name), **options)
        self._nodes.append(client)
        return client

    def fake_node(self, name: str, memory: int = 1024) -> httpx.Client:
        """A node that joins and registers but runs nothing (tasks placed on it stay pending):
        for tests of what a node may ask for. Answers its client (`as_node`)."""
        node = self.as_node(name)
        body = {"name": name, "cpu": 1024, "memory": memory}
        node.put(f"/v1/nodes/{name}", json=body).raise_for_status()
        beating = self.as_node(name)  # its own connection: httpx clients are not thread-safe

        def heartbeat() -> None:  # stays ready until the cluster stops
            while not self._stopping.wait(1.0):
                # the server restarting, or the cluster stopping: try again, or end
                with contextlib.suppress(httpx.HTTPError, RuntimeError):
                    beating.post(f"/v1/nodes/{name}/heartbeat")

        threading.Thread(target=heartbeat, name=f"heartbeat-{name}", daemon=True).start()
        return node

    def task_on(self, node: str, service: str) -> str:
        """Deploy `service`, one sleeping process held on `node`; answer its task's id."""
        spec = (
            f"service: {service}\ncount: 1\n"
            f'placement: {{constraints: ["node.name == {node}"]}}\n'
            "containers:\n  - name: app\n    command: [sleep, '3600']\n"
            "    cpu: 10\n    memory: 16\n"
        )
        self.deploy(spec)

        def placed() -> tuple[str] | None:
            found = [t["id"] for t in self.tasks(service) if t.get("node") == node]
            return (found[0],) if found else None

        (task,) = wait_for(placed, 20, what=f"a task of {service} on {node}")
        return str(task)

    def node_tls(self, name: str) -> ssl.SSLContext:
        """A TLS context presenting a certificate for node `name` (joined with the token)."""
        from moorage.pki import key_and_csr

        context = ssl.create_default_context(cafile=str(self.ca))
        if name in self.specs:  # one of this cluster's agents: speak with its own certificate
            number = list(self.specs).index(name) + 1
            folder = self.root / f"node{number}" / "agent" / "tls"
            context.load_cert_chain(folder / "node.pem", folder / "node.key")
            return context
        folder = self.root / f"as-node-{name}"
        folder.mkdir(mode=0o700, exist_ok=True)
        if (folder / "node.pem").exists():  # joined before: the same key and certificate
            context.load_cert_chain(folder / "node.pem", folder / "node.key")
            return context
        key, csr = key_and_csr("node", name, ["127.0.0.1"])
        with httpx.Client(base_url=self.cluster_url, verify=context, timeout=30) as joining:
            answer = joining.post(
                "/v1/join",
                json={"name": name, "csr": csr.decode()},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        answer.raise_for_status()
        (folder / "node.key").write_bytes(key)
        (folder / "node.pem").write_text(answer.json()["certificate"])
        context.load_cert_chain(folder / "node.pem", folder / "node.key")
        return context

    def docker_host(self, node: str) -> str:
        """The DOCKER_HOST of the node's own engine (`node_engines=True`)."""
        assert self.engines is not None, "docker_host needs Cluster(..., node_engines=True)"
        return self.engines[node].host

    # ---- helpers ---------------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run `moorage ARGS` against this cluster (`env` on top: e.g. a node's DOCKER_HOST)."""
        result = subprocess.run(
            [*MOORAGE, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            input=input,
            timeout=timeout,
            cwd=self.root,
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

    def nodes(self) -> dict[str, str]:
        """Node name → status."""
        return {n["name"]: n["status"] for n in self.http.get("/v1/nodes").json()}

    def tasks(self, service: str) -> list[dict[str, Any]]:
        return list(self.http.get("/v1/tasks", params={"service": service}).json())

    def running(self, service: str) -> list[dict[str, Any]]:
        return [
            t for t in self.tasks(service) if t["desired"] == "run" and t["status"] == "running"
        ]

    def healthy(self, service: str) -> list[dict[str, Any]]:
        return [t for t in self.running(service) if t.get("health") in (None, "passing")]

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


def task_processes(root: Path, marker: str) -> list[psutil.Process]:
    """Processes whose command line contains `marker`, started by this cluster's agents (their
    working directories are inside `root`)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            mine = (proc.info["cwd"] or "").startswith(str(root) + os.sep)
            if marker in cmdline and mine and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def kill_tasks_under(root: Path) -> None:
    """Task processes outlive their agent by design; a test cluster kills the ones it started:
    executors and tasks, found by their working directory inside the cluster's data dir."""
    mine = str(root)
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if cwd.startswith(mine + os.sep) or (
            "moorage.drivers._executor" in cmdline and mine in cmdline
        ):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()


def unmount_under(root: Path) -> None:
    """Volumes the cluster's agents mounted and left mounted (a killed agent's tasks)."""
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    mine = str(root) + os.sep
    for point in sorted((p for p in points if p.startswith(mine)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def remove_containers(node: str) -> None:
    """The node's containers (they outlive the agent by design)."""
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
