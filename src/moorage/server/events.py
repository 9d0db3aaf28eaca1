"""Events over HTTP (`moorage.ops.events`): the cluster's (a list, a live stream) and users'
(Consul's `/v1/event/fire` and `/v1/event/list`)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from aiohttp import web

from moorage.model import Event
from moorage.model.event import UserEvent
from moorage.ops import Events
from moorage.state import StateCache, Topic

from .auth import NODE_KEY
from .blocking import block
from .consul import blocking_params, check_params, consul_json
from .http import int_query, respond
from .routes import NODE, RouteTable, acl, path

routes = RouteTable()
KEEPALIVE = 15.0  # seconds between comments on an idle event stream


def event_json(event: UserEvent) -> dict[str, Any]:
    return {
        "ID": event.id,
        "Name": event.name,
        "Payload": base64.b64encode(event.payload).decode() if event.payload else None,
        "NodeFilter": event.node_filter,
        "ServiceFilter": event.service_filter,
        "TagFilter": event.tag_filter,
        "Version": 1,
        "LTime": event.ltime,
    }


class EventsApi:
    def __init__(self, events: Events, cache: StateCache) -> None:
        self.events = events
        self.cache = cache

    # ---- the cluster's -----------------------------------------------------------------
    @routes.get(
        "/v1/events",
        "Recent cluster events (newest last)",
        auth=acl("event"),
        response=list[Event],
        query=("service", "after"),
        blocking=True,
        tags=("events",),
    )
    async def list_events(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.EVENTS)
        after = int_query(request, "after", 0)
        return respond(self.events.history(after, request.query.get("service")), index)

    @routes.get(
        "/v1/events/stream",
        "Cluster events as they happen (server-sent events)",
        auth=acl("event"),
        query=("service", "after"),
        content_type="text/event-stream",
        tags=("events",),
    )
    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service")
        after = int_query(request, "after", self.cache.index(Topic.EVENTS))
        queue = self.cache.subscribe_events()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            backlog = self.events.history(after, None)
            seen = max((e.revision for e in backlog), default=after)
            for event in backlog:
                await _send_event(response, event, service)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event.revision > seen:
                    await _send_event(response, event, service)
        finally:
            self.cache.unsubscribe_events(queue)

    # ---- users' (Consul's) -------------------------------------------------------------
    @routes.put(
        "/v1/event/fire/{name}",
        "Fire a user event (body: the payload)",
        auth=acl("event", path("name")),
        query=("node", "service", "tag"),
        tags=("events",),
    )
    async def event_fire(self, request: web.Request) -> web.Response:
        check_params(request, {"node", "service", "tag"})
        filters = {name: request.query.get(name, "") for name in ("node", "service", "tag")}
        payload = await request.read()
        stored = await self.events.fire(request.match_info["name"], payload, filters)
        return consul_json(event_json(stored), stored.ltime or self.cache.index(Topic.USER_EVENTS))

    @routes.get(
        "/v1/event/list",
        "The newest user events (blocking: index, wait); `name`, and `node`: only the events"
        " whose filters select that node",
        auth=acl("event"),
        query=("name", "node", "index", "wait"),
        tags=("events",),
    )
    @routes.get(
        "/v1/event/list",
        "The user events aimed at the calling node (node=<its name>)",
        auth=NODE,
        query=("name", "node", "index", "wait"),
        tags=("agents",),
    )
    async def event_list(self, request: web.Request) -> web.Response:
        check_params(request, {"name", "node"})
        index, wait = blocking_params(request)
        if index > 0:
            index = await self.cache.wait(Topic.USER_EVENTS, index, wait)
        else:
            index = self.cache.index(Topic.USER_EVENTS)
        caller = request.get(NODE_KEY)  # on the cluster port: a node asks for its own
        query = request.query
        found = self.events.user_events(query.get("name"), query.get("node"), caller)
        return consul_json([event_json(e) for e in found], index)


async def _send_event(response: web.StreamResponse, event: Event, service: str | None) -> None:
    if service and event.service != service:
        return
    payload = json.dumps(event.model_dump(mode="json"))
    await response.write(f"id: {event.revision}\nevent: {event.type}\ndata: {payload}\n\n".encode())
