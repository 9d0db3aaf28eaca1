"""Alert rules as pure functions, on an explicit clock: the state machine, deadman over the
expected set, silences, grouping, the repeat interval, retries and a restarted leader."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from moorage.metrics.alerts import (
    AlertRule,
    AlertState,
    Hit,
    Inputs,
    Notification,
    Notifier,
    Silence,
    conditions,
    evaluate,
    parse_rules,
    plan_notifications,
    record_delivery,
    render,
)
from moorage.metrics.model import Point, Query, Series
from moorage.model import Deployment, Node, NodeStatus, Service, SpecError, Task, TaskStatus
from moorage.model.deployment import DeploymentStatus


class FakeMetrics:
    """The MetricsStore protocol over a list of points (buckets epoch-aligned, as the TSDB)."""

    def __init__(self, points: Iterable[Point] = ()) -> None:
        self.points = list(points)

    def ingest(self, points: Iterable[Point]) -> int:
        new = list(points)
        self.points += new
        return len(new)

    def query(self, query: Query) -> list[Series]:
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for p in self.points:
            if p.metric != query.metric or not query.start <= p.ts <= query.end:
                continue
            if any(p.labels.get(k) != v for k, v in query.matchers.items()):
                continue
            series.setdefault(tuple(sorted(p.labels.items())), []).append((p.ts, p.value))
        out = []
        for labels, points in series.items():
            buckets: dict[float, list[float]] = {}
            for ts, value in sorted(points):
                buckets.setdefault(ts - ts % query.step, []).append(value)
            agg = {
                "avg": lambda v: sum(v) / len(v),
                "max": max,
                "min": min,
                "last": lambda v: v[-1],
            }
            reduced = [(b, float(agg[query.agg](v))) for b, v in sorted(buckets.items())]
            out.append(Series(metric=query.metric, labels=dict(labels), points=reduced))
        return out

    def latest(self, metric: str | None = None) -> list[tuple[str, dict[str, str], float, float]]:
        last: dict[tuple[str, tuple[tuple[str, str], ...]], Point] = {}
        for p in self.points:
            key = (p.metric, tuple(sorted(p.labels.items())))
            if (metric is None or p.metric == metric) and (key not in last or last[key].ts < p.ts):
                last[key] = p
        return [(p.metric, p.labels, p.ts, p.value) for p in last.values()]


def cpu(task: str, ts: float, value: float, node: str = "n1") -> Point:
    labels = {"node": node, "service": "web", "task": task, "container": "app"}
    return Point(metric="task_cpu_percent", labels=labels, ts=ts, value=value)


CPU_RULE = {
    "name": "cpu-high",
    "query": {"metric": "task_cpu_percent", "agg": "avg", "window": "10s"},
    "op": ">",
    "value": 80,
    "for": "30s",
    "severity": "critical",
}


def rule(**fields: object) -> AlertRule:
    return AlertRule.model_validate({**CPU_RULE, **fields})


def inputs(metrics: FakeMetrics | None = None, **parts: object) -> Inputs:
    return Inputs(
        nodes=parts.get("nodes", {}),  # type: ignore[arg-type]
        tasks=parts.get("tasks", {}),  # type: ignore[arg-type]
        services=parts.get("services", {}),  # type: ignore[arg-type]
        deployments=parts.get("deployments", {}),  # type: ignore[arg-type]
        metrics=metrics,
    )


def step(rules: list[AlertRule], state: AlertState, given: Inputs, now: float) -> AlertState:
    by_name = {r.name: r for r in rules}
    hits = {r.name: conditions(r, given, now) for r in rules}
    return evaluate(by_name, state, hits, now)


WEBHOOK = {"hook": Notifier(name="hook", kind="webhook", url="http://127.0.0.1:9/")}


def deliver(
    rules: list[AlertRule],
    state: AlertState,
    now: float,
    silences: Iterable[Silence] = (),
    error: str | None = None,
) -> tuple[AlertState, list[Notification]]:
    notes = plan_notifications({r.name: r for r in rules}, WEBHOOK, silences, state, now)
    for note in notes:
        state = record_delivery(state, note, error, now)
    return state, notes


# ---- the state machine --------------------------------------------------------------------
def test_pending_then_firing_after_for_then_resolved_once_then_dropped() -> None:
    r, metrics, state = rule(), FakeMetrics(), AlertState()
    for t in range(0, 50, 10):  # burning from t=0 to t=40
        metrics.ingest([cpu("t1", float(t), 95.0)])
    state = step([r], state, inputs(metrics), 5.0)
    (inst,) = state.instances.values()
    assert (inst.state, inst.active_at, inst.fired_at) == ("pending", 5.0, None)
    state = step([r], state, inputs(metrics), 30.0)
    assert next(iter(state.instances.values())).state == "pending"  # 25 s < for
    state = step([r], state, inputs(metrics), 35.0)
    inst = next(iter(state.instances.values()))
    assert (inst.state, inst.active_at, inst.fired_at, inst.since) == ("firing", 5.0, 35.0, 35.0)
    assert inst.labels["alertname"] == "cpu-high" and inst.labels["severity"] == "critical"
    assert inst.labels["task"] == "t1" and inst.value == pytest.approx(95.0)
    assert inst.annotations["summary"] == "task_cpu_percent is 95 (> 80)"
    state, notes = deliver([r], state, 35.0)
    assert [n.status for n in notes] == ["firing"]

    metrics.ingest([cpu("t1", 50.0, 5.0), cpu("t1", 60.0, 5.0)])  # the burn stopped
    state = step([r], state, inputs(metrics), 62.0)
    inst = next(iter(state.instances.values()))
    assert (inst.state, inst.resolved_at) == ("resolved", 62.0)
    state, notes = deliver([r], state, 62.0)
    assert [(n.status, [i.fingerprint for i in n.resolved]) for n in notes] == [
        ("resolved", [inst.fingerprint])
    ]
    state = step([r], state, inputs(metrics), 65.0)
    assert state.instances == {}  # resolved once, then gone
    assert deliver([r], state, 65.0)[1] == []


def test_a_pending_alert_that_recovers_is_dropped_without_a_word() -> None:
    r, metrics = rule(), FakeMetrics([cpu("t1", 0.0, 95.0)])
    state = step([r], AlertState(), inputs(metrics), 5.0)
    assert deliver([r], state, 5.0)[1] == []  # pending is not notified
    metrics.ingest([cpu("t1", 10.0, 10.0), cpu("t1", 20.0, 10.0)])
    state = step([r], state, inputs(metrics), 21.0)
    assert state.instances == {}


def test_for_zero_fires_at_once_and_each_label_set_is_its_own_alert() -> None:
    r = rule(**{"for": 0})
    metrics = FakeMetrics([cpu("t1", 1.0, 90.0), cpu("t2", 1.0, 99.0), cpu("t3", 1.0, 10.0)])
    state = step([r], AlertState(), inputs(metrics), 2.0)
    assert sorted(i.labels["task"] for i in state.instances.values()) == ["t1", "t2"]
    assert {i.state for i in state.instances.values()} == {"firing"}


def test_without_a_metrics_store_metric_rules_keep_their_state() -> None:
    r = rule(**{"for": 0})
    state = step([r], AlertState(), inputs(FakeMetrics([cpu("t1", 1.0, 90.0)])), 2.0)
    assert conditions(r, inputs(None), 3.0) is None
    assert step([r], state, inputs(None), 3.0).instances == state.instances


def test_deleting_a_rule_drops_its_alerts() -> None:
    r = rule(**{"for": 0})
    state = step([r], AlertState(), inputs(FakeMetrics([cpu("t1", 1.0, 90.0)])), 2.0)
    assert evaluate({}, state, {}, 3.0).instances == {}


# ---- deadman: the expected set, not what was seen -----------------------------------------
DEADMAN = {
    "name": "node-silent",
    "kind": "deadman",
    "query": {"metric": "node_cpu_percent", "window": "30s"},
}


def node(name: str, registered: float = 0.0, status: NodeStatus = NodeStatus.READY) -> Node:
    return Node(name=name, cpu=1024, memory=1024, registered_at=registered, status=status)


def node_point(name: str, ts: float) -> Point:
    return Point(metric="node_cpu_percent", labels={"node": name}, ts=ts, value=1.0)


def test_deadman_fires_for_an_expected_node_that_never_reported() -> None:
    r = AlertRule.model_validate(DEADMAN)
    nodes = {
        "talks": node("talks"),
        "mute": node("mute"),  # registered, never sent a point
        "new": node("new", registered=90.0),  # expected since 10 s: not overdue yet
        "dead": node("dead", status=NodeStatus.DOWN),  # down is exactly the silent kind
    }
    metrics = FakeMetrics([node_point("talks", 95.0), node_point("dead", 20.0)])
    hits = conditions(r, inputs(metrics, nodes=nodes), 100.0)
    assert hits is not None
    assert sorted((h.labels["node"], h.value) for h in hits) == [("dead", 80.0), ("mute", None)]
    state = step([r], AlertState(), inputs(metrics, nodes=nodes), 100.0)
    assert sorted(i.labels["node"] for i in state.instances.values()) == ["dead", "mute"]
    summary = next(i for i in state.instances.values() if i.labels["node"] == "mute")
    assert summary.annotations["summary"] == "no node_cpu_percent from node mute for 30s"


def test_deadman_of_tasks_watches_the_running_tasks_the_scheduler_placed() -> None:
    r = AlertRule.model_validate(
        {**DEADMAN, "query": {"metric": "task_cpu_percent", "window": "20s"}}
    )
    assert r.deadman_target == "task"
    base = {"service": "web", "family": "web", "revision": 1, "node": "n1"}
    tasks = {
        "reporting": Task(id="reporting", status=TaskStatus.RUNNING, started_at=0.0, **base),
        "silent": Task(id="silent", status=TaskStatus.RUNNING, started_at=0.0, **base),
        "starting": Task(id="starting", status=TaskStatus.STARTING, **base),
        "young": Task(id="young", status=TaskStatus.RUNNING, started_at=90.0, **base),
    }
    metrics = FakeMetrics([cpu("reporting", 95.0, 1.0), cpu("gone", 1.0, 1.0)])
    hits = conditions(r, inputs(metrics, tasks=tasks), 100.0)
    assert hits is not None
    assert [h.labels for h in hits] == [{"node": "n1", "service": "web", "task": "silent"}]


# ---- rules over the cache ------------------------------------------------------------------
def test_node_down_service_health_and_deployment_failed_read_the_cluster() -> None:
    nodes = {"n1": node("n1"), "n2": node("n2", status=NodeStatus.DOWN)}
    base = {"service": "web", "family": "web", "revision": 1, "node": "n1"}
    tasks = {
        "a": Task(id="a", status=TaskStatus.RUNNING, **base),
        "b": Task(id="b", status=TaskStatus.PENDING, **base),
    }
    services = {
        "web": Service(name="web", family="web", revision=2, count=2),
        "db": Service(name="db", family="db", revision=1, count=0),
    }
    dep = {"service": "web", "family": "web", "count": 2}
    deployments = {
        "old": Deployment(id="old", from_revision=None, to_revision=1, created_at=1.0, **dep),
        "bad": Deployment(
            id="bad",
            from_revision=1,
            to_revision=2,
            created_at=2.0,
            status=DeploymentStatus.ROLLED_BACK,
            **dep,
        ),
        "back": Deployment(
            id="back", from_revision=2, to_revision=1, created_at=3.0, rollback_of="bad", **dep
        ),
    }
    given = inputs(nodes=nodes, tasks=tasks, services=services, deployments=deployments)
    down = conditions(AlertRule(name="down", kind="node_down"), given, 10.0)
    assert down == [Hit({"node": "n2"}, None)]
    health = conditions(AlertRule(name="h", kind="service_health"), given, 10.0)
    assert health == [Hit({"service": "web"}, 1.0)]
    failed = conditions(AlertRule(name="f", kind="deployment_failed"), given, 10.0)
    assert failed == [Hit({"service": "web", "deployment": "bad", "revision": "2"})]
    only_db = AlertRule(name="h2", kind="service_health", match={"service": "db"})
    assert conditions(only_db, given, 10.0) == []


# ---- notifications -------------------------------------------------------------------------
def firing_state(tasks: list[str], r: AlertRule, now: float = 10.0) -> AlertState:
    metrics = FakeMetrics([cpu(t, now - 1, 99.0, node=f"n-{t}") for t in tasks])
    return step([r], AlertState(), inputs(metrics), now)


def test_silences_suppress_notifications_not_state_and_expire() -> None:
    r = rule(**{"for": 0})
    state = firing_state(["t1"], r)
    mute = Silence(id="s1", matchers={"task": "t1"}, starts_at=0.0, ends_at=60.0)
    state, notes = deliver([r], state, 10.0, [mute])
    assert notes == [] and next(iter(state.instances.values())).state == "firing"
    _, notes = deliver([r], state, 60.0, [mute])  # expired at 60
    assert [len(n.firing) for n in notes] == [1]


def test_grouping_by_labels_into_notifications() -> None:
    by_name = rule(**{"for": 0})
    state = firing_state(["t1", "t2"], by_name)
    _, notes = deliver([by_name], state, 10.0)
    assert [(n.group_key, len(n.firing)) for n in notes] == [('{}:{alertname="cpu-high"}', 2)]
    by_node = rule(**{"for": 0, "group_by": ["alertname", "node"]})
    _, notes = deliver([by_node], firing_state(["t1", "t2"], by_node), 10.0)
    assert sorted(n.group_labels["node"] for n in notes) == ["n-t1", "n-t2"]
    assert all(len(n.firing) == 1 for n in notes)


def test_repeat_interval_and_a_new_member_renotify_the_group() -> None:
    r = rule(**{"for": 0, "repeat_interval": "1h"})
    state, notes = deliver([r], firing_state(["t1"], r), 10.0)
    assert len(notes) == 1
    assert deliver([r], state, 100.0)[1] == []  # nothing changed, the hour is not over
    (note,) = deliver([r], state, 10.0 + 3600)[1]
    assert [i.labels["task"] for i in note.firing] == ["t1"]
    metrics = FakeMetrics([cpu("t1", 199.0, 99.0, node="n-t1"), cpu("t2", 199.0, 99.0)])
    state = step([r], state, inputs(metrics), 200.0)
    (note,) = deliver([r], state, 200.0)[1]  # a second task started burning
    assert sorted(i.labels["task"] for i in note.firing) == ["t1", "t2"]


def test_a_failed_delivery_backs_off_is_retried_and_keeps_the_resolution_owed() -> None:
    r = rule(**{"for": 0})
    state, notes = deliver([r], firing_state(["t1"], r), 10.0, error="HTTP 500")
    (group,) = state.groups.values()
    assert (group.failures, group.last_error, group.next_attempt_at) == (1, "HTTP 500", 15.0)
    assert deliver([r], state, 12.0)[1] == []  # backing off
    state, notes = deliver([r], state, 15.0, error="HTTP 500")
    assert len(notes) == 1 and next(iter(state.groups.values())).next_attempt_at == 25.0
    state, notes = deliver([r], state, 25.0)
    group = next(iter(state.groups.values()))
    assert (group.failures, len(group.sent_firing), group.last_sent) == (0, 1, 25.0)
    assert next(iter(state.instances.values())).last_notified == 25.0
    # Resolved while the receiver is down: kept (and retried) until it hears it.
    state = step([r], state, inputs(FakeMetrics()), 30.0)
    state, notes = deliver([r], state, 30.0, error="timed out after 10s")
    assert [n.status for n in notes] == ["resolved"]
    state = step([r], state, inputs(FakeMetrics()), 33.0)
    assert next(iter(state.instances.values())).state == "resolved"
    state, notes = deliver([r], state, 35.0)
    assert [n.status for n in notes] == ["resolved"]
    assert step([r], state, inputs(FakeMetrics()), 36.0).instances == {}


def test_a_restarted_leader_does_not_notify_again() -> None:
    r = rule(**{"for": 0})
    state, notes = deliver([r], firing_state(["t1"], r), 10.0)
    assert len(notes) == 1
    stored = AlertState.model_validate_json(state.model_dump_json())
    metrics = FakeMetrics([cpu("t1", 19.0, 99.0, node="n-t1")])
    again = step([r], stored, inputs(metrics), 20.0)
    assert deliver([r], again, 20.0)[1] == []
    assert next(iter(again.instances.values())).fired_at == 10.0


def test_pending_keeps_its_start_across_a_restart() -> None:
    r, metrics = rule(), FakeMetrics([cpu("t1", 0.0, 95.0), cpu("t1", 30.0, 95.0)])
    state = step([r], AlertState(), inputs(metrics), 5.0)
    stored = AlertState.model_validate_json(state.model_dump_json())
    assert next(iter(step([r], stored, inputs(metrics), 35.0).instances.values())).state == "firing"


# ---- rules files ---------------------------------------------------------------------------
def test_rules_file_forms_and_errors_naming_the_field() -> None:
    text = """
