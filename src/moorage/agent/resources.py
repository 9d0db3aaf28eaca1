"""What this machine offers: cpu units (1024 per core) and memory (MiB)."""

from __future__ import annotations

import os

import psutil


def machine_cpu() -> int:
    return (os.cpu_count() or 1) * 1024


def machine_memory() -> int:
    return int(psutil.virtual_memory().total // (1024 * 1024))
