"""Leader-only loops: control loops run only on the server that holds leadership.

One server today (`SoleLeader`); an etcd election implements `Leadership` later, and the same
loops then move between servers. A loop must expect to be cancelled at any await and to be
started again elsewhere: it keeps no decision in memory, it re-reads the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

Loop = Callable[[], Awaitable[None]]


class Leadership(Protocol):
    async def wait_leader(self) -> None:
        """Block until this server is the leader."""
        ...

    async def wait_lost(self) -> None:
        """Block until this server stops being the leader (never returns for a sole server)."""
        ...


class SoleLeader:
    """The only server is always the leader."""

    async def wait_leader(self) -> None:
        return None

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()


async def run_restarting(name: str, loop: Loop, floor: float = 1.0) -> None:
    """Run loop forever: an unexpected error is logged and the loop starts again."""
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s loop crashed; restarting in %.1fs", name, floor)
            await asyncio.sleep(floor)


async def run_as_leader(leadership: Leadership, loops: Sequence[tuple[str, Loop]]) -> None:
    """While leader, run every loop in one task group; stop them all when leadership is lost."""
    while True:
        await leadership.wait_leader()
        log.info("leadership acquired; starting %d loops", len(loops))
        async with asyncio.TaskGroup() as group:
            lost = group.create_task(leadership.wait_lost())
            workers = [group.create_task(run_restarting(n, f)) for n, f in loops]
            await lost
            for worker in workers:
                worker.cancel()
        log.warning("leadership lost; loops stopped")
