"""The one place where a controller's plan becomes store transactions.

    Plan (decided over cache.snapshot()) ──transactions()──▶ [(compares, ops), ...] ──commit──▶

Every write compares its key's mod revision as the plan saw it (0: created by the plan), so a
plan decided on a state that has moved since loses its CAS and is decided again; the plan's
guards ride in every transaction. Transactions stay under etcd's default --max-txn-ops (128):
task writes are split in chunks of TXN_WRITES, and the deployment, service and node writes ride
with the last chunk, so a deployment's progress and the tasks it started or stopped are never
seen apart. The events fill the last chunk up to TXN_OPS; what does not fit follows in
transactions of their own, committed only when every write of the plan was (an event tells
what happened). Build the transactions before any await: the mod revisions must be the ones of
the snapshot the plan was decided on.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Compare, Op, Put

from .plan import Plan

TXN_WRITES = 100  # etcd's default --max-txn-ops is 128: keep every transaction under it
TXN_OPS = 120  # writes and events of one transaction (the guards' compares count apart)

Transaction = tuple[list[Compare], list[Op]]


class PlanApplier:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock

    def transactions(self, plan: Plan) -> list[Transaction]:
        now = self.clock()
        mods = self.cache.mod_revisions
        guards = [Compare(key, "mod", "==", mods.get(key, 0)) for key in plan.guards]
        records: list[tuple[str, BaseModel, bool]] = [
            (kinds.TASK.key(new.id), new.model_copy(update={"updated_at": now}), old is not None)
            for new, old in plan.writes.values()
        ]
        tail: list[tuple[str, BaseModel, bool]] = [
            (kinds.DEPLOYMENT.key(new.id), new, old is not None)
            for new, old in plan.deployments.values()
        ]
        tail += [(kinds.SERVICE.key(new.name), new, True) for new, _old in plan.services.values()]
        tail += [(kinds.NODE.key(new.name), new, True) for new, _old in plan.nodes.values()]
        batches: list[Transaction] = []
        compares: list[Compare] = list(guards)
        ops: list[Op] = []
        for position, (key, value, exists) in enumerate(records + tail):
            compares.append(Compare(key, "mod", "==", mods.get(key, 0) if exists else 0))
            ops.append(Put(key, kinds.encode(value)))
            if len(ops) >= TXN_WRITES and position < len(records) - 1:
                batches.append((compares, ops))
                compares, ops = list(guards), []
        events: list[Op] = [
            new_event(
                event.type,
                event.message,
                now=now,
                service=event.service,
                task=event.task,
                node=event.node,
            )
            for event in plan.events
        ]
        room = max(TXN_OPS - len(ops), 0)
        ops += events[:room]
        if ops:
            batches.append((compares, ops))
        rest = events[room:]
        batches += [([], rest[start : start + TXN_OPS]) for start in range(0, len(rest), TXN_OPS)]
        return batches

    async def apply(self, plan: Plan) -> bool:
        """Commit the plan's transactions; False if one of them lost its CAS (decide again)."""
        all_ok = True
        for compares, ops in self.transactions(plan):
            if not compares and not all_ok:
                break  # the events of writes that did not all happen
            if await self.writer.commit(compares, ops) is None:
                all_ok = False
        return all_ok
