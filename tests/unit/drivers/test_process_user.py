"""`user:` for process tasks, resolved on the node: names, numbers, groups, and the clear
errors a user gets before anything starts."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from moorage.drivers.base import BindMount
from moorage.drivers.errors import StartError
from moorage.drivers.process import RunAs, check_reachable, run_as, with_mounts

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="another user needs root")


@root_only
def test_a_name_resolves_with_its_groups_and_home() -> None:
    nobody = pwd.getpwnam("nobody")
    who = run_as("nobody")
    assert (who.uid, who.gid, who.name, who.home) == (
        nobody.pw_uid,
        nobody.pw_gid,
        "nobody",
        nobody.pw_dir,
    )
    assert nobody.pw_gid in who.groups


@root_only
def test_numbers_and_a_group_resolve_even_without_an_entry() -> None:
    assert (run_as("65534:0").uid, run_as("65534:0").gid) == (65534, 0)
    unknown = run_as("4242")  # Docker's rule: a number runs as itself
    assert (unknown.uid, unknown.gid, unknown.groups, unknown.home) == (4242, 4242, (4242,), "/")


def test_unknown_names_are_refused_naming_them() -> None:
    with pytest.raises(StartError, match="no user 'no-such-user'"):
        run_as("no-such-user")
    with pytest.raises(StartError, match="no group 'no-such-group'"):
        run_as("root:no-such-group")


def test_a_private_directory_on_the_way_is_named(tmp_path: Path) -> None:
    who = RunAs(65534, 65534, (65534,), "nobody", "/")
    private = tmp_path / "agent"
    workdir = private / "alloc" / "t1" / "app"
    workdir.mkdir(parents=True)
    for folder in (workdir.parent, workdir.parent.parent):
        folder.chmod(0o711)
    private.chmod(0o700)  # the nearest on the way that others may not pass
    with pytest.raises(StartError) as refused:
        check_reachable(workdir, who)
    assert f"nobody cannot reach {workdir}: {private} is mode 0o700" in str(refused.value)


def test_reachable_through_traversable_directories(tmp_path: Path) -> None:
    who = RunAs(os.geteuid(), os.getegid(), (os.getegid(),), "me", "/")
    workdir = tmp_path / "a" / "b"
    workdir.mkdir(parents=True)
    check_reachable(workdir, who)  # its own: every directory here is the caller's


@root_only
def test_the_mount_wrapper_drops_to_the_user_after_mounting(tmp_path: Path) -> None:
    who = RunAs(65534, 65534, (65534, 100), "nobody", "/")
    wrapped = with_mounts(["id"], (BindMount(tmp_path, "/data", False),), who)
    assert wrapped[0] == "unshare"
    tail = wrapped[wrapped.index("--", wrapped.index("moorage-mounts")) + 1 :]
    assert tail == [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--groups",
        "65534,100",
        "--",
        "id",
    ]
