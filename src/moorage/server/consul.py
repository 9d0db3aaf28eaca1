"""The Consul-compatible HTTP subset: catalog, health, agent and status endpoints.

Tools written for Consul (Prometheus `consul_sd_configs`, python Consul clients,
consul-template) work against moorage's API port unchanged. The JSON field names are Consul's;
every answer carries `X-Consul-Index` (≥ 1, 404s included); blocking queries take `index` and a
Go-style `wait` (`120000ms`, `5m`). A query parameter moorage does not implement (`filter`,
`near`, `ns`, ...) is refused with 400 naming it, never silently ignored. docs/consul-compat.md
lists the subset.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from moorage import __version__
from moorage.model import FieldError, Health, SpecError
from moorage.model.acl import Level
from moorage.model.catalog import Instance
from moorage.model.duration import parse_go_duration
from moorage.model.node import Node
from moorage.state import StateCache
from moorage.state.catalog import Catalog

from .acl import authorizer
from .routes import OPEN, RouteTable, acl, acl_filtered, path

routes = RouteTable()

DATACENTER = "dc1"
CONSUL_VERSION = "1.15.4"  # the Consul API version whose subset we answer
INDEX = "X-Consul-Index"
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
# Consul's names for check kinds ("script" is its command check; serfHealth has none).
CHECK_TYPES = {"command": "script", "serf": ""}
# Parameters every read accepts (consistency modes are no-ops: one server answers from memory).
COMMON = frozenset({"dc", "index", "wait", "stale", "consistent", "cached", "token", "pretty"})
READ = ("dc", "index", "wait", "stale", "consistent", "cached", "pretty")  # as documented


def check_params(request: web.Request, allowed: Iterable[str] = ()) -> None:
    """Refuse, with 400 naming them, the parameters this endpoint does not implement."""
    known = COMMON | set(allowed)
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise SpecError(
            [FieldError(name, "is not supported by moorage's Consul API") for name in unknown],
            code="unsupported_parameter",
        )
    dc = request.query.get("dc")
    if dc not in (None, "", DATACENTER):
        raise SpecError([FieldError("dc", f"no path to datacenter {dc!r} (only {DATACENTER!r})")])


def blocking_params(request: web.Request) -> tuple[int, float]:
    errors: list[FieldError] = []
    index, wait = 0, DEFAULT_WAIT
    raw = request.query.get("index", "0") or "0"
    try:
        index = int(raw)
        if index < 0:
            raise ValueError
    except ValueError:
        errors.append(FieldError("index", f"must be a non-negative integer, got {raw!r}"))
    if "wait" in request.query:
        try:
            wait = min(parse_go_duration(request.query["wait"]), MAX_WAIT)
        except ValueError as exc:
            errors.append(FieldError("wait", str(exc)))
    if errors:
        raise SpecError(errors, code="invalid_query")
    return index, wait


def flag(request: web.Request, name: str) -> bool:
    """A Consul boolean parameter: present (`?passing`, `?passing=true`, `=1`) means true."""
    if name not in request.query:
        return False
    return request.query[name].lower() not in ("false", "0", "no")


def consul_json(value: Any, index: int, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, headers={INDEX: str(max(1, index))})


def node_meta_filter(request: web.Request) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for item in request.query.getall("node-meta", []):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise SpecError([FieldError("node-meta", f"must be key:value, got {item!r}")])
        wanted[key] = value
    return wanted


def node_json(node: Node, index: int) -> dict[str, Any]:
    return {
        "ID": _node_id(node.name),
        "Node": node.name,
        "Address": node.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": node.address, "wan": node.address},
        "Meta": dict(node.attrs),
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def _node_id(name: str) -> str:
    """A stable UUID-shaped id from the node name (Consul node ids are UUIDs)."""
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def service_json(instance: Instance) -> dict[str, Any]:
    return {
        "ID": instance.id,
        "Service": instance.name,
        "Tags": list(instance.tags),
        "Address": instance.address,
        "TaggedAddresses": {
            "lan_ipv4": {"Address": instance.address, "Port": instance.port},
            "wan_ipv4": {"Address": instance.address, "Port": instance.port},
        },
        "Meta": dict(instance.meta),
        "Port": instance.port,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "Kind": "",
        "Datacenter": DATACENTER,
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    }


def checks_json(instance: Instance) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for check in instance.checks:
        own = check.kind != "node"
        out.append(
            {
                "Node": instance.node,
                "CheckID": check.id,
                "Name": check.name,
                "Status": check.status.value,
                "Notes": "",
                "Output": check.output,
                "ServiceID": instance.id if own else "",
                "ServiceName": instance.name if own else "",
                "ServiceTags": list(instance.tags) if own else [],
                "Type": CHECK_TYPES.get(check.kind, check.kind) if own else "",
                "Interval": "",
                "Timeout": "",
                "ExposedPort": 0,
                "Definition": {},
                "CreateIndex": instance.create_index,
                "ModifyIndex": instance.modify_index,
            }
        )
    return out


class ConsulApi:
    """Consul's read endpoints over the catalog (computed from the state cache)."""

    def __init__(
        self, cache: StateCache, clock: Callable[[], float], advertise: str = "127.0.0.1:7070"
    ) -> None:
        self.cache = cache
        self.catalog = Catalog(cache)
        self.clock = clock
        self.advertise = advertise

    async def _block(self, request: web.Request, topics: list[str]) -> int:
        index, wait = blocking_params(request)
        if index > 0:
            wait += random.uniform(0, wait / 16)
            return await self.cache.wait_any(topics, index, wait)
        return max(self.cache.index(t) for t in topics)

    def _nodes_matching(self, request: web.Request) -> Callable[[Node], bool]:
        wanted = node_meta_filter(request)
        return lambda node: all(node.attrs.get(k) == v for k, v in wanted.items())

    @routes.get(
        "/v1/agent/self", "Consul: the answering agent", tags=("consul",), query=READ, auth=OPEN
    )
    async def consul_agent_self(self, request: web.Request) -> web.Response:
        check_params(request)
        name = "moorage-server"
        config = {
            "Datacenter": DATACENTER,
            "PrimaryDatacenter": DATACENTER,
            "NodeName": name,
            "NodeID": _node_id(name),
            "Server": True,
            "Revision": "moorage",
            "Version": CONSUL_VERSION,
        }
        body = {
            "Config": config,
            "DebugConfig": {"Datacenter": DATACENTER},
            "Member": {"Name": name, "Addr": self.advertise.rsplit(":", 1)[0], "Tags": {}},
            "Meta": {"moorage-version": __version__},
            "Stats": {},
            "xDS": {},
        }
        return consul_json(body, self.cache.index("*"))

    @routes.get(
        "/v1/status/leader", "Consul: the leader's address", tags=("consul",), query=READ, auth=OPEN
    )
    async def consul_status_leader(self, request: web.Request) -> web.Response:
        check_params(request)
        return consul_json(self.advertise, self.cache.index("*"))

    @routes.get(
        "/v1/status/peers",
        "Consul: the servers' addresses",
        tags=("consul",),
        query=READ,
        auth=OPEN,
    )
    async def consul_status_peers(self, request: web.Request) -> web.Response:
        check_params(request)
        return consul_json([self.advertise], self.cache.index("*"))

    @routes.get(
        "/v1/catalog/datacenters", "Consul: datacenters", tags=("consul",), query=READ, auth=OPEN
    )
    async def consul_catalog_datacenters(self, request: web.Request) -> web.Response:
        check_params(request)
        return consul_json([DATACENTER], self.cache.index("*"))

    @routes.get(
        "/v1/catalog/services",
        "Consul: service names and their tags",
        tags=("consul",),
        query=(*READ, "node-meta"),
        auth=acl_filtered("service"),
    )
    async def consul_catalog_services(self, request: web.Request) -> web.Response:
        check_params(request, {"node-meta"})
        matches = self._nodes_matching(request)
        index = await self._block(request, self.catalog.topics())
        names: dict[str, list[str]] = {}
        authz = authorizer(request)
        for name, tags in self.catalog.names().items():
            if not authz.allows("service", name, Level.READ):
                continue  # as Consul: a list shows what the token may read
            nodes = (self.cache.nodes.get(i.node) for i in self.catalog.instances(name))
            if any(node is not None and matches(node) for node in nodes):
                names[name] = tags  # as Consul: a name is listed while it has instances
        return consul_json(names, index)

    @routes.get(
        "/v1/catalog/nodes",
        "Consul: nodes",
        tags=("consul",),
        query=(*READ, "node-meta"),
        auth=acl("node"),
    )
    async def consul_catalog_nodes(self, request: web.Request) -> web.Response:
        check_params(request, {"node-meta"})
        matches = self._nodes_matching(request)
        index = await self._block(request, ["nodes"])
        nodes = sorted(self.cache.nodes.values(), key=lambda n: n.name)
        return consul_json([node_json(n, index) for n in nodes if matches(n)], index)

    @routes.get(
        "/v1/catalog/service/{name}",
        "Consul: a service's instances",
        tags=("consul",),
        query=(*READ, "tag", "node-meta"),
        auth=acl("service", path("name")),
    )
    async def consul_catalog_service(self, request: web.Request) -> web.Response:
        check_params(request, {"tag", "node-meta"})
        name = request.match_info["name"]
        index = await self._block(request, self.catalog.topics(name))
        out = []
        for instance, node in self._instances(request, name):
            service = service_json(instance)
            entry = node_json(node, instance.create_index)
            entry["NodeMeta"] = entry.pop("Meta")
            entry.update({f"Service{k}": v for k, v in service.items() if k != "Service"})
            entry["ServiceName"] = instance.name
            entry["ServiceID"] = instance.id
            entry["CreateIndex"] = instance.create_index
            entry["ModifyIndex"] = instance.modify_index
            for drop in ("ServiceDatacenter", "ServiceCreateIndex", "ServiceModifyIndex"):
                entry.pop(drop, None)
            out.append(entry)
        return consul_json(out, index)

    @routes.get(
        "/v1/health/service/{name}",
        "Consul: a service's instances with their checks",
        tags=("consul",),
        query=(*READ, "tag", "node-meta", "passing"),
        auth=acl("service", path("name")),
    )
    async def consul_health_service(self, request: web.Request) -> web.Response:
        check_params(request, {"tag", "node-meta", "passing"})
        name = request.match_info["name"]
        passing = flag(request, "passing")
        index = await self._block(request, self.catalog.topics(name))
        out = []
        for instance, node in self._instances(request, name):
            if passing and instance.status != Health.PASSING:
                continue
            out.append(
                {
                    "Node": node_json(node, instance.create_index),
                    "Service": service_json(instance),
                    "Checks": checks_json(instance),
                }
            )
        return consul_json(out, index)

    @routes.get(
        "/v1/health/checks/{name}",
        "Consul: the checks of a service",
        tags=("consul",),
        query=(*READ, "node-meta"),
        auth=acl("service", path("name")),
    )
    async def consul_health_checks(self, request: web.Request) -> web.Response:
        check_params(request, {"node-meta"})
        name = request.match_info["name"]
        index = await self._block(request, self.catalog.topics(name))
        out = [
            check
            for instance, _node in self._instances(request, name)
            for check in checks_json(instance)
            if check["ServiceID"]
        ]
        return consul_json(out, index)

    def _instances(self, request: web.Request, name: str) -> list[tuple[Instance, Node]]:
        tags = request.query.getall("tag", [])
        matches = self._nodes_matching(request)
        out = []
        for instance in self.catalog.instances(name):
            node = self.cache.nodes.get(instance.node)
            if node is None or not matches(node):
                continue
            if all(tag in instance.tags for tag in tags):
                out.append((instance, node))
        return out
