"""Notification payloads (pure) and the sender that posts them.

    Notification ─▶ alertmanager_payload()  webhook: Alertmanager's webhook JSON, version "4"
                 ─▶ slack_payload()         Slack-compatible incoming webhook: text + attachments
                 ─▶ pagerduty_event()       PagerDuty Events v2: trigger / resolve, one dedup key
                                            per group (as Alertmanager)
    Sender.send(notifier, notification) ─▶ Delivery (ok, or the last error after the retries)

The sender retries a failed POST a few times with backoff (connection errors, timeouts, 5xx and
429; another 4xx will not get better); what still fails is returned, and the alert loop records
it, backs the group off (`alerts.backoff`) and tries again later.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from .alert_rules import Notifier, notifier_url
from .alerts import AlertInstance, Notification

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
COLORS = {"critical": "danger", "warning": "warning", "resolved": "good"}


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def _alerts(note: Notification) -> list[tuple[str, AlertInstance]]:
    return [("firing", i) for i in note.firing] + [("resolved", i) for i in note.resolved]


def generator_url(external_url: str, inst: AlertInstance) -> str:
    return f"{external_url.rstrip('/')}/v1/alerts?rule={inst.rule}"


def alertmanager_payload(note: Notification, receiver: str, external_url: str) -> dict[str, Any]:
    """Alertmanager's webhook body (`version: "4"`), as its webhook receivers expect it."""
    alerts = [
        {
            "status": status,
            "labels": dict(sorted(inst.labels.items())),
            "annotations": dict(sorted(inst.annotations.items())),
            "startsAt": rfc3339(inst.fired_at or inst.active_at),
            "endsAt": rfc3339(inst.resolved_at if status == "resolved" else None),
            "generatorURL": generator_url(external_url, inst),
            "fingerprint": inst.fingerprint,
        }
        for status, inst in _alerts(note)
    ]
    every = [inst for _, inst in _alerts(note)]
    return {
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": 0,
        "status": note.status,
        "receiver": receiver,
        "groupLabels": dict(note.group_labels),
        "commonLabels": _common([i.labels for i in every]),
        "commonAnnotations": _common([i.annotations for i in every]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def _title(note: Notification) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in note.group_labels.items())
    counts = f"FIRING:{len(note.firing)}" if note.firing else "RESOLVED"
    return f"[{counts}] {labels or 'alerts'}"


def slack_payload(note: Notification, external_url: str) -> dict[str, Any]:
    """A Slack incoming-webhook body (Mattermost and Rocket.Chat take the same)."""
    attachments = []
    for status, inst in _alerts(note):
        severity = inst.labels.get("severity", "warning")
        summary = inst.annotations.get("summary", inst.rule)
        attachments.append(
            {
                "color": COLORS["resolved" if status == "resolved" else severity],
                "title": f"{status.upper()}: {inst.labels.get('alertname', inst.rule)}",
                "title_link": generator_url(external_url, inst),
                "text": summary,
                "fields": [
                    {"title": k, "value": v, "short": True}
                    for k, v in sorted(inst.labels.items())
                    if k != "alertname"
                ],
                "fallback": f"{status}: {summary}",
                "ts": int(inst.resolved_at or inst.fired_at or inst.active_at),
            }
        )
    return {"text": _title(note), "attachments": attachments}


def dedup_key(note: Notification) -> str:
    return hashlib.sha256(f"{note.notifier}/{note.group_key}".encode()).hexdigest()


def pagerduty_event(note: Notification, routing_key: str, external_url: str) -> dict[str, Any]:
    """A PagerDuty Events v2 event: trigger while the group fires, resolve when it is over."""
    key = dedup_key(note)
    if not note.firing:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    severities = {i.labels.get("severity") for i in note.firing}
    first = note.firing[0]
    common = _common([i.labels for i in note.firing])
    summary = first.annotations.get("summary", first.rule)
    if len(note.firing) > 1:
        summary = f"{_title(note)}: {summary} (and {len(note.firing) - 1} more)"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "client": "moorage",
        "client_url": external_url,
        "payload": {
            "summary": summary[:1024],
            "source": common.get("node") or common.get("service") or "moorage",
            "severity": "critical" if "critical" in severities else "warning",
            "timestamp": rfc3339(first.fired_at or first.active_at),
            "component": common.get("service"),
            "group": common.get("alertname"),
            "custom_details": {
                "firing": [{"labels": i.labels, "annotations": i.annotations} for i in note.firing],
                "resolved": [{"labels": i.labels} for i in note.resolved],
            },
        },
    }


def payload(notifier: Notifier, note: Notification, external_url: str) -> dict[str, Any]:
    if notifier.kind == "slack":
        return slack_payload(note, external_url)
    if notifier.kind == "pagerduty":
        return pagerduty_event(note, notifier.routing_key or "", external_url)
    return alertmanager_payload(note, notifier.name, external_url)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    error: str = ""  # the last attempt's, when not ok


Sleep = Callable[[float], Awaitable[None]]


class Sender:
    """Posts notifications with aiohttp: a timeout per attempt, retries with backoff."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        external_url: str,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.session = session
        self.external_url = external_url
        self.attempts = max(attempts, 1)
        self.backoff = backoff
        self.sleep = sleep

    async def send(self, notifier: Notifier, note: Notification) -> Delivery:
        body = payload(notifier, note, self.external_url)
        url = notifier_url(notifier)
        error = ""
        for attempt in range(1, self.attempts + 1):
            error, retry = await self._post(url, body, notifier.timeout)
            if not error:
                return Delivery(True, attempt)
            if not retry or attempt == self.attempts:
                return Delivery(False, attempt, error)
            await self.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(False, self.attempts, error)

    async def _post(self, url: str, body: dict[str, Any], timeout: float) -> tuple[str, bool]:
        """("" , _) when delivered; else the error and whether trying again may help."""
        try:
            async with self.session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                if response.status < 300:
                    return "", False
                text = (await response.text(errors="replace"))[:200].strip()
                retry = response.status >= 500 or response.status == 429
                return f"HTTP {response.status}" + (f": {text}" if text else ""), retry
        except TimeoutError:
            return f"timed out after {timeout:g}s", True
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}", True


__all__ = [
    "Delivery",
    "Sender",
    "alertmanager_payload",
    "dedup_key",
    "pagerduty_event",
    "payload",
    "rfc3339",
    "slack_payload",
]
