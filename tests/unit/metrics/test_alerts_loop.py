"""The server's alert loop over an in-memory store: a threshold rule fed through the metrics
store object fires once, the state is stored, a restarted leader does not notify again, and a
failing receiver is visible in the API's view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from moorage.controllers.alerts import AlertLoop
from moorage.metrics.alerts import AlertRule, Notification, Notifier
from moorage.metrics.notify import Delivery
from moorage.model import Node, NodeStatus
from moorage.ops.alerts import Alerts
from moorage.state import StateCache, StateWriter, kinds
from moorage.store import Put
from moorage.testing.memstore import MemoryStore

from .test_alerts import CPU_RULE, FakeMetrics, cpu


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Receiver:
    def __init__(self) -> None:
        self.got: list[Notification] = []
        self.fail = False

    async def __call__(self, notifier: Notifier, note: Notification) -> Delivery:
        self.got.append(note)
        return Delivery(False, 3, "HTTP 500: boom") if self.fail else Delivery(True, 1)


@pytest.fixture
async def state() -> AsyncIterator[tuple[StateCache, StateWriter, Clock]]:
    store = MemoryStore()
    cache = StateCache(store)
    runner = asyncio.create_task(cache.run())
    await cache.wait_synced()
    clock = Clock()
    try:
        yield cache, StateWriter(store, cache, clock), clock
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await store.close()


async def put(writer: StateWriter, key: str, value: AlertRule | Notifier | Node) -> None:
    await writer.commit([], [Put(key, kinds.encode(value))])


async def one_round(loop: AlertLoop) -> None:
    async with asyncio.TaskGroup() as deliveries:
        await loop.round(deliveries)


async def test_threshold_fires_once_is_stored_and_survives_a_new_leader(
    state: tuple[StateCache, StateWriter, Clock],
) -> None:
    cache, writer, clock = state
    await put(writer, kinds.ALERT_RULE.key("cpu-high"), AlertRule.model_validate(CPU_RULE))
    await put(writer, kinds.NOTIFIER.key("hook"), Notifier(name="hook", url="http://x/"))
    metrics = FakeMetrics([cpu("t1", 995.0, 97.0)])
    receiver = Receiver()
    loop = AlertLoop(cache, writer, receiver, lambda: metrics, clock)
    loop.resume()
    await one_round(loop)
    assert [i.state for i in cache.alert_state.instances.values()] == ["pending"]  # type: ignore[union-attr]
    for t in range(1005, 1040, 10):
        metrics.ingest([cpu("t1", float(t), 97.0)])
    clock.now = 1031.0
    await one_round(loop)
    await one_round(loop)
    assert [n.status for n in receiver.got] == ["firing"]
    stored = cache.alert_state
    assert stored is not None and next(iter(stored.groups.values())).last_sent == 1031.0
    assert [e.type for e in cache.events if e.type.startswith("alert.")] == ["alert.firing"]

    restarted = AlertLoop(cache, writer, receiver, lambda: metrics, clock)
    restarted.resume()
    clock.now = 1035.0
    await one_round(restarted)
    assert len(receiver.got) == 1  # the new leader knows the receiver heard it

    metrics.ingest([cpu("t1", 1045.0, 3.0), cpu("t1", 1055.0, 3.0)])
    clock.now = 1058.0
    await one_round(restarted)
    assert [n.status for n in receiver.got] == ["firing", "resolved"]
    clock.now = 1061.0
    await one_round(restarted)
    assert cache.alert_state is not None and cache.alert_state.instances == {}


async def test_node_down_and_a_failing_receiver_are_visible(
    state: tuple[StateCache, StateWriter, Clock],
) -> None:
    cache, writer, clock = state
    await put(writer, kinds.ALERT_RULE.key("down"), AlertRule(name="down", kind="node_down"))
    await put(writer, kinds.NOTIFIER.key("hook"), Notifier(name="hook", url="http://x/"))
    await put(
        writer, kinds.NODE.key("n1"), Node(name="n1", cpu=1, memory=1, status=NodeStatus.DOWN)
    )
    receiver = Receiver()
    receiver.fail = True
    loop = AlertLoop(cache, writer, receiver, lambda: None, clock)  # no metrics store needed
    loop.resume()
    await one_round(loop)
    view = Alerts(cache, writer, clock, loop).view()
    (alert,) = view.alerts
    assert (alert.state, alert.labels["node"], alert.failures) == ("firing", "n1", 1)
    assert alert.last_error == "HTTP 500: boom" and alert.last_notified is None
    (group,) = view.notifications
    assert (group.failures, group.next_attempt_at) == (1, 1005.0)
    await one_round(loop)
    assert len(receiver.got) == 1  # backing off
    receiver.fail = False
    clock.now = 1005.0
    await one_round(loop)
    assert len(receiver.got) == 2
    assert Alerts(cache, writer, clock).view().alerts[0].failures == 0  # stored
