"""Snapshot archives: a tree and back, byte for byte, owners, modes and links kept; nothing
outside the target is ever written."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from moorage.agent import archive


def make_tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n" * 1000)
    (root / "sub" / "deep" / "b.bin").write_bytes(os.urandom(70_000))
    (root / "empty").mkdir()
    (root / "link").symlink_to("a.txt")
    (root / "dirlink").symlink_to("sub")
    os.link(root / "a.txt", root / "sub" / "hard.txt")
    (root / "secret").write_text("x")
    (root / "secret").chmod(0o600)
    root.chmod(0o750)


def snapshot(tree: Path | None, folder: Path) -> Path:
    staging, final = folder / "s.tar", folder / "s.tar.gz"
    archive.copy_tree(tree, staging)
    archive.compress(staging, final)
    assert not staging.exists()
    return final


def test_a_tree_comes_back_identical(tmp_path: Path) -> None:
    tree, out = tmp_path / "vol", tmp_path / "restored"
    tree.mkdir()
    make_tree(tree)
    staging = tmp_path / "snaps" / "s.tar"
    stats = archive.copy_tree(tree, staging)
    assert stats.files == 3 and stats.data_bytes == 6000 + 70_000 + 1  # the hard link once
    final = tmp_path / "snaps" / "s.tar.gz"
    size = archive.compress(staging, final)
    assert size == final.stat().st_size > 0
    out.mkdir()
    restored = archive.extract(final, out)
    assert restored.files == 3
    for name in ("a.txt", "sub/deep/b.bin", "secret", "sub/hard.txt"):
        assert (out / name).read_bytes() == (tree / name).read_bytes()
    assert os.readlink(out / "link") == "a.txt" and os.readlink(out / "dirlink") == "sub"
    assert (out / "a.txt").stat().st_ino == (out / "sub" / "hard.txt").stat().st_ino
    assert (out / "secret").stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o750  # the volume's root keeps its mode
    assert (out / "empty").is_dir()


def test_equal_trees_give_equal_archives(tmp_path: Path) -> None:
    tree = tmp_path / "vol"
    tree.mkdir()
    (tree / "f").write_text("same")
    first = snapshot(tree, tmp_path / "one").read_bytes()
    assert snapshot(tree, tmp_path / "two").read_bytes() == first


def test_a_volume_never_provisioned_is_an_empty_archive(tmp_path: Path) -> None:
    final = snapshot(None, tmp_path)
    with tarfile.open(final) as tar:
        assert tar.getnames() == []


def test_extract_refuses_members_escaping_the_target(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(tarfile.FilterError):
        archive.extract(evil, target)
    assert not (tmp_path / "outside.txt").exists()
