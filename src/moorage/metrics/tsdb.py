"""The server's embedded time-series store (docs/metrics.md, "Time-series store").

    ingest ─▶ head (memory): per series, time and value arrays of the last 1-2 hours
       │        + the flush log: every accepted sample as (series id, ts, value) columns
       │
       ├─ flush()    every `flush_interval` (10 s): the log → one `segments` row (WAL-like)
       └─ maintain() every minute: seal each hour `out_of_order` (5 min) after it ends:
                       per series one raw block + one row of 1-minute rollups; then drop the
                       hour's segments, expire blocks (raw retention, 24 h) and rollups
                       (30 d), forget series silent for the rollup retention, and trim the
                       head to the hot window (`hot`: at least the last hour stays in memory)

A query reads the head for what it holds, blocks for older raw samples, and 1-minute rollups
for buckets beyond the raw retention. On open the store reads back the series, the blocks of
the hot window and replays the segments: a crash loses at most the samples of the last
`flush_interval` (the unflushed log); SQLite runs WAL with synchronous=NORMAL, so a power cut
may also lose the last few flushes.

Acceptance: a sample is kept if it is finite, within the raw retention, at most `future`
(10 min) ahead of the server's clock, and its hour is not sealed yet — so samples arriving
out of order up to `out_of_order` late are always kept (and sorted in); the last sample
written for a timestamp wins.

Everything here is synchronous and reads time from the injected clock; the server calls
`flush` and `maintain` from its loop (`run_metrics_store` in `moorage.server.metrics`).
"""

from __future__ import annotations

import gc
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import aggregate as agg_
from .disk import Disk
from .model import Point, Query, Series, SeriesInfo

HOUR = 3600.0
DAY = 86400.0
BLOCK = HOUR  # the span of a sealed block (and of a rollup row)
MIN_RAW_RETENTION = 2 * HOUR  # rollups are made when an hour is sealed, at most ~1h05 late


@dataclass(frozen=True)
class TsdbConfig:
    raw_retention: float = DAY
    rollup_retention: float = 30 * DAY
    flush_interval: float = 10.0  # what a crash may lose
    out_of_order: float = 300.0  # how late a sample may come: an hour is sealed this long after
    future: float = 600.0  # how far ahead of the server's clock a sample may be
    hot: float = HOUR  # at least this much of the recent past stays in memory

    def problems(self) -> dict[str, str]:
        """Field → message for settings the store cannot honour."""
        found = {}
        if self.raw_retention < MIN_RAW_RETENTION:
            found["raw_retention"] = "must be at least 2h (rollups are made hourly)"
        if self.rollup_retention < self.raw_retention:
            found["rollup_retention"] = "must be at least the raw retention"
        if not 0 < self.out_of_order <= 30 * 60:
            found["out_of_order"] = "must be between 0 and 30m"
        return found


@dataclass(eq=False, slots=True)
class _Series:
    sid: int
    metric: str
    labels: dict[str, str]
    ts: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))
    ordered: bool = True
    last_ts: float = -math.inf
    last_value: float = math.nan
    sort_key: tuple[str, ...] = ()
    # Bucket starts of `ts` for the step last queried (a prefix of `ts`; see `_grid`).
    grid_step: float = 0.0
    grid: array[float] = field(default_factory=lambda: array("d"))
    grid_dup: bool = False  # two samples of the prefix share a bucket


def _normalize(s: _Series) -> None:
    """Sort the head's samples by time; of equal times the last written wins."""
    if s.ordered:
        return
    ts, values = s.ts, s.values
    order = sorted(range(len(ts)), key=ts.__getitem__)  # stable: later writes stay later
    new_ts, new_values = array("d"), array("d")
    for i in order:
        if new_ts and new_ts[-1] == ts[i]:
            new_values[-1] = values[i]
        else:
            new_ts.append(ts[i])
            new_values.append(values[i])
    s.ts, s.values, s.ordered = new_ts, new_values, True
    s.grid_step = 0.0


def _grid(s: _Series, step: float) -> tuple[array[float], bool]:
    """The bucket start of each head sample at `step`, and whether two share a bucket.

    Dashboards and `moorage top` ask the same step again and again: the starts of the
    samples already seen are kept (8 bytes a sample, one step per series) and only new
    samples are bucketed, which halves the cost of a repeated query."""
    if s.grid_step != step:
        s.grid_step, s.grid, s.grid_dup = step, array("d"), False
    done = len(s.grid)
    if done < len(s.ts):
        new = [t - t % step for t in s.ts[done:]]
        if len(set(new)) != len(new) or (done and new[0] == s.grid[-1]):
            s.grid_dup = True
        s.grid.extend(new)
    return s.grid, s.grid_dup


