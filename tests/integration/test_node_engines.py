"""Node engines: in a netns test cluster each node runs a Docker engine of its own, in its own
namespace, and images travel between nodes through a registry, as between machines
(`Cluster(..., node_engines=True)`, `moorage.testing.dockerd`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.fixtures.images import IMAGE, ensure_image

from .cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
def two_nodes(tmp_path: Path, node_engines: None) -> Iterator[Cluster]:
    """Two agents in two namespaces, each with its own engine; a registry on the bridge."""
    with Cluster(tmp_path, agents=2, netns=True, node_engines=True) as cluster:
        yield cluster


def answer(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


def test_images_travel_through_the_registry_and_host_networks_are_per_node(
    two_nodes: Cluster,
) -> None:
    assert two_nodes.engines is not None
    n1, n2 = two_nodes.engines["n1"], two_nodes.engines["n2"]
    registry = two_nodes.engines.registry
    probe = f"{registry.address}/probe:1"

    # built on node 1 (imported), pushed; node 2 has nothing until it pulls
    ensure_image(two_nodes.docker_host("n1"))
    n1.docker("tag", IMAGE, probe)
    n1.docker("push", probe)
    assert registry.catalog() == ["probe"] and registry.tags("probe") == ["1"]
    assert n2.docker("image", "inspect", probe, check=False).returncode != 0
    n2.docker("pull", probe)

    # host network: the same port on both nodes at once, each on its node's address
    for node, engine in (("n1", n1), ("n2", n2)):
        serve = f"mkdir /w && echo {node} > /w/index.html && exec httpd -f -p 18080 -h /w"
        engine.docker("run", "-d", "--network", "host", probe, "sh", "-c", serve)
    for node in ("n1", "n2"):
        url = f"http://{two_nodes.addresses[node]}:18080/"
        assert wait_for(partial(answer, url), 10, what=url) == f"{node}\n"

    # a published port: DNAT in node 2's namespace, reached from the host's
    n2.docker("run", "-d", "-p", "18081:8080", probe)
    url = f"http://{two_nodes.addresses['n2']}:18081/"
    assert wait_for(partial(answer, url), 10, what=url) == "hello from the test image\n"

    # the agent drives its node's engine (DOCKER_HOST): node 2 pulls a tag only the registry has
    n1.docker("tag", IMAGE, f"{registry.address}/probe:2")
    n1.docker("push", f"{registry.address}/probe:2")
    two_nodes.deploy(
        f"service: probe\ncount: 1\n"
        f'placement: {{constraints: ["node.name == n2"]}}\n'
        f"containers:\n  - name: app\n    image: {registry.address}/probe:2\n"
        "    cpu: 10\n    memory: 16\n    ports: [{name: http, container: 8080}]\n"
    )
    (task,) = two_nodes.wait_running("probe", 1, timeout=30)
    url = f"http://{two_nodes.addresses['n2']}:{task['ports']['http']}/"
    assert wait_for(partial(answer, url), 10, what=url) == "hello from the test image\n"
    mine = n2.docker("ps", "-q", "--filter", "label=moorage.node=n2").stdout.split()
    assert len(mine) == 1
