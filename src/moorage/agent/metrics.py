"""The agent's metrics: sample the node and its workloads, send batches, buffer when unheard.

    AgentMetrics.run() task group
     ├ local loop    every --metrics-interval: node figures, process tasks (cgroup + psutil),
     │               health, restarts, the buffer's own counters   (sampled in a thread)
     ├ docker loop   every interval: one `stats` call per container, all at once, each with
     │               a timeout — a hung engine costs its own loop a timeout, never the others
     └ sender        POST /v1/metrics/ingest: what the disk buffer holds first (oldest first),
                     then what was collected since; on failure everything pending goes to disk

The disk buffer (`MetricsBuffer`, `<data dir>/metrics-buffer/`) is bounded in bytes: when full,
the oldest batches are dropped first and counted. The count is never silent: it is logged once
per outage and sent as `Batch.dropped` with the next batch the server takes (the server adds
it to the node's `agent_metrics_dropped_total`). Names and labels: `moorage.metrics.model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from pydantic import TypeAdapter, ValidationError

from moorage.metrics.collect import (
    CpuMeter,
    Usage,
    cgroup_pids,
    children_map,
    docker_usage,
    node_sample,
    process_usage,
    read_cgroup,
    tree_pids,
)
from moorage.metrics.model import Batch, Point

from .client import ServerClient, ServerError
from .runner import TaskRunner

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 10.0
MIN_INTERVAL = 1.0
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
DOCKER_STATS_TIMEOUT = 5.0  # the engine takes ~1 s for a stream=0 sample; a hung one, forever
MAX_BATCH_POINTS = 5000  # one POST while replaying the buffer
SEND_TIMEOUT = 10.0
REFUSED = (400, 413, 422)  # the server will never take this batch: drop it, counted
_POINTS = TypeAdapter(list[Point])


# ---- the disk buffer -------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One buffered batch: `<seq:012d>-<points>.json`, a JSON list of points."""

    path: Path
    seq: int
    points: int
    size: int


class MetricsBuffer:
    """Batches the server has not taken yet, on disk, oldest first, at most `max_bytes`.

    `dropped_pending` counts the points dropped since the server last accepted a batch (sent
    as `Batch.dropped`), `dropped_total` since the buffer was created; both survive restarts
    (`state.json`), like the segments, which a restarted agent replays."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        self.segments: list[Segment] = sorted(
            (s for s in map(_segment, root.glob("*.json")) if s is not None), key=lambda s: s.seq
        )
        self._seq = self.segments[-1].seq + 1 if self.segments else 0
        state = _read_json(root / "state.json")
        self.dropped_pending = int(state.get("pending", 0))
        self.dropped_total = int(state.get("total", 0))

    @property
    def points(self) -> int:
        return sum(s.points for s in self.segments)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    def append(self, points: Sequence[Point]) -> int:
        """Keep a batch; returns how many points were dropped to stay within the bound (the
        oldest segments first; the batch itself if it alone is larger than the bound)."""
        if not points:
            return 0
        data = _POINTS.dump_json(list(points))
        dropped = 0
        while self.segments and self.size + len(data) > self.max_bytes:
            oldest = self.segments.pop(0)
            oldest.path.unlink(missing_ok=True)
            dropped += oldest.points
        if len(data) > self.max_bytes:
            dropped += len(points)
        else:
            path = self.root / f"{self._seq:012d}-{len(points)}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # a crash leaves a whole segment or none
            self.segments.append(Segment(path, self._seq, len(points), len(data)))
            self._seq += 1
        self.count_dropped(dropped)
        return dropped

    def oldest(self, max_points: int = MAX_BATCH_POINTS) -> tuple[list[Segment], list[Point]]:
        """The oldest segments (at least one, then as many as fit in `max_points`) and their
        points in order. An unreadable segment is dropped here, counted."""
        taken: list[Segment] = []
        points: list[Point] = []
        for segment in list(self.segments):
            if taken and len(points) + segment.points > max_points:
                break
            try:
                points.extend(_POINTS.validate_json(segment.path.read_bytes()))
            except (OSError, ValidationError):
                log.warning("metrics buffer: %s is unreadable; dropped", segment.path.name)
                self.remove([segment])
                self.count_dropped(segment.points)
                continue
            taken.append(segment)
        return taken, points

    def remove(self, segments: Iterable[Segment]) -> None:
        gone = {s.path for s in segments}
        for path in gone:
            path.unlink(missing_ok=True)
        self.segments = [s for s in self.segments if s.path not in gone]

    def count_dropped(self, points: int) -> None:
        if points:
            self.dropped_pending += points
            self.dropped_total += points
            self._save_state()

    def acknowledge(self, reported: int) -> None:
        """The server took a batch that reported `reported` dropped points."""
        if reported:
            self.dropped_pending = max(self.dropped_pending - reported, 0)
            self._save_state()

    def _save_state(self) -> None:
        path = self.root / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pending": self.dropped_pending, "total": self.dropped_total}))
        tmp.replace(path)


def _segment(path: Path) -> Segment | None:
    seq, _, count = path.stem.partition("-")
    if not (seq.isdigit() and count.isdigit()):
        return None
    return Segment(path, int(seq), int(count), path.stat().st_size)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---- what is sampled -------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One container of a running task, as the loops sample it (copied from its runner)."""

    labels: dict[str, str]  # node, service, task, container
    driver: str
    state: dict[str, Any]  # the handle's: cgroup and pid (process), container_id (docker)
    memory_bytes: int  # what the spec reserves (the limit when no cgroup says otherwise)
    restarts: int
    health: int | None  # 0 passing, 1 warning, 2 critical; None without a check