def block_floor(ts: float) -> float:
    return ts - ts % BLOCK


class TimeSeriesStore:
    """The `MetricsStore` (`moorage.metrics.model`) the server holds as `Server.metrics`."""

    def __init__(
        self,
        path: Path | None,
        config: TsdbConfig | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Open (or create) the store at `path` (a SQLite file; None: memory only)."""
        import time

        self.config = config or TsdbConfig()
        self.clock = clock or time.time
        self._series: dict[int, _Series] = {}
        self._keys: dict[tuple[object, ...], _Series] = {}  # (metric, *label items) → series
        self._by_metric: dict[str, set[int]] = {}
        self._by_label: dict[tuple[str, str], set[int]] = {}
        self._next_sid = 1
        self._new: list[_Series] = []  # series created since the last flush
        self._log_sids: array[int] = array("q")
        self._log_ts: array[float] = array("d")
        self._log_values: array[float] = array("d")
        self._sealed_until = 0.0  # hours before this are sealed: blocks and rollups
        self._sealing: list[int] = []  # series left to seal in the current round
        self._sealing_to = 0.0
        self._mem_floor = 0.0  # the head holds every sample at or after this
        self.disk = Disk(path) if path is not None else None
        if self.disk is not None:
            self._load(self.disk)

    def close(self) -> None:
        """Flush what the log holds, then close the file."""
        self.flush()
        if self.disk is not None:
            self.disk.close()

    # ---- ingest --------------------------------------------------------------------------
    def ingest(self, points: Iterable[Point]) -> int:
        now = self.clock()
        lo = max(now - self.config.raw_retention, self._accept_floor())
        hi = now + self.config.future
        keys = self._keys
        log_sids, log_ts, log_values = self._log_sids, self._log_ts, self._log_values
        kept = 0
        for p in points:
            t = p.ts
            v = p.value
            if not lo <= t <= hi or v - v != 0:  # v - v is nan for nan and ±inf
                continue
            labels = p.labels
            s = keys.get((p.metric, *labels.items()))
            if s is None:
                s = self._resolve(p.metric, labels)
            self._append(s, t, v)
            log_sids.append(s.sid)
            log_ts.append(t)
            log_values.append(v)
            kept += 1
        return kept

    @staticmethod
    def _append(s: _Series, t: float, v: float) -> None:
        if t > s.last_ts:
            s.last_ts, s.last_value = t, v
        else:
            s.ordered = False
            if t == s.last_ts:
                s.last_value = v
        s.ts.append(t)
        s.values.append(v)

    def _accept_floor(self) -> float:
        return self._sealing_to if self._sealing else self._sealed_until

    def _resolve(self, metric: str, labels: Mapping[str, str]) -> _Series:
        """The series of (metric, labels), created if new; remembered under this label order
        too, so the next batch in the same order is one dict lookup."""
        canonical = (metric, *sorted(labels.items()))
        s = self._keys.get(canonical)
        if s is None:
            s = self._create(self._next_sid, metric, dict(labels))
            self._new.append(s)
        self._keys[(metric, *labels.items())] = s
        return s

    def _create(self, sid: int, metric: str, labels: dict[str, str]) -> _Series:
        items = sorted(labels.items())
        s = _Series(sid, metric, labels, sort_key=(metric, *(f"{k}={v}" for k, v in items)))
        self._series[sid] = s
        self._keys[(metric, *items)] = s
        self._next_sid = max(self._next_sid, sid + 1)
        self._by_metric.setdefault(metric, set()).add(sid)
        for item in items:
            self._by_label.setdefault(item, set()).add(sid)
        return s

    def _forget(self, dead: list[_Series]) -> None:
        gone = {s.sid for s in dead}
        for s in dead:
            del self._series[s.sid]
            self._by_metric[s.metric].discard(s.sid)
            for item in s.labels.items():
                self._by_label[item].discard(s.sid)
        self._keys = {key: s for key, s in self._keys.items() if s.sid not in gone}

    # ---- flush and maintenance ---------------------------------------------------------------
    def flush(self) -> int:
        """Write the samples accepted since the last flush (one row); how many."""
        n = len(self._log_ts)
        if n and self.disk is not None:
            new = [(s.sid, s.metric, s.labels) for s in self._new]
            self.disk.write_segment(new, self._log_sids, self._log_ts, self._log_values)
        self._new = []
        self._log_sids, self._log_ts, self._log_values = array("q"), array("d"), array("d")
        return n

    def maintain(self, budget: int | None = None) -> bool:
        """Seal hours that are due (at most `budget` series this call), enforce retention,
        trim the head. True while a sealing round has series left: call again soon."""
        now = self.clock()
        if not self._sealing:
            due = block_floor(now - self.config.out_of_order)
            if due > self._sealed_until:
                self.flush()  # sealing may drop segments: the log must be in one first
                self._sealing = sorted(self._series)
                self._sealing_to = due
        if self._sealing:
            take = len(self._sealing) if budget is None else max(1, budget)
            batch, self._sealing = self._sealing[:take], self._sealing[take:]
            self._seal(batch, self._sealed_until, self._sealing_to)
            if self._sealing:
                return True
            if self.disk is not None:
                self.disk.finish_sealing(self._sealing_to)
            self._sealed_until = self._sealing_to
        self._expire(now)
        self._trim(now)
        return False

    def _seal(self, sids: list[int], start: float, end: float) -> None:
        blocks: list[tuple[int, float, array[float], array[float]]] = []
        rollups: list[tuple[int, float, list[array[float]]]] = []
        lasts: list[tuple[float, float, int]] = []
        for sid in sids:
            s = self._series.get(sid)
            if s is None:
                continue
            _normalize(s)
            i, j = bisect_left(s.ts, start), bisect_left(s.ts, end)
            while i < j:
                hour = block_floor(s.ts[i])
                k = bisect_left(s.ts, hour + BLOCK, i, j)
                ts, values = s.ts[i:k], s.values[i:k]
                blocks.append((sid, hour, ts, values))
                rollups.append(
                    (sid, hour, [array("d", c) for c in agg_.minute_rollups(ts, values)])
                )
                i = k
            if s.last_ts > -math.inf:
                lasts.append((s.last_ts, s.last_value, sid))
        if self.disk is not None:
            self.disk.write_sealed(blocks, rollups, lasts)

    def _expire(self, now: float) -> None:
        silent = now - self.config.rollup_retention
        dead = [s for s in self._series.values() if s.last_ts < silent and not s.ts]
        if dead:
            self._forget(dead)
        if self.disk is not None:
            raw_cut = now - self.config.raw_retention
            self.disk.expire(raw_cut - BLOCK, silent - BLOCK, [s.sid for s in dead])

    def _trim(self, now: float) -> None:
        floor = min(block_floor(now - self.config.hot), self._sealed_until)
        if floor <= self._mem_floor:
            return
        for s in self._series.values():
            _normalize(s)
            cut = bisect_left(s.ts, floor)
            if cut:
                del s.ts[:cut]
                del s.values[:cut]
                if len(s.grid) >= cut:
                    del s.grid[:cut]
                else:
                    s.grid_step = 0.0
        self._mem_floor = floor

    # ---- open --------------------------------------------------------------------------------
    def _load(self, disk: Disk) -> None:
        now = self.clock()
        self._sealed_until = disk.meta("sealed_until", 0.0)
        for sid, metric, labels, last_ts, last_value in disk.series():
            s = self._create(sid, metric, labels)
            if last_ts is not None and last_value is not None:
                s.last_ts, s.last_value = last_ts, last_value
        floor = min(block_floor(now - self.config.hot), self._sealed_until)
        for sid, ts, values in disk.blocks(None, floor, self._sealed_until):
            held = self._series.get(sid)
            if held is not None:
                held.ts.extend(ts)
                held.values.extend(values)
        self._mem_floor = floor
        for sids, ts, values in disk.segments():
            for sid, t, v in zip(sids, ts, values, strict=True):
                found = self._series.get(sid)
                if found is not None and t >= self._sealed_until:
                    self._append(found, t, v)

    # ---- reads -----------------------------------------------------------------------------
    def _match(self, metric: str | None, matchers: Mapping[str, str]) -> list[_Series]:
        found: set[int] | None = None
        if metric is not None:
            found = set(self._by_metric.get(metric, ()))
        for item in matchers.items():
            ids = self._by_label.get(item, set())
            found = set(ids) if found is None else found & ids
        chosen = self._series.values() if found is None else [self._series[i] for i in found]
        return sorted(chosen, key=lambda s: s.sort_key)

    def latest(self, metric: str | None = None) -> list[tuple[str, dict[str, str], float, float]]:
        chosen = self._series.values() if metric is None else self._match(metric, {})
        return [
            (s.metric, dict(s.labels), s.last_ts, s.last_value)
            for s in chosen
            if s.last_ts > -math.inf
        ]

    def last_value(self, metric: str, labels: Mapping[str, str]) -> float | None:
        """The newest value of one series, None if there is no such series."""
        s = self._keys.get((metric, *sorted(labels.items())))
        return s.last_value if s is not None and s.last_ts > -math.inf else None

    def series(
        self, metric: str | None = None, matchers: Mapping[str, str] | None = None
    ) -> list[SeriesInfo]:
        """The series known (of `metric`, matching every matcher), with their last sample."""
        return [
            SeriesInfo(
                metric=s.metric,
                labels=dict(s.labels),
                last_ts=s.last_ts if s.last_ts > -math.inf else None,
                last_value=s.last_value if s.last_ts > -math.inf else None,
            )
            for s in self._match(metric, matchers or {})
        ]

    def query(self, query: Query) -> list[Series]:
        # A large answer is hundreds of thousands of fresh tuples: without a pause the cyclic
        # GC would scan them several times over (a third of the time); they hold no cycles.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._query(query)
        finally:
            if paused:
                gc.enable()

    def _query(self, query: Query) -> list[Series]:
        now = self.clock()
        step, agg = query.step, query.agg
        raw_cut = now - self.config.raw_retention
        split = agg_.bucket_ceil(raw_cut, step) if query.start < raw_cut else query.start
        groups: dict[tuple[str, ...], list[tuple[agg_.Points, agg_.Points | None]]] = {}
        out: list[Series] = []
        for s in self._match(query.metric, query.matchers):
            points, lasts = self._points(s, query, split)
            if not points:
                continue
            if query.by is None:
                out.append(
                    Series.model_construct(metric=s.metric, labels=dict(s.labels), points=points)
                )
            else:
                key = tuple(s.labels.get(name, "") for name in query.by)
                groups.setdefault(key, []).append((points, lasts))
        for key, members in sorted(groups.items()):
            labels = {name: value for name, value in zip(query.by or [], key, strict=True) if value}
            points = agg_.combine(members, agg)
            out.append(Series.model_construct(metric=query.metric, labels=labels, points=points))
        return out

    def _points(
        self, s: _Series, query: Query, split: float
    ) -> tuple[agg_.Points, agg_.Points | None]:
        """One series' buckets: from rollups before `split`, raw samples from it on."""
        step, agg = query.step, query.agg
        want_lasts = query.by is not None and agg == "last"
        points: agg_.Points = []
        lasts: agg_.Points = []
        if split > query.start:
            cols = self._rollups(s.sid, query.start, min(split, query.end + 1e-9))
            points = agg_.bucket_rollups(cols, step, agg)
            if want_lasts:
                lasts = agg_.bucket_last_times(cols[0], step)
        if split <= query.end:
            ts, values, starts, distinct = self._raw(s, split, query.end, step)
            points += agg_.bucket_raw(ts, values, step, agg, starts, distinct)
            if want_lasts:
                lasts += agg_.bucket_last_times(ts, step)
        return points, (lasts if want_lasts else None)

    def _raw(
        self, s: _Series, start: float, end: float, step: float
    ) -> tuple[array[float], array[float], list[float] | None, bool]:
        """Raw samples in [start, end], time-ordered: blocks, then the head; when all come
        from the head, their bucket starts too, and whether they are one per bucket."""
        _normalize(s)
        ts, values = array("d"), array("d")
        if start < self._mem_floor and self.disk is not None:
            for _, block_ts, block_values in self.disk.blocks(
                s.sid, block_floor(start), self._mem_floor
            ):
                i, j = bisect_left(block_ts, start), bisect_right(block_ts, end)
                ts.extend(block_ts[i:j])
                values.extend(block_values[i:j])
        i, j = bisect_left(s.ts, max(start, self._mem_floor)), bisect_right(s.ts, end)
        if not ts:
            grid, dup = _grid(s, step)
            return s.ts[i:j], s.values[i:j], grid[i:j].tolist(), not dup
        ts.extend(s.ts[i:j])
        values.extend(s.values[i:j])
        return ts, values, None, False

    def _rollups(self, sid: int, start: float, end: float) -> list[array[float]]:
        """1-minute rollup columns with minutes in [start, end)."""
        cols: list[array[float]] = [array("d") for _ in range(6)]
        if self.disk is None:
            return cols
        for row in self.disk.rollups(sid, block_floor(start), end):
            minutes = row[0]
            i, j = bisect_left(minutes, start - start % 60.0), bisect_left(minutes, end)
            for col, part in zip(cols, row, strict=True):
                col.extend(part[i:j])
        return cols
