"""The Driver contract: how an agent starts, recovers, waits for and stops a workload.

One driver per kind of workload (`process`, `docker`). Handles are plain JSON, saved by the
agent, so a restarted agent recovers running workloads with `recover()`. Every driver passes
the same conformance suite (`tests/integration/drivers`).

What only some drivers can do is a capability: a protocol the driver implements, checked with
`isinstance` where it is used (never an attribute probed for):

    ExecCapable      open_exec(): an interactive command in a running workload (`moorage exec`)
    CommandCapable   exec(): a command run to completion inside the workload (command checks of
                     a container that has its own filesystem)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from moorage.model import Container


@dataclass(frozen=True)
class BindMount:
    """A host directory (a volume) the workload sees at `path`."""

    source: Path
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class StartRequest:
    task_id: str
    container: Container
    env: dict[str, str]  # the full environment the workload gets (PORT vars included)
    ports: dict[str, int]  # port name -> host port
    task_dir: Path
    progress: Callable[[str], None] | None = None  # long steps (image pulls) say where they are
    mounts: tuple[BindMount, ...] = ()  # volumes, mounted before the workload starts
    # The task's lease-deadline file (`moorage.volumes.fence`): a workload holding a volume is
    # killed once the deadline in it passes, even when the agent is gone.
    fence_file: Path | None = None


@dataclass
class TaskHandle:
    driver: str
    task_id: str
    container: str
    state: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskHandle:
        return cls(data["driver"], data["task_id"], data["container"], dict(data.get("state", {})))


@dataclass(frozen=True)
class ExitResult:
    exit_code: int | None
    signal: int | None = None
    oom_killed: bool = False
    message: str = ""

    def describe(self) -> str:
        if self.oom_killed:
            return "killed: out of memory"
        if self.signal and self.message:
            return f"{self.message} (signal {self.signal})"
        if self.signal:
            return f"killed by signal {self.signal}"
        if self.message:
            return self.message
        return f"exit code {self.exit_code}"


@dataclass(frozen=True)
class Stats:
    memory_bytes: int  # resident memory of the workload (its process tree, or its container)
    cpu_seconds: float  # CPU time used so far (user + system)


class Driver(Protocol):
    name: str

    async def start(self, req: StartRequest) -> TaskHandle:
        """Start the workload; return once it runs. Raises StartError with a clear message."""
        ...

    async def recover(self, handle: TaskHandle) -> bool:
        """After an agent restart: True iff this very workload still runs (pid and start time)."""
        ...

    async def wait(self, handle: TaskHandle) -> ExitResult:
        """Block until the workload exits (at once if it already has); works after recover()."""
        ...

    async def stop(self, handle: TaskHandle, timeout: float) -> ExitResult:
        """SIGTERM, then SIGKILL after timeout; return how it ended. Idempotent."""
        ...

    async def destroy(self, handle: TaskHandle) -> None:
        """Release what the workload held (cgroup, files). Idempotent; call after it ended."""
        ...

    def log_path(self, handle: TaskHandle, stream: Literal["stdout", "stderr"]) -> Path:
        """Where the workload's stream is written (rotated files carry .1, .2 suffixes)."""
        ...

    def memory_enforced(self, handle: TaskHandle) -> bool:
        """Whether the memory limit is enforced (a cgroup), or only reserved."""
        ...

    async def stats(self, handle: TaskHandle) -> Stats:
        """A resource sample of the running workload."""
        ...


class ExecSession(Protocol):
    """A command running inside a task's container, with its streams (see `moorage exec`)."""

    async def write(self, data: bytes) -> None:
        """Send bytes to the command's stdin."""
        ...

    async def close_stdin(self) -> None:
        """End the command's stdin (where the engine supports it)."""
        ...

    async def read(self) -> tuple[int, bytes] | None:
        """The next chunk of output as (1 stdout | 2 stderr, data); None once it is done."""
        ...

    async def wait(self) -> int:
        """The command's exit code, once its output is consumed."""
        ...

    async def close(self) -> None:
        """Kill the command if it still runs; release the streams."""
        ...


@runtime_checkable
class ExecCapable(Protocol):
    async def open_exec(
        self, handle: TaskHandle, command: list[str], env: dict[str, str], tty: bool
    ) -> ExecSession:
        """Start `command` in the running workload, its streams open; DriverError when the
        workload is gone or the command cannot start."""
        ...


@runtime_checkable
class CommandCapable(Protocol):
    async def exec(
        self, handle: TaskHandle, command: list[str], env: dict[str, str], timeout: float
    ) -> tuple[int, str]:
        """Run `command` inside the workload to its end: (exit code, combined output). Blocks
        at most `timeout` seconds (TimeoutError); DriverError when the workload is gone."""
        ...
