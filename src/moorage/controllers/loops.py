"""The thin loops that apply the pure decisions: reconciliation and garbage collection.

Each loop reads the cache, decides with a pure function, and writes by compare-and-swap
(apply.py). A lost CAS is not an error: the state moved, so the loop decides again from the
newer state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from moorage.model import Desired, Task
from moorage.state import StateCache, StateWriter, Topic, kinds
from moorage.store import Compare, Delete

from .apply import TXN_WRITES, PlanApplier
from .reconcile import reconcile

log = logging.getLogger(__name__)


def _unobserved(decide: float, round_: float) -> None:
    pass


class Reconciler:
    """Level-triggered: re-decides on every state change, and at least every `interval`."""

    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        interval: float = 1.0,
    ) -> None:
        self.cache = cache
        self.applier = PlanApplier(cache, writer, clock)
        self.clock = clock
        self.interval = max(interval, 0.05)
        self.rounds = 0
        # Mixed into each round's seed: the plan stays a pure function of (snapshot, seed), yet two
        # clusters (or a restarted server) do not pick the same task ids and host ports.
        self.salt = random.getrandbits(48)
        # (decision seconds, round seconds incl. writes): the server's /metrics histograms
        self.observe: Callable[[float, float], None] = _unobserved

    async def run(self) -> None:
        await self.cache.wait_synced()
        await asyncio.sleep(random.uniform(0, 0.05))  # jittered first tick
        while True:
            seen = self.cache.index(Topic.ANY)
            if await self.round():
                continue
            await self.cache.wait(Topic.ANY, seen, self.interval)

    async def round(self) -> bool:
        """One decision and its writes; True if it wrote anything (decide again at once)."""
        cache = self.cache
        started = time.perf_counter()
        plan = reconcile(cache.snapshot(), self.clock(), seed=cache.revision ^ self.salt)
        self.rounds += 1
        decided = time.perf_counter() - started
        if plan.empty:
            self.observe(decided, decided)
            return False
        all_ok = await self.applier.apply(plan)
        self.observe(decided, time.perf_counter() - started)
        if not all_ok:
            await asyncio.sleep(0.02)  # lost a CAS: the cache is about to show why
        return True


class GarbageCollector:
    """Deletes long-dead tasks (keeping a few per service for `ps -a`) and trims old events."""

    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        *,
        interval: float = 10.0,
        dead_task_age: float = 3600.0,
        keep_dead_per_service: int = 10,
        keep_events: int = 5000,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.interval = max(interval, 1.0)
        self.dead_task_age = dead_task_age
        self.keep_dead = keep_dead_per_service
        self.keep_events = keep_events

    async def run(self) -> None:
        await self.cache.wait_synced()
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            await self.collect()
            await asyncio.sleep(self.interval)

    def doomed_tasks(self, now: float) -> list[Task]:
        by_service: dict[str, list[Task]] = {}
        for task in self.cache.tasks.values():
            if task.desired == Desired.STOP and task.status.terminal:
                by_service.setdefault(task.service, []).append(task)
        doomed: list[Task] = []
        for dead in by_service.values():
            dead.sort(key=lambda t: t.finished_at or t.updated_at, reverse=True)
            for position, task in enumerate(dead):
                age = now - (task.finished_at or task.updated_at)
                if position >= self.keep_dead or age > self.dead_task_age:
                    doomed.append(task)
        return doomed

    async def collect(self) -> int:
        removed = 0
        for task in self.doomed_tasks(self.clock()):
            key = kinds.TASK.key(task.id)
            mod = self.cache.mod_revisions.get(key, 0)
            if await self.writer.commit([Compare(key, "mod", "==", mod)], [Delete(key)]):
                removed += 1
        kvs, _ = await self.writer.store.range(kinds.EVENT.prefix)
        old = [Delete(kv.key) for kv in kvs[: max(len(kvs) - self.keep_events, 0)]]
        for start in range(0, len(old), TXN_WRITES):
            await self.writer.store.txn([], old[start : start + TXN_WRITES])
        return removed
