"""Plans as transactions: every one within etcd's --max-txn-ops, events never ahead of writes."""

from __future__ import annotations

from moorage.controllers.apply import TXN_OPS, PlanApplier
from moorage.controllers.plan import EventSpec, Plan
from moorage.model import Task
from moorage.state import kinds
from moorage.store import Compare, Put
from moorage.testing.state import memory_state


def _plan(tasks: int, events: int, tag: str = "a") -> Plan:
    plan = Plan()
    for number in range(tasks):
        task = Task.model_validate(
            {"id": f"web-{tag}{number:04d}", "service": "web", "family": "web", "revision": 1}
        )
        plan.write(task, None)
    plan.events += [EventSpec("task.lost", f"lost {n}", "web") for n in range(events)]
    return plan


async def test_every_transaction_stays_under_etcds_op_limit() -> None:
    async with memory_state() as world:
        applier = PlanApplier(world.cache, world.writer, world.clock)
        for tasks, events in ((100, 28), (100, 29), (150, 150), (10, 400), (0, 5)):
            batches = applier.transactions(_plan(tasks, events))
            assert all(
                len(ops) <= TXN_OPS and len(compares) <= TXN_OPS for compares, ops in batches
            )
            written = [op for _, ops in batches for op in ops if isinstance(op, Put)]
            assert len(written) == tasks + events, (tasks, events)
            assert await applier.apply(_plan(tasks, events, tag=f"t{tasks}e{events}"))
        keys, _ = await world.store.range(kinds.TASK.prefix)
        assert len(keys) == 100 + 100 + 150 + 10


async def test_events_of_a_plan_that_lost_its_cas_are_not_written() -> None:
    async with memory_state() as world:
        applier = PlanApplier(world.cache, world.writer, world.clock)
        plan = _plan(1, 300)
        batches = applier.transactions(plan)
        assert len(batches) == 3 and not batches[1][0]  # events alone after the first
        first = batches[0][0][0]
        assert first == Compare(kinds.TASK.key("web-a0000"), "mod", "==", 0)
        await world.store.put(first.key, b"{}")  # someone else wrote it: the CAS fails
        assert not await applier.apply(plan)
        events, _ = await world.store.range("/moorage/events/")
        assert events == []
