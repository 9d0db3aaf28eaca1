"""Alerts on the server: the rules, notifiers and silences API, and the leader's alert loop.

    GET    /v1/alerts                        instances (state, since, value, last notification,
                                             failures) and the notification groups (blocking)
    GET    /v1/alerts/rules                  every rule
    PUT    /v1/alerts/rules                  apply a rules file, YAML or JSON (rules [+ notifiers])
    GET · PUT · DELETE /v1/alerts/rules/{name}
    GET    /v1/alerts/notifiers              notifiers (routing keys masked)
    PUT · DELETE /v1/alerts/notifiers/{name} {kind: webhook|slack|pagerduty, url, routing_key?}
    GET · POST /v1/silences · DELETE /v1/silences/{id}

`AlertLoop` runs on the leader: every `interval` it evaluates the rules over the cache and the
metrics store (`moorage.metrics.alerts`, pure), plans the notifications, posts them in its own
task group (one delivery per group at a time, `moorage.metrics.notify`), records each outcome
and stores the state (`/moorage/alert-state/current`) whenever more than the values moved. A new
leader starts from the stored state: pending alerts keep the time their condition started,
firing ones stay firing, and what each notifier heard is known, so nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aiohttp import web
from pydantic import BaseModel, ValidationError

from moorage.metrics.alerts import (
    AlertInstance,
    AlertRule,
    AlertState,
    GroupState,
    Inputs,
    Notification,
    Notifier,
    Silence,
    SilenceCreate,
    conditions,
    evaluate,
    group_keys,
    parse_notifier,
    parse_rule,
    parse_rules,
    plan_notifications,
    record_delivery,
    silenced,
    stored_form,
)
from moorage.metrics.model import MetricsStore
from moorage.model import FieldError, NotFound, SpecError
from moorage.model.spec import errors_from, load_yaml_documents
from moorage.state import StateCache, StateWriter, Topic
from moorage.state import keys as k
from moorage.state.writer import new_event
from moorage.store import Compare, Delete, Op, Put

from .api import respond, table
from .blocking import block

log = logging.getLogger(__name__)

Clock = Callable[[], float]
MetricsSource = Callable[[], MetricsStore | None]


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


# ---- the leader's loop -------------------------------------------------------------------
class AlertLoop:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        send: Callable[[Notifier, Notification], Any],
        metrics: MetricsSource,
        clock: Clock,
        interval: float = 3.0,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.send = send  # async (notifier, notification) -> Delivery (notify.Sender.send)
        self.metrics = metrics
        self.clock = clock
        self.interval = max(interval, 0.2)
        self.state: AlertState | None = None  # set while running (leader)
        self.evaluated_at: float | None = None
        self._busy: set[str] = set()
        self._written = ""
        self._events: list[Op] = []
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        await self.cache.wait_synced()
        self.resume()
        await asyncio.sleep(random.uniform(0, min(self.interval, 0.5)))  # jittered first tick
        try:
            async with asyncio.TaskGroup() as deliveries:
                while True:
                    await self.round(deliveries)
                    await asyncio.sleep(self.interval)
        finally:
            self.state, self.evaluated_at, self._busy = None, None, set()

    def resume(self) -> None:
        """Start from the stored state (a new leader, or this one again)."""
        self.state = self.cache.alert_state or AlertState()
        self._written = stored_form(self.state)

    async def round(self, deliveries: asyncio.TaskGroup) -> None:
        now = self.clock()
        rules = dict(self.cache.alert_rules)
        before = self.state or AlertState()
        self.state = evaluate(rules, before, self._conditions(rules, now), now)
        self.evaluated_at = now
        self._transitions(before, self.state, now)
        notes = plan_notifications(
            rules, self.cache.notifiers, self.cache.silences.values(), self.state, now, self._busy
        )
        for note in notes:
            self._busy.add(note.key)
            deliveries.create_task(self._deliver(note), name=f"notify {note.key}")
        await self._store()

    def _conditions(self, rules: dict[str, AlertRule], now: float) -> dict[str, Any]:
        cache = self.cache
        inputs = Inputs(cache.nodes, cache.tasks, cache.services, cache.deployments, self.metrics())
        hits: dict[str, Any] = {}
        for name, rule in rules.items():
            try:
                hits[name] = conditions(rule, inputs, now)
            except Exception:  # a store hiccup must not stop the other rules
                log.exception("alert rule %s: evaluation failed", name)
                hits[name] = None
        return hits

    def _transitions(self, before: AlertState, after: AlertState, now: float) -> None:
        """Record firing and resolution as cluster events (`moorage events`)."""
        for fp, inst in after.instances.items():
            old = before.instances.get(fp)
            if inst.state in ("firing", "resolved") and (old is None or old.state != inst.state):
                text = f"alert {inst.rule} {inst.state}: {inst.annotations.get('summary', '')}"
                self._events.append(
                    new_event(
                        f"alert.{inst.state}",
                        text,
                        now=now,
                        service=inst.labels.get("service"),
                        node=inst.labels.get("node"),
                    )
                )

    async def _deliver(self, note: Notification) -> None:
        error: str | None = "the notifier was removed"
        try:
            notifier = self.cache.notifiers.get(note.notifier)
            if notifier is not None:
                delivery = await self.send(notifier, note)
                error = None if delivery.ok else delivery.error
        except Exception as exc:  # recorded, never lost: the group is retried after backoff
            log.exception("notifier %s: delivery crashed", note.notifier)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._busy.discard(note.key)
        if error is not None:
            log.warning(
                "notifier %s: %s notification failed: %s", note.notifier, note.status, error
            )
        if self.state is not None:
            self.state = record_delivery(self.state, note, error, self.clock())
            await self._store()

    async def _store(self) -> None:
        async with self._lock:
            if self.state is None:
                return
            form = stored_form(self.state)
            if form == self._written and not self._events:
                return
            key = k.alert_state_key()
            events, self._events = self._events, []
            mod = self.cache.mod_revisions.get(key, 0)
            ops: list[Op] = [Put(key, k.encode(self.state)), *events]
            if await self.writer.commit([Compare(key, "mod", "==", mod)], ops) is None:
                log.warning("alert state moved under this leader; writing it again next round")
                self._written = ""
            else:
                self._written = form


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
    ops: list[Op] = [Put(k.alert_rule_key(r.name), k.encode(r)) for r in rules]
    ops += [Put(k.notifier_key(n.name), k.encode(n)) for n in notifiers]
    names = ", ".join(r.name for r in rules) or "none"
    text = f"alert rules applied {why}: {names}" + (
        f"; notifiers {', '.join(n.name for n in notifiers)}" if notifiers else ""
    )
    ops.append(new_event("alert.rules", text, now=now))
    return ops


# ---- the API -----------------------------------------------------------------------------
async def _read_docs(request: web.Request) -> str:
    raw = await request.read()
    if not raw.strip():
        raise SpecError([FieldError("", "the request body is empty")], code="invalid_body")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise SpecError([FieldError("", "the body is not UTF-8")], code="invalid_body") from None


async def _read_one(request: web.Request) -> Any:
    """One YAML or JSON document (JSON is YAML)."""
    docs = load_yaml_documents(await _read_docs(request))
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


def _masked(notifier: Notifier) -> Notifier:
    key = notifier.routing_key
    return notifier.model_copy(
        update={
            "routing_key": _hide(key) if key else key,
            "url": masked_url(notifier.url, notifier.kind),
        }
    )


class AlertsApi:
    def __init__(
        self, cache: StateCache, writer: StateWriter, clock: Clock, loop: AlertLoop | None = None
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.loop = loop  # this server's loop: its live state while it leads

    # ---- alerts --------------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/alerts",
        "Alert instances (state, since, value, last notification, failures) and notifications",
        response=AlertsView,
        blocking=True,
        tags=("alerts",),
    )
    async def alerts_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        return respond(self.view(self.clock()), index)

    def view(self, now: float) -> AlertsView:
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
    @table.add("GET", "/v1/alerts/rules", "Alert rules", response=list[AlertRule], tags=("alerts",))
    async def alert_rules_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        return respond(sorted(self.cache.alert_rules.values(), key=lambda r: r.name), index)

    @table.add(
        "PUT",
        "/v1/alerts/rules",
        "Apply a rules file (YAML or JSON: `rules:` and optional `notifiers:`)",
        response=list[AlertRule],
        tags=("alerts",),
    )
    async def alert_rules_apply(self, request: web.Request) -> web.Response:
        rules, notifiers = parse_rules(await _read_docs(request))
        await self.writer.commit([], _apply_ops(rules, notifiers, self.clock(), "through the API"))
        return respond(rules)

    @table.add(
        "GET", "/v1/alerts/rules/{name}", "One alert rule", response=AlertRule, tags=("alerts",)
    )
    async def alert_rule_get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        rule = self.cache.alert_rules.get(name)
        if rule is None:
            raise NotFound(f"no alert rule named {name!r}")
        return respond(rule)

    @table.add(
        "PUT",
        "/v1/alerts/rules/{name}",
        "Create or replace an alert rule (YAML or JSON)",
        body=AlertRule,
        response=AlertRule,
        tags=("alerts",),
    )
    async def alert_rule_put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        rule = parse_rule(_named(await _read_one(request), name))
        text = f"alert rule {name} set ({rule.kind}, {rule.severity})"
        event = new_event("alert.rule", text, now=self.clock())
        await self.writer.commit([], [Put(k.alert_rule_key(name), k.encode(rule)), event])
        return respond(rule)

    @table.add("DELETE", "/v1/alerts/rules/{name}", "Delete an alert rule", tags=("alerts",))
    async def alert_rule_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._delete(k.alert_rule_key(name), f"alert rule {name}", "alert.rule")
        return respond({"deleted": name})

    async def _delete(self, key: str, what: str, kind: str) -> None:
        if key not in self.cache.mod_revisions:
            raise NotFound(f"no {what}")
        event = new_event(kind, f"{what} deleted", now=self.clock())
        await self.writer.commit([], [Delete(key), event])

    # ---- notifiers -----------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/alerts/notifiers",
        "Notifiers (routing keys masked)",
        response=list[Notifier],
        tags=("alerts",),
    )
    async def notifiers_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        found = sorted(self.cache.notifiers.values(), key=lambda n: n.name)
        return respond([_masked(n) for n in found], index)

    @table.add(
        "PUT",
        "/v1/alerts/notifiers/{name}",
        "Create or replace a notifier: {kind: webhook|slack|pagerduty, url, routing_key?}",
        body=Notifier,
        response=Notifier,
        tags=("alerts",),
    )
    async def notifier_put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        notifier = parse_notifier(_named(await _read_one(request), name))
        event = new_event(
            "alert.notifier", f"notifier {name} set ({notifier.kind})", now=self.clock()
        )
        await self.writer.commit([], [Put(k.notifier_key(name), k.encode(notifier)), event])
        return respond(_masked(notifier))

    @table.add("DELETE", "/v1/alerts/notifiers/{name}", "Delete a notifier", tags=("alerts",))
    async def notifier_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._delete(k.notifier_key(name), f"notifier {name}", "alert.notifier")
        return respond({"deleted": name})

    # ---- silences ------------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/silences",
        "Silences, active and expired",
        response=list[SilenceView],
        tags=("alerts",),
    )
    async def silences_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        now = self.clock()
        found = sorted(self.cache.silences.values(), key=lambda s: (s.ends_at, s.id))
        return respond(
            [
                SilenceView(**s.model_dump(), state="active" if s.active(now) else "expired")
                for s in found
            ],
            index,
        )

    @table.add(
        "POST",
        "/v1/silences",
        "Silence the notifications of matching alerts until it expires",
        body=SilenceCreate,
        response=Silence,
        tags=("alerts",),
    )
    async def silence_create(self, request: web.Request) -> web.Response:
        now = self.clock()
        try:
            body = SilenceCreate.model_validate(await _read_one(request))
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
        await self.writer.commit([], [Put(k.silence_key(silence.id), k.encode(silence)), event])
        return respond(silence)

    @table.add("DELETE", "/v1/silences/{id}", "Remove a silence", tags=("alerts",))
    async def silence_delete(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["id"]
        await self._delete(k.silence_key(silence_id), f"silence {silence_id}", "alert.silence")
        return respond({"deleted": silence_id})
