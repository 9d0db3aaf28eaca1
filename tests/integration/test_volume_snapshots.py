"""Volume snapshots, restores and backups (issue 6, scope item 6).

The agent's side is exercised first on its own: a real writer process appending lines to a
volume directory is frozen (a cgroup freezer, as root) or stopped (SIGSTOP, without a cgroup)
while the tree is copied; the copy's log is a whole prefix and the writer runs on afterwards.
Then end to end on a real server and agent: a writer task on a shared volume, `moorage volume
snapshot` (consistency, `--to DIR`), `snapshots`, `restore` into a new volume (same bytes),
`delete-snapshot`, and the errors (404 / exit 1, 400 / exit 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from moorage.agent.snapshots import TakeBody, archive_path, take_snapshot
from moorage.drivers.base import TaskHandle
from moorage.model.snapshot import new_snapshot_id
from moorage.volumes.layout import Layout

from .cluster import Cluster, wait_for
from .volume_helpers import WRITER, writer_spec

pytestmark = pytest.mark.integration

MEMORY_V1 = Path("/sys/fs/cgroup/memory")
FREEZER_V1 = Path("/sys/fs/cgroup/freezer")


# ---- what a snapshot's log must look like -----------------------------------------------------
def log_lines(data: bytes) -> list[int]:
    """The sequence numbers of a writes.log; fails on a torn or garbled line."""
    assert data.endswith(b"\n"), f"a torn last line: {data[-80:]!r}"
    seqs = []
    for line in data.decode().splitlines():
        fields = line.split()
        assert len(fields) == 4, f"a garbled line: {line!r}"
        seqs.append(int(fields[2]))
    return seqs


def check_prefix(data: bytes) -> int:
    """A consistent prefix of the writer's log: whole lines, seq 0, 1, 2 ... without a gap."""
    seqs = log_lines(data)
    assert seqs == list(range(len(seqs))), f"gaps in the sequence: {seqs[:10]}…"
    return len(seqs)


def member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        for candidate in (name, f"./{name}"):
            with_name = [m for m in tar.getmembers() if m.name == candidate]
            if with_name:
                extracted = tar.extractfile(with_name[0])
                assert extracted is not None
                return extracted.read()
    raise AssertionError(f"{name} is not in {archive}")


# ---- the agent's side, on its own --------------------------------------------------------------
def start_writer(folder: Path, cgroup: Path | None) -> subprocess.Popen[bytes]:
    """The writer fixture, its own process group (as the executor starts it), in `cgroup`."""

    def join() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.Popen(
        [sys.executable, str(WRITER), "write", str(folder), "0.0005"],
        env={**os.environ, "MOORAGE_TASK_ID": "t1"},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=join,
    )


def modes() -> list[Any]:
    root_v1 = os.geteuid() == 0 and MEMORY_V1.is_dir() and FREEZER_V1.is_dir()
    freezer = pytest.mark.skipif(not root_v1, reason="needs root and cgroup v1 freezer")
    return [pytest.param("cgroup", marks=freezer), "sigstop"]


