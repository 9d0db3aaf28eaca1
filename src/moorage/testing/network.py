"""Network namespaces for a test cluster on one machine: a bridge in the host namespace and
one namespace per node on a fresh 10.x.y.0/24, joined by veth pairs (`cut` sets the host end
down). Root, Linux, `ip` and `nsenter` only (`netns_supported` says why not)."""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def netns_supported() -> str | None:
    """Why a netns cluster cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2, util-linux)"
    return None


@dataclass
class NodeLink:
    namespace: str
    address: str
    host_end: str  # the veth end on the bridge, in the host namespace (cut/heal toggle it)
    inner_end: str


class Network:
    """A bridge in the host namespace and one namespace per node, on a fresh /24."""

    def __init__(self) -> None:
        why = netns_supported()
        if why is not None:
            raise RuntimeError(why)
        self.tag = f"{random.getrandbits(16):04x}"
        self.bridge = f"mg{self.tag}br"
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.nodes: dict[str, NodeLink] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except Exception:
            self.destroy()
            raise

    def add(self, name: str, number: int) -> NodeLink:
        link = NodeLink(
            namespace=f"moorage-{self.tag}-n{number}",
            address=str(self.subnet.network_address + 10 + number),
            host_end=f"mg{self.tag}h{number}",
            inner_end=f"mg{self.tag}n{number}",
        )
        self.nodes[name] = link
        _ip("netns", "add", link.namespace)
        _ip("link", "add", link.host_end, "type", "veth", "peer", "name", link.inner_end)
        _ip("link", "set", link.inner_end, "netns", link.namespace)
        _ip("link", "set", link.host_end, "master", self.bridge, "up")
        _ip("-n", link.namespace, "addr", "add", f"{link.address}/24", "dev", link.inner_end)
        _ip("-n", link.namespace, "link", "set", link.inner_end, "up")
        _ip("-n", link.namespace, "link", "set", "lo", "up")
        return link

    def prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside the node's namespace (network only:
        the node shares the machine's filesystem, cgroups and Docker engine)."""
        return ["nsenter", f"--net=/run/netns/{self.nodes[name].namespace}", "--"]

    def cut(self, name: str) -> None:
        _ip("link", "set", self.nodes[name].host_end, "down")

    def heal(self, name: str) -> None:
        _ip("link", "set", self.nodes[name].host_end, "up")

    def destroy(self) -> None:
        """Remove the namespaces (their veth pairs go with them) and the bridge."""
        for link in self.nodes.values():
            subprocess.run(["ip", "netns", "del", link.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", link.host_end], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.nodes.clear()


def _free_subnet() -> ipaddress.IPv4Network:
    listed = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    used = [ipaddress.IPv4Interface(word).network for word in listed.split() if "/" in word]
    for _ in range(200):
        subnet = ipaddress.IPv4Network(
            f"10.{random.randrange(200, 250)}.{random.randrange(256)}.0/24"
        )
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test network")
