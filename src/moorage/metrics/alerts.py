"""Alert rules, their evaluation and what to notify when: pure functions of their inputs.

    rules ─▶ conditions(rule, inputs, now) ─▶ evaluate(rules, state, hits, now) ─▶ AlertState
                (metrics store, cache)             inactive → pending → firing → resolved
    AlertState, notifiers, silences ─▶ plan_notifications(...) ─▶ [Notification] ─▶ notify.py
    a delivery's outcome ─▶ record_delivery(state, notification, error, now) ─▶ AlertState

Prometheus's semantics: a condition that holds makes an instance (one per label set) `pending`;
it is `firing` once it has held for the rule's `for`; when it stops holding a pending instance is
dropped and a firing one becomes `resolved` — kept only until its resolved notification went
out. Deadman rules watch the *expected* set (every registered node; every running task, as the
scheduler placed it), so a node that never reported a point, or died before its first, fires
too. Silences suppress notifications, never state. Notifications are grouped per notifier by the
rule's `group_by` labels and sent as Alertmanager does: when the set of firing alerts of a group
changes, when one resolves, and every `repeat_interval` while something fires. The clock is an
argument everywhere; nothing here does I/O (the metrics store is read through its protocol).
The rules, notifiers and silences themselves (models, checks, rules files) are in
`alert_rules.py`, re-exported here.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from moorage.model import Deployment, Desired, Node, Service, Task
from moorage.model.deployment import DeploymentStatus
from moorage.model.node import NodeStatus
from moorage.model.task import TaskStatus

from .alert_rules import (
    AlertRule,
    Notifier,
    RuleQuery,
    Silence,
    SilenceCreate,
    matches,
    parse_notifier,
    parse_rule,
    parse_rules,
)
from .model import Aggregation, MetricsStore, Query

InstanceState = Literal["pending", "firing", "resolved"]

RESOLVED_RETENTION = 900.0  # a resolved alert whose notification keeps failing is kept this long
MAX_BACKOFF = 300.0

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class AlertInstance(BaseModel):
    rule: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    state: InstanceState
    active_at: float  # when the condition started to hold
    since: float  # when `state` was entered
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    last_notified: float | None = None  # the last successful notification that carried it


class GroupState(BaseModel):
    """What one notifier last heard about one group, and how its deliveries fare."""

    key: str  # "<notifier>/<group key>"
    notifier: str
    group_key: str  # Alertmanager's form: {}:{alertname="cpu"}
    group_labels: dict[str, str]
    sent_firing: list[str] = Field(default_factory=list)  # fingerprints it heard as firing
    last_sent: float | None = None
    failures: int = 0  # failed deliveries in a row
    last_error: str = ""
    last_failure_at: float | None = None
    next_attempt_at: float = 0.0


class AlertState(BaseModel):
    """The leader's alert state, stored so a new leader neither forgets nor re-notifies."""

    instances: dict[str, AlertInstance] = Field(default_factory=dict)  # by fingerprint
    groups: dict[str, GroupState] = Field(default_factory=dict)  # by key


class Notification(BaseModel):
    """One message to one notifier about one group."""

    key: str
    notifier: str
    group_key: str
    group_labels: dict[str, str]
    firing: list[AlertInstance]
    resolved: list[AlertInstance]
    sent_after: list[str]  # what the receiver will know as firing once this is delivered

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"


@dataclass(frozen=True)
class Hit:
    """A label set for which a rule's condition holds now."""

    labels: dict[str, str]
    value: float | None = None


@dataclass(frozen=True)
class Inputs:
    nodes: Mapping[str, Node]
    tasks: Mapping[str, Task]
    services: Mapping[str, Service]
    deployments: Mapping[str, Deployment]
    metrics: MetricsStore | None = None


# ---- conditions: which label sets hold now -----------------------------------------------
def conditions(rule: AlertRule, inputs: Inputs, now: float) -> list[Hit] | None:
    """The label sets for which rule holds now; None when it cannot be evaluated (a metric rule
    without a metrics store): its instances then stay as they are."""
    if rule.kind in ("threshold", "deadman") and inputs.metrics is None:
        return None
    if rule.kind == "threshold":
        hits = _threshold(rule, inputs.metrics, now)
    elif rule.kind == "deadman":
        hits = _deadman(rule, inputs, now)
    elif rule.kind == "service_health":
        hits = _service_health(inputs)
    elif rule.kind == "node_down":
        hits = [
            Hit({"node": n.name}, round(now - n.heartbeat_at, 1) if n.heartbeat_at else None)
            for n in inputs.nodes.values()
            if n.status == NodeStatus.DOWN
        ]
    else:
        hits = _deployments_failed(inputs)
    return [hit for hit in hits if matches(hit.labels, rule.match)]