rules:
  - name: cpu
    query: {metric: task_cpu_percent, window: 30s}
    op: ">"
    value: 80
    for: 30s
  - {name: down, kind: node_down, severity: critical, notify: [hook]}
notifiers:
  hook: {kind: webhook, url: "http://127.0.0.1:9000/hook"}
"""
    rules, notifiers = parse_rules(text)
    assert [(r.name, r.kind, r.for_) for r in rules] == [
        ("cpu", "threshold", 30.0),
        ("down", "node_down", 0.0),
    ]
    assert rules[0].model_dump(mode="json")["for"] == "30s"
    assert [(n.name, n.url) for n in notifiers] == [("hook", "http://127.0.0.1:9000/hook")]
    assert [
        r.name for r in parse_rules("name: a\nkind: node_down\n---\nname: b\nkind: node_down\n")[0]
    ] == ["a", "b"]
    with pytest.raises(SpecError) as err:
        parse_rules(
            "rules:\n  - {name: x, query: {metric: m}, op: '~'}\n  - {name: y, kind: deadman}\n"
            "notifiers:\n  pd: {kind: pagerduty}\n"
        )
    fields = sorted(e.field for e in err.value.errors)
    assert fields == ["notifiers.pd.routing_key", "rules[0].op", "rules[1].query"]
    with pytest.raises(SpecError) as err:
        parse_rules("- {name: a, kind: node_down, query: {metric: m}, for: soon}\n")
    assert sorted(e.field for e in err.value.errors) == ["[0].for"]


def test_templates() -> None:
    labels = {"node": "n1"}
    assert render("{{ $labels.node }} at {{$value}}", labels, 93.25) == "n1 at 93.25"
    assert render("{{ $labels.nope }}|{{ $value }}", labels, None) == "|-"
