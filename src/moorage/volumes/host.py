"""Provision and mount a volume on this node: the actions behind `moorage.volumes.layout`.

    choose()    plain directory or ext4 image, decided before anything is touched:
                an existing image stays an image, an existing directory a directory; a new
                volume with a size is an image when this node can mount (root), else a directory
    provision() mkdir the directory; or create the image sparse, format it only when it carries
                no filesystem yet (superblock magic, then `blkid -p`), and loop-mount it
    unmount()   `umount`; `umount -l` when the mount is still busy (call it once the task is dead)
    remove()    a volume's files for good: unmount here, move the folder aside in one rename (a
                crash leaves the whole volume or none of it), delete it

Everything here blocks (subprocesses, disk): the agent runs it in a thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import VolumeError

MIB = 1024 * 1024
EXT4_MAGIC_OFFSET = 1024 + 56  # the superblock starts at 1 KiB; s_magic is 56 bytes into it
EXT4_MAGIC = b"\x53\xef"  # 0xEF53, little-endian


@dataclass(frozen=True)
class Storage:
    """Where one volume's data is on this node."""

    kind: Literal["image", "directory"]
    image: Path
    data: Path
    mountpoint: Path

    @property
    def host_path(self) -> Path:
        """What the workload is given: the mountpoint of an image, else the directory."""
        return self.mountpoint if self.kind == "image" else self.data

    @property
    def size_enforced(self) -> bool:
        return self.kind == "image"


def can_mount() -> bool:
    """Root, with util-linux `mount` and `mkfs.ext4`: size-enforced images are possible."""
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("mount", "umount", "mkfs.ext4"))


def choose(
    image: Path, data: Path, mountpoint: Path, size_mib: int | None, mountable: bool
) -> Storage:
    """Image or directory; never changes what a volume already is."""
    if image.exists():
        if not mountable:
            raise VolumeError(f"{image} is an ext4 image: mounting it needs root on this node")
        kind: Literal["image", "directory"] = "image"
    elif data.is_dir() or not (size_mib and mountable):
        kind = "directory"
    else:
        kind = "image"
    return Storage(kind, image, data, mountpoint)


def provision(storage: Storage, size_mib: int | None, read_only: bool = False) -> None:
    """Make the volume usable at `storage.host_path`: idempotent, never reformats."""
    if storage.kind == "directory":
        if not storage.data.exists():  # its root as a fresh filesystem's (0755): the
            storage.data.mkdir(parents=True)  # folders above it stay private (umask 077)
            storage.data.chmod(0o755)
        return
    if not storage.image.exists():
        if size_mib is None:
            raise VolumeError(f"{storage.image} is missing and the volume has no size")
        create_image(storage.image, size_mib)
    if not has_filesystem(storage.image):
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(storage.image)])
    mount_image(storage.image, storage.mountpoint, read_only)


def create_image(image: Path, size_mib: int) -> None:
    """A sparse file of the size (O_EXCL: never truncates an existing image)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size_mib * MIB)
        finally:
            os.close(fd)


def has_filesystem(image: Path) -> bool:
    """Whether the image carries a filesystem already: ext2/3/4's magic, or any signature
    `blkid -p` knows. Anything unclear raises: an unclear image is never formatted."""
    with image.open("rb") as f:
        f.seek(EXT4_MAGIC_OFFSET)
        if f.read(2) == EXT4_MAGIC:
            return True
    if shutil.which("blkid") is None:
        return False  # a zero-filled superblock and no blkid: the image is new
    probe = subprocess.run(["blkid", "-p", str(image)], capture_output=True, text=True)
    if probe.returncode == 0:
        return True
    if probe.returncode == 2:  # blkid: no signature found
        return False
    raise VolumeError(f"blkid -p {image} failed ({probe.returncode}): {probe.stderr.strip()}")


def mounts() -> list[tuple[Path, str]]:
    """(mountpoint, source) of every mount this process sees."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            found.append((Path(_unescape(fields[4])), _unescape(fields[dash + 2])))
    return found


def mounted(path: Path) -> bool:
    return any(point == path for point, _ in mounts())


def mount_image(image: Path, mountpoint: Path, read_only: bool = False) -> None:
    """Loop-mount the image (ro without journal replay for readers); nothing if mounted."""
    if mounted(mountpoint):
        return
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = "loop,ro,noload" if read_only else "loop"
    _run(["mount", "-t", "ext4", "-o", options, str(image), str(mountpoint)])


def unmount(mountpoint: Path) -> None:
    """Unmount (lazily if still busy: call it once the workload is dead); nothing if not
    mounted. The loop device goes with the last reference (mount sets autoclear)."""
    if not mounted(mountpoint):
        return
    first = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True)
    if first.returncode != 0 and mounted(mountpoint):
        lazy = subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, text=True)
        if lazy.returncode != 0 and mounted(mountpoint):
            raise VolumeError(f"cannot unmount {mountpoint}: {lazy.stderr.strip()}")


def remove_tree(path: Path) -> None:
    """Delete a volume's files, unmounting whatever is mounted inside first."""
    for point, _ in sorted(mounts(), key=lambda m: len(str(m[0])), reverse=True):
        if point == path or path in point.parents:
            unmount(point)
    shutil.rmtree(path, ignore_errors=True)


def remove(folder: Path, mountpoint: Path, trash: Path) -> bool:
    """Delete volume `folder` (its `data/` or `disk.img`), unmounting its image at this node's
    `mountpoint` first; whether there was anything. Raises VolumeError, having removed
    nothing, when the image cannot be unmounted or the folder cannot be moved aside."""
    unmount(mountpoint)
    with contextlib.suppress(OSError):
        mountpoint.rmdir()
    for leftover in trash.iterdir() if trash.is_dir() else ():
        remove_tree(leftover)  # an earlier removal interrupted after its rename
    if not folder.exists():
        return False
    aside = trash / f"{folder.name}-{secrets.token_hex(4)}"
    try:
        trash.mkdir(exist_ok=True)
        folder.rename(aside)
    except OSError as exc:
        raise VolumeError(f"cannot remove {folder}: {exc.strerror}") from None
    remove_tree(aside)
    return True


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise VolumeError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    if "\\" not in text:
        return text
    return text.encode().decode("unicode_escape").encode("latin-1").decode()
