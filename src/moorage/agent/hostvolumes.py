"""Host volumes: node directories an operator lets tasks mount (`--host-volume NAME=PATH`).

A task names a host path (compose `/srv/data:/data`, ECS `host.sourcePath`); the scheduler places
it only on nodes whose agent shares that path or a parent of it, and the agent checks again when
it starts the task, on the real path (a symlink inside a shared directory must not lead out).

The Docker socket is root on the node: whoever can reach it starts a privileged container. A
host volume that is the socket, or a directory holding it, needs `--allow-docker-socket` too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class HostVolumeError(ValueError):
    pass


def parse(values: tuple[str, ...] | list[str], allow_docker_socket: bool) -> dict[str, str]:
    """`NAME=PATH` flags → {name: real path}; each path exists; the Docker socket needs its
    opt-in. Raises HostVolumeError naming the flag value."""
    volumes: dict[str, str] = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not NAME.match(name):
            raise HostVolumeError(f"{item!r}: use NAME=PATH, NAME a DNS label")
        if not path.startswith("/"):
            raise HostVolumeError(f"{item!r}: PATH must be absolute")
        if not os.path.exists(path):
            raise HostVolumeError(f"{item!r}: {path} does not exist")
        real = os.path.realpath(path)
        if name in volumes:
            raise HostVolumeError(f"{item!r}: {name} is given twice")
        if not allow_docker_socket and exposes_docker(real):
            raise HostVolumeError(
                f"{item!r}: {real} is or holds the Docker socket, which gives root on this "
                "node; add --allow-docker-socket to share it anyway (docs/security.md)"
            )
        volumes[name] = real
    return volumes


def exposes_docker(real: str) -> bool:
    """Whether the directory (or file) reaches a Docker socket of this machine."""
    prefix = real.rstrip("/") + "/"
    for socket in DOCKER_SOCKETS:
        if not os.path.exists(socket):
            continue
        target = os.path.realpath(socket)
        for candidate in {socket, target}:
            if candidate == real or candidate.startswith(prefix):
                return True
    return False


def resolve(volumes: dict[str, str], path: str) -> Path:
    """The real path to mount for a task's host path: under a shared directory once symlinks
    are followed. Raises HostVolumeError when the node does not share it."""
    real = os.path.realpath(path)
    for shared in volumes.values():
        if real == shared or real.startswith(shared.rstrip("/") + "/"):
            if not os.path.exists(real):
                raise HostVolumeError(f"host path {path} does not exist on this node")
            return Path(real)
    if volumes and any(path == v or path.startswith(v.rstrip("/") + "/") for v in volumes.values()):
        raise HostVolumeError(f"host path {path} leads out of the shared directories ({real})")
    raise HostVolumeError(
        f"host path {path} is not shared on this node (agent --host-volume NAME=PATH)"
    )
