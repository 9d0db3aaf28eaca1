"""The leader's alert loop: rules evaluated, notifications planned, delivered and recorded.

Every `interval` it evaluates the rules over the cache and the metrics store
(`moorage.metrics.alerts`, pure), plans the notifications, posts them in its own task group (one
delivery per group at a time, `moorage.metrics.notify`), records each outcome and stores the
state (`/moorage/alert-state/current`) whenever more than the values moved. A new leader starts
from the stored state: pending alerts keep the time their condition started, firing ones stay
firing, and what each notifier heard is known, so nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from moorage.metrics.alerts import (
    AlertRule,
    AlertState,
    Inputs,
    Notification,
    Notifier,
    conditions,
    evaluate,
    plan_notifications,
    record_delivery,
    stored_form,
)
from moorage.metrics.model import MetricsStore
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Compare, Op

log = logging.getLogger(__name__)

Clock = Callable[[], float]
MetricsSource = Callable[[], MetricsStore | None]


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
            put = kinds.ALERT_STATE.put(self.state)
            events, self._events = self._events, []
            mod = self.cache.mod_revisions.get(put.key, 0)
            ops: list[Op] = [put, *events]
            if await self.writer.commit([Compare(put.key, "mod", "==", mod)], ops) is None:
                log.warning("alert state moved under this leader; writing it again next round")
                self._written = ""
            else:
                self._written = form