@pytest.mark.parametrize("mode", modes())
def test_agent_pauses_a_running_writer_for_a_consistent_copy(tmp_path: Path, mode: str) -> None:
    layout = Layout(data_dir=tmp_path / "agent", shared_root=tmp_path / "shared")
    folder = layout.data_path("shared", "data")
    folder.mkdir(parents=True)
    cgroup = MEMORY_V1 / "moorage-test" / f"snap-{os.getpid()}" if mode == "cgroup" else None
    if cgroup is not None:
        cgroup.mkdir(parents=True, exist_ok=True)
    writer = start_writer(folder, cgroup)
    try:
        log = folder / "writes.log"
        wait_for(lambda: log.exists() and log.stat().st_size > 2000, what="the writer writes")
        handle = TaskHandle(
            "process", "t1", "app", {"pid": writer.pid, "cgroup": str(cgroup or "")}
        )
        runner = SimpleNamespace(active=True, handles=[handle])
        agent = SimpleNamespace(runners={"t1": runner}, docker=None)
        snapshot_id = new_snapshot_id()
        body = TakeBody(id=snapshot_id, driver="shared", writer="t1")
        taken = asyncio.run(take_snapshot(agent, layout, "data", body))  # type: ignore[arg-type]

        assert taken["consistency"] == ("frozen" if mode == "cgroup" else "paused")
        assert taken["task"] == "t1" and 0 < taken["pause_seconds"] < 5
        archive = archive_path(layout, "shared", "data", snapshot_id)
        assert taken["size"] == archive.stat().st_size
        copied = check_prefix(member(archive, "writes.log"))
        assert copied > 10
        # The writer runs on: not left stopped, and its log grows past the copy.
        wait_for(lambda: len(log_lines(log.read_bytes()[: log.stat().st_size])) > copied + 50)
        state = Path(f"/proc/{writer.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state not in "Tt"
        if mode == "cgroup":  # the writer went back where it was; our freezer cgroup is gone
            assert not (FREEZER_V1 / "moorage" / "t1-app").exists()
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
        if cgroup is not None:
            wait_for(lambda: not (cgroup / "cgroup.procs").read_text().strip())
            cgroup.rmdir()


def test_agent_snapshots_a_detached_volume_and_an_empty_one(tmp_path: Path) -> None:
    layout = Layout(data_dir=tmp_path / "agent", shared_root=tmp_path / "shared")
    folder = layout.data_path("local", "db")
    folder.mkdir(parents=True)
    (folder / "table").write_bytes(b"rows\n" * 100)
    agent = SimpleNamespace(runners={}, docker=None)
    first = TakeBody(id=new_snapshot_id(), driver="local")
    taken = asyncio.run(take_snapshot(agent, layout, "db", first))  # type: ignore[arg-type]
    assert (taken["consistency"], taken["task"], taken["files"]) == ("detached", None, 1)
    assert member(archive_path(layout, "local", "db", first.id), "table") == b"rows\n" * 100
    # a held volume whose task does not run here: nothing writes, nothing to pause
    held = TakeBody(id=new_snapshot_id(), driver="local", writer="gone-task")
    assert asyncio.run(take_snapshot(agent, layout, "db", held))["consistency"] == "stopped"  # type: ignore[arg-type]
    never = TakeBody(id=new_snapshot_id(), driver="shared")
    empty = asyncio.run(take_snapshot(agent, layout, "new", never))  # type: ignore[arg-type]
    assert (empty["files"], empty["data_bytes"]) == (0, 0)


# ---- end to end --------------------------------------------------------------------------------
def writer_task(cluster: Cluster) -> str:
    running = cluster.wait_running("writer", 1, timeout=60)
    return str(running[0]["id"])


def test_snapshot_restore_and_backup_end_to_end(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deploy(writer_spec())
    task = writer_task(cluster)
    backups = tmp_path / "backups"

    def snapshot(*extra: str) -> dict[str, Any]:
        result: dict[str, Any] = cluster.cli_json("volume", "snapshot", "data", *extra)
        return result

    # wait until the writer has written a little, seen through snapshots themselves
    first = wait_for(
        lambda: (s := snapshot("--to", str(backups)))["data_bytes"] > 2000 and s,
        timeout=30,
        what="a snapshot with some lines in it",
    )
    assert first["consistency"] in ("frozen", "paused"), first
    assert first["task"] == task and first["node"] == "n1"
    archive = Path(first["archive"])
    assert archive == backups / f"data-{first['id']}.tar.gz"
    assert archive.stat().st_size == first["archive_size"] == first["size"]
    listed = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True)
    assert listed.returncode == 0 and "writes.log" in listed.stdout
    lines = check_prefix(member(archive, "writes.log"))

    # the writer went on writing: a later snapshot holds the first as a prefix, and more
    time.sleep(0.5)
    second = snapshot("--to", str(backups))
    later = member(Path(second["archive"]), "writes.log")
    assert check_prefix(later) > lines
    assert later.startswith(member(archive, "writes.log"))
    assert cluster.running("writer")[0]["id"] == task

    # listing: size and time, per volume and in all
    rows = cluster.cli_json("volume", "snapshots", "data")
    assert [r["id"] for r in rows][-2:] == [first["id"], second["id"]]  # oldest first
    assert all(r["size"] > 0 and r["created_at"] > 0 for r in rows)
    table = cluster.cli("volume", "snapshots").stdout
    assert first["id"] in table and "CREATED" in table and time.strftime("%Y-") in table

    # restore into a new volume: the same bytes (seen through a snapshot of the copy)
    restored = cluster.cli_json("volume", "restore", f"data/{first['id']}", "--name", "copy")
    assert (restored["name"], restored["driver"], restored["state"]) == (
        "copy",
        "shared",
        "detached",
    )
    assert restored["size"] == 64
    copy = cluster.cli_json("volume", "snapshot", "copy", "--to", str(backups))
    assert copy["consistency"] == "detached" and copy["task"] is None
    assert member(Path(copy["archive"]), "writes.log") == member(archive, "writes.log")
    assert member(Path(copy["archive"]), "marker") == member(archive, "marker")
    # a bare id is enough; the claim the snapshot held on the detached copy is gone again
    assert cluster.cli_json("volume", "inspect", "copy")["attachments"] == []
    again = cluster.cli("volume", "restore", first["id"], "--name", "copy", check=False)
    assert again.returncode == 1 and "exists" in again.stderr

    # errors: unknown volume / snapshot → 404, exit 1; bad input → 400 naming the field, exit 2
    missing = cluster.cli("volume", "snapshot", "nope", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr
    assert cluster.http.post("/v1/volumes/nope/snapshots").status_code == 404
    assert cluster.http.get("/v1/volumes/nope/snapshots").status_code == 404
    gone = cluster.cli("volume", "restore", "data/snap-000000000000", "--name", "x", check=False)
    assert gone.returncode == 1
    bad = cluster.cli("volume", "restore", first["id"], "--name", "Bad_Name", check=False)
    assert bad.returncode == 2 and "name" in bad.stderr
    body = cluster.http.post(
        f"/v1/snapshots/data/{first['id']}/restore", json={"name": "y", "size": 0}
    )
    assert body.status_code == 400 and [e["field"] for e in body.json()["errors"]] == ["size"]
    timeout = cluster.http.post("/v1/volumes/data/snapshots", json={"pause_timeout": -1})
    assert timeout.status_code == 400 and timeout.json()["errors"][0]["field"] == "pause_timeout"

    # snapshots outlive their volume; deleting one removes archive and record
    cluster.cli("volume", "rm", "copy")
    assert [r["id"] for r in cluster.cli_json("volume", "snapshots", "copy")] == [copy["id"]]
    cluster.cli("volume", "delete-snapshot", f"copy/{copy['id']}")
    assert cluster.http.get("/v1/volumes/copy/snapshots").status_code == 404
    events = [e["type"] for e in cluster.events()]
    assert {"volume.snapshot", "volume.restored", "volume.snapshot_deleted"} <= set(events)
    assert json.dumps(first)  # the CLI's JSON is the record plus where the archive went
