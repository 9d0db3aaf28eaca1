"""How the cache keeps one kind of object: a table by cache key, and what some kinds add to it.

    Table        objects by cache key (most kinds)
    TaskTable    + the ids of each service's and each node's tasks
    TokenTable   + ACL tokens by the SHA-256 of their secret
    StampedTable + the object's `ltime` set to its revision (user events, as Consul's LTime)
    EventLog     cluster events, newest last, bounded; write-once: each new one is also
                 handed to the subscribers of the live stream

`load` takes an object read by a full list of the store; `apply` one that arrived on the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from moorage.model import Event, Task
from moorage.model.acl import Token
from moorage.model.event import UserEvent

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")

EVENT_BUFFER = 2000  # cluster events the cache keeps (the store keeps more; the GC trims it)


class Table(Generic[K, M]):
    """One kind's objects, by cache key."""

    def __init__(self) -> None:
        self.items: dict[K, M] = {}

    def get(self, ident: K) -> M | None:
        return self.items.get(ident)

    def load(self, ident: K, obj: M, revision: int) -> M:
        self.items[ident] = obj
        return obj

    def apply(self, ident: K, obj: M, revision: int) -> M:
        return self.load(ident, obj, revision)

    def remove(self, ident: K) -> M | None:
        return self.items.pop(ident, None)

    def clear(self) -> None:
        self.items.clear()


class TaskTable(Table[str, Task]):
    def __init__(self) -> None:
        super().__init__()
        self.by_service: dict[str, set[str]] = {}
        self.by_node: dict[str, set[str]] = {}

    def load(self, ident: str, obj: Task, revision: int) -> Task:
        old = self.items.get(ident)
        if old is not None and old.node and old.node != obj.node:
            self.by_node.get(old.node, set()).discard(ident)
        self.items[ident] = obj
        self.by_service.setdefault(obj.service, set()).add(ident)
        if obj.node:
            self.by_node.setdefault(obj.node, set()).add(ident)
        return obj

    def remove(self, ident: str) -> Task | None:
        task = self.items.pop(ident, None)
        if task is not None:
            self.by_service.get(task.service, set()).discard(ident)
            if task.node:
                self.by_node.get(task.node, set()).discard(ident)
        return task

    def clear(self) -> None:
        super().clear()
        self.by_service.clear()
        self.by_node.clear()


class TokenTable(Table[str, Token]):
    def __init__(self) -> None:
        super().__init__()
        self.by_digest: dict[str, Token] = {}

    def load(self, ident: str, obj: Token, revision: int) -> Token:
        old = self.items.get(ident)
        if old is not None:
            self.by_digest.pop(old.secret_sha256, None)
        self.items[ident] = obj
        self.by_digest[obj.secret_sha256] = obj
        return obj

    def remove(self, ident: str) -> Token | None:
        token = self.items.pop(ident, None)
        if token is not None:
            self.by_digest.pop(token.secret_sha256, None)
        return token

    def clear(self) -> None:
        super().clear()
        self.by_digest.clear()


class StampedTable(Table[str, UserEvent]):
    def load(self, ident: str, obj: UserEvent, revision: int) -> UserEvent:
        return super().load(ident, obj.model_copy(update={"ltime": revision}), revision)


class EventLog(Table[str, Event]):
    """Events are written once and only ever deleted by trimming, which the bounded log
    mirrors: `remove` has nothing to do."""

    def __init__(self) -> None:
        super().__init__()
        self.log: deque[Event] = deque(maxlen=EVENT_BUFFER)
        self._queues: set[asyncio.Queue[Event]] = set()

    def get(self, ident: str) -> Event | None:
        return None

    def load(self, ident: str, obj: Event, revision: int) -> Event:
        event = obj.model_copy(update={"revision": revision})
        self.log.append(event)
        return event

    def apply(self, ident: str, obj: Event, revision: int) -> Event:
        event = self.load(ident, obj, revision)
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)
        return event

    def remove(self, ident: str) -> Event | None:
        return None

    def clear(self) -> None:
        self.log.clear()

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=10000)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._queues.discard(queue)


AnyTable = Table[Any, Any]
