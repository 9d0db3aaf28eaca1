"""Drivers run workloads for the agent: the contract (base.py) every driver implements, and
its capabilities. The drivers themselves (`process`, `docker`) are imported where they are
started, so that importing the contract does not load the Docker client."""

from .base import (
    BindMount,
    CommandCapable,
    Driver,
    ExecCapable,
    ExecSession,
    ExitResult,
    StartRequest,
    Stats,
    TaskHandle,
)
from .errors import DriverError

__all__ = [
    "BindMount",
    "CommandCapable",
    "Driver",
    "DriverError",
    "ExecCapable",
    "ExecSession",
    "ExitResult",
    "StartRequest",
    "Stats",
    "TaskHandle",
]
