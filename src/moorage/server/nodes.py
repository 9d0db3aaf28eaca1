"""Nodes over HTTP (`moorage.ops.nodes`): the agents' registration, heartbeats and task list;
users' drain and eligible."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from moorage.model import Node, Task, validate_body
from moorage.model.acl import Level
from moorage.model.identity import CertificateRequest, JoinRequest, NodeCertificate, NodeIdentity
from moorage.model.messages import HeartbeatAnswer
from moorage.model.views import DrainBody
from moorage.ops import Nodes
from moorage.ops.identity import Identities
from moorage.state import StateCache, Topic

from .blocking import block
from .http import read_json, read_optional_json, respond
from .routes import JOIN, RouteTable, acl, node, path

routes = RouteTable()
THIS_NODE = node(path("name"))  # a node, about itself only


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lift: bool = Field(default=False, description="let the node join again")


class JoinTokenAnswer(BaseModel):
    token: str  # shown once; the server also writes it to <data dir>/join-token (0600)


class NodesApi:
    def __init__(self, nodes: Nodes, identities: Identities, cache: StateCache) -> None:
        self.nodes = nodes
        self.identities = identities
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

    @routes.post(
        "/v1/nodes/{name}/revoke",
        "Revoke a node's certificates at once (`lift`: let it join again)",
        auth=acl("node", path("name"), Level.WRITE),
        body=RevokeBody,
        response=NodeIdentity,
        tags=("nodes",),
    )
    async def revoke_node(self, request: web.Request) -> web.Response:
        body = validate_body(RevokeBody, await read_optional_json(request))
        return respond(await self.identities.revoke(request.match_info["name"], body.lift))

    @routes.post(
        "/v1/join-token",
        "Rotate the join token (the old one stops working); the new one is answered once",
        auth=acl("acl", level=Level.WRITE),
        response=JoinTokenAnswer,
        tags=("nodes",),
    )
    async def rotate_join_token(self, request: web.Request) -> web.Response:
        return respond(JoinTokenAnswer(token=await self.identities.rotate_join_token()))

    # ---- the nodes' side (cluster port) ------------------------------------------------
    @routes.post(
        "/v1/join",
        "A new node's certificate, for the join token",
        auth=JOIN,
        body=JoinRequest,
        response=NodeCertificate,
        tags=("agents",),
    )
    async def join(self, request: web.Request) -> web.Response:
        body = validate_body(JoinRequest, await read_json(request))
        return respond(await self.identities.join(body))

    @routes.post(
        "/v1/nodes/{name}/certificate",
        "A node renews its certificate",
        auth=THIS_NODE,
        body=CertificateRequest,
        response=NodeCertificate,
        tags=("agents",),
    )
    async def renew(self, request: web.Request) -> web.Response:
        body = validate_body(CertificateRequest, await read_json(request))
        return respond(await self.identities.renew(request.match_info["name"], body.csr))

    @routes.put(
        "/v1/nodes/{name}",
        "Register (or re-register) a node",
        auth=THIS_NODE,
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
        auth=THIS_NODE,
        response=HeartbeatAnswer,
        tags=("agents",),
    )
    async def heartbeat(self, request: web.Request) -> web.Response:
        return respond(await self.nodes.heartbeat(request.match_info["name"]))

    @routes.get(
        "/v1/nodes/{name}/tasks",
        "Tasks assigned to a node (agents watch this)",
        auth=THIS_NODE,
        response=list[Task],
        blocking=True,
        tags=("agents",),
    )
    async def node_tasks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.node_tasks(name))
        return respond(self.nodes.tasks(name), index)
