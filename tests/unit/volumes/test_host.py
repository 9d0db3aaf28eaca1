"""Provisioning: directory or image, formatted once, loop-mounted (the mount tests need root)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from moorage.volumes import VolumeError, host


def storage(tmp_path: Path, size: int | None, mountable: bool) -> host.Storage:
    root = tmp_path / "vol"
    return host.choose(root / "disk.img", root / "data", tmp_path / "mnt", size, mountable)


def test_choose_never_changes_what_a_volume_is(tmp_path: Path) -> None:
    assert storage(tmp_path, 16, mountable=True).kind == "image"
    assert storage(tmp_path, 16, mountable=False).kind == "directory"  # reported not enforced
    assert storage(tmp_path, None, mountable=True).kind == "directory"
    (tmp_path / "vol" / "data").mkdir(parents=True)
    assert storage(tmp_path, 16, mountable=True).kind == "directory"  # a directory stays one
    shutil.rmtree(tmp_path / "vol" / "data")
    (tmp_path / "vol" / "disk.img").write_bytes(b"")
    assert storage(tmp_path, None, mountable=True).kind == "image"  # an image stays one
    with pytest.raises(VolumeError, match="needs root"):
        storage(tmp_path, None, mountable=False)


def test_host_path_and_size_enforced(tmp_path: Path) -> None:
    image = storage(tmp_path, 16, mountable=True)
    assert (image.host_path, image.size_enforced) == (tmp_path / "mnt", True)
    plain = storage(tmp_path, None, mountable=True)
    assert (plain.host_path, plain.size_enforced) == (tmp_path / "vol" / "data", False)


def test_directory_volume_is_created(tmp_path: Path) -> None:
    plain = storage(tmp_path, None, mountable=False)
    host.provision(plain, None)
    assert plain.data.is_dir()


def test_a_new_image_is_sparse_and_has_no_filesystem(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    host.create_image(image, 8)
    assert image.stat().st_size == 8 * 1024 * 1024 and image.stat().st_blocks == 0
    image.write_bytes(b"x")  # O_EXCL: an existing image is never truncated again
    host.create_image(image, 8)
    assert image.read_bytes() == b"x"
    host.create_image(tmp_path / "zero.img", 1)
    if shutil.which("blkid"):
        assert not host.has_filesystem(tmp_path / "zero.img")


def test_the_ext4_superblock_counts_as_a_filesystem(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(4096)
        f.seek(host.EXT4_MAGIC_OFFSET)
        f.write(host.EXT4_MAGIC)
    assert host.has_filesystem(image)


def test_mountinfo_escapes() -> None:
    assert host._unescape("/a\\040b") == "/a b"
    assert host._unescape("/plain") == "/plain"


def fill(path: Path, mib: int) -> None:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(b"\0" * 1024 * 1024)
            f.flush()
            os.fsync(f.fileno())


needs_root = pytest.mark.skipif(
    not host.can_mount(), reason="SKIPPED LOUDLY: loop mounts need root and e2fsprogs"
)


@needs_root
def test_image_is_formatted_once_and_enforces_its_size(tmp_path: Path) -> None:
    image = storage(tmp_path, 8, mountable=True)
    try:
        host.provision(image, 8)
        assert host.mounted(image.mountpoint) and host.has_filesystem(image.image)
        (image.mountpoint / "marker").write_text("kept")
        with pytest.raises(OSError) as full:
            fill(image.mountpoint / "big", 16)
        assert full.value.errno == errno.ENOSPC
        host.unmount(image.mountpoint)
        assert not host.mounted(image.mountpoint)
        host.provision(image, 8)  # mounted again: not reformatted
        assert (image.mountpoint / "marker").read_text() == "kept"
        host.unmount(image.mountpoint)
        host.provision(image, 8, read_only=True)
        with pytest.raises(OSError) as ro:
            (image.mountpoint / "other").write_text("no")
        assert ro.value.errno == errno.EROFS
    finally:
        host.unmount(image.mountpoint)
    host.unmount(image.mountpoint)  # idempotent


@needs_root
def test_busy_mount_is_unmounted_lazily_and_remove_tree_unmounts(tmp_path: Path) -> None:
    image = storage(tmp_path, 8, mountable=True)
    host.provision(image, 8)
    busy = (image.mountpoint / "open").open("w")  # keeps the mount busy
    try:
        host.unmount(image.mountpoint)
        assert not host.mounted(image.mountpoint)
    finally:
        busy.close()
    host.provision(image, 8)
    host.remove_tree(tmp_path)
    assert not host.mounted(image.mountpoint) and not tmp_path.exists()


def test_remove_moves_the_folder_aside_then_deletes_it(tmp_path: Path) -> None:
    folder, trash = tmp_path / "root" / "vol", tmp_path / "root" / ".trash"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "old").write_text("old data")
    leftover = trash / "other-0123abcd"  # a removal interrupted after its rename
    leftover.mkdir(parents=True)
    assert host.remove(folder, tmp_path / "mnt", trash) is True
    assert not folder.exists() and list(trash.iterdir()) == []
    assert host.remove(folder, tmp_path / "mnt", trash) is False  # idempotent
    again = storage(tmp_path / "root", None, mountable=False)
    assert again.kind == "directory"


@needs_root
def test_remove_unmounts_the_image_and_a_new_volume_gets_its_new_size(tmp_path: Path) -> None:
    image = storage(tmp_path, 8, mountable=True)
    host.provision(image, 8)
    (image.mountpoint / "old").write_text("old data")
    assert host.remove(tmp_path / "vol", image.mountpoint, tmp_path / ".trash") is True
    assert not host.mounted(image.mountpoint) and not image.image.exists()
    bigger = storage(tmp_path, 16, mountable=True)
    try:
        host.provision(bigger, 16)
        assert bigger.image.stat().st_size == 16 * host.MIB
        assert not (bigger.mountpoint / "old").exists()
    finally:
        host.unmount(bigger.mountpoint)