def reduce(agg: Aggregation, values: list[float]) -> float:
    """Combine a window's buckets (each already aggregated with `agg`)."""
    if agg == "avg":
        return sum(values) / len(values)
    if agg in ("sum", "count"):
        return sum(values)
    if agg == "last":
        return values[-1]
    return max(values) if agg == "max" else min(values)


def _threshold(rule: AlertRule, store: MetricsStore | None, now: float) -> list[Hit]:
    assert rule.query is not None and store is not None
    q = rule.query
    query = Query(
        metric=q.metric,
        matchers=q.matchers,
        start=now - q.window,
        end=now,
        step=q.window,
        agg=q.agg,
        by=q.by,
    )
    hits = []
    for series in store.query(query):
        values = [v for _, v in series.points if not math.isnan(v)]
        if values and COMPARE[rule.op](value := reduce(q.agg, values), rule.value):
            hits.append(Hit(dict(series.labels), value))
    return hits


def expected(rule: AlertRule, inputs: Inputs) -> list[tuple[str, dict[str, str], float]]:
    """Who must report, from the cluster's view (never from what was seen): every registered
    node — a down one too, as it is exactly the silent kind — or every running task on a node.
    Each with its labels and since when it is expected."""
    if rule.deadman_target == "node":
        return [(n.name, {"node": n.name}, n.registered_at) for n in inputs.nodes.values()]
    return [
        (t.id, {"node": t.node, "service": t.service, "task": t.id}, t.started_at or t.updated_at)
        for t in inputs.tasks.values()
        if t.node and t.desired == Desired.RUN and t.status == TaskStatus.RUNNING
    ]


def _deadman(rule: AlertRule, inputs: Inputs, now: float) -> list[Hit]:
    assert rule.query is not None and inputs.metrics is not None
    target, window = rule.deadman_target, rule.query.window
    last: dict[str, float] = {}
    for _metric, labels, ts, _value in inputs.metrics.latest(rule.query.metric):
        who = labels.get(target)
        if who and matches(labels, rule.query.matchers):
            last[who] = max(last.get(who, ts), ts)
    hits = []
    for key, labels, since in expected(rule, inputs):
        seen = last.get(key)
        if now - max(seen or since, since) > window:
            hits.append(Hit(labels, round(now - seen, 1) if seen is not None else None))
    return hits


def _service_health(inputs: Inputs) -> list[Hit]:
    healthy: dict[str, int] = {}
    for task in inputs.tasks.values():
        if task.live and task.healthy:
            healthy[task.service] = healthy.get(task.service, 0) + 1
    return [
        Hit({"service": s.name}, float(healthy.get(s.name, 0)))
        for s in inputs.services.values()
        if s.status == "active" and healthy.get(s.name, 0) < s.count
    ]


FAILED = (DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK)


def _deployments_failed(inputs: Inputs) -> list[Hit]:
    """Services whose newest deployment (a rollback's own included) failed; a newer one that
    runs or succeeds resolves it."""
    newest: dict[str, Deployment] = {}
    for d in inputs.deployments.values():
        if d.rollback_of is not None and d.status != DeploymentStatus.FAILED:
            continue  # a rollback that works does not end the failure it repairs
        if d.service not in newest or (d.created_at, d.id) > (
            newest[d.service].created_at,
            newest[d.service].id,
        ):
            newest[d.service] = d
    return [
        Hit({"service": d.service, "deployment": d.id, "revision": str(d.to_revision)})
        for d in newest.values()
        if d.status in FAILED and d.service in inputs.services
    ]


# ---- evaluation: the state machine -------------------------------------------------------
_TEMPLATE = re.compile(r"\{\{\s*\$(value|labels\.([a-zA-Z_][a-zA-Z0-9_]*))\s*\}\}")


