"""Notification payloads against the documented fields, and the sender's retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from moorage.metrics.alerts import AlertInstance, Notification, Notifier
from moorage.metrics.notify import (
    ZERO_TIME,
    Sender,
    alertmanager_payload,
    dedup_key,
    pagerduty_event,
    rfc3339,
    slack_payload,
)


def instance(node: str, state: str = "firing", severity: str = "critical") -> AlertInstance:
    return AlertInstance(
        rule="node-down",
        fingerprint=f"fp-{node}",
        labels={"alertname": "node-down", "severity": severity, "node": node},
        annotations={"summary": f"node {node} is down", "runbook": "restart it"},
        state=state,  # type: ignore[arg-type]
        active_at=100.0,
        since=100.0,
        fired_at=100.0,
        resolved_at=160.0 if state == "resolved" else None,
    )


def note(firing: list[AlertInstance], resolved: list[AlertInstance]) -> Notification:
    return Notification(
        key='hook/{}:{alertname="node-down"}',
        notifier="hook",
        group_key='{}:{alertname="node-down"}',
        group_labels={"alertname": "node-down"},
        firing=firing,
        resolved=resolved,
        sent_after=[i.fingerprint for i in firing],
    )


def test_alertmanager_webhook_v4_shape() -> None:
    body = alertmanager_payload(
        note([instance("n1")], [instance("n2", "resolved")]), "hook", "http://srv:7070"
    )
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook"
    assert body["groupKey"] == '{}:{alertname="node-down"}'
    assert body["groupLabels"] == {"alertname": "node-down"}
    assert body["commonLabels"] == {"alertname": "node-down", "severity": "critical"}
    assert body["commonAnnotations"] == {"runbook": "restart it"}
    assert body["externalURL"] == "http://srv:7070"
    firing, resolved = body["alerts"]
    assert set(firing) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert (firing["status"], firing["startsAt"], firing["endsAt"]) == (
        "firing",
        "1970-01-01T00:01:40Z",
        ZERO_TIME,
    )
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "1970-01-01T00:02:40Z")
    assert firing["fingerprint"] == "fp-n1"
    assert firing["generatorURL"] == "http://srv:7070/v1/alerts?rule=node-down"
    only_resolved = alertmanager_payload(note([], [instance("n2", "resolved")]), "hook", "")
    assert only_resolved["status"] == "resolved"


def test_slack_incoming_webhook_shape() -> None:
    body = slack_payload(note([instance("n1")], [instance("n2", "resolved")]), "http://srv")
    assert body["text"] == "[FIRING:1] alertname=node-down"
    first, second = body["attachments"]
    assert first["color"] == "danger" and second["color"] == "good"
    assert first["title"] == "FIRING: node-down" and first["text"] == "node n1 is down"
    assert {"title": "node", "value": "n1", "short": True} in first["fields"]
    assert isinstance(first["ts"], int)


def test_pagerduty_trigger_then_resolve_share_a_dedup_key() -> None:
    trigger = pagerduty_event(note([instance("n1", severity="warning")], []), "KEY", "http://s")
    assert trigger["routing_key"] == "KEY" and trigger["event_action"] == "trigger"
    payload = trigger["payload"]
    assert payload["summary"] == "node n1 is down"
    assert payload["source"] == "n1" and payload["severity"] == "warning"
    assert payload["custom_details"]["firing"][0]["labels"]["node"] == "n1"
    resolve = pagerduty_event(note([], [instance("n1", "resolved")]), "KEY", "http://s")
    assert resolve == {
        "routing_key": "KEY",
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    assert trigger["dedup_key"] == dedup_key(note([], [])) and len(trigger["dedup_key"]) <= 255


def test_rfc3339() -> None:
    assert rfc3339(None) == ZERO_TIME
    assert rfc3339(1.5) == "1970-01-01T00:00:01.500000Z"


# ---- the sender ----------------------------------------------------------------------------
@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[Any], list[int]]]:
    """A local receiver answering with the statuses queued in `answers` (then 200)."""
    got: list[Any] = []
    answers: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=answers.pop(0) if answers else 200, text="nope")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", got, answers
    finally:
        await runner.cleanup()


async def no_sleep(_: float) -> None:
    return None


async def test_sender_retries_5xx_then_delivers(
    receiver: tuple[str, list[Any], list[int]],
) -> None:
    url, got, answers = receiver
    answers += [500, 503]
    async with aiohttp.ClientSession() as session:
        sender = Sender(session, "http://srv", attempts=3, sleep=no_sleep)
        result = await sender.send(Notifier(name="hook", url=url), note([instance("n1")], []))
    assert (result.ok, result.attempts) == (True, 3)
    assert len(got) == 3 and got[0]["version"] == "4"


async def test_sender_reports_the_last_error(receiver: tuple[str, list[Any], list[int]]) -> None:
    url, _got, answers = receiver
    answers += [500, 500, 500, 404]
    async with aiohttp.ClientSession() as session:
        sender = Sender(session, "http://srv", attempts=3, sleep=no_sleep)
        failed = await sender.send(Notifier(name="hook", url=url), note([instance("n1")], []))
        assert (failed.ok, failed.attempts, failed.error) == (False, 3, "HTTP 500: nope")
        client_error = await sender.send(Notifier(name="h", url=url), note([instance("n1")], []))
        assert (client_error.ok, client_error.attempts) == (False, 1)  # a 4xx is not retried
        refused = await sender.send(
            Notifier(name="h", url="http://127.0.0.1:9/", timeout=2.0), note([], [])
        )
    assert not refused.ok and refused.attempts == 3 and "Connect" in refused.error
