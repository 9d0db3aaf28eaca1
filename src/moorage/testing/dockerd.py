"""Docker engines for the nodes of a netns test cluster: one `dockerd` with its own
`containerd` per node, inside the node's network namespace, as each machine of a real
cluster has its own engine.

    node namespace moorage-<tag>-n1                         host namespace
    ┌──────────────────────────────────────────┐
    │ containerd ◄── dockerd -H unix:///tmp/…  │◄── DOCKER_HOST of agent n1, `docker -H`
    │ docker0 172.18.1.1/24 (containers)       │
    │ veth 10.X.Y.11 ──────────────────────────┼──── bridge 10.X.Y.1 ── Registry 10.X.Y.1:port
    └──────────────────────────────────────────┘

What a test gets from it:
- each node has its own image store: an image built on one node is on no other until it is
  pushed to the `Registry` (plain HTTP: `--insecure-registry`) and pulled;
- `network_mode: host` containers live in the node's namespace, on the node's address, so the
  same port on two nodes does not clash;
- published ports are DNAT rules in the node's namespace (dockerd writes its iptables rules
  into the namespace it runs in), reachable at the node's address from the host.

Only the network is private: the engines share the machine's filesystem, cgroups and PIDs.
Each keeps its state (data-root, exec-root, pidfile, sockets, configs) in a short folder
`/tmp/<namespace>` (unix socket paths end at 108 bytes), clear of the machine's own engine
(/var/lib/docker, /var/run/docker.pid, /etc/docker/daemon.json), and its logs in `logs`.

Why a containerd of its own: dockerd (20.10) uses the system containerd whenever
/run/containerd/containerd.sock exists; that one lives in the host namespace, and the
host-network containers it starts would too. So each engine starts containerd in the node's
namespace and hands it to dockerd with `--containerd`.

Measured on 2 cores, ext4: an engine answers `/_ping` 0.26 s after its start (two start at
once), holds 110 MB RSS idle (dockerd 72 MB, containerd 37 MB) and stops in 0.2 s with its
containers; the registry holds 24 MB. With the test image (2 MB) an import, a push and a pull
take ~0.2 s each on overlay2 and on vfs alike.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from .network import Network, netns_supported
from .registry import Registry, registry_supported

__all__ = ["NodeEngine", "NodeEngines", "node_engines_supported"]

# Tried in turn: overlay2 needs a backing filesystem that supports it (ext4, xfs; not an
# overlay root as in some CI containers), vfs works on anything (a full copy per layer).
STORAGE_DRIVERS = ("overlay2", "vfs")


def node_engines_supported() -> str | None:
    """Why node engines cannot run here, or None when they can."""
    why = netns_supported() or registry_supported()
    if why is not None:
        return why
    for tool in ("dockerd", "containerd", "docker"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install docker.io)"
    return None


class NodeEngine:
    """One dockerd and its containerd in network namespace `namespace`, started and stopped
    by pid. `host` is its DOCKER_HOST value (`unix://…`)."""

    def __init__(
        self,
        namespace: str,
        logs: Path,
        *,
        bridge_ip: str,
        insecure_registries: Sequence[str] = (),
    ) -> None:
        self.namespace = namespace
        self.logs = logs
        self.bridge_ip = bridge_ip  # `--bip`: docker0 inside the namespace
        self.insecure_registries = list(insecure_registries)
        self.state = Path(tempfile.gettempdir()) / namespace
        self.socket = self.state / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.storage_driver = STORAGE_DRIVERS[0]
        self._created = False  # whether `state` is ours to remove
        self._containerd: subprocess.Popen[bytes] | None = None
        self._dockerd: subprocess.Popen[bytes] | None = None

    # ---- start ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> NodeEngine:
        """Start containerd and dockerd; return once the engine answers `/_ping`. On failure
        everything started is stopped and the error carries the log's tail."""
        try:
            self.state.mkdir(mode=0o700)  # a crashed run's leftover is an error, never reused
            self._created = True
            self.logs.mkdir(parents=True, exist_ok=True)
            (self.state / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
            (self.state / "containerd.toml").write_text(self._containerd_config())
            config = str(self.state / "containerd.toml")
            self._containerd = self._spawn(["containerd", "--config", config], "containerd")
            self._dockerd = self._spawn(self._dockerd_args(), "dockerd")
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _containerd_config(self) -> str:
        # containerd keeps its content under `root`, its tasks under `state`; the CRI plugin
        # (Kubernetes) is the heaviest and dockerd does not use it
        return (
            "version = 2\n"
            f'root = "{self.state}/containerd"\n'
            f'state = "{self.state}/containerd-state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.state}/containerd.sock"\n'
        )

    def _dockerd_args(self) -> list[str]:
        args = [
            "dockerd",
            *("--config-file", str(self.state / "daemon.json")),
            *("--data-root", str(self.state / "docker")),
            *("--exec-root", str(self.state / "exec")),
            *("--pidfile", str(self.state / "dockerd.pid")),  # not /var/run/docker.pid
            *("-H", self.host),
            *("--containerd", str(self.state / "containerd.sock")),
            *("--bip", self.bridge_ip),
            *("--storage-driver", self.storage_driver),
        ]
        for registry in self.insecure_registries:
            args += ["--insecure-registry", registry]
        return args

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        """Start `args` inside the namespace (nsenter execs: the pid is the program's)."""
        with (self.logs / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.namespace}", "--", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._answers():
            assert self._containerd is not None and self._dockerd is not None
            if self._containerd.poll() is not None:
                raise RuntimeError(f"containerd in {self.namespace} exited:\n{self._tail()}")
            if self._dockerd.poll() is not None:
                self._next_storage_driver()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd in {self.namespace} did not answer within {timeout}s:\n{self._tail()}"
                )
            time.sleep(0.05)

    def _next_storage_driver(self) -> None:
        """dockerd exited while starting: try the next storage driver, or give up."""
        tried = STORAGE_DRIVERS.index(self.storage_driver)
        if tried + 1 == len(STORAGE_DRIVERS):
            raise RuntimeError(f"dockerd in {self.namespace} exited:\n{self._tail()}")
        with (self.logs / "dockerd.log").open("a") as log:
            log.write(f"--- {self.storage_driver} failed: starting again with the next\n")
        self.storage_driver = STORAGE_DRIVERS[tried + 1]
        self._dockerd = self._spawn(self._dockerd_args(), "dockerd")

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, timeout=1) as client:
            try:
                return client.get("http://docker/_ping").status_code == 200
            except httpx.HTTPError:
                return False

    def _tail(self, lines: int = 15) -> str:
        tails = []
        for name in ("containerd", "dockerd"):
            path = self.logs / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            tails.append(f"--- {path}:\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)

    # ---- use -----------------------------------------------------------------------------
    def docker(
        self, *args: str, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine (`docker -H <host> ARGS`)."""
        result = subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} on {self.namespace} exited {result.returncode}: "
                f"{result.stderr.strip()}"
            )
        return result

    def pids(self) -> list[int]:
        """dockerd's and containerd's pids, for a test's memory or CPU figures."""
        procs = (self._dockerd, self._containerd)
        return [p.pid for p in procs if p is not None and p.poll() is None]

    # ---- stop ----------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> None:
        """Remove its containers, stop dockerd then containerd (by pid), kill what outlived
        them, unmount and remove its state; the logs stay. Safe to call more than once."""
        if self._dockerd is not None and self._dockerd.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                ids = self.docker("ps", "-aq", timeout=timeout).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=timeout)
        _terminate(self._dockerd, timeout)
        _terminate(self._containerd, timeout)
        if self._created:
            self._kill_shims()
            _unmount_under(self.state)
            shutil.rmtree(self.state, ignore_errors=True)
            self._created = False

    def _kill_shims(self) -> None:
        """Container shims (and their containers) outlive containerd by design: after a
        wedged dockerd, kill the ones of this engine's containerd."""
        address = str(self.state / "containerd.sock")
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and "containerd-shim" in cmdline[0] and address in cmdline:
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        child.kill()
                    proc.kill()


class NodeEngines:
    """The engines of a netns cluster's nodes and the registry they share, on the bridge's
    gateway (every namespace reaches it), started and stopped together."""

    def __init__(self, network: Network, logs: Path) -> None:
        self.network = network
        self.logs = logs
        self.registry = Registry(logs / "registry", host=network.gateway)
        self.engines: dict[str, NodeEngine] = {}

    def add(self, node: str) -> NodeEngine:
        """An engine for `node` (already added to the network), to be started by `start`."""
        engine = NodeEngine(
            self.network.nodes[node].namespace,
            self.logs / f"engine-{node}",
            bridge_ip=_bridge_ip(len(self.engines) + 1),
            insecure_registries=[self.registry.address],
        )
        self.engines[node] = engine
        return engine

    def __getitem__(self, node: str) -> NodeEngine:
        return self.engines[node]

    def start(self, timeout: float = 30.0) -> None:
        """The registry, then every engine at once (a start is mostly waiting)."""
        try:
            self.registry.start()
            with ThreadPoolExecutor(max(len(self.engines), 1)) as pool:
                for _ in pool.map(lambda e: e.start(timeout), self.engines.values()):
                    pass
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with ThreadPoolExecutor(max(len(self.engines), 1)) as pool:
            for _ in pool.map(lambda e: e.stop(), self.engines.values()):
                pass
        self.registry.stop()


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM (dockerd and containerd shut down cleanly on it), SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _unmount_under(folder: Path) -> None:
    """What dockerd leaves mounted after it exits (its default sandbox's netns bind mount
    under exec-root; layers after a SIGKILL), deepest first, lazily."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    mine = str(folder) + "/"
    for point in sorted((p for p in points if p.startswith(mine)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)


def _bridge_ip(number: int) -> str:
    """docker0 of engine `number`: 172.<18..31>.<number>.1/24, clear of the host's own
    addresses (docker0 is 172.17.0.1/16) and of the cluster's 10.x.y.0/24, different per node
    so that a container's address in a log names its node."""
    listed = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10
    ).stdout
    used = [ipaddress.IPv4Interface(word).network for word in listed.split() if "/" in word]
    for second in range(18, 32):
        subnet = ipaddress.IPv4Network(f"172.{second}.{number}.0/24")
        if not any(subnet.overlaps(other) for other in used):
            return f"{subnet.network_address + 1}/24"
    raise RuntimeError(f"no free 172.x.{number}.0/24 for the bridge of engine {number}")
