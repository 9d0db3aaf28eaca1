"""Every kind of stored object, declared once: where it lives, what it is, whom a change wakes.

    /moorage/services/<name>                     Service
    /moorage/taskdefs/<family>/<revision:08d>    TaskDefinition (immutable, created by CAS)
    /moorage/tasks/<id>                          Task
    /moorage/nodes/<name>                        Node
    /moorage/deployments/<id>                    Deployment (id = <service>-<revision>-<rand>)
    /moorage/secrets/<name>                      Secret (sealed with AES-GCM; never plain text)
    /moorage/events/<time_ns:020d>-<rand>        Event (trimmed to the newest N)
    /moorage/meta/<name>                         small cluster-wide values (raw bytes)
    /moorage/user-events/<time_ns:020d>-<rand>   UserEvent (`moorage event fire`; newest 256 kept)
    /moorage/registrations/<id>                  Registration (a service registered from outside)
    /moorage/acl-tokens/<accessor id>            ACL Token (its secret only as SHA-256)
    /moorage/acl-policies/<name>                 ACL Policy
    /moorage/volumes/<name>                      Volume (attachments with leases and fencing epochs)
    /moorage/snapshots/<volume>/<id>             Snapshot of a volume (the archive is on a node)
    /moorage/alert-rules/<name>                  AlertRule (moorage.metrics.alerts)
    /moorage/notifiers/<name>                    Notifier (webhook, slack, pagerduty)
    /moorage/silences/<id>                       Silence (matchers, expiry)
    /moorage/alert-state/current                 AlertState: the leader's alert instances and
                                                 what each notifier last heard
/moorage/identities/<node>                   NodeIdentity: the key and certificate serials that
                                             speak for a node (moorage.pki)
    /moorage/kv/<key>                            the KV store (state/kv.py: its own index)

A `StoredKind` is one row of that table: its key segment, how an object's cache key maps to the
rest of its store key and back, how its values are encoded, how the cache keeps it (tables.py)
and which topics (topics.py) a change to one wakes. The cache, the writer, the garbage
collector and every operation go through it: adding a kind is one entry in `KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from moorage.metrics.alerts import AlertRule, AlertState, Notifier, Silence
from moorage.model import Deployment, Event, Node, Secret, Service, Task, TaskDefinition
from moorage.model.acl import Policy, Token
from moorage.model.catalog import Registration
from moorage.model.event import UserEvent
from moorage.model.identity import NodeIdentity
from moorage.model.snapshot import Snapshot
from moorage.model.volume import Volume
from moorage.store import Delete, Put

from .tables import AnyTable, EventLog, StampedTable, Table, TaskTable, TokenTable
from .topics import Topic

ROOT = "/moorage/"

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")
B = TypeVar("B", bound=BaseModel)


def encode(obj: BaseModel) -> bytes:
    return obj.model_dump_json().encode()


def _no_topics(ident: Any, obj: Any) -> Iterable[str]:
    return ()


@dataclass(frozen=True, eq=False)
class StoredKind(Generic[K, M]):
    segment: str  # /moorage/<segment>/...
    decode: Callable[[bytes], M]
    dump: Callable[[M], bytes]
    ident_of: Callable[[M], K]  # an object's key in the cache (its name, mostly)
    path: Callable[[K], str]  # that key → the store key's tail
    parse: Callable[[str], K]  # the store key's tail → the cache key
    topics: Callable[[K, M | None], Iterable[str]] = _no_topics
    table: Callable[[], AnyTable] = field(default=Table)

    @property
    def prefix(self) -> str:
        return f"{ROOT}{self.segment}/"

    def key(self, ident: K) -> str:
        return self.prefix + self.path(ident)

    def ident(self, key: str) -> K:
        return self.parse(key[len(self.prefix) :])

    def put(self, obj: M) -> Put:
        return Put(self.key(self.ident_of(obj)), self.dump(obj))

    def delete(self, ident: K) -> Delete:
        return Delete(self.key(ident))

    def __repr__(self) -> str:
        return f"StoredKind({self.segment!r})"


def _named(
    segment: str,
    model: type[B],
    ident_of: Callable[[B], str],
    topics: Callable[[str, B | None], Iterable[str]] = _no_topics,
    table: Callable[[], AnyTable] = Table,
) -> StoredKind[str, B]:
    """A kind whose cache key is the store key's last part (a name or an id)."""
    return StoredKind(segment, model.model_validate_json, encode, ident_of, str, str, topics, table)


def _service_topics(name: str, obj: Service | None) -> Iterable[str]:
    return (Topic.SERVICES, Topic.service(name))


