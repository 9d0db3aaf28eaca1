"""User events, Consul's `/v1/event/*`: fire a named event with a small payload; agents that
have a handler for the name run it (the payload on stdin). The newest 256 events are kept."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from moorage.model import FieldError, SpecError, TaskStatus
from moorage.model.event import UserEvent
from moorage.state import StateCache, StateWriter, Topic
from moorage.state import keys as k
from moorage.store import Delete, Op, Put

from .api import table
from .consul import blocking_params, check_params, consul_json

KEEP = 256
MAX_PAYLOAD = 100 * 1024  # Consul's is ~100 KiB less overhead: keep events small
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


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
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock

    @table.add(
        "PUT", "/v1/event/fire/{name}", "Fire a user event (body: the payload)", tags=("events",)
    )
    async def event_fire(self, request: web.Request) -> web.Response:
        check_params(request, {"node", "service", "tag"})
        name = request.match_info["name"]
        problems = []
        if not NAME.match(name):
            problems.append(FieldError("name", "must be 1-128 letters, digits, '.', '_' or '-'"))
        payload = await request.read()
        if len(payload) > MAX_PAYLOAD:
            problems.append(
                FieldError("payload", f"is {len(payload)} bytes; at most {MAX_PAYLOAD}")
            )
        filters = {name: request.query.get(name, "") for name in ("node", "service", "tag")}
        for field, pattern in filters.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(FieldError(field, f"is not a regular expression: {exc}"))
        if filters["tag"] and not filters["service"]:
            problems.append(FieldError("tag", "filters a service's tags: give `service` too"))
        if problems:
            raise SpecError(problems)
        now = self.clock()
        event_id = f"{int(now * 1e9):020d}-{secrets.token_hex(4)}"
        event = UserEvent(
            id=event_id,
            name=name,
            payload=payload,
            node_filter=filters["node"],
            service_filter=filters["service"],
            tag_filter=filters["tag"],
            time=now,
        )
        ops: list[Op] = [Put(k.user_event_key(event_id), k.encode(event))]
        old = sorted(self.cache.user_events)
        ops += [Delete(k.user_event_key(key)) for key in old[: max(0, len(old) + 1 - KEEP)]]
        revision = await self.writer.commit([], ops)
        stored = event.model_copy(update={"ltime": revision or 0})
        return consul_json(event_json(stored), revision or self.cache.index(Topic.USER_EVENTS))

    @table.add(
        "GET",
        "/v1/event/list",
        "The newest user events (blocking: index, wait); `name`, and `node`: only the events"
        " whose filters select that node",
        query=("name", "node"),
        tags=("events",),
    )
    async def event_list(self, request: web.Request) -> web.Response:
        check_params(request, {"name", "node"})
        index, wait = blocking_params(request)
        if index > 0:
            index = await self.cache.wait(Topic.USER_EVENTS, index, wait)
        else:
            index = self.cache.index(Topic.USER_EVENTS)
        name, node = request.query.get("name"), request.query.get("node")
        events = [
            e
            for _, e in sorted(self.cache.user_events.items())
            if (name is None or e.name == name) and (node is None or self.aimed_at(e, node))
        ]
        return consul_json([event_json(e) for e in events], index)

    def aimed_at(self, event: UserEvent, node: str) -> bool:
        """Whether the event's filters select `node`, as Consul's agents decide (unanchored
        regular expressions): its name; with a service filter, a service with a running task on
        the node; with a tag filter too, one of that service's discovery tags."""
        if event.node_filter and re.search(event.node_filter, node) is None:
            return False
        if not event.service_filter:
            return True
        running = {
            t.service for t in self.cache.tasks_on_node(node) if t.status == TaskStatus.RUNNING
        }
        for service in running:
            if re.search(event.service_filter, service) is None:
                continue
            if not event.tag_filter:
                return True
            found = self.cache.services.get(service)
            tags = found.discovery.tags if found is not None and found.discovery else []
            if any(re.search(event.tag_filter, tag) for tag in tags):
                return True
        return False
