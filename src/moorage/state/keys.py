"""The key layout of moorage state, and how values are encoded.

/moorage/services/<name>                     Service
/moorage/taskdefs/<family>/<revision:08d>    TaskDefinition (immutable, created by CAS)
/moorage/tasks/<id>                          Task
/moorage/nodes/<name>                        Node
/moorage/deployments/<id>                    Deployment (id = <service>-<revision>-<rand>)
/moorage/secrets/<name>                      Secret (sealed with AES-GCM; never plain text)
/moorage/events/<time_ns:020d>-<rand>        Event (trimmed to the newest N)
/moorage/meta/<name>                         small cluster-wide values (join token, ...)
/moorage/user-events/<time_ns:020d>-<rand>   UserEvent (`moorage event fire`; newest 256 kept)
/moorage/registrations/<id>                  Registration (a service registered from outside)
/moorage/acl-tokens/<accessor id>            ACL Token (its secret only as SHA-256)
/moorage/acl-policies/<name>                 ACL Policy
/moorage/kv/<key>                            KV store value (9-byte header: format, flags; raw bytes)
/moorage/volumes/<name>                      Volume (attachments with leases and fencing epochs)
/moorage/snapshots/<volume>/<id>             Snapshot of a volume (metadata; the archive is on a node)
/moorage/alert-rules/<name>                  AlertRule (moorage.metrics.alerts)
/moorage/notifiers/<name>                    Notifier (webhook, slack, pagerduty)
/moorage/silences/<id>                       Silence (matchers, expiry)
/moorage/alert-state/current                 AlertState: the leader's alert instances and what
                                             each notifier last heard (written on change)
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from moorage.metrics.alerts import AlertRule, AlertState, Notifier, Silence
from moorage.model import Deployment, Event, Node, Secret, Service, Task, TaskDefinition
from moorage.model.acl import Policy, Token
from moorage.model.catalog import Registration
from moorage.model.event import UserEvent
from moorage.model.snapshot import Snapshot
from moorage.model.volume import Volume

ROOT = "/moorage/"


class Kind(StrEnum):
    SERVICE = "services"
    TASKDEF = "taskdefs"
    TASK = "tasks"
    NODE = "nodes"
    DEPLOYMENT = "deployments"
    SECRET = "secrets"
    EVENT = "events"
    META = "meta"
    KV = "kv"
    ACL_TOKEN = "acl-tokens"
    USER_EVENT = "user-events"
    REGISTRATION = "registrations"
    ACL_POLICY = "acl-policies"
    VOLUME = "volumes"
    SNAPSHOT = "snapshots"
    ALERT_RULE = "alert-rules"
    NOTIFIER = "notifiers"
    SILENCE = "silences"
    ALERT_STATE = "alert-state"


MODELS: dict[Kind, type[BaseModel]] = {
    Kind.SERVICE: Service,
    Kind.TASKDEF: TaskDefinition,
    Kind.TASK: Task,
    Kind.NODE: Node,
    Kind.DEPLOYMENT: Deployment,
    Kind.SECRET: Secret,
    Kind.EVENT: Event,
    Kind.ACL_TOKEN: Token,
    Kind.USER_EVENT: UserEvent,
    Kind.REGISTRATION: Registration,
    Kind.ACL_POLICY: Policy,
    Kind.VOLUME: Volume,
    Kind.SNAPSHOT: Snapshot,
    Kind.ALERT_RULE: AlertRule,
    Kind.NOTIFIER: Notifier,
    Kind.SILENCE: Silence,
    Kind.ALERT_STATE: AlertState,
}


def prefix(kind: Kind) -> str:
    return f"{ROOT}{kind.value}/"


def service_key(name: str) -> str:
    return f"{ROOT}services/{name}"


def taskdef_key(family: str, revision: int) -> str:
    return f"{ROOT}taskdefs/{family}/{revision:08d}"


def taskdef_prefix(family: str) -> str:
    return f"{ROOT}taskdefs/{family}/"


def task_key(task_id: str) -> str:
    return f"{ROOT}tasks/{task_id}"


def node_key(name: str) -> str:
    return f"{ROOT}nodes/{name}"


def deployment_key(deployment_id: str) -> str:
    return f"{ROOT}deployments/{deployment_id}"


def secret_key(name: str) -> str:
    return f"{ROOT}secrets/{name}"


def event_key(event_id: str) -> str:
    return f"{ROOT}events/{event_id}"


def registration_key(registration_id: str) -> str:
    return f"{ROOT}registrations/{registration_id}"


def user_event_key(event_id: str) -> str:
    return f"{ROOT}user-events/{event_id}"


def acl_token_key(accessor_id: str) -> str:
    return f"{ROOT}acl-tokens/{accessor_id}"


def acl_policy_key(name: str) -> str:
    return f"{ROOT}acl-policies/{name}"


def volume_key(name: str) -> str:
    return f"{ROOT}volumes/{name}"


def snapshot_key(volume: str, snapshot_id: str) -> str:
    return f"{ROOT}snapshots/{volume}/{snapshot_id}"


def alert_rule_key(name: str) -> str:
    return f"{ROOT}alert-rules/{name}"


def notifier_key(name: str) -> str:
    return f"{ROOT}notifiers/{name}"


def silence_key(silence_id: str) -> str:
    return f"{ROOT}silences/{silence_id}"


def alert_state_key() -> str:
    return f"{ROOT}alert-state/current"


def meta_key(name: str) -> str:
    return f"{ROOT}meta/{name}"


def key_kind(key: str) -> Kind | None:
    if not key.startswith(ROOT):
        return None
    head = key[len(ROOT) :].split("/", 1)[0]
    try:
        return Kind(head)
    except ValueError:
        return None


def encode(obj: BaseModel) -> bytes:
    return obj.model_dump_json().encode()


def decode(kind: Kind, raw: bytes) -> BaseModel | None:
    model = MODELS.get(kind)
    return None if model is None else model.model_validate_json(raw)
