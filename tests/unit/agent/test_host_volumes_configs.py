"""Host volumes an operator shares (and the Docker socket's opt-in), configs on the node."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from moorage.agent import hostvolumes
from moorage.agent.configs import ConfigsHook, materialize
from moorage.agent.hooks import HookStop
from moorage.drivers.base import StartRequest
from moorage.model import TaskDefinition
from moorage.model.configs import ConfigSpec


def test_a_host_volume_must_exist_and_be_named(tmp_path: Path) -> None:
    assert hostvolumes.parse((f"data={tmp_path}",), False) == {"data": str(tmp_path.resolve())}
    for bad in ("noequals", f"Bad_Name={tmp_path}", "rel=relative/path", f"x={tmp_path}/nope"):
        with pytest.raises(hostvolumes.HostVolumeError):
            hostvolumes.parse((bad,), False)


def test_the_docker_socket_needs_its_own_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    socket = run / "docker.sock"
    socket.write_text("")
    monkeypatch.setattr(hostvolumes, "DOCKER_SOCKETS", (str(socket),))
    for path in (socket, run, tmp_path):  # the socket, or a directory that holds it
        with pytest.raises(hostvolumes.HostVolumeError, match="--allow-docker-socket"):
            hostvolumes.parse((f"d={path}",), False)
        assert hostvolumes.parse((f"d={path}",), True) == {"d": str(path)}
    link = tmp_path / "innocent"
    link.symlink_to(run)  # a symlink to it is the same thing
    with pytest.raises(hostvolumes.HostVolumeError, match="Docker socket"):
        hostvolumes.parse((f"d={link}",), False)


def test_a_task_path_must_stay_under_a_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "pg").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (shared / "escape").symlink_to(tmp_path / "private")
    volumes = hostvolumes.parse((f"data={shared}",), False)
    assert hostvolumes.resolve(volumes, str(shared / "pg")) == shared / "pg"
    with pytest.raises(hostvolumes.HostVolumeError, match="leads out"):
        hostvolumes.resolve(volumes, str(shared / "escape"))
    with pytest.raises(hostvolumes.HostVolumeError, match="not shared"):
        hostvolumes.resolve(volumes, str(tmp_path / "private"))
    with pytest.raises(hostvolumes.HostVolumeError, match="does not exist"):
        hostvolumes.resolve(volumes, str(shared / "missing"))


def test_a_config_is_written_once_per_content_and_private(tmp_path: Path) -> None:
    one = ConfigSpec(text="a = 1\n")
    tree = ConfigSpec(files={"conf.d/x.conf": "eA==", "top": ""})
    path = materialize(tmp_path / "configs", one)
    assert path.read_text() == "a = 1\n" and path.name == "file"
    assert materialize(tmp_path / "configs", ConfigSpec(text="a = 1\n")) == path
    folder = materialize(tmp_path / "configs", tree)
    assert (folder / "conf.d" / "x.conf").read_bytes() == b"x" and (
        folder / "top"
    ).read_bytes() == b""
    assert (tmp_path / "configs").stat().st_mode & 0o777 == 0o700  # only root reads it on the node
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == sorted(
        [one.digest(), tree.digest()]
    )


def test_the_configs_hook_mounts_read_only_or_a_private_copy(tmp_path: Path) -> None:
    taskdef = TaskDefinition.model_validate(
        {
            "family": "web",
            "revision": 1,
            "configs": {"conf": {"text": "v1"}},
            "containers": [
                {
                    "name": "app",
                    "image": "x",
                    "configs": [
                        {"config": "conf", "path": "/etc/app.conf"},
                        {"config": "conf", "path": "/scratch.conf", "read_only": False},
                    ],
                }
            ],
        }
    )
    hook = ConfigsHook(taskdef, tmp_path / "task", tmp_path / "configs", privileged=False)
    asyncio.run(hook.prestart())
    container = taskdef.containers[0]
    request = hook.prepare(container, StartRequest("t1", container, {}, {}, tmp_path / "task"))
    ro, rw = request.mounts
    assert (ro.path, ro.read_only, ro.source.read_text()) == ("/etc/app.conf", True, "v1")
    assert rw.read_only is False and tmp_path / "task" in rw.source.parents
    rw.source.write_text("edited")  # the copy is the task's own
    assert ro.source.read_text() == "v1"
    assert hook.env(container) == {"MOORAGE_CONFIG_CONF": str(ro.source)}


def test_a_privileged_container_does_not_start_without_the_agent_opt_in(tmp_path: Path) -> None:
    taskdef = TaskDefinition.model_validate(
        {
            "family": "f",
            "revision": 1,
            "containers": [{"name": "a", "image": "x", "privileged": True}],
        }
    )
    with pytest.raises(HookStop, match="--allow-privileged"):
        asyncio.run(ConfigsHook(taskdef, tmp_path, tmp_path / "c", privileged=False).prestart())
    asyncio.run(ConfigsHook(taskdef, tmp_path, tmp_path / "c", privileged=True).prestart())
    assert os.path.exists(tmp_path)
