from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A real server process and a real agent process (node n1, zone=a)."""
    c = Cluster(tmp_path).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """As `cluster`, but the node offers only 2048 MiB of memory."""
    c = Cluster(tmp_path, agent_memory=2048).start()
    try:
        yield c
    finally:
        c.stop()
