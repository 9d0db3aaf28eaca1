"""Following a log file across the executor's rotations loses no line and repeats none."""

from __future__ import annotations

from pathlib import Path

from moorage.agent.http import _Follower


def rotate(path: Path) -> None:
    path.replace(path.with_name(path.name + ".1"))


def test_backlog_then_appended_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.stdout"
    log.write_bytes(b"one\ntwo\nthree\n")
    follower = _Follower(log)
    assert follower.backlog(tail=2) == [b"two\n", b"three\n"]
    assert follower.read_new() == []
    with log.open("ab") as out:
        out.write(b"four\nfi")
    assert follower.read_new() == [b"four\n"]  # a partial line waits for its end
    with log.open("ab") as out:
        out.write(b"ve\n")
    assert follower.read_new() == [b"five\n"]
    follower.close()


def test_rotation_is_followed_without_loss(tmp_path: Path) -> None:
    log = tmp_path / "app.stdout"
    log.write_bytes(b"a\n")
    follower = _Follower(log)
    assert follower.backlog(tail=None) == [b"a\n"]
    with log.open("ab") as out:
        out.write(b"b\n")  # written just before the rotation, not read yet
    rotate(log)
    log.write_bytes(b"c\nd\n")
    assert follower.read_new() == [b"b\n", b"c\n", b"d\n"]
    with log.open("ab") as out:
        out.write(b"e\n")
    assert follower.read_new() == [b"e\n"]
    follower.close()


def test_a_file_that_appears_later_is_picked_up(tmp_path: Path) -> None:
    log = tmp_path / "app.stderr"
    follower = _Follower(log)
    assert follower.backlog(tail=10) == []
    log.write_bytes(b"late\n")
    assert follower.read_new() == [b"late\n"]
    follower.close()


def test_tail_zero_skips_the_backlog(tmp_path: Path) -> None:
    log = tmp_path / "app.stdout"
    log.write_bytes(b"old\n")
    follower = _Follower(log)
    assert follower.backlog(tail=0) == []
    with log.open("ab") as out:
        out.write(b"new\n")
    assert follower.read_new() == [b"new\n"]
    follower.close()
