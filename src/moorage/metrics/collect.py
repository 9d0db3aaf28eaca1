"""What a node and its workloads use, read where the kernel and the engine keep it.

    task cgroup (v2)   cpu.stat usage_usec · memory.stat anon · memory.max · cgroup.procs
    task cgroup (v1)   memory.stat total_rss · memory.limit_in_bytes · cgroup.procs
                       (+ cpuacct.usage when the task also has a cpuacct group)
    processes          psutil: CPU time and RSS of the cgroup's pids, or of a pid's tree
    Docker             one `stats` sample: cpu_stats.cpu_usage.total_usage, memory_stats
    node               psutil: CPU %, load, memory, disk of given paths, network counters

The parsers take text or dicts and are pure; the readers only read files and /proc. CPU % is
the growth of a cumulative CPU time between two samples (`CpuMeter`): percent of one core, as
`docker stats` and `top` show it (a task using two cores reads 200). The agent's loop
(`moorage.agent.metrics`) turns these into `Point`s (`moorage.metrics.model`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "CpuMeter",
    "NodeSample",
    "Usage",
    "cgroup_pids",
    "children_map",
    "docker_usage",
    "node_sample",
    "parse_cpu_stat_v2",
    "parse_limit",
    "parse_memory_stat",
    "process_usage",
    "read_cgroup",
    "tree_pids",
]

# cgroup v1 writes "no limit" as the largest page-aligned int64; anything this large is none.
UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Usage:
    """One workload's figures; None where the source does not say."""

    cpu_seconds: float | None = None  # cumulative CPU time, user + system
    rss_bytes: int | None = None  # resident anonymous memory
    limit_bytes: int | None = None  # the enforced memory limit


# ---- cgroups ---------------------------------------------------------------------------------
def parse_memory_stat(text: str) -> dict[str, int]:
    """`memory.stat` (v1 or v2): `key value` lines → a dict (malformed lines skipped)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def parse_cpu_stat_v2(text: str) -> float | None:
    """cgroup v2 `cpu.stat` → CPU seconds (from `usage_usec`)."""
    usec = parse_memory_stat(text).get("usage_usec")
    return None if usec is None else usec / 1e6


def parse_limit(text: str) -> int | None:
    """`memory.max` (v2: a number or `max`) or `memory.limit_in_bytes` (v1) → bytes or None."""
    value = text.strip()
    if not value.isdigit():
        return None
    limit = int(value)
    return None if limit >= UNLIMITED else limit


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # gone (the task ended), or not there on this kernel
        return None


def cgroup_pids(path: str) -> list[int]:
    """The pids in a cgroup (`cgroup.procs`); empty when it is gone."""
    text = _read(Path(path, "cgroup.procs")) or ""
    return [int(pid) for pid in text.split() if pid.isdigit()]


def _v1_cpuacct(memory_group: Path) -> Path | None:
    """The v1 cpuacct group with the same relative path as a memory group, if there is one."""
    parts = memory_group.parts
    if "memory" not in parts:
        return None
    at = parts.index("memory")
    for hierarchy in ("cpuacct", "cpu,cpuacct"):
        candidate = Path(*parts[:at], hierarchy, *parts[at + 1 :], "cpuacct.usage")
        if candidate.exists():
            return candidate
    return None


def read_cgroup(path: str) -> Usage:
    """A task's cgroup: v2 (a `memory.current` file) or v1 (the memory hierarchy)."""
    group = Path(path)
    stat = parse_memory_stat(_read(group / "memory.stat") or "")
    if (group / "memory.current").exists():
        cpu_text = _read(group / "cpu.stat")
        return Usage(
            cpu_seconds=parse_cpu_stat_v2(cpu_text) if cpu_text else None,
            rss_bytes=stat.get("anon"),
            limit_bytes=parse_limit(_read(group / "memory.max") or ""),
        )
    cpuacct = _v1_cpuacct(group)
    usage_ns = _read(cpuacct) if cpuacct else None
    return Usage(
        cpu_seconds=int(usage_ns) / 1e9 if usage_ns and usage_ns.strip().isdigit() else None,
        rss_bytes=stat.get("total_rss", stat.get("rss")),
        limit_bytes=parse_limit(_read(group / "memory.limit_in_bytes") or ""),
    )


