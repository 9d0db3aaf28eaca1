from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from moorage.testing.cluster import netns_supported
from moorage.testing.dockerd import node_engines_supported
from tests.fixtures.images import BUSYBOX

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


@pytest.fixture
def netns() -> None:
    """Network-namespace clusters need root and iproute2: skip loudly without them, unless
    MOORAGE_REQUIRE_NETNS=1 (CI), where their absence is an error."""
    why = netns_supported()
    if why is not None:
        if os.environ.get("MOORAGE_REQUIRE_NETNS") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_NETNS=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why} (CI runs these as root)")


@pytest.fixture
def zones(tmp_path: Path, netns: None) -> Iterator[Cluster]:
    """Three agents in three network namespaces: n1 zone=a, n2 zone=b, n3 zone=c."""
    with Cluster(tmp_path, agents=3, netns=True) as cluster:
        yield cluster


@pytest.fixture
def node_engines(netns: None) -> None:
    """Clusters with a Docker engine per node (`Cluster(..., node_engines=True)`) need dockerd,
    containerd, docker-registry and busybox: skip loudly without them, unless
    MOORAGE_REQUIRE_DOCKER=1 (CI), where their absence is an error."""
    why = node_engines_supported()
    if why is None and not BUSYBOX.exists():
        why = f"{BUSYBOX} is missing (apt-get install busybox-static), the test image's base"
    if why is not None:
        if os.environ.get("MOORAGE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_DOCKER=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why} (CI runs these)")
