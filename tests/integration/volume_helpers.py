"""Helpers of the volume tests: the writer service, its log, and the single-writer checker.

The writer (`fixtures/volume_writer.py`) appends `<task-id> <epoch> <seq> <time>` lines to
`writes.log` on its volume. `check_log` proves one writer at a time from that file alone: every
(task, epoch) run is contiguous, epochs only go up, an epoch belongs to one task and sequence
numbers only go up within it. The file cannot show two writers on two separate mounts of one
loop image (each would see its own file), so `Watch` also samples, while a fault runs, the
writer processes alive on the machine and the loop devices mounting the volume's image.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from moorage.testing.cluster import netns_supported
from moorage.volumes.layout import IMAGE

from .cluster import Cluster, wait_for

WRITER = Path(__file__).resolve().parent / "fixtures" / "volume_writer.py"
LOG = "writes.log"


def writer_spec(
    name: str = "writer",
    volume: str = "data",
    size: str = "64MiB",
    revision: int = 1,
    mode: str = "write",
    path: str = "/data",
    extra: str = "",
) -> str:
    """A process-driver service of one writer on a shared single-writer volume."""
    return f"""
service: {name}
count: 1
volumes:
  {volume}: {{driver: shared, size: {size}, scope: shared, autoprovision: true}}
containers:
  - name: app
    command: ["{sys.executable}", "{WRITER}", "{mode}", "{path}"]
    cpu: 50
    memory: 64
    stop_timeout: 3s
    mounts: [{{volume: {volume}, path: {path}}}]
    env: {{REVISION: "{revision}", MOORAGE_WRITER_VOLUME: {volume}}}
{extra}
"""


def require_netns() -> None:
    """Network-namespace clusters need root: skip loudly, or fail with MOORAGE_REQUIRE_NETNS=1."""
    why = netns_supported()
    if why is not None:
        if os.environ.get("MOORAGE_REQUIRE_NETNS") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_NETNS=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why} (CI runs these as root)")


# ---- the log ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    task: str
    epoch: int
    seq: int
    time: float


@dataclass(frozen=True)
class Segment:
    """A run of consecutive lines of one (task, epoch)."""

    task: str
    epoch: int
    first: Line
    last: Line
    lines: int


def parse(text: str) -> list[Line]:
    """Every complete line; a torn or garbled one (two writers interleaving bytes) fails."""
    lines = []
    for number, raw in enumerate(text.split("\n")[:-1], start=1):  # the last may be unfinished
        words = raw.split()
        assert len(words) == 4 and words[1].isdigit() and words[2].isdigit(), (
            f"writes.log line {number} is garbled: {raw!r}"
        )
        lines.append(Line(words[0], int(words[1]), int(words[2]), float(words[3])))
    return lines


def segments(lines: list[Line]) -> list[Segment]:
    out: list[Segment] = []
    for line in lines:
        if out and (out[-1].task, out[-1].epoch) == (line.task, line.epoch):
            last = out[-1]
            out[-1] = Segment(last.task, last.epoch, last.first, line, last.lines + 1)
        else:
            out.append(Segment(line.task, line.epoch, line, line, 1))
    return out


def check_log(lines: list[Line]) -> list[Segment]:
    """The single-writer invariant over the whole log; its (task, epoch) segments."""
    assert lines, "writes.log is empty"
    runs = segments(lines)
    for before, after in itertools.pairwise(runs):
        assert after.epoch > before.epoch, (
            f"epoch went from {before.epoch} ({before.task}) to {after.epoch} ({after.task}) at "
            f"{after.first}: an older writer wrote after a newer one, or epochs went back "
            f"(segments: {describe(runs)})"
        )
    for run in runs:
        assert run.epoch >= 1, f"a writer without a granted epoch: {run}"
    previous: dict[tuple[str, int], int] = {}
    for line in lines:
        key = (line.task, line.epoch)
        assert line.seq > previous.get(key, -1), f"sequence went back in {key}: {line}"
        previous[key] = line.seq
    return runs


def describe(runs: list[Segment]) -> str:
    return ", ".join(f"{r.task}@{r.epoch}x{r.lines}" for r in runs)


# ---- the writers on this machine -------------------------------------------------------------
@dataclass(frozen=True)
class Writer:
    pid: int
    task: str
    epoch: int
    folder: Path  # the volume, through this process's own view of the filesystem


def writers(root: Path, key: str = "DATA", mode: str = "write") -> list[Writer]:
    """Live writer processes started by the cluster under `root` for volume KEY."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            if str(WRITER) not in cmdline or mode not in cmdline:
                continue
            if not (proc.info["cwd"] or "").startswith(str(root) + os.sep):
                continue
            if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            env = proc.environ()
            if env.get("MOORAGE_WRITER_VOLUME", "data").upper() != key:
                continue
            path = cmdline[cmdline.index(mode) + 1]
            found.append(
                Writer(
                    pid=proc.pid,
                    task=env.get("MOORAGE_TASK_ID", "?"),
                    epoch=int(env.get(f"MOORAGE_VOLUME_{key}_EPOCH", "0") or 0),
                    folder=Path(f"/proc/{proc.pid}/root") / path.lstrip("/"),
                )
            )
    return found


