"""The test cluster itself (`moorage.testing.cluster`): namespaces, addresses, faults, teardown."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from .cluster import Cluster, http_spec, page, task_processes, wait_for

pytestmark = pytest.mark.integration


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_each_agent_has_its_own_namespace_and_ip_and_everything_is_removed_after(
    tmp_path: Path, netns: None
) -> None:
    cluster = Cluster(tmp_path, agents=2, netns=True).start()
    assert cluster.network is not None
    tag = cluster.network.tag
    try:
        assert f"mg{tag}br" in links() and f"moorage-{tag}-n2" in namespaces()
        own = os.readlink("/proc/self/ns/net")
        agent_ns = {os.readlink(f"/proc/{agent.pid}/ns/net") for agent in cluster.agents}
        assert len(agent_ns) == 2 and own not in agent_ns  # two namespaces, not the host's
        nodes = {n["name"]: n for n in cluster.http.get("/v1/nodes").json()}
        assert {name: n["address"] for name, n in nodes.items()} == cluster.addresses
        assert cluster.addresses["n1"] != cluster.addresses["n2"]

        # A process task listens on its node's IP (it shares the agent's namespace)...
        cluster.deploy(http_spec(count=2, extra="placement: {strategy: spread}"))
        for task in cluster.wait_running("web", 2):
            url = f"http://{cluster.addresses[task['node']]}:{task['ports']['http']}/"
            # running: its process started; the server in it listens a moment later
            assert f"task={task['id']}" in wait_for(lambda u=url: page(u), 10, 0.1, url)
        [task_n1] = [t for t in cluster.running("web") if t["node"] == "n1"]
        url_n1 = f"http://{cluster.addresses['n1']}:{task_n1['ports']['http']}/"

        # ...and cut/heal take exactly that node off the network and back.
        cluster.cut("n1")
        with pytest.raises(httpx.TransportError):
            httpx.get(url_n1, timeout=1)
        cluster.heal("n1")
        assert httpx.get(url_n1, timeout=5).status_code == 200

        # freeze/thaw stop and continue the agent process (not its tasks).
        agent = psutil.Process(cluster.by_name["n2"].pid)
        cluster.freeze("n2")
        wait_for(lambda: agent.status() == psutil.STATUS_STOPPED, 5)
        cluster.thaw("n2")
        wait_for(lambda: agent.status() != psutil.STATUS_STOPPED, 5)

        cluster.kill("n2")
        assert not psutil.pid_exists(agent.pid) or agent.status() == psutil.STATUS_ZOMBIE
        cluster.restart("n2")
        assert len(task_processes(tmp_path, "httpserver.py")) == 2
    finally:
        cluster.stop()
    assert f"mg{tag}" not in links()
    assert f"moorage-{tag}" not in namespaces()
    assert task_processes(tmp_path, "httpserver.py") == []
