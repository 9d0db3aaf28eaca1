"""What alerting is configured with: rules, notifiers and silences — their models, the checks
pydantic cannot make, and rules files (YAML or JSON). Pure; `alerts.py` evaluates them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moorage.model import FieldError, SpecError
from moorage.model.duration import Duration
from moorage.model.spec import errors_from, load_yaml_documents

from .model import Aggregation

RuleKind = Literal["threshold", "deadman", "service_health", "node_down", "deployment_failed"]
Severity = Literal["warning", "critical"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
NotifierKind = Literal["webhook", "slack", "pagerduty"]

NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"
LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


MAX_TIME = 32_503_680_000.0  # 3000-01-01: a bound on the times users write


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)


class RuleQuery(_Strict):
    """What a threshold or deadman rule reads: `agg` of `metric` over the last `window`."""

    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    matchers: dict[str, str] = Field(default_factory=dict)
    agg: Aggregation = "avg"
    window: Duration = Field(default=60.0, gt=0)
    by: list[str] | None = None  # group series by these labels (None: each series alone)


class AlertRule(_Strict):
    name: str = Field(pattern=NAME)
    kind: RuleKind = "threshold"
    query: RuleQuery | None = None
    op: Comparison = ">"
    value: float = 0.0
    for_: Duration = Field(default=0.0, alias="for")
    # deadman: whose silence counts (default: from the metric's prefix, task_ → task)
    target: Literal["node", "task"] | None = None
    match: dict[str, str] = Field(default_factory=dict)  # only label sets with these values
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    summary: str = ""  # templated: {{ $labels.node }}, {{ $value }}
    repeat_interval: Duration = Field(default=14400.0, gt=0)
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    notify: list[str] = Field(default_factory=list)  # notifier names; empty: every notifier

    @property
    def deadman_target(self) -> str:
        metric = self.query.metric if self.query is not None else ""
        return self.target or ("task" if metric.startswith("task_") else "node")


class Notifier(_Strict):
    name: str = Field(default="", pattern=r"^$|" + NAME)
    kind: NotifierKind = "webhook"
    url: str = ""
    routing_key: str | None = None  # pagerduty
    timeout: Duration = Field(default=10.0, gt=0)


class Silence(_Strict):
    id: str
    matchers: dict[str, str] = Field(min_length=1)
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.active(now) and matches(labels, self.matchers)


class SilenceCreate(_Strict):
    """`POST /v1/silences`: matchers and either a duration (from now) or an end time."""

    # the document says it too: one of the two is required
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["duration"]}, {"required": ["ends_at"]}]}
    )

    matchers: dict[str, str] = Field(min_length=1, max_length=64)
    duration: Duration | None = Field(default=None, gt=0)
    ends_at: float | None = Field(default=None, gt=0, lt=MAX_TIME, allow_inf_nan=False)
    comment: str = Field(default="", max_length=1024)
    created_by: str = Field(default="", max_length=256)


def matches(labels: Mapping[str, str], matchers: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in matchers.items())


# ---- rules: parsing and checks ------------------------------------------------------------
def rule_problems(rule: AlertRule, where: str = "") -> list[FieldError]:
    """What pydantic cannot say about a rule: which fields its kind needs."""
    at = f"{where}." if where else ""
    problems: list[FieldError] = []
    needs_query = rule.kind in ("threshold", "deadman")
    if needs_query and rule.query is None:
        problems.append(FieldError(f"{at}query", f"a {rule.kind} rule needs a query"))
    if not needs_query and rule.query is not None:
        problems.append(FieldError(f"{at}query", "only threshold and deadman rules take one"))
    for i, label in enumerate(rule.group_by):
        if not re.match(LABEL, label):
            problems.append(FieldError(f"{at}group_by[{i}]", f"{label!r} is not a label name"))
    if rule.kind == "deadman" and rule.query is not None and rule.query.by:
        problems.append(FieldError(f"{at}query.by", "a deadman rule watches each series"))
    return problems


def notifier_problems(notifier: Notifier, where: str = "") -> list[FieldError]:
    at = f"{where}." if where else ""
    problems: list[FieldError] = []
    if notifier.kind == "pagerduty" and not notifier.routing_key:
        problems.append(FieldError(f"{at}routing_key", "a pagerduty notifier needs one"))
    if notifier.kind != "pagerduty" and not notifier.url:
        problems.append(FieldError(f"{at}url", f"a {notifier.kind} notifier needs one"))
    if notifier.url and not re.match(r"^https?://[^/\s]+", notifier.url):
        problems.append(FieldError(f"{at}url", f"must be http(s)://HOST/..., got {notifier.url!r}"))
    return problems


def notifier_url(notifier: Notifier) -> str:
    return notifier.url or (PAGERDUTY_URL if notifier.kind == "pagerduty" else "")


def parse_rule(data: Any, where: str = "") -> AlertRule:
    try:
        rule = AlertRule.model_validate(data)
    except ValidationError as exc:
        raise SpecError(errors_from(exc, where)) from None
    problems = rule_problems(rule, where)
    if problems:
        raise SpecError(problems)
    return rule


def parse_notifier(data: Any, where: str = "") -> Notifier:
    try:
        notifier = Notifier.model_validate(data)
    except ValidationError as exc:
        raise SpecError(errors_from(exc, where)) from None
    problems = notifier_problems(notifier, where)
    if problems:
        raise SpecError(problems)
    return notifier


def parse_rules(text: str) -> tuple[list[AlertRule], list[Notifier]]:
    """A rules file (YAML or JSON): `{rules: [...], notifiers: {name: {...}}}`, a list of rules,
    or one rule per document. Every problem is reported, each naming its field."""
    docs = load_yaml_documents(text)
    raw_rules: list[tuple[str, Any]] = []
    raw_notifiers: list[tuple[str, Any]] = []
    for d, doc in enumerate(docs):
        head = f"[{d}]" if len(docs) > 1 else ""
        if isinstance(doc, dict) and ("rules" in doc or "notifiers" in doc):
            extra = sorted(set(doc) - {"rules", "notifiers"})
            if extra:
                raise SpecError([FieldError(f"{head}{extra[0]}", "unknown key")])
            listed = doc.get("rules") or []
            if not isinstance(listed, list):
                raise SpecError([FieldError(f"{head}rules", "must be a list of rules")])
            raw_rules += [(f"{head}rules[{i}]", r) for i, r in enumerate(listed)]
            raw_notifiers += _notifier_entries(doc.get("notifiers") or {}, f"{head}notifiers")
        elif isinstance(doc, list):
            raw_rules += [(f"{head}[{i}]", r) for i, r in enumerate(doc)]
        else:
            raw_rules.append((head, doc))
    errors: list[FieldError] = []
    rules: list[AlertRule] = []
    notifiers: list[Notifier] = []
    try:
        rules = _parse_all(raw_rules, parse_rule)
    except SpecError as exc:
        errors += exc.errors
    try:
        notifiers = _parse_all(raw_notifiers, parse_notifier)
    except SpecError as exc:
        errors += exc.errors
    if errors:
        raise SpecError(errors)
    return rules, notifiers


def _notifier_entries(value: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(f"{where}.{name}", {"name": name, **(body or {})}) for name, body in value.items()]
    if isinstance(value, list):
        return [(f"{where}[{i}]", body) for i, body in enumerate(value)]
    raise SpecError([FieldError(where, "must map notifier names to {kind, url}")])


def _parse_all(entries: list[tuple[str, Any]], parse: Callable[[Any, str], Any]) -> list[Any]:
    parsed, errors = [], []
    for where, data in entries:
        try:
            parsed.append(parse(data, where))
        except SpecError as exc:
            errors += exc.errors
    names = [getattr(p, "name", "") for p in parsed]
    for where, name in zip((w for w, _ in entries), names, strict=False):
        if name and names.count(name) > 1:
            errors.append(FieldError(f"{where}.name", f"{name!r} is defined twice"))
            break
    if errors:
        raise SpecError(errors)
    return parsed