def _task_topics(task_id: str, task: Task | None) -> Iterable[str]:
    out = [Topic.TASKS, Topic.task(task_id)]
    if task is not None:
        out += [Topic.service_tasks(task.service), Topic.service(task.service), Topic.SERVICES]
        if task.node:
            out.append(Topic.node_tasks(task.node))
    return out


def _deployment_topics(deployment_id: str, obj: Deployment | None) -> Iterable[str]:
    out = [Topic.deployment(deployment_id)]
    if obj is not None:
        out += [Topic.service_deployments(obj.service), Topic.service(obj.service)]
    return out


def _registration_topics(registration_id: str, obj: Registration | None) -> Iterable[str]:
    out = [Topic.REGISTRATIONS]
    if obj is not None:
        out += [Topic.node_registrations(obj.node), Topic.registered(obj.name)]
    return out


def _pair(tail: str) -> tuple[str, str]:
    first, _, second = tail.partition("/")
    return first, second


def _taskdef_ident(tail: str) -> tuple[str, int]:
    family, revision = _pair(tail)
    return family, int(revision)


def _topic(*names: str) -> Callable[[Any, Any], Iterable[str]]:
    return lambda ident, obj: names


SERVICE = _named("services", Service, lambda s: s.name, _service_topics)
TASK = _named("tasks", Task, lambda t: t.id, _task_topics, TaskTable)
NODE = _named("nodes", Node, lambda n: n.name, lambda name, _: (Topic.NODES, Topic.node(name)))
TASKDEF: StoredKind[tuple[str, int], TaskDefinition] = StoredKind(
    "taskdefs",
    TaskDefinition.model_validate_json,
    encode,
    lambda t: (t.family, t.revision),
    lambda ident: f"{ident[0]}/{ident[1]:08d}",
    _taskdef_ident,
    lambda ident, _: (Topic.taskdefs(ident[0]),),
)
DEPLOYMENT = _named("deployments", Deployment, lambda d: d.id, _deployment_topics)
SECRET = _named("secrets", Secret, lambda s: s.name, _topic(Topic.SECRETS))
EVENT = _named("events", Event, lambda e: e.id, _topic(Topic.EVENTS), EventLog)


def _by_key_only(value: bytes) -> str:
    raise TypeError("a meta value has no name of its own: write it with Put(META.key(name), ...)")


META: StoredKind[str, bytes] = StoredKind("meta", bytes, bytes, _by_key_only, str, str)
USER_EVENT = _named(
    "user-events", UserEvent, lambda e: e.id, _topic(Topic.USER_EVENTS), StampedTable
)
REGISTRATION = _named("registrations", Registration, lambda r: r.id, _registration_topics)
ACL_TOKEN = _named("acl-tokens", Token, lambda t: t.accessor_id, _topic(Topic.ACL), TokenTable)
ACL_POLICY = _named("acl-policies", Policy, lambda p: p.name, _topic(Topic.ACL))
VOLUME = _named(
    "volumes", Volume, lambda v: v.name, lambda name, _: (Topic.VOLUMES, Topic.volume(name))
)
SNAPSHOT: StoredKind[tuple[str, str], Snapshot] = StoredKind(
    "snapshots",
    Snapshot.model_validate_json,
    encode,
    lambda s: (s.volume, s.id),
    lambda ident: f"{ident[0]}/{ident[1]}",
    _pair,
    lambda ident, _: (Topic.SNAPSHOTS, Topic.volume_snapshots(ident[0])),
)
ALERT_RULE = _named("alert-rules", AlertRule, lambda r: r.name, _topic(Topic.ALERTS))
NOTIFIER = _named("notifiers", Notifier, lambda n: n.name, _topic(Topic.ALERTS))
SILENCE = _named("silences", Silence, lambda s: s.id, _topic(Topic.ALERTS))
ALERT_STATE = _named("alert-state", AlertState, lambda _: "current", _topic(Topic.ALERTS))
IDENTITY = _named("identities", NodeIdentity, lambda i: i.name, _topic(Topic.NODES))

KINDS: tuple[StoredKind[Any, Any], ...] = (
    SERVICE,
    TASKDEF,
    TASK,
    NODE,
    DEPLOYMENT,
    SECRET,
    EVENT,
    META,
    USER_EVENT,
    REGISTRATION,
    ACL_TOKEN,
    ACL_POLICY,
    VOLUME,
    SNAPSHOT,
    ALERT_RULE,
    NOTIFIER,
    SILENCE,
    ALERT_STATE,
    IDENTITY,
)
_BY_SEGMENT = {kind.segment: kind for kind in KINDS}


def kind_of(key: str) -> StoredKind[Any, Any] | None:
    """The kind stored at `key` (None for keys outside the registry, the KV store's included)."""
    if not key.startswith(ROOT):
        return None
    return _BY_SEGMENT.get(key[len(ROOT) :].split("/", 1)[0])
