"""Events: the cluster's own (what moorage did, newest last) and users' (Consul's `event fire`).

history(after, service)      cluster events past a revision, of one service or all
fire(name, payload, filters) a user event; agents with a handler for the name run it
                             (the newest 256 are kept)
user_events(name, node)      the user events a node's agent should see: their node, service
                             and tag filters (unanchored regular expressions) select it
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2

from moorage.model import Event, FieldError, Forbidden, SpecError, TaskStatus
from moorage.model.event import UserEvent
from moorage.state import StateCache, StateWriter, kinds
from moorage.store import Op

KEEP = 256
MAX_PAYLOAD = 100 * 1024  # Consul's is ~100 KiB less overhead: keep events small
MAX_PATTERN = 256  # characters of one filter
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
FILTERS = ("node", "service", "tag")


@lru_cache(maxsize=1024)
def pattern(text: str) -> Any:
    """A filter compiled with RE2 (ValueError when it is not one RE2 takes)."""
    options = re2.Options()
    options.max_mem = 1 << 20  # bytes for the automaton: a bounded pattern needs far less
    options.log_errors = False
    try:
        return re2.compile(text, options)
    except re2.error as exc:
        raise ValueError(str(exc)) from None


def search(text: str, value: str) -> bool:
    return pattern(text).search(value) is not None


class Events:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock

    def history(self, after: int, service: str | None) -> list[Event]:
        return [
            e
            for e in self.cache.events
            if e.revision > after and (not service or e.service == service)
        ]

    # ---- user events -------------------------------------------------------------------
    async def fire(self, name: str, payload: bytes, filters: dict[str, str]) -> UserEvent:
        """Store a user event; its `ltime` is the revision it was stored at."""
        problems = []
        if not NAME.match(name):
            problems.append(FieldError("name", "must be 1-128 letters, digits, '.', '_' or '-'"))
        if len(payload) > MAX_PAYLOAD:
            problems.append(
                FieldError("payload", f"is {len(payload)} bytes; at most {MAX_PAYLOAD}")
            )
        for field in FILTERS:
            text = filters.get(field, "")
            if len(text) > MAX_PATTERN:
                problems.append(
                    FieldError(field, f"is {len(text)} characters; at most {MAX_PATTERN}")
                )
                continue
            try:
                pattern(text)
            except ValueError as exc:
                problems.append(FieldError(field, f"is not a regular expression (RE2): {exc}"))
        if filters.get("tag") and not filters.get("service"):
            problems.append(FieldError("tag", "filters a service's tags: give `service` too"))
        if problems:
            raise SpecError(problems)
        now = self.clock()
        event = UserEvent(
            id=f"{int(now * 1e9):020d}-{secrets.token_hex(4)}",
            name=name,
            payload=payload,
            node_filter=filters.get("node", ""),
            service_filter=filters.get("service", ""),
            tag_filter=filters.get("tag", ""),
            time=now,
        )
        ops: list[Op] = [kinds.USER_EVENT.put(event)]
        old = sorted(self.cache.user_events)
        ops += [kinds.USER_EVENT.delete(key) for key in old[: max(0, len(old) + 1 - KEEP)]]
        revision = await self.writer.commit([], ops)
        return event.model_copy(update={"ltime": revision or 0})

    def user_events(
        self, name: str | None, node: str | None, caller: str | None = None
    ) -> list[UserEvent]:
        """The events named `name` aimed at `node` (`caller`: a node asks for its own only)."""
        if caller is not None and node != caller:
            raise Forbidden(f"node {caller} may list only its own events (node={caller})")
        return [
            e
            for _, e in sorted(self.cache.user_events.items())
            if (name is None or e.name == name) and (node is None or self.aimed_at(e, node))
        ]

    def aimed_at(self, event: UserEvent, node: str) -> bool:
        """Whether the event's filters select `node`, as Consul's agents decide (unanchored
        regular expressions): its name; with a service filter, a service with a running task on
        the node; with a tag filter too, one of that service's discovery tags."""
        if event.node_filter and not search(event.node_filter, node):
            return False
        if not event.service_filter:
            return True
        running = {
            t.service for t in self.cache.tasks_on_node(node) if t.status == TaskStatus.RUNNING
        }
        for service in running:
            if not search(event.service_filter, service):
                continue
            if not event.tag_filter:
                return True
            found = self.cache.services.get(service)
            tags = found.discovery.tags if found is not None and found.discovery else []
            if any(search(event.tag_filter, tag) for tag in tags):
                return True
        return False