# ---- processes ---------------------------------------------------------------------------------
def children_map() -> dict[int, list[int]]:
    """ppid → pids of every process on the machine (one pass; for `tree_pids`)."""
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(int(proc.info["ppid"] or 0), []).append(proc.pid)
    return children


def tree_pids(root: int, children: Mapping[int, list[int]]) -> list[int]:
    """`root` and its descendants, from a ppid → pids map."""
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def process_usage(pids: Iterable[int]) -> Usage:
    """CPU time and RSS summed over processes (psutil); those gone meanwhile are skipped."""
    cpu, rss, seen = 0.0, 0, False
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                rss += proc.memory_info().rss
            cpu += times.user + times.system
            seen = True
    return Usage(cpu, rss) if seen else Usage()


# ---- Docker ------------------------------------------------------------------------------------
def docker_usage(sample: Mapping[str, Any]) -> Usage:
    """One sample of the engine's `GET /containers/<id>/stats?stream=0` (cgroup v1 or v2)."""
    cpu = sample.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
    memory = sample.get("memory_stats") or {}
    stats = memory.get("stats") or {}
    rss = stats.get("rss", stats.get("anon"))  # v1 names it rss, v2 anon
    if rss is None and "usage" in memory:  # older engines: usage minus the page cache
        rss = max(int(memory["usage"]) - int(stats.get("cache", stats.get("inactive_file", 0))), 0)
    limit = memory.get("limit")
    return Usage(
        cpu_seconds=int(cpu) / 1e9 if cpu is not None else None,
        rss_bytes=int(rss) if rss is not None else None,
        limit_bytes=int(limit) if limit and int(limit) < UNLIMITED else None,
    )


# ---- CPU % -------------------------------------------------------------------------------------
class CpuMeter:
    """CPU % of one core from cumulative CPU seconds: the growth since the previous sample of
    the same key over the wall time between them. The first sample of a key only primes it;
    a counter that went backwards (the workload restarted) primes it again."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[float, float]] = {}

    def percent(self, key: Hashable, cpu_seconds: float, now: float) -> float | None:
        last = self._last.get(key)
        self._last[key] = (now, cpu_seconds)
        if last is None or now <= last[0] or cpu_seconds < last[1]:
            return None
        return 100.0 * (cpu_seconds - last[1]) / (now - last[0])

    def keep(self, keys: Iterable[Hashable]) -> None:
        """Forget every key but these (workloads that ended)."""
        wanted = set(keys)
        for key in [k for k in self._last if k not in wanted]:
            del self._last[key]


# ---- the node ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeSample:
    cpu_percent: float  # of the whole machine, 0..100, since the previous call
    load1: float
    memory_used: int
    memory_available: int
    disks: dict[str, tuple[int, int]] = field(default_factory=dict)  # path → (used, free)
    network: dict[str, tuple[int, int]] = field(default_factory=dict)  # iface → (rx, tx)


def _counted(interface: str) -> bool:
    """Loopback and containers' veth ends would only add noise (and a series per container)."""
    return interface != "lo" and not interface.startswith("veth")


def node_sample(paths: Iterable[Path]) -> NodeSample:
    """The node now. The first call's CPU % is meaningless (psutil compares with the previous
    call): call once at start and drop it."""
    memory = psutil.virtual_memory()
    disks: dict[str, tuple[int, int]] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            usage = psutil.disk_usage(str(path))
            disks[str(path)] = (int(usage.used), int(usage.free))
    network = {
        name: (int(c.bytes_recv), int(c.bytes_sent))
        for name, c in psutil.net_io_counters(pernic=True).items()
        if _counted(name)
    }
    return NodeSample(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        load1=float(os.getloadavg()[0]),
        memory_used=int(memory.total - memory.available),
        memory_available=int(memory.available),
        disks=disks,
        network=network,
    )
