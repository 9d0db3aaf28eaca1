"""The newest committed events, kept in memory so that caught-up watchers need no trip to the
SQLite thread: at most RECENT events and RECENT_BYTES of values (each trimmed back to that when
twice as much has built up). Every event of revisions `_from`..`head` is here, in (revision,
index) order; touched on the event loop's thread only."""

from __future__ import annotations

import bisect

from .base import WatchEvent

RECENT = 20_000
RECENT_BYTES = 16 << 20

Row = tuple[int, int, WatchEvent]  # (revision, index in the revision, event)


class RecentEvents:
    def __init__(self) -> None:
        self._rows: list[Row] = []
        self._bytes = 0
        self._from = 1
        self.head = 0  # the newest revision committed

    def start(self, head: int) -> None:
        """The store opened at revision `head`: nothing of it is in memory."""
        self.head = head
        self._from = head + 1

    def remember(self, first: int, last: int, rows: list[Row] | None) -> None:
        """Keep a committed batch's events for caught-up watchers (loop thread only)."""
        if rows is None or first != self.head + 1:  # too many, or a write we did not see
            self._rows, self._bytes = [], 0
            self._from = last + 1
        else:
            recent = self._rows
            recent.extend(rows)
            self._bytes += sum(len(row[2].kv.value) for row in rows)
            if len(recent) > 2 * RECENT or self._bytes > 2 * RECENT_BYTES:
                cut, size = 0, self._bytes
                while cut < len(recent) and (len(recent) - cut > RECENT or size > RECENT_BYTES):
                    size -= len(recent[cut][2].kv.value)
                    cut += 1
                # A revision cut in two is no longer whole in memory.
                split = 0 < cut < len(recent) and recent[cut - 1][0] == recent[cut][0]
                del recent[:cut]
                self._bytes = size
                self._from = recent[0][0] + split if recent else last + 1
        self.head = max(self.head, last)

    def forget(self, revision: int) -> None:
        """A write that did not go through a batch (lease expiry): watchers read it from disk.
        (Batches committed after it may already be remembered: memory restarts past them.)"""
        self.head = max(self.head, revision)
        self._rows, self._bytes = [], 0
        self._from = self.head + 1

    def after(
        self, prefix: str, end: str, cursor: tuple[int, int], limit: int
    ) -> tuple[list[Row], int] | None:
        """The events after cursor under prefix, from memory; None when memory lacks some."""
        complete = cursor[0] + 1 if cursor[1] == 1 << 62 else cursor[0]
        if complete < self._from:
            return None
        start = bisect.bisect_right(self._rows, cursor, key=lambda row: (row[0], row[1]))
        rows = [row for row in self._rows[start:] if prefix <= row[2].kv.key < end]
        return rows[:limit], self.head  # (head is used only when not truncated)
