"""`moorage tag` in a real git repository with a real (bare) remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from moorage.cli.tag import next_tag

from .cluster import MOORAGE

pytestmark = pytest.mark.integration


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(work: Path, message: str) -> None:
    git(
        work,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
    )


def moorage_tag(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOORAGE, "tag", *args], cwd=cwd, capture_output=True, text=True)


def test_next_tag_numbers_per_branch() -> None:
    assert next_tag("master", []) == "master.1"
    assert (
        next_tag("master", ["master.1", "master.10", "master.9", "dev.40", "master.x"])
        == "master.11"
    )
    assert next_tag("feature/a", ["feature/a.2"]) == "feature/a.3"


def test_tag_creates_and_pushes_the_next_branch_tag(tmp_path: Path) -> None:
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "init", "--bare", "-q", str(remote))
    git(tmp_path, "init", "-q", "-b", "master", str(work))
    commit(work, "one")
    git(work, "remote", "add", "origin", str(remote))
    first = moorage_tag(work)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "master.1"
    commit(work, "two")
    assert moorage_tag(work).stdout.strip() == "master.2"
    assert git(remote, "tag", "--list").split() == ["master.1", "master.2"]
    assert git(work, "rev-parse", "master.2") == git(work, "rev-parse", "HEAD")


def test_tag_outside_a_repository_is_one_clear_error(tmp_path: Path) -> None:
    result = moorage_tag(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: git rev-parse") and "Traceback" not in result.stderr