def host_path(pid: int, key: str = "DATA") -> Path | None:
    """The volume's host path the agent passed to the task (MOORAGE_VOLUME_<KEY>)."""
    with contextlib.suppress(psutil.Error):
        value = psutil.Process(pid).environ().get(f"MOORAGE_VOLUME_{key}")
        return Path(value) if value else None
    return None


def read_log(writer: Writer, name: str = LOG) -> list[Line]:
    """The log as the live writer sees it at its mount path."""
    return parse((writer.folder / name).read_text())


def loop_mounts(root: Path, name: str) -> set[str]:
    """Loop devices mounted in this (the host's) mount namespace whose backing file is the
    image of volume `name` of the cluster under `root` (`<shared root>/<name>/disk.img`)."""
    devices = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            source = line.split(" - ", 1)[1].split()[1]
            if not source.startswith("/dev/loop"):
                continue
            device = source.removeprefix("/dev/")
            with contextlib.suppress(OSError):
                backing = Path(f"/sys/block/{device}/loop/backing_file").read_text().strip()
                backing = backing.removesuffix(" (deleted)")
                if backing.startswith(str(root)) and backing.endswith(f"/{name}/{IMAGE}"):
                    devices.add(device)
    return devices


# ---- watching a fault ------------------------------------------------------------------------
@dataclass
class Watch:
    """Samples, every 50 ms, the writer processes and the loop mounts of the volume; records
    every moment where more than one is live (a second writer)."""

    root: Path
    key: str = "DATA"
    volume: str = "data"
    overlaps: list[str] = field(default_factory=list)
    seen: set[tuple[str, int]] = field(default_factory=set)
    samples: int = 0
    mounted: int = 0  # the most loop mounts of the image seen at once (1 when size-enforced)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)
        self.sample()  # the last word: what runs once the fault is over

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def sample(self) -> None:
        live = writers(self.root, self.key)
        self.seen.update((w.task, w.epoch) for w in live)
        if len(live) > 1:
            self.overlaps.append(f"{time.time():.3f} writers {live}")
        mounts = loop_mounts(self.root, self.volume)
        self.mounted = max(self.mounted, len(mounts))
        if len(mounts) > 1:
            self.overlaps.append(f"{time.time():.3f} loop mounts {sorted(mounts)}")
        self.samples += 1


# ---- the service ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    """The writer as it runs now: its task, node, epoch, process and log."""

    task: str
    node: str
    epoch: int
    writer: Writer
    lines: list[Line]


def steady(
    cluster: Cluster,
    service: str = "writer",
    key: str = "DATA",
    timeout: float = 60.0,
    all_ready: bool = True,
) -> Holder:
    """Wait until every node is ready (unless not `all_ready`), one task of `service` runs with one writer process,
    whose epoch is the volume's, and whose lines keep arriving."""

    def check() -> Holder | None:
        if all_ready and set(cluster.nodes().values()) != {"ready"}:
            return None
        running = cluster.running(service)
        live = writers(cluster.root, key)
        if len(running) != 1 or len(live) != 1 or live[0].task != running[0]["id"]:
            return None
        try:
            lines = read_log(live[0])
        except OSError:
            return None
        mine = [x for x in lines if (x.task, x.epoch) == (live[0].task, live[0].epoch)]
        if len(mine) < 10 or time.time() - mine[-1].time > 1.0:
            return None
        return Holder(running[0]["id"], running[0]["node"], live[0].epoch, live[0], lines)

    result: Holder = wait_for(check, timeout, 0.2, f"one steady writer of {service}")
    return result


def moved(
    cluster: Cluster,
    before: Holder,
    *,
    other_node: bool,
    new_task: bool,
    timeout: float,
    service: str = "writer",
) -> Holder:
    """Wait until the writer writes with a newer epoch (on another node, as another task,
    when asked); the new holder."""

    def check() -> Holder | None:
        live = writers(cluster.root)
        if len(live) != 1 or live[0].epoch <= before.epoch:
            return None
        running = [t for t in cluster.running(service) if t["id"] == live[0].task]
        if not running:
            return None
        if other_node and running[0]["node"] == before.node:
            return None
        if new_task and live[0].task == before.task:
            return None
        try:
            lines = read_log(live[0])
        except OSError:
            return None
        if not any(x.epoch == live[0].epoch for x in lines):
            return None
        return Holder(live[0].task, running[0]["node"], live[0].epoch, live[0], lines)

    result: Holder = wait_for(
        check, timeout, 0.1, f"the writer moved off {before.node}@{before.epoch}"
    )
    return result


def volume(cluster: Cluster, name: str) -> dict[str, Any]:
    response = cluster.http.get(f"/v1/volumes/{name}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
