"""Alert rules, notifiers and silences (docs/metrics.md), and what the alerts look like now.

    view(now)                 instances (state, since, value, last notification, failures) and
                              the notification groups: the leader's live state, else the stored
    apply_rules(text)         a rules file, YAML or JSON (rules + optional notifiers)
    put_rule | put_notifier(name, body)   create or replace one (YAML or JSON)
    create_silence(body)      matchers and an expiry (duration or ends_at)
    load_rules_file(path)     `--alert-rules FILE` at start

Notifier secrets (routing keys, a webhook URL's password, query values, a Slack hook's path)
are never shown in clear. The leader's loop is `moorage.controllers.alerts.AlertLoop`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from moorage.controllers.alerts import AlertLoop
from moorage.metrics.alerts import (
    AlertInstance,
    AlertRule,
    AlertState,
    GroupState,
    Notifier,
    Silence,
    SilenceCreate,
    group_keys,
    parse_notifier,
    parse_rule,
    parse_rules,
    silenced,
)
from moorage.model import FieldError, NotFound, SpecError
from moorage.model.spec import errors_from, load_yaml_documents
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Delete, Op

Clock = Callable[[], float]


class AlertView(AlertInstance):
    silenced: bool = False
    failures: int = 0  # failed deliveries in a row of the groups carrying it
    last_error: str = ""


class AlertsView(BaseModel):
    alerts: list[AlertView]
    notifications: list[GroupState]
    evaluated_at: float | None = None  # None: read from the store (this server is not leader)


class SilenceView(Silence):
    state: str  # "active" or "expired"


class Alerts:
    def __init__(
        self, cache: StateCache, writer: StateWriter, clock: Clock, loop: AlertLoop | None = None
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.loop = loop  # this server's loop: its live state while it leads

    def view(self) -> AlertsView:
        now = self.clock()
        live = self.loop.state if self.loop is not None else None
        state = live or self.cache.alert_state or AlertState()
        groups = state.groups
        out = []
        for inst in sorted(state.instances.values(), key=lambda i: (i.rule, i.since)):
            rule = self.cache.alert_rules.get(inst.rule)
            keys = group_keys(rule, self.cache.notifiers, inst.labels) if rule else []
            failing = [groups[key] for key in keys if key in groups and groups[key].failures]
            out.append(
                AlertView(
                    **inst.model_dump(),
                    silenced=silenced(inst.labels, self.cache.silences.values(), now),
                    failures=max((g.failures for g in failing), default=0),
                    last_error=failing[0].last_error if failing else "",
                )
            )
        evaluated = self.loop.evaluated_at if live is not None and self.loop else None
        return AlertsView(
            alerts=out,
            notifications=sorted(groups.values(), key=lambda g: g.key),
            evaluated_at=evaluated,
        )

    # ---- rules ---------------------------------------------------------------------------
    def rules(self) -> list[AlertRule]:
        return sorted(self.cache.alert_rules.values(), key=lambda r: r.name)

    def rule(self, name: str) -> AlertRule:
        rule = self.cache.alert_rules.get(name)
        if rule is None:
            raise NotFound(f"no alert rule named {name!r}")
        return rule

    async def apply_rules(self, text: str) -> list[AlertRule]:
        rules, notifiers = parse_rules(text)
        await self.writer.commit([], _apply_ops(rules, notifiers, self.clock(), "through the API"))
        return rules

    async def put_rule(self, name: str, text: str) -> AlertRule:
        rule = parse_rule(_named(_one(text), name))
        event = new_event(
            "alert.rule", f"alert rule {name} set ({rule.kind}, {rule.severity})", now=self.clock()
        )
        await self.writer.commit([], [kinds.ALERT_RULE.put(rule), event])
        return rule

    async def delete_rule(self, name: str) -> None:
        await self._delete(kinds.ALERT_RULE.key(name), f"alert rule {name}", "alert.rule")

    # ---- notifiers -----------------------------------------------------------------------
    def notifiers(self) -> list[Notifier]:
        """Routing keys and URL secrets masked."""
        found = sorted(self.cache.notifiers.values(), key=lambda n: n.name)
        return [masked(n) for n in found]

    async def put_notifier(self, name: str, text: str) -> Notifier:
        notifier = parse_notifier(_named(_one(text), name))
        event = new_event(
            "alert.notifier", f"notifier {name} set ({notifier.kind})", now=self.clock()
        )
        await self.writer.commit([], [kinds.NOTIFIER.put(notifier), event])
        return masked(notifier)

    async def delete_notifier(self, name: str) -> None:
        await self._delete(kinds.NOTIFIER.key(name), f"notifier {name}", "alert.notifier")

    # ---- silences ------------------------------------------------------------------------
    def silences(self) -> list[SilenceView]:
        now = self.clock()
        found = sorted(self.cache.silences.values(), key=lambda s: (s.ends_at, s.id))
        return [
            SilenceView(**s.model_dump(), state="active" if s.active(now) else "expired")
            for s in found
        ]

    async def create_silence(self, text: str) -> Silence:
        now = self.clock()
        try:
            body = SilenceCreate.model_validate(_one(text))
        except ValidationError as exc:
            raise SpecError(errors_from(exc)) from None
        ends = body.ends_at if body.ends_at is not None else now + (body.duration or 0)
        if body.duration is None and body.ends_at is None:
            raise SpecError([FieldError("duration", "a silence needs a duration or ends_at")])
        if ends <= now:
            raise SpecError([FieldError("ends_at", "must be in the future")])
        silence = Silence(
            id=secrets.token_hex(6),
            matchers=body.matchers,
            starts_at=now,
            ends_at=ends,
            comment=body.comment,
            created_by=body.created_by,
        )
        which = ", ".join(f"{k}={v}" for k, v in sorted(body.matchers.items()))
        event = new_event("alert.silence", f"silence {silence.id} added: {which}", now=now)
        await self.writer.commit([], [kinds.SILENCE.put(silence), event])
        return silence

    async def delete_silence(self, silence_id: str) -> None:
        await self._delete(kinds.SILENCE.key(silence_id), f"silence {silence_id}", "alert.silence")

    async def _delete(self, key: str, what: str, kind: str) -> None:
        if key not in self.cache.mod_revisions:
            raise NotFound(f"no {what}")
        event = new_event(kind, f"{what} deleted", now=self.clock())
        await self.writer.commit([], [Delete(key), event])


async def load_rules_file(path: Path, writer: StateWriter, clock: Clock) -> int:
    """`--alert-rules FILE` at start: apply (create or replace) its rules and notifiers."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(
            [FieldError("alert-rules", f"cannot read {path}: {exc.strerror}")]
        ) from None
    try:
        rules, notifiers = parse_rules(text)
    except SpecError as exc:
        raise SpecError(
            [FieldError(f"alert-rules {path.name}: {e.field}", e.message) for e in exc.errors]
        ) from None
    await writer.commit([], _apply_ops(rules, notifiers, clock(), f"from {path}"))
    return len(rules)