def render(text: str, labels: Mapping[str, str], value: float | None) -> str:
    """Prometheus's two template forms: `{{ $labels.name }}` and `{{ $value }}`."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) == "value":
            return "-" if value is None else f"{value:g}"
        return labels.get(match.group(2), "")

    return _TEMPLATE.sub(one, text)


def default_summary(rule: AlertRule) -> str:
    if rule.kind == "threshold" and rule.query is not None:
        return f"{rule.query.metric} is {{{{ $value }}}} ({rule.op} {rule.value:g})"
    if rule.kind == "deadman" and rule.query is not None:
        who = rule.deadman_target
        return (
            f"no {rule.query.metric} from {who} {{{{ $labels.{who} }}}} for {rule.query.window:g}s"
        )
    return {
        "service_health": "{{ $labels.service }}: {{ $value }} healthy, fewer than its count",
        "node_down": "node {{ $labels.node }} is down",
        "deployment_failed": "deployment {{ $labels.deployment }} of {{ $labels.service }} failed",
    }.get(rule.kind, rule.name)


def fingerprint(labels: Mapping[str, str]) -> str:
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def instance_labels(rule: AlertRule, hit: Hit) -> dict[str, str]:
    return {**hit.labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}


def evaluate(
    rules: Mapping[str, AlertRule],
    state: AlertState,
    hits: Mapping[str, list[Hit] | None],
    now: float,
) -> AlertState:
    """One evaluation round. `hits[name]` is `conditions()` of that rule (None: keep its
    instances as they are). Instances of rules that no longer exist are dropped."""
    owed = {fp for group in state.groups.values() for fp in group.sent_firing}
    out: dict[str, AlertInstance] = {}
    by_rule: dict[str, dict[str, AlertInstance]] = {}
    for fp, inst in state.instances.items():
        by_rule.setdefault(inst.rule, {})[fp] = inst
    for name, rule in rules.items():
        old = by_rule.get(name, {})
        rule_hits = hits.get(name)
        if rule_hits is None:
            out.update(old)
            continue
        active: dict[str, Hit] = {}
        for hit in rule_hits:
            labels = instance_labels(rule, hit)
            active[fingerprint(labels)] = Hit(labels, hit.value)
        for fp, hit in active.items():
            out[fp] = _holds(rule, old.get(fp), fp, hit, now)
        for fp, inst in old.items():
            if fp not in active and (gone := _stopped(inst, fp in owed, now)) is not None:
                out[fp] = gone
    return _prune(AlertState(instances=out, groups=state.groups), now)


def _holds(
    rule: AlertRule, old: AlertInstance | None, fp: str, hit: Hit, now: float
) -> AlertInstance:
    annotations = {**rule.annotations, "summary": rule.summary or default_summary(rule)}
    annotations = {k: render(v, hit.labels, hit.value) for k, v in annotations.items()}
    if old is None or old.state == "resolved":
        firing = rule.for_ <= 0
        return AlertInstance(
            rule=rule.name,
            fingerprint=fp,
            labels=hit.labels,
            annotations=annotations,
            state="firing" if firing else "pending",
            active_at=now,
            since=now,
            fired_at=now if firing else None,
            value=hit.value,
        )
    update: dict[str, Any] = {"labels": hit.labels, "annotations": annotations, "value": hit.value}
    if old.state == "pending" and now - old.active_at >= rule.for_:
        update |= {"state": "firing", "since": now, "fired_at": now}
    return old.model_copy(update=update)


def _stopped(inst: AlertInstance, owed: bool, now: float) -> AlertInstance | None:
    """The condition no longer holds: pending is forgotten, firing resolves, and a resolved
    instance stays only while a notifier is owed its resolution (and not for ever)."""
    if inst.state == "firing":
        return inst.model_copy(update={"state": "resolved", "since": now, "resolved_at": now})
    if inst.state == "resolved" and owed and now - inst.since < RESOLVED_RETENTION:
        return inst
    return None


def _prune(state: AlertState, now: float) -> AlertState:
    """Forget what receivers were told about alerts that are gone, and idle groups."""
    groups = {}
    for key, group in state.groups.items():
        sent = [fp for fp in group.sent_firing if fp in state.instances]
        stale_failure = group.last_failure_at is None or now - group.last_failure_at > MAX_BACKOFF
        if sent or (group.failures and not stale_failure):
            groups[key] = group.model_copy(update={"sent_firing": sent})
    return AlertState(instances=state.instances, groups=groups)


# ---- notifications: grouping, silences, repeat, retries ----------------------------------
def group_key(group_by: Iterable[str], labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    chosen = {name: labels[name] for name in sorted(group_by) if name in labels}
    inner = ", ".join(f'{k}="{v}"' for k, v in chosen.items())
    return "{}:{" + inner + "}", chosen


def silenced(labels: Mapping[str, str], silences: Iterable[Silence], now: float) -> bool:
    return any(s.mutes(labels, now) for s in silences)


@dataclass
class _Members:
    notifier: str
    group_key: str
    group_labels: dict[str, str]
    repeat: float
    instances: list[AlertInstance]


def group_keys(
    rule: AlertRule, notifiers: Mapping[str, Notifier], labels: Mapping[str, str]
) -> list[str]:
    """The groups an alert of rule with these labels goes to: one per notifier."""
    gkey, _ = group_key(rule.group_by, labels)
    return [f"{name}/{gkey}" for name in rule.notify or sorted(notifiers) if name in notifiers]


def _members(
    rules: Mapping[str, AlertRule], notifiers: Mapping[str, Notifier], state: AlertState
) -> dict[str, _Members]:
    out: dict[str, _Members] = {}
    for inst in sorted(state.instances.values(), key=lambda i: (i.rule, i.fingerprint)):
        rule = rules.get(inst.rule)
        if rule is None or inst.state == "pending":
            continue
        gkey, glabels = group_key(rule.group_by, inst.labels)
        for key in group_keys(rule, notifiers, inst.labels):
            name = key.split("/", 1)[0]
            members = out.setdefault(key, _Members(name, gkey, glabels, rule.repeat_interval, []))
            members.repeat = min(members.repeat, rule.repeat_interval)
            members.instances.append(inst)
    return out


def plan_notifications(
    rules: Mapping[str, AlertRule],
    notifiers: Mapping[str, Notifier],
    silences: Iterable[Silence],
    state: AlertState,
    now: float,
    busy: Iterable[str] = (),
) -> list[Notification]:
    """What to send now: a group's notification is due when an alert starts firing (unless
    silenced), when one its notifier heard as firing resolves, and every repeat interval while
    something fires; a group whose last delivery failed waits for its backoff. `busy`: keys of
    groups with a delivery in flight."""
    silences = list(silences)
    skip = set(busy)
    notes = []
    for key, m in _members(rules, notifiers, state).items():
        group = state.groups.get(key)
        if key in skip or (group is not None and group.failures and now < group.next_attempt_at):
            continue
        sent = set(group.sent_firing) if group is not None else set()
        firing = [i for i in m.instances if i.state == "firing"]
        muted = {i.fingerprint for i in firing if silenced(i.labels, silences, now)}
        loud = [i for i in firing if i.fingerprint not in muted]
        resolved = [i for i in m.instances if i.state == "resolved" and i.fingerprint in sent]
        new = {i.fingerprint for i in loud} - sent
        last = group.last_sent if group is not None else None
        repeat = bool(loud) and (last is None or now - last >= m.repeat)
        if not (new or resolved or repeat):
            continue
        after = {i.fingerprint for i in loud} | (sent & muted)
        notes.append(
            Notification(
                key=key,
                notifier=m.notifier,
                group_key=m.group_key,
                group_labels=m.group_labels,
                firing=loud,
                resolved=resolved,
                sent_after=sorted(after),
            )
        )
    return notes


def backoff(failures: int) -> float:
    """Seconds before a group whose deliveries failed `failures` times in a row is tried again."""
    return min(MAX_BACKOFF, 5.0 * 2.0 ** max(failures - 1, 0))


def record_delivery(
    state: AlertState, note: Notification, error: str | None, now: float
) -> AlertState:
    """Apply a delivery's outcome (`error` None: delivered) to the state."""
    group = state.groups.get(note.key) or GroupState(
        key=note.key,
        notifier=note.notifier,
        group_key=note.group_key,
        group_labels=note.group_labels,
    )
    instances = dict(state.instances)
    if error is None:
        group = group.model_copy(
            update={
                "sent_firing": note.sent_after,
                "last_sent": now,
                "failures": 0,
                "last_error": "",
                "next_attempt_at": 0.0,
            }
        )
        for inst in (*note.firing, *note.resolved):
            if (current := instances.get(inst.fingerprint)) is not None:
                instances[inst.fingerprint] = current.model_copy(update={"last_notified": now})
    else:
        failures = group.failures + 1
        group = group.model_copy(
            update={
                "failures": failures,
                "last_error": error,
                "last_failure_at": now,
                "next_attempt_at": now + backoff(failures),
            }
        )
    return AlertState(instances=instances, groups={**state.groups, note.key: group})


def stored_form(state: AlertState) -> str:
    """The state without the values that move every round: write only when this changes."""
    copy = AlertState(
        instances={
            fp: i.model_copy(update={"value": None, "annotations": {}})
            for fp, i in state.instances.items()
        },
        groups=state.groups,
    )
    return copy.model_dump_json()


__all__ = [
    "AlertInstance",
    "AlertRule",
    "AlertState",
    "GroupState",
    "Hit",
    "Inputs",
    "Notification",
    "Notifier",
    "RuleQuery",
    "Silence",
    "SilenceCreate",
    "conditions",
    "evaluate",
    "expected",
    "fingerprint",
    "group_keys",
    "parse_notifier",
    "parse_rule",
    "parse_rules",
    "plan_notifications",
    "record_delivery",
    "silenced",
]
