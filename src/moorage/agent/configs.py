"""Configs on the node, and what the operator allows a task (privileged containers).

A config travels with the task definition; the agent writes it once per content into
`<data>/configs/<digest>/` (a temporary directory renamed into place, so a reader sees it
whole or not at all) and bind-mounts it read-only where a container asks. `read_only: false`
gives each task its own writable copy under the task directory instead, so one task's edits
never reach another's. `MOORAGE_CONFIG_<NAME>` names the path on the node (a process that
runs without a mount namespace reads it there).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from moorage.drivers.base import BindMount, StartRequest
from moorage.model import Container, TaskDefinition, TaskStatus
from moorage.model.configs import ConfigSpec

from .hooks import Hook, HookStop


def env_key(name: str) -> str:
    return "MOORAGE_CONFIG_" + name.upper().replace("-", "_")


def materialize(root: Path, config: ConfigSpec) -> Path:
    """The config's content under root, written once per digest: the file itself (one-file
    configs) or the directory."""
    digest = config.digest()
    home = root / digest
    if not home.exists():
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            for relative, data in config.contents().items():
                target = scratch / "tree" / relative if config.is_dir else scratch / "file"
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                target.write_bytes(data)
                target.chmod(0o644)
            (scratch / "tree").mkdir(exist_ok=True, mode=0o755)  # an empty directory config
            scratch.chmod(0o755)
            os.rename(scratch, home)
        except FileExistsError:
            pass  # another task wrote the same content first
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    return home / "tree" if config.is_dir else home / "file"


class ConfigsHook(Hook):
    def __init__(
        self, taskdef: TaskDefinition, task_dir: Path, root: Path, privileged: bool
    ) -> None:
        self.taskdef = taskdef
        self.task_dir = task_dir
        self.root = root
        self.privileged = privileged
        self.paths: dict[str, Path] = {}

    async def prestart(self) -> None:
        asking = [c.name for c in self.taskdef.containers if c.privileged]
        if asking and not self.privileged:
            raise HookStop(
                TaskStatus.FAILED,
                f"container {asking[0]} is privileged: this node does not allow it "
                "(agent --allow-privileged)",
            )
        used = {m.config for c in self.taskdef.containers for m in c.configs}
        try:
            for name in sorted(used):
                self.paths[name] = materialize(self.root, self.taskdef.configs[name])
        except (OSError, KeyError) as exc:
            raise HookStop(TaskStatus.FAILED, f"configs: {exc}") from None

    def env(self, container: Container) -> dict[str, str]:
        return {env_key(m.config): str(self.paths[m.config]) for m in container.configs}

    def prepare(self, container: Container, request: StartRequest) -> StartRequest:
        mounts = list(request.mounts)
        for index, mount in enumerate(container.configs):
            source = self.paths[mount.config]
            if not mount.read_only:  # a private writable copy for this task
                copy = self.task_dir / "configs" / container.name / str(index) / source.name
                if not copy.exists():
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    if source.is_dir():
                        shutil.copytree(source, copy)
                    else:
                        shutil.copy2(source, copy)
                source = copy
            mounts.append(BindMount(source, mount.path, mount.read_only))
        return replace(request, mounts=tuple(mounts))
