"""The path rules other code (snapshots, the agent) builds on."""

from __future__ import annotations

from pathlib import Path

from moorage.volumes import Layout
from moorage.volumes import layout as L


def test_shared_and_local_roots_and_their_files() -> None:
    paths = Layout(Path("/d/agent"), Path("/nfs/vols"))
    assert paths.volume_root("shared") == Path("/nfs/vols")
    assert paths.volume_root("local") == Path("/d/agent/volumes")
    assert paths.data_path("shared", "db") == Path("/nfs/vols/db/data")
    assert paths.image_path("local", "db") == Path("/d/agent/volumes/db/disk.img")
    assert paths.snapshots_dir("shared", "db") == Path("/nfs/vols/.snapshots/db")
    assert paths.mountpoint("db") == Path("/d/agent/volume-mounts/db")
    assert paths.fence_file("web-1") == Path("/d/agent/volume-fences/web-1.json")


def test_task_scope_volumes_live_in_the_task_dir() -> None:
    task = Path("/d/agent/alloc/web-1")
    assert L.task_data_path(task, "scratch") == task / "volumes" / "scratch" / "data"
    assert L.task_image_path(task, "scratch") == task / "volumes" / "scratch" / "disk.img"
    assert L.task_mountpoint(task, "scratch") == task / "volumes" / "scratch" / "mnt"
