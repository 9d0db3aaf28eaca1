"""Where a volume's data lives on a node, and where it is mounted: the path rules, nothing else.

    <root>/<name>/data/          a plain directory volume (no size, or no root to mount images)
    <root>/<name>/disk.img       a size-enforced volume: a sparse ext4 image, formatted once
    <root>/.snapshots/<name>/    the volume's snapshots (written by the snapshot code)
    <root>/.trash/<name>-<hex>/  a removed volume's folder, moved aside in one rename, then
                                 deleted (what a crash leaves there is swept by the next removal)

    <root> = volume_root(driver):
        shared   the agent's --shared-volume-root: one directory every node of the cluster
                 mounts (NFS in production, one common directory in tests)
        local    <agent data dir>/volumes (this node's disk)

    <agent data dir>/volume-mounts/<name>        where this node loop-mounts <name>/disk.img
    <agent data dir>/volume-fences/<task>.json   the lease deadline of a task holding volumes
    <task dir>/volumes/<key>/{data,disk.img,mnt} a `scope: task` volume: created with its task,
                                                  deleted with it

A volume's *host path* (what a workload is given) is its mountpoint when it is an image, its
`data/` directory otherwise. These functions only compute paths; `moorage.volumes.host` acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Driver = Literal["local", "shared"]

DATA = "data"
IMAGE = "disk.img"
SNAPSHOTS = ".snapshots"
TRASH = ".trash"


@dataclass(frozen=True)
class Layout:
    """The paths of one node: its agent data dir and the cluster's shared volume root."""

    data_dir: Path  # the agent's data dir (<--data-dir>/agent)
    shared_root: Path  # --shared-volume-root: the same directory on every node

    def volume_root(self, driver: Driver) -> Path:
        """Where volumes of this driver live: the shared root, or this node's disk."""
        return self.shared_root if driver == "shared" else self.data_dir / "volumes"

    def volume_dir(self, driver: Driver, name: str) -> Path:
        return self.volume_root(driver) / name

    def data_path(self, driver: Driver, name: str) -> Path:
        """The directory of a plain (not size-enforced) volume."""
        return self.volume_dir(driver, name) / DATA

    def image_path(self, driver: Driver, name: str) -> Path:
        """The ext4 image of a size-enforced volume."""
        return self.volume_dir(driver, name) / IMAGE

    def snapshots_dir(self, driver: Driver, name: str) -> Path:
        """`<root>/.snapshots/<name>/`: beside the volumes, never inside one."""
        return self.volume_root(driver) / SNAPSHOTS / name

    def trash_dir(self, driver: Driver) -> Path:
        """Where removed volumes go, beside the volumes (a name never starts with a dot)."""
        return self.volume_root(driver) / TRASH

    def mountpoint(self, name: str) -> Path:
        """Where this node mounts the volume's image (one mountpoint per volume and node)."""
        return self.data_dir / "volume-mounts" / name

    def fence_file(self, task_id: str) -> Path:
        """The lease deadline of a task holding claimed volumes (`moorage.volumes.fence`)."""
        return self.data_dir / "volume-fences" / f"{task_id}.json"


def task_volume_dir(task_dir: Path, key: str) -> Path:
    """A `scope: task` volume: inside its task's directory, removed with the task."""
    return task_dir / "volumes" / key


def task_data_path(task_dir: Path, key: str) -> Path:
    return task_volume_dir(task_dir, key) / DATA


def task_image_path(task_dir: Path, key: str) -> Path:
    return task_volume_dir(task_dir, key) / IMAGE


def task_mountpoint(task_dir: Path, key: str) -> Path:
    return task_volume_dir(task_dir, key) / "mnt"
