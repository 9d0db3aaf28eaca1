"""Every write to moorage state goes through here: compare-and-swap on the store revision.

Writers never trust the cache for the value they replace: a CAS loop reads the key from the
store, applies a pure function, and commits only if the key's mod_revision did not move. After
a commit the writer waits until the cache has applied it, so callers read their own writes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from moorage.model import Conflict, Event, Service, ServiceSpec, Task, TaskDefinition
from moorage.store import Compare, Delete, Op, Put, Store

from . import keys
from .cache import StateCache

M = TypeVar("M", bound=BaseModel)

MAX_ATTEMPTS = 50


def new_event(
    type_: str,
    message: str,
    *,
    now: float,
    service: str | None = None,
    task: str | None = None,
    node: str | None = None,
) -> Put:
    """A Put op that records one cluster event (commit it in the same txn as its cause)."""
    event_id = f"{int(now * 1e9):020d}-{secrets.token_hex(3)}"
    event = Event(
        id=event_id, time=now, type=type_, message=message, service=service, task=task, node=node
    )
    return Put(keys.event_key(event_id), keys.encode(event))


class StateWriter:
    def __init__(
        self, store: Store, cache: StateCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        """Run one CAS transaction; return its revision (cache caught up) or None if it lost."""
        result = await self.store.txn(compares, ops)
        if not result.succeeded:
            return None
        await self.cache.wait_revision(result.revision)
        return result.revision

    async def update(
        self,
        key: str,
        model: type[M],
        change: Callable[[M | None], tuple[M | None, Sequence[Op]]],
    ) -> M | None:
        """CAS loop: `change(current)` returns (new value or None to delete, extra ops)."""
        for _ in range(MAX_ATTEMPTS):
            kv = await self.store.get(key)
            current = model.model_validate_json(kv.value) if kv is not None else None
            new, extra = change(current)
            ops: list[Op] = [Put(key, keys.encode(new)) if new is not None else Delete(key)]
            ops.extend(extra)
            mod = kv.mod_revision if kv is not None else 0
            if await self.commit([Compare(key, "mod", "==", mod)], ops) is not None:
                return new
        raise Conflict(f"{key} is changing too fast; gave up after {MAX_ATTEMPTS} attempts")

    async def event(self, type_: str, message: str, **about: str | None) -> None:
        await self.commit([], [new_event(type_, message, now=self.clock(), **about)])

    # ---- task definitions and services -------------------------------------------------
    async def register_taskdef(self, spec: ServiceSpec) -> tuple[TaskDefinition, bool]:
        """The task definition for spec: the latest revision if unchanged, else a new one.

        Two concurrent registrations never share a revision: each creates its key only if
        absent, and the loser retries with the next number.
        """
        family = spec.service
        for _ in range(MAX_ATTEMPTS):
            kvs, _rev = await self.store.range(keys.taskdef_prefix(family))
            latest = TaskDefinition.model_validate_json(kvs[-1].value) if kvs else None
            candidate = TaskDefinition(
                family=family,
                revision=(latest.revision + 1) if latest else 1,
                containers=spec.containers,
                volumes=spec.volumes,
                created_at=self.clock(),
            )
            if latest is not None and latest.content_hash() == candidate.content_hash():
                return latest, False
            key = keys.taskdef_key(family, candidate.revision)
            put = Put(key, keys.encode(candidate))
            if await self.commit([Compare.absent(key)], [put]) is not None:
                return candidate, True
        raise Conflict(f"task definition {family} is changing too fast")

    async def deploy(self, spec: ServiceSpec) -> tuple[Service, TaskDefinition, bool]:
        """Register the task definition and point the service at it (CAS on the service)."""
        taskdef, created = await self.register_taskdef(spec)
        now = self.clock()

        def change(current: Service | None) -> tuple[Service, list[Op]]:
            service = Service(
                name=spec.service,
                family=taskdef.family,
                revision=taskdef.revision,
                count=spec.count,
                placement=spec.placement,
                deployment=spec.deployment,
                discovery=spec.discovery,
                restart=spec.restart,
                status="active",
                created_at=current.created_at if current else now,
                updated_at=now,
            )
            verb = "deployed" if current is None or created else "updated"
            message = f"{spec.service} {verb}: revision {taskdef.revision}, count {spec.count}"
            return service, [new_event("service.deployed", message, now=now, service=spec.service)]

        service = await self.update(keys.service_key(spec.service), Service, change)
        assert service is not None
        return service, taskdef, created

    async def set_task(self, task: Task, mod_revision: int, extra: Sequence[Op] = ()) -> bool:
        key = keys.task_key(task.id)
        ops: list[Op] = [Put(key, keys.encode(task)), *extra]
        return await self.commit([Compare(key, "mod", "==", mod_revision)], ops) is not None
