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
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

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


# ---- network namespaces ---------------------------------------------------------------------
def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def netns_supported() -> str | None:
    """Why a netns cluster cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2, util-linux)"
    return None


@dataclass
class NodeLink:
    namespace: str
    address: str
    host_end: str  # the veth end on the bridge, in the host namespace (cut/heal toggle it)
    inner_end: str


class Network:
    """A bridge in the host namespace and one namespace per node, on a fresh /24."""

    def __init__(self) -> None:
        why = netns_supported()
        if why is not None:
            raise RuntimeError(why)
        self.tag = f"{random.getrandbits(16):04x}"
        self.bridge = f"mg{self.tag}br"
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.nodes: dict[str, NodeLink] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except Exception:
            self.destroy()
            raise

    def add(self, name: str, number: int) -> NodeLink:
        link = NodeLink(
            namespace=f"moorage-{self.tag}-n{number}",
            address=str(self.subnet.network_address + 10 + number),
            host_end=f"mg{self.tag}h{number}",
            inner_end=f"mg{self.tag}n{number}",
        )
        self.nodes[name] = link
        _ip("netns", "add", link.namespace)
        _ip("link", "add", link.host_end, "type", "veth", "peer", "name", link.inner_end)
        _ip("link", "set", link.inner_end, "netns", link.namespace)
        _ip("link", "set", link.host_end, "master", self.bridge, "up")
        _ip("-n", link.namespace, "addr", "add", f"{link.address}/24", "dev", link.inner_end)
        _ip("-n", link.namespace, "link", "set", link.inner_end, "up")
        _ip("-n", link.namespace, "link", "set", "lo", "up")
        return link

    def prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside the node's namespace (network only:
        the node shares the machine's filesystem, cgroups and Docker engine)."""
        return ["nsenter", f"--net=/run/netns/{self.nodes[name].namespace}", "--"]

    def cut(self, name: str) -> None:
        _ip("link", "set", self.nodes[name].host_end, "down")

    def heal(self, name: str) -> None:
        _ip("link", "set", self.nodes[name].host_end, "up")

    def destroy(self) -> None:
        """Remove the namespaces (their veth pairs go with them) and the bridge."""
        for link in self.nodes.values():
            subprocess.run(["ip", "netns", "del", link.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", link.host_end], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.nodes.clear()


def _free_subnet() -> ipaddress.IPv4Network:
    listed = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    used = [ipaddress.IPv4Interface(word).network for word in listed.split() if "/" in word]
    for _ in range(200):
        subnet = ipaddress.IPv4Network(
            f"10.{random.randrange(200, 250)}.{random.randrange(256)}.0/24"
        )
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test network")


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
        server_args: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.network = Network() if netns else None
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
        self.dns_port = free_port()  # the server's DNS (UDP and TCP) on 127.0.0.1
        self.addr = f"http://{host}:{self.http_port}"
        self.shared_volume_root = self.root / "shared-volumes"  # what every node mounts
        self.env = {"MOORAGE_ADDR": self.addr}
        self.server = Proc(
            [
                *MOORAGE,
                "server",
                "--data-dir",
                str(self.root / "server"),
                "--http-addr",
                f"{host}:{self.http_port}",
                "--dns-addr",
                f"127.0.0.1:{self.dns_port}",
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
        self.http = httpx.Client(base_url=self.addr, timeout=30)
        self.token = ""

    def _agent(self, number: int, spec: AgentSpec) -> Proc:
        if self.network is not None:
            link = self.network.add(spec.name, number)
            address, port, prefix = link.address, AGENT_PORT, self.network.prefix(spec.name)
        else:
            address, port, prefix = "127.0.0.1", free_port(), []
        self.addresses[spec.name] = address
        args = [
            *MOORAGE,
            "agent",
            "--server",
            self.addr,
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
            cwd=self.root,
            prefix=prefix,
        )

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.server.start()
            self.token = (self.root / "server" / "join-token").read_text().strip()
            for agent in self.agents:
                agent.env["MOORAGE_TOKEN"] = self.token
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
        for agent in self.agents:
            agent.stop()
        self.server.stop()
        self.http.close()
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

    # ---- helpers ---------------------------------------------------------------------------
    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `moorage ARGS` against this cluster."""
        result = subprocess.run(
            [*MOORAGE, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            input=input,
            timeout=60,
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
