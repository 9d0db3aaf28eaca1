"""A watch-fed, in-memory copy of the state, with per-topic indexes for blocking queries.

The cache lists everything once, then applies the store's watch events in revision order. Each
stored kind (kinds.py) has one table here, built from its registry entry; every change bumps the
index of the topics its kind names (a service, a node's task list, ...), so a blocking query on
one topic wakes only when that topic changed. A watch that falls behind compaction re-lists and
bumps every topic (waking everyone, who then re-read). The KV store keeps its own indexes
(kv.py): its changes wake only the KV queries on that key and its prefixes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Hashable, Iterable
from typing import Any, TypeVar, cast

from moorage.metrics.alerts import AlertRule, AlertState, Notifier, Silence
from moorage.model import Deployment, Event, Node, Secret, Service, Task, TaskDefinition
from moorage.model.acl import Policy, Token
from moorage.model.catalog import Registration
from moorage.model.cluster import ClusterSnapshot
from moorage.model.event import UserEvent
from moorage.model.snapshot import Snapshot
from moorage.model.volume import Volume
from moorage.store import Compacted, KeyValue, Store, StoreClosed, WatchEvent

from . import kinds
from .kinds import KINDS, ROOT, StoredKind, kind_of
from .kv import KV_ROOT, KvState
from .tables import AnyTable, EventLog, TaskTable, TokenTable
from .topics import Topic

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")

_REVISION = "#revision"  # internal: set whenever `revision` moves (wait_revision waits on it)


class StateCache:
    """Answers reads and blocking queries from memory; `run()` keeps it in step with the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.revision = 0
        self.tables: dict[str, AnyTable] = {kind.segment: kind.table() for kind in KINDS}
        # Typed views of the tables (each is the table's own dict, kept up to date in place).
        self.services: dict[str, Service] = self.items(kinds.SERVICE)
        self.tasks: dict[str, Task] = self.items(kinds.TASK)
        self.nodes: dict[str, Node] = self.items(kinds.NODE)
        self.taskdefs: dict[tuple[str, int], TaskDefinition] = self.items(kinds.TASKDEF)
        self.deployments: dict[str, Deployment] = self.items(kinds.DEPLOYMENT)
        self.secrets: dict[str, Secret] = self.items(kinds.SECRET)  # sealed, never plain
        self.meta: dict[str, bytes] = self.items(kinds.META)
        self.user_events: dict[str, UserEvent] = self.items(kinds.USER_EVENT)
        self.registrations: dict[str, Registration] = self.items(kinds.REGISTRATION)
        self.volumes: dict[str, Volume] = self.items(kinds.VOLUME)
        self.snapshots: dict[tuple[str, str], Snapshot] = self.items(kinds.SNAPSHOT)
        self.acl_tokens: dict[str, Token] = self.items(kinds.ACL_TOKEN)  # by accessor id
        self.acl_policies: dict[str, Policy] = self.items(kinds.ACL_POLICY)
        self.alert_rules: dict[str, AlertRule] = self.items(kinds.ALERT_RULE)
        self.notifiers: dict[str, Notifier] = self.items(kinds.NOTIFIER)
        self.silences: dict[str, Silence] = self.items(kinds.SILENCE)
        self._tasks = cast(TaskTable, self.tables[kinds.TASK.segment])
        self._events = cast(EventLog, self.tables[kinds.EVENT.segment])
        self.events: deque[Event] = self._events.log
        # ACL tokens by the SHA-256 (hex) of their secret
        self.acl_by_digest = cast(TokenTable, self.tables[kinds.ACL_TOKEN.segment]).by_digest
        self.kv = KvState()  # the KV store: sorted keys, per-key and per-prefix indexes
        self.mod_revisions: dict[str, int] = {}
        self._index: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._synced = asyncio.Event()
        self.watchers = 0  # blocking waits parked in wait()/wait_any() now (/metrics)

    # ---- reads -------------------------------------------------------------------------
    def items(self, kind: StoredKind[K, M]) -> dict[K, M]:
        """The objects of `kind`, by cache key (the live table: read it, never write it)."""
        return cast(dict[K, M], self.tables[kind.segment].items)

    @property
    def alert_state(self) -> AlertState | None:
        """The leader's alert state, as last stored."""
        return self.items(kinds.ALERT_STATE).get("current")

    def snapshot(self) -> ClusterSnapshot:
        """The cluster as of `revision`, for a decision that reads it before its next await."""
        return ClusterSnapshot(
            self.services, self.taskdefs, self.tasks, self.nodes, self.deployments, self.volumes
        )

    def index(self, topic: str) -> int:
        """The revision of the last change to topic (at least 1, as Consul's X-Consul-Index)."""
        return max(1, self._index.get(topic, 0))

    def tasks_of_service(self, service: str) -> list[Task]:
        ids = self._tasks.by_service.get(service, ())
        return sorted((self.tasks[i] for i in ids), key=lambda t: (t.created_at, t.id))

    def tasks_on_node(self, node: str) -> list[Task]:
        ids = self._tasks.by_node.get(node, ())
        return sorted((self.tasks[i] for i in ids), key=lambda t: (t.created_at, t.id))

    def deployments_of(self, service: str) -> list[Deployment]:
        """Deployments of a service, newest first."""
        found = [d for d in self.deployments.values() if d.service == service]
        return sorted(found, key=lambda d: (d.created_at, d.id), reverse=True)

    def latest_taskdef(self, family: str) -> TaskDefinition | None:
        revs = [rev for (fam, rev) in self.taskdefs if fam == family]
        return self.taskdefs[(family, max(revs))] if revs else None

    def taskdef_revisions(self, family: str) -> list[TaskDefinition]:
        return sorted(
            (td for (fam, _), td in self.taskdefs.items() if fam == family),
            key=lambda td: td.revision,
        )

    # ---- waiting -----------------------------------------------------------------------
    async def wait(self, topic: str, index: int, timeout: float) -> int:
        """Block until topic's index exceeds `index` or timeout passes; return the index."""
        self.watchers += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.index(topic) <= index:
                        await self._event_for(topic).wait()
        finally:
            self.watchers -= 1
        return self.index(topic)

    async def wait_any(self, topics: list[str], index: int, timeout: float) -> int:
        """Block until one of `topics` moves past `index` (or timeout); the newest index."""

        def newest() -> int:
            return max(self.index(t) for t in topics)

        self.watchers += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while newest() <= index:
                        waits = [asyncio.ensure_future(self._event_for(t).wait()) for t in topics]
                        try:
                            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for waiting in waits:
                                waiting.cancel()
        finally:
            self.watchers -= 1
        return newest()

    async def wait_revision(self, revision: int, timeout: float = 10.0) -> None:
        """Block until the cache has applied `revision` (read-your-writes after a commit)."""
        if self.revision >= revision:  # the usual case: the store wakes the watch first
            return
        async with asyncio.timeout(timeout):
            while self.revision < revision:
                await self._event_for(_REVISION).wait()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def subscribe_events(self) -> asyncio.Queue[Event]:
        """Every cluster event from now on (the live stream, /v1/events/stream)."""
        return self._events.subscribe()

    def unsubscribe_events(self, queue: asyncio.Queue[Event]) -> None:
        self._events.unsubscribe(queue)

    def _event_for(self, topic: str) -> asyncio.Event:
        event = self._changed.get(topic)
        if event is None:
            event = self._changed[topic] = asyncio.Event()
        return event

    def _bump(self, topics: Iterable[str], revision: int) -> None:
        for topic in (*topics, Topic.ANY):
            self._index[topic] = revision
            event = self._changed.pop(topic, None)
            if event is not None:
                event.set()
        self._advanced()

    def _advanced(self) -> None:
        """Wake `wait_revision` callers (self.revision moved)."""
        event = self._changed.pop(_REVISION, None)
        if event is not None:
            event.set()

    # ---- feeding -----------------------------------------------------------------------
    async def run(self) -> None:
        """List, then follow the watch forever; re-list after compaction. Cancel to stop."""
        backoff = 0.1
        while True:
            try:
                await self._relist()
                backoff = 0.1
                async for change in self._watch():
                    self._apply(change)
            except Compacted:
                log.warning("state watch fell behind compaction; re-listing")
            except StoreClosed:
                raise
            except (OSError, RuntimeError) as exc:  # engine hiccup: retry from a fresh list
                log.warning("state watch failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _watch(self) -> AsyncIterator[WatchEvent]:
        iterator = self._store.watch(ROOT, self.revision + 1)
        try:
            async for change in iterator:
                yield change
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _relist(self) -> None:
        kvs, revision = await self._store.range(ROOT)
        old_topics = list(self._index)
        for table in self.tables.values():
            table.clear()
        self.mod_revisions.clear()
        self.kv.clear()
        for kv in kvs:
            self._load(kv, live=False)
        self.revision = revision
        self.kv.relisted(revision, first=not self._synced.is_set())
        self._bump(old_topics + list(self._index), revision)
        self._synced.set()

    def _apply(self, change: WatchEvent) -> None:
        kv = change.kv
        if kv.key.startswith(KV_ROOT):
            # KV has its own per-key and per-prefix indexes and waiters. It does not bump
            # Topic.ANY: the control loops wake on that, and the KV store is not theirs.
            self.kv.apply(change)
            self.revision = max(self.revision, kv.mod_revision)
            self._advanced()
            return
        kind = kind_of(kv.key)
        if kind is None:
            return
        ident = kind.ident(kv.key)
        table = self.tables[kind.segment]
        topics = set(kind.topics(ident, table.get(ident)))
        if change.type == "delete":
            self.mod_revisions.pop(kv.key, None)
            table.remove(ident)
        else:
            topics.update(kind.topics(ident, self._load(kv, live=True)))
        self.revision = max(self.revision, kv.mod_revision)
        self._bump(topics, kv.mod_revision)

    def _load(self, kv: KeyValue, live: bool) -> Any:
        """Decode and keep one stored value; the object kept (None if it is not one of ours)."""
        if kv.key.startswith(KV_ROOT):
            self.kv.load(kv)
            return None
        kind = kind_of(kv.key)
        if kind is None:
            return None
        self.mod_revisions[kv.key] = kv.mod_revision
        try:
            obj = kind.decode(kv.value)
        except ValueError:
            log.error("skipping undecodable value at %s", kv.key)
            return None
        table = self.tables[kind.segment]
        keep = table.apply if live else table.load
        return keep(kind.ident(kv.key), obj, kv.mod_revision)