def targets(node: str, runners: Iterable[TaskRunner]) -> list[Target]:
    out = []
    for runner in runners:
        if not runner.active or runner.stop_reason is not None:
            continue
        checks = {c.container.name: c.state.status.rank for c in runner.checkers}
        specs = {c.name: c for c in runner.taskdef.containers}
        for handle in runner.handles:
            spec = specs.get(handle.container)
            labels = {
                "node": node,
                "service": runner.task.service,
                "task": runner.task.id,
                "container": handle.container,
            }
            out.append(
                Target(
                    labels,
                    handle.driver,
                    dict(handle.state),
                    (spec.memory if spec else 0) * 1024 * 1024,
                    runner.task.restarts,
                    checks.get(handle.container),
                )
            )
    return out


def task_points(target: Target, usage: Usage, cpu_percent: float | None, ts: float) -> list[Point]:
    values: dict[str, float | int | None] = {
        "task_cpu_percent": cpu_percent,
        "task_memory_rss_bytes": usage.rss_bytes,
        "task_memory_limit_bytes": usage.limit_bytes or target.memory_bytes or None,
        "task_restarts_total": target.restarts,
        "task_health": target.health,
    }
    return [
        Point(metric=metric, labels=target.labels, ts=ts, value=float(value))
        for metric, value in values.items()
        if value is not None
    ]


def node_points(node: str, disk_paths: Iterable[Path], ts: float) -> list[Point]:
    sample = node_sample(disk_paths)
    labels = {"node": node}

    def point(metric: str, value: float, **extra: str) -> Point:
        return Point(metric=metric, labels={**labels, **extra}, ts=ts, value=float(value))

    points = [
        point("node_cpu_percent", sample.cpu_percent),
        point("node_load1", sample.load1),
        point("node_memory_used_bytes", sample.memory_used),
        point("node_memory_available_bytes", sample.memory_available),
    ]
    for path, (used, free) in sample.disks.items():
        points += [
            point("node_disk_used_bytes", used, path=path),
            point("node_disk_free_bytes", free, path=path),
        ]
    for interface, (rx, tx) in sample.network.items():
        points += [
            point("node_network_receive_bytes_total", rx, interface=interface),
            point("node_network_transmit_bytes_total", tx, interface=interface),
        ]
    return points


def process_sample(target: Target, children: Callable[[], dict[int, list[int]]]) -> Usage:
    """A process container: its cgroup's figures, psutil for what the cgroup does not say."""
    cgroup = str(target.state.get("cgroup") or "")
    group = read_cgroup(cgroup) if cgroup else Usage()
    pids = cgroup_pids(cgroup) if cgroup else []
    if not pids and target.state.get("pid"):
        pids = tree_pids(int(target.state["pid"]), children())
    procs = process_usage(pids) if pids else Usage()
    if procs.cpu_seconds is None and group.rss_bytes is None:
        return Usage()  # nothing runs: no figures (a container that exited)
    return Usage(
        cpu_seconds=group.cpu_seconds if group.cpu_seconds is not None else procs.cpu_seconds,
        rss_bytes=group.rss_bytes if group.rss_bytes is not None else procs.rss_bytes,
        limit_bytes=group.limit_bytes,
    )


