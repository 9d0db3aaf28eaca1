"""Alerts over HTTP (docs/metrics.md, `moorage.ops.alerts`): the rules, notifiers and silences.

    GET    /v1/alerts                        instances (state, since, value, last notification,
                                             failures) and the notification groups (blocking)
    GET    /v1/alerts/rules                  every rule
    PUT    /v1/alerts/rules                  apply a rules file, YAML or JSON (rules [+ notifiers])
    GET · PUT · DELETE /v1/alerts/rules/{name}
    GET    /v1/alerts/notifiers              notifiers (routing keys masked)
    PUT · DELETE /v1/alerts/notifiers/{name} {kind: webhook|slack|pagerduty, url, routing_key?}
    GET · POST /v1/silences · DELETE /v1/silences/{id}

Alerts watch every service and node: reading or changing them needs read or write on all
services. The leader's loop is `moorage.controllers.alerts.AlertLoop`.
"""

from __future__ import annotations

from aiohttp import web

from moorage.metrics.alerts import AlertRule, Notifier, Silence, SilenceCreate
from moorage.ops import Alerts
from moorage.ops.alerts import AlertsView, SilenceView
from moorage.state import StateCache, Topic

from .blocking import block
from .http import read_text, respond
from .routes import RouteTable, acl

routes = RouteTable()
AUTH = acl("service")


class AlertsApi:
    def __init__(self, alerts: Alerts, cache: StateCache) -> None:
        self.alerts = alerts
        self.cache = cache

    @routes.get(
        "/v1/alerts",
        "Alert instances (state, since, value, last notification, failures) and notifications",
        auth=AUTH,
        response=AlertsView,
        blocking=True,
        tags=("alerts",),
    )
    async def alerts_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        return respond(self.alerts.view(), index)

    # ---- rules ---------------------------------------------------------------------------
    @routes.get(
        "/v1/alerts/rules", "Alert rules", auth=AUTH, response=list[AlertRule], tags=("alerts",)
    )
    async def alert_rules_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        return respond(self.alerts.rules(), index)

    @routes.put(
        "/v1/alerts/rules",
        "Apply a rules file (YAML or JSON: `rules:` and optional `notifiers:`)",
        auth=AUTH,
        response=list[AlertRule],
        tags=("alerts",),
    )
    async def alert_rules_apply(self, request: web.Request) -> web.Response:
        return respond(await self.alerts.apply_rules(await read_text(request)))

    @routes.get(
        "/v1/alerts/rules/{name}",
        "One alert rule",
        auth=AUTH,
        response=AlertRule,
        tags=("alerts",),
    )
    async def alert_rule_get(self, request: web.Request) -> web.Response:
        return respond(self.alerts.rule(request.match_info["name"]))

    @routes.put(
        "/v1/alerts/rules/{name}",
        "Create or replace an alert rule (YAML or JSON)",
        auth=AUTH,
        body=AlertRule,
        response=AlertRule,
        tags=("alerts",),
    )
    async def alert_rule_put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return respond(await self.alerts.put_rule(name, await read_text(request)))

    @routes.delete("/v1/alerts/rules/{name}", "Delete an alert rule", auth=AUTH, tags=("alerts",))
    async def alert_rule_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.alerts.delete_rule(name)
        return respond({"deleted": name})

    # ---- notifiers -----------------------------------------------------------------------
    @routes.get(
        "/v1/alerts/notifiers",
        "Notifiers (routing keys masked)",
        auth=AUTH,
        response=list[Notifier],
        tags=("alerts",),
    )
    async def notifiers_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        return respond(self.alerts.notifiers(), index)

    @routes.put(
        "/v1/alerts/notifiers/{name}",
        "Create or replace a notifier: {kind: webhook|slack|pagerduty, url, routing_key?}",
        auth=AUTH,
        body=Notifier,
        response=Notifier,
        tags=("alerts",),
    )
    async def notifier_put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return respond(await self.alerts.put_notifier(name, await read_text(request)))

    @routes.delete("/v1/alerts/notifiers/{name}", "Delete a notifier", auth=AUTH, tags=("alerts",))
    async def notifier_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.alerts.delete_notifier(name)
        return respond({"deleted": name})

    # ---- silences ------------------------------------------------------------------------
    @routes.get(
        "/v1/silences",
        "Silences, active and expired",
        auth=AUTH,
        response=list[SilenceView],
        tags=("alerts",),
    )
    async def silences_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.ALERTS)
        return respond(self.alerts.silences(), index)

    @routes.post(
        "/v1/silences",
        "Silence the notifications of matching alerts until it expires",
        auth=AUTH,
        body=SilenceCreate,
        response=Silence,
        tags=("alerts",),
    )
    async def silence_create(self, request: web.Request) -> web.Response:
        return respond(await self.alerts.create_silence(await read_text(request)))

    @routes.delete("/v1/silences/{id}", "Remove a silence", auth=AUTH, tags=("alerts",))
    async def silence_delete(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["id"]
        await self.alerts.delete_silence(silence_id)
        return respond({"deleted": silence_id})