def _apply_ops(rules: list[AlertRule], notifiers: list[Notifier], now: float, why: str) -> list[Op]:
    ops: list[Op] = [kinds.ALERT_RULE.put(r) for r in rules]
    ops += [kinds.NOTIFIER.put(n) for n in notifiers]
    names = ", ".join(r.name for r in rules) or "none"
    text = f"alert rules applied {why}: {names}" + (
        f"; notifiers {', '.join(n.name for n in notifiers)}" if notifiers else ""
    )
    ops.append(new_event("alert.rules", text, now=now))
    return ops


def _one(text: str) -> dict[str, Any]:
    """One YAML or JSON document (JSON is YAML), a mapping."""
    if not text.strip():
        raise SpecError([FieldError("", "the request body is empty")], code="invalid_body")
    docs = load_yaml_documents(text)
    if len(docs) != 1:
        raise SpecError([FieldError("", "expected one document")], code="invalid_body")
    if not isinstance(docs[0], dict):
        raise SpecError([FieldError("", "expected a mapping")], code="invalid_body")
    return docs[0]


def _named(body: dict[str, Any], name: str) -> dict[str, Any]:
    if body.get("name", name) != name:
        raise SpecError([FieldError("name", f"must match the path ({name!r})")])
    return {**body, "name": name}


def _hide(secret: str) -> str:
    return f"****{secret[-4:]}" if len(secret) > 8 else "****"


def masked_url(url: str, kind: str) -> str:
    """A notifier's URL as the API shows it: a password and query values hidden, and a Slack
    incoming webhook's path (which is its secret) cut to its last four characters."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":****@", 1)
    query = "&".join(f"{key}=****" if value else key for key, value in parse_qsl(parts.query, True))
    path = parts.path
    if kind == "slack" and path.count("/") > 1:
        first = path.split("/", 2)[1]  # "services" on hooks.slack.com
        path = f"/{first}/{_hide(path[len(first) + 2 :])}"
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def masked(notifier: Notifier) -> Notifier:
    key = notifier.routing_key
    return notifier.model_copy(
        update={
            "routing_key": _hide(key) if key else key,
            "url": masked_url(notifier.url, notifier.kind),
        }
    )