# ---- the loops -------------------------------------------------------------------------------
class AgentMetrics:
    def __init__(
        self,
        *,
        node: str,
        client: ServerClient,
        runners: Callable[[], Iterable[TaskRunner]],
        docker: Callable[[], Any],
        buffer_dir: Path,
        disk_paths: Sequence[Path] = (),
        interval: float = DEFAULT_INTERVAL,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        stats_timeout: float = DOCKER_STATS_TIMEOUT,
    ) -> None:
        self.node = node
        self.client = client
        self.runners = runners
        self.docker = docker  # the aiodocker client, or None while the node has no engine
        self.disk_paths = list(disk_paths)
        self.interval = max(interval, MIN_INTERVAL)
        self.stats_timeout = stats_timeout
        self.buffer = MetricsBuffer(buffer_dir, buffer_bytes)
        self._cpu = CpuMeter()  # local loop (its thread) only
        self._docker_cpu = CpuMeter()
        self._pending: list[Point] = []
        self._wake = asyncio.Event()
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._dropped_in_outage = 0
        self._silent: set[str] = set()  # containers whose stats time out (logged once each)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._every(self._local))
                group.create_task(self._every(self._docker_points))
                group.create_task(self._sender())
        finally:
            self._spill()  # what was collected but not sent waits on disk for the next start

    async def _every(self, sample: Callable[[], Awaitable[list[Point]]]) -> None:
        await asyncio.sleep(random.uniform(0, min(self.interval, 1.0)))  # jittered first tick
        failing = False
        while True:
            started = time.monotonic()
            try:
                points = await sample()
            except Exception as exc:  # a metrics bug must never take the agent down
                if not failing:
                    log.exception("metrics sampling failed: %s (retrying every interval)", exc)
                failing, points = True, []
            else:
                failing = False
            if points:
                self._pending.extend(points)
                self._wake.set()
            await asyncio.sleep(max(started + self.interval - time.monotonic(), 0.0))

    # ---- sampling ----------------------------------------------------------------------------
    async def _local(self) -> list[Point]:
        local = [t for t in targets(self.node, self.runners()) if t.driver != "docker"]
        points = await asyncio.to_thread(self._sample_local, local, time.time())
        return points + self._agent_points(time.time())

    def _sample_local(self, local: list[Target], ts: float) -> list[Point]:
        """Runs in a thread: file reads and psutil, off the event loop."""
        points = node_points(self.node, self.disk_paths, ts)
        tree: dict[int, list[int]] | None = None

        def children() -> dict[int, list[int]]:
            nonlocal tree
            tree = children_map() if tree is None else tree
            return tree

        now = time.monotonic()
        for target in local:
            usage = process_sample(target, children)
            key = (target.labels["task"], target.labels["container"])
            cpu = None
            if usage.cpu_seconds is not None:
                cpu = self._cpu.percent(key, usage.cpu_seconds, now)
            points += task_points(target, usage, cpu, ts)
        self._cpu.keep((t.labels["task"], t.labels["container"]) for t in local)
        return points

    async def _docker_points(self) -> list[Point]:
        api = self.docker()
        found = [t for t in targets(self.node, self.runners()) if t.driver == "docker"]
        if api is None or not found:
            return []
        samples = await asyncio.gather(*(self._docker_sample(api, t) for t in found))
        points: list[Point] = []
        for target, (usage, ts, now) in zip(found, samples, strict=True):
            cid = str(target.state.get("container_id"))
            cpu = None
            if usage.cpu_seconds is not None:
                cpu = self._docker_cpu.percent(cid, usage.cpu_seconds, now)
            points += task_points(target, usage, cpu, ts)
        self._docker_cpu.keep(str(t.state.get("container_id")) for t in found)
        return points

    async def _docker_sample(self, api: Any, target: Target) -> tuple[Usage, float, float]:
        cid = str(target.state.get("container_id") or "")
        try:
            async with asyncio.timeout(self.stats_timeout):
                samples = await api.containers.container(cid).stats(stream=False)
        except (
            TimeoutError,
            aiodocker.DockerError,
            aiohttp.ClientError,
            OSError,
            ValueError,
        ) as exc:
            if cid not in self._silent:
                self._silent.add(cid)
                log.warning(
                    "docker stats of %s (task %s) failed: %s; its task figures are missing "
                    "until the engine answers",
                    cid[:12],
                    target.labels["task"],
                    exc.__class__.__name__ if isinstance(exc, TimeoutError) else exc,
                )
            return Usage(), time.time(), time.monotonic()
        self._silent.discard(cid)
        sample = samples[0] if isinstance(samples, list) and samples else samples
        usage = docker_usage(sample if isinstance(sample, dict) else {})
        return usage, time.time(), time.monotonic()

    def _agent_points(self, ts: float) -> list[Point]:
        """The buffer's size. Dropped points travel as `Batch.dropped`: the server keeps
        `agent_metrics_dropped_total` from them (one writer per series)."""
        labels = {"node": self.node}
        return [
            Point(metric="agent_metrics_buffered", labels=labels, ts=ts, value=self.buffer.points)
        ]

    # ---- sending -----------------------------------------------------------------------------
    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Send what the buffer holds (oldest first), then what was collected since; on a
        failure everything pending goes to the buffer. True when nothing is left."""
        replayed = 0
        while self.buffer.segments:
            segments, points = self.buffer.oldest()
            if not segments:
                continue
            if not await self._post(points):
                self._spill()
                return False
            self.buffer.remove(segments)
            replayed += len(points)
        while self._pending:
            points, self._pending = (
                self._pending[:MAX_BATCH_POINTS],
                self._pending[MAX_BATCH_POINTS:],
            )
            try:
                sent = await self._post(points)
            except BaseException:  # cancelled mid-send: the points go to disk with the rest
                self._pending[:0] = points
                raise
            if not sent:
                self._pending[:0] = points
                self._spill()
                return False
        self._recovered(replayed)
        return True

    async def _post(self, points: list[Point]) -> bool:
        """One batch to the server: True when it is done with it (taken, or refused for good)."""
        dropped = self.buffer.dropped_pending
        batch = Batch(node=self.node, points=points, dropped=dropped)
        try:
            await self.client.metrics_ingest(batch, SEND_TIMEOUT)
        except ServerError as exc:
            if exc.status in REFUSED:
                self.buffer.count_dropped(len(points))
                log.warning("the server refused %d metric points: %s", len(points), exc)
                return True
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning(
                    "metrics: %s; buffering them in %s (at most %.1f MiB, the oldest dropped "
                    "first and counted)",
                    exc,
                    self.buffer.root,
                    self.buffer.max_bytes / (1024 * 1024),
                )
            return False
        self.buffer.acknowledge(dropped)
        return True

    def _spill(self) -> None:
        if not self._pending:
            return
        points, self._pending = self._pending, []
        try:
            dropped = self.buffer.append(points)
        except OSError as exc:  # a full or read-only disk: the points are lost, counted
            log.warning("metrics buffer: cannot write %s: %s", self.buffer.root, exc)
            dropped = len(points)
            with contextlib.suppress(OSError):
                self.buffer.count_dropped(dropped)
        if dropped and not self._dropped_in_outage:
            log.warning(
                "metrics buffer full (%.1f MiB): dropping the oldest points (reported to the "
                "server as agent_metrics_dropped_total)",
                self.buffer.max_bytes / (1024 * 1024),
            )
        self._dropped_in_outage += dropped

    def _recovered(self, replayed: int) -> None:
        if self._outage_since is None:
            return
        log.info(
            "metrics: the server takes them again after %.0fs: %d buffered points replayed, "
            "%d dropped",
            time.monotonic() - self._outage_since,
            replayed,
            self._dropped_in_outage,
        )
        self._outage_since, self._dropped_in_outage = None, 0


def disk_paths(*paths: Path) -> list[Path]:
    """The data and volume roots whose disks are reported (those that exist, each once)."""
    seen: dict[str, Path] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            if path.exists():
                seen.setdefault(str(path.resolve()), path.resolve())
    return list(seen.values())
