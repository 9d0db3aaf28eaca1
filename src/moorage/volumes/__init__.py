"""Volumes on a node: where their data lives, how it is mounted, and fencing (docs/volumes.md).

    layout.py   the path rules (shared root, agent data dir, images, mountpoints, snapshots)
    host.py     provision: directory, or a sparse ext4 image formatted once and loop-mounted;
                unmount (lazily once the task is dead)
    fence.py    the lease-deadline file and the watchdog that kills a task's workloads and
                unmounts its volumes when the lease may have run out (outlives the agent)

The agent claims volumes from the server (`moorage.agent.volumes`) and uses this package to
act on the node. It imports `moorage.model` at most; the agent imports it.
"""

from .errors import VolumeError
from .layout import Layout

__all__ = ["Layout", "VolumeError"]
