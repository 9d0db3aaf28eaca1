"""How an agent is set up: every `moorage agent` flag, in one object (as `ServerConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from moorage.model.volume import DEFAULT_LEASE

from .metrics import DEFAULT_BUFFER_BYTES, DEFAULT_INTERVAL


@dataclass(frozen=True)
class AgentConfig:
    servers: tuple[str, ...]  # servers' cluster ports (https URLs); the agent moves on when
    # one stops answering
    name: str  # the node's name
    data_dir: Path  # handles, task dirs, logs, the metrics buffer
    http_addr: tuple[str, int] = ("127.0.0.1", 7071)  # `--agent-addr`: logs, exec, snapshots
    attrs: dict[str, str] = field(default_factory=dict)  # `--attr k=v`: constraints match these
    advertise_address: str = "127.0.0.1"  # where this node's tasks are reached
    token: str | None = None  # the cluster's join token (needed until the node holds a cert)
    ca_cert: Path | None = None  # the cluster CA, when the token does not pin it
    cpu: int | None = None  # CPU units (1024 a core); None: the machine's
    memory: int | None = None  # MiB; None: the machine's
    event_handlers: dict[str, str] = field(default_factory=dict)  # user event name → command
    shared_volume_root: Path | None = None  # None: beside the data dir (as `moorage dev`)
    volume_lease: float = DEFAULT_LEASE  # seconds a volume claim holds without renewal
    metrics_interval: float = DEFAULT_INTERVAL  # 0: no metrics collection
    metrics_buffer_bytes: int = DEFAULT_BUFFER_BYTES  # the on-disk buffer while cut off
    # Command (`Args`) checks of services registered through the API run commands on this
    # machine: off unless asked for, as Consul's enable_script_checks.
    script_checks: bool = False
    host_volumes: dict[str, str] = field(default_factory=dict)  # name → real path (hostvolumes)
    privileged: bool = False  # `--allow-privileged`: run containers that ask for it

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("an agent needs at least one server address")
