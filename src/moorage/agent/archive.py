"""Snapshot archives: a volume's file tree as a gzipped tar, and back.

Taking one is two steps so that a paused writer waits only for the first:

    copy_tree(tree, staging)     uncompressed tar of the tree (while the writer is paused)
    compress(staging, archive)   gzip it to `<id>.tar.gz` (the writer runs again meanwhile)

Files keep their owners, modes and times; symlinks are stored as links, never followed.
`extract` refuses what a volume's tree cannot hold (absolute paths, `..`, links escaping the
target, device files) but keeps owners and modes. All of it blocks: call it in a thread.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TreeStats:
    files: int  # regular files
    data_bytes: int  # their bytes


def copy_tree(tree: Path | None, staging: Path) -> TreeStats:
    """Write `tree` (None: an empty volume) as an uncompressed tar at `staging`."""
    files = data = 0
    staging.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, name in _walk(tree) if tree is not None else []:
            info = tar.gettarinfo(str(path), arcname=name)
            if info is None:  # a socket: nothing to keep
                continue
            if info.isreg():
                with path.open("rb") as content:
                    tar.addfile(info, content)
                files, data = files + 1, data + info.size
            else:
                tar.addfile(info)
    return TreeStats(files, data)


def _walk(tree: Path) -> list[tuple[Path, str]]:
    """Every entry of `tree` (itself first, as "."), parents before children, sorted, not
    following symlinks."""
    found = [(tree, ".")]
    for root, dirs, names in os.walk(tree, followlinks=False):
        here = Path(root)
        for name in (*dirs, *names):
            path = here / name
            found.append((path, str(path.relative_to(tree))))
    found[1:] = sorted(found[1:], key=lambda item: Path(item[1]).parts)
    return found


def compress(staging: Path, archive: Path) -> int:
    """gzip `staging` into `archive` (atomically: written aside, fsynced, renamed); its size."""
    part = archive.with_name(archive.name + ".part")
    with staging.open("rb") as source, part.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
            shutil.copyfileobj(source, out, CHUNK)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(part, archive)
    _fsync_dir(archive.parent)
    staging.unlink(missing_ok=True)
    return archive.stat().st_size


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_owner_and_mode(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    tarfile.data_filter(member, dest)  # raises on anything that would land outside `dest`
    return member


def extract(archive: Path, dest: Path) -> TreeStats:
    """Unpack `archive` into the (empty) directory `dest`."""
    files = data = 0
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            if member.isreg():
                files, data = files + 1, data + member.size
        tar.extractall(dest, members=members, filter=_keep_owner_and_mode)
    return TreeStats(files, data)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
