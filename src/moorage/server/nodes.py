"""Nodes over HTTP (`moorage.ops.nodes`): the agents' registration, heartbeats and task list;
users' drain and eligible."""

from __future__ import annotations

from aiohttp import web

from moorage.model import Node, Task, validate_body
from moorage.model.messages import HeartbeatAnswer
from moorage.model.views import DrainBody
from moorage.ops import Nodes
from moorage.state import StateCache, Topic

from .blocking import block
from .http import read_json, read_optional_json, respond
from .routes import AGENT, RouteTable, acl, path

routes = RouteTable()


class NodesApi:
    def __init__(self, nodes: Nodes, cache: StateCache) -> None:
        self.nodes = nodes
        self.cache = cache

    @routes.get(
        "/v1/nodes",
        "List nodes",
        auth=acl("node"),
        response=list[Node],
        blocking=True,
        tags=("nodes",),
    )
    async def list_nodes(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.NODES)
        return respond(self.nodes.all(), index)

    @routes.post(
        "/v1/nodes/{name}/drain",
        "Move every task off a node, keeping services at min_healthy_percent",
        auth=acl("node", path("name")),
        body=DrainBody,
        response=Node,
        tags=("nodes",),
    )
    async def drain_node(self, request: web.Request) -> web.Response:
        body = validate_body(DrainBody, await read_optional_json(request))
        return respond(await self.nodes.drain(request.match_info["name"], body))

    @routes.post(
        "/v1/nodes/{name}/eligible",
        "Let a drained node take tasks again",
        auth=acl("node", path("name")),
        response=Node,
        tags=("nodes",),
    )
    async def node_eligible(self, request: web.Request) -> web.Response:
        return respond(await self.nodes.eligible(request.match_info["name"]))

    # ---- the agents' side --------------------------------------------------------------
    @routes.put(
        "/v1/nodes/{name}",
        "Register (or re-register) a node",
        auth=AGENT,
        body=Node,
        response=Node,
        tags=("agents",),
    )
    async def register_node(self, request: web.Request) -> web.Response:
        node = validate_body(Node, await read_json(request))
        return respond(await self.nodes.register(request.match_info["name"], node))

    @routes.post(
        "/v1/nodes/{name}/heartbeat",
        "Agent heartbeat",
        auth=AGENT,
        response=HeartbeatAnswer,
        tags=("agents",),
    )
    async def heartbeat(self, request: web.Request) -> web.Response:
        return respond(await self.nodes.heartbeat(request.match_info["name"]))

    @routes.get(
        "/v1/nodes/{name}/tasks",
        "Tasks assigned to a node (agents watch this)",
        auth=AGENT,
        response=list[Task],
        blocking=True,
        tags=("agents",),
    )
    async def node_tasks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.node_tasks(name))
        return respond(self.nodes.tasks(name), index)
