"""A watch-fed, in-memory copy of the state, with per-topic indexes for blocking queries.

The cache lists everything once, then applies the store's watch events in revision order.
Every change bumps the index of the topics it touches (a service, a node's task list, ...), so a
blocking query on one topic wakes only when that topic changed. A watch that falls behind
compaction re-lists and bumps every topic (waking everyone, who then re-read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable

from pydantic import BaseModel

from moorage.metrics.alerts import AlertRule, AlertState, Notifier, Silence
from moorage.model import Deployment, Event, Node, Secret, Service, Task, TaskDefinition
from moorage.model.acl import Policy, Token
from moorage.model.catalog import Registration
from moorage.model.event import UserEvent
from moorage.model.snapshot import Snapshot
from moorage.model.volume import Volume
from moorage.store import Compacted, KeyValue, Store, StoreClosed, WatchEvent

from .keys import ROOT, Kind, decode, key_kind
from .kv import KvState

log = logging.getLogger(__name__)

EVENT_BUFFER = 2000
_REVISION = "#revision"  # internal: set whenever `revision` moves (wait_revision waits on it)


class Topic:
    """Names of the things a blocking query can wait on."""

    SERVICES = "services"
    TASKS = "tasks"
    NODES = "nodes"
    EVENTS = "events"
    SECRETS = "secrets"
    ACL = "acl"
    USER_EVENTS = "user-events"
    REGISTRATIONS = "registrations"
    VOLUMES = "volumes"
    SNAPSHOTS = "snapshots"
    ALERTS = "alerts"  # alert rules, notifiers, silences and the alert state

    @staticmethod
    def volume(name: str) -> str:
        return f"volume:{name}"

    @staticmethod
    def volume_snapshots(volume: str) -> str:
        return f"snapshots:volume:{volume}"

    @staticmethod
    def node_registrations(node: str) -> str:
        return f"registrations:node:{node}"

    @staticmethod
    def registered(name: str) -> str:
        return f"registrations:name:{name}"

    ANY = "*"

    @staticmethod
    def service(name: str) -> str:
        return f"service:{name}"

    @staticmethod
    def service_tasks(name: str) -> str:
        return f"tasks:service:{name}"

    @staticmethod
    def node(name: str) -> str:
        return f"node:{name}"

    @staticmethod
    def node_tasks(name: str) -> str:
        return f"tasks:node:{name}"

    @staticmethod
    def task(task_id: str) -> str:
        return f"task:{task_id}"

    @staticmethod
    def taskdefs(family: str) -> str:
        return f"taskdefs:{family}"

    @staticmethod
    def deployment(deployment_id: str) -> str:
        return f"deployment:{deployment_id}"

    @staticmethod
    def service_deployments(service: str) -> str:
        return f"deployments:service:{service}"


def _topics(kind: Kind, key: str, obj: BaseModel | None) -> Iterable[str]:
    name = key.rsplit("/", 1)[-1]
    if kind is Kind.SERVICE:
        return (Topic.SERVICES, Topic.service(name))
    if kind is Kind.TASK:
        out = [Topic.TASKS, Topic.task(name)]
        if isinstance(obj, Task):
            out.append(Topic.service_tasks(obj.service))
            out.append(Topic.service(obj.service))
            out.append(Topic.SERVICES)
            if obj.node:
                out.append(Topic.node_tasks(obj.node))
        return out
    if kind is Kind.NODE:
        return (Topic.NODES, Topic.node(name))
    if kind is Kind.TASKDEF:
        return (Topic.taskdefs(key.split("/")[-2]),)
    if kind is Kind.EVENT:
        return (Topic.EVENTS,)
    if kind is Kind.SECRET:
        return (Topic.SECRETS,)
    if kind in (Kind.ACL_TOKEN, Kind.ACL_POLICY):
        return (Topic.ACL,)
    if kind is Kind.USER_EVENT:
        return (Topic.USER_EVENTS,)
    if kind is Kind.VOLUME:
        return (Topic.VOLUMES, Topic.volume(name))
    if kind is Kind.SNAPSHOT:
        return (Topic.SNAPSHOTS, Topic.volume_snapshots(key.split("/")[-2]))
    if kind in (Kind.ALERT_RULE, Kind.NOTIFIER, Kind.SILENCE, Kind.ALERT_STATE):
        return (Topic.ALERTS,)
    if kind is Kind.REGISTRATION:
        out = [Topic.REGISTRATIONS]
        if isinstance(obj, Registration):
            out += [Topic.node_registrations(obj.node), Topic.registered(obj.name)]
        return out
    if kind is Kind.DEPLOYMENT:
        out = [Topic.deployment(name)]
        if isinstance(obj, Deployment):
            out += [Topic.service_deployments(obj.service), Topic.service(obj.service)]
        return out
    return ()


class StateCache:
    """Answers reads and blocking queries from memory; `run()` keeps it in step with the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.revision = 0
        self.services: dict[str, Service] = {}
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[str, Node] = {}
        self.taskdefs: dict[tuple[str, int], TaskDefinition] = {}
        self.deployments: dict[str, Deployment] = {}
        self.secrets: dict[str, Secret] = {}  # sealed: the cache never holds a plain value
        self.meta: dict[str, bytes] = {}
        self.user_events: dict[str, UserEvent] = {}  # by key, in key (time) order
        self.registrations: dict[str, Registration] = {}  # by id
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[tuple[str, str], Snapshot] = {}  # by (volume, id)
        self.acl_tokens: dict[str, Token] = {}  # by accessor id
        self.acl_policies: dict[str, Policy] = {}
        self.acl_by_digest: dict[str, Token] = {}  # by the secret's SHA-256 (hex)
        self.alert_rules: dict[str, AlertRule] = {}
        self.notifiers: dict[str, Notifier] = {}
        self.silences: dict[str, Silence] = {}
        self.alert_state: AlertState | None = None  # the leader's, as last stored
        self.kv = KvState()  # the KV store: sorted keys, per-key and per-prefix indexes
        self.events: deque[Event] = deque(maxlen=EVENT_BUFFER)
        self.mod_revisions: dict[str, int] = {}
        self._tasks_by_service: dict[str, set[str]] = {}
        self._tasks_by_node: dict[str, set[str]] = {}
        self._index: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._event_queues: set[asyncio.Queue[Event]] = set()
        self._synced = asyncio.Event()
        self.watchers = 0  # blocking waits parked in wait()/wait_any() now (/metrics)

    # ---- reads -------------------------------------------------------------------------
    def index(self, topic: str) -> int:
        """The revision of the last change to topic (at least 1, as Consul's X-Consul-Index)."""
        return max(1, self._index.get(topic, 0))

    def tasks_of_service(self, service: str) -> list[Task]:
        ids = self._tasks_by_service.get(service, ())
        return sorted((self.tasks[i] for i in ids), key=lambda t: (t.created_at, t.id))

    def tasks_on_node(self, node: str) -> list[Task]:
        ids = self._tasks_by_node.get(node, ())
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
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=10000)
        self._event_queues.add(queue)
        return queue

    def unsubscribe_events(self, queue: asyncio.Queue[Event]) -> None:
        self._event_queues.discard(queue)

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
        self._clear()
        for kv in kvs:
            self._load(kv)
        self.revision = revision
        self.kv.relisted(revision, first=not self._synced.is_set())
        self._bump(old_topics + list(self._index), revision)
        self._synced.set()

    def _clear(self) -> None:
        self.services.clear()
        self.tasks.clear()
        self.nodes.clear()
        self.taskdefs.clear()
        self.deployments.clear()
        self.secrets.clear()
        self.meta.clear()
        self.acl_tokens.clear()
        self.user_events.clear()
        self.registrations.clear()
        self.volumes.clear()
        self.snapshots.clear()
        self.acl_policies.clear()
        self.acl_by_digest.clear()
        self.alert_rules.clear()
        self.notifiers.clear()
        self.silences.clear()
        self.alert_state = None
        self.events.clear()
        self.mod_revisions.clear()
        self._tasks_by_service.clear()
        self._tasks_by_node.clear()
        self.kv.clear()

    def _apply(self, change: WatchEvent) -> None:
        kv = change.kv
        kind = key_kind(kv.key)
        if kind is None:
            return
        if kind is Kind.KV:
            # KV has its own per-key and per-prefix indexes and waiters. It does not bump
            # Topic.ANY: the control loops wake on that, and the KV store is not theirs.
            self.kv.apply(change)
            self.revision = max(self.revision, kv.mod_revision)
            self._advanced()
            return
        old = self._lookup(kind, kv.key)
        topics = set(_topics(kind, kv.key, old))
        if change.type == "delete":
            self._remove(kind, kv.key)
            new = None
        else:
            new = self._load(kv)
            topics.update(_topics(kind, kv.key, new))
        self.revision = max(self.revision, kv.mod_revision)
        self._bump(topics, kv.mod_revision)
        if isinstance(new, Event) and old is None:
            for queue in list(self._event_queues):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(new)

    def _lookup(self, kind: Kind, key: str) -> BaseModel | None:
        name = key.rsplit("/", 1)[-1]
        if kind is Kind.TASK:
            return self.tasks.get(name)
        if kind is Kind.SERVICE:
            return self.services.get(name)
        if kind is Kind.NODE:
            return self.nodes.get(name)
        if kind is Kind.DEPLOYMENT:
            return self.deployments.get(name)
        if kind is Kind.REGISTRATION:
            return self.registrations.get(name)
        return None

    def _load(self, kv: KeyValue) -> BaseModel | None:
        kind = key_kind(kv.key)
        if kind is None:
            return None
        if kind is Kind.KV:
            self.kv.load(kv)
            return None
        name = kv.key.rsplit("/", 1)[-1]
        self.mod_revisions[kv.key] = kv.mod_revision
        if kind is Kind.META:
            self.meta[name] = kv.value
            return None
        try:
            obj = decode(kind, kv.value)
        except ValueError:
            log.error("skipping undecodable value at %s", kv.key)
            return None
        if isinstance(obj, Task):
            self._index_task(obj)
        elif isinstance(obj, Service):
            self.services[name] = obj
        elif isinstance(obj, Node):
            self.nodes[name] = obj
        elif isinstance(obj, TaskDefinition):
            self.taskdefs[(obj.family, obj.revision)] = obj
        elif isinstance(obj, Deployment):
            self.deployments[name] = obj
        elif isinstance(obj, Registration):
            self.registrations[name] = obj
        elif isinstance(obj, Volume):
            self.volumes[name] = obj
        elif isinstance(obj, Snapshot):
            self.snapshots[(obj.volume, obj.id)] = obj
        elif isinstance(obj, UserEvent):
            obj = obj.model_copy(update={"ltime": kv.mod_revision})
            self.user_events[name] = obj
        elif isinstance(obj, Token):
            old_token = self.acl_tokens.get(name)
            if old_token is not None:
                self.acl_by_digest.pop(old_token.secret_sha256, None)
            self.acl_tokens[name] = obj
            self.acl_by_digest[obj.secret_sha256] = obj
        elif isinstance(obj, Policy):
            self.acl_policies[name] = obj
        elif isinstance(obj, AlertRule):
            self.alert_rules[name] = obj
        elif isinstance(obj, Notifier):
            self.notifiers[name] = obj
        elif isinstance(obj, Silence):
            self.silences[name] = obj
        elif isinstance(obj, AlertState):
            self.alert_state = obj
        elif isinstance(obj, Secret):
            self.secrets[kv.key[len(ROOT) + len("secrets/") :]] = obj
        elif isinstance(obj, Event):
            # Events are written once and only ever deleted by trimming, which the buffer mirrors.
            obj = obj.model_copy(update={"revision": kv.mod_revision})
            self.events.append(obj)
        return obj

    def _index_task(self, task: Task) -> None:
        old = self.tasks.get(task.id)
        if old is not None and old.node and old.node != task.node:
            self._tasks_by_node.get(old.node, set()).discard(task.id)
        self.tasks[task.id] = task
        self._tasks_by_service.setdefault(task.service, set()).add(task.id)
        if task.node:
            self._tasks_by_node.setdefault(task.node, set()).add(task.id)

    def _remove(self, kind: Kind, key: str) -> None:
        name = key.rsplit("/", 1)[-1]
        self.mod_revisions.pop(key, None)
        if kind is Kind.TASK:
            task = self.tasks.pop(name, None)
            if task is not None:
                self._tasks_by_service.get(task.service, set()).discard(name)
                if task.node:
                    self._tasks_by_node.get(task.node, set()).discard(name)
        elif kind is Kind.SERVICE:
            self.services.pop(name, None)
        elif kind is Kind.NODE:
            self.nodes.pop(name, None)
        elif kind is Kind.DEPLOYMENT:
            self.deployments.pop(name, None)
        elif kind is Kind.USER_EVENT:
            self.user_events.pop(name, None)
        elif kind is Kind.REGISTRATION:
            self.registrations.pop(name, None)
        elif kind is Kind.VOLUME:
            self.volumes.pop(name, None)
        elif kind is Kind.SNAPSHOT:
            self.snapshots.pop((key.split("/")[-2], name), None)
        elif kind is Kind.ACL_TOKEN:
            token = self.acl_tokens.pop(name, None)
            if token is not None:
                self.acl_by_digest.pop(token.secret_sha256, None)
        elif kind is Kind.ACL_POLICY:
            self.acl_policies.pop(name, None)
        elif kind is Kind.ALERT_RULE:
            self.alert_rules.pop(name, None)
        elif kind is Kind.NOTIFIER:
            self.notifiers.pop(name, None)
        elif kind is Kind.SILENCE:
            self.silences.pop(name, None)
        elif kind is Kind.ALERT_STATE:
            self.alert_state = None
        elif kind is Kind.SECRET:
            self.secrets.pop(key[len(ROOT) + len("secrets/") :], None)
        elif kind is Kind.TASKDEF:
            family, rev = key.split("/")[-2:]
            self.taskdefs.pop((family, int(rev)), None)
        elif kind is Kind.META:
            self.meta.pop(name, None)
