"""Step buckets and aggregations over sorted samples: pure functions the store's queries use.

A bucket is `[b, b + step)` with `b` a multiple of `step` (epoch-aligned, as InfluxDB's
`GROUP BY time()`), so the same query asked twice a few seconds apart gives the same buckets.
A result point is `(b, value)`.

    raw samples     bucket_raw(ts, values, step, agg)        every sample of the bucket
    1-min rollups   bucket_rollups(rollup arrays, step, agg) min/max/sum/count/last per minute
    across series   combine(per-series points, agg)          `by` groups (see `combine`)

The common case, at most one sample per bucket (a 10 s step over 10 s samples), is one list
comprehension and a `zip`: 360,000 samples bucket in tens of milliseconds in CPython.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence

from .model import Aggregation

Points = list[tuple[float, float]]


def _avg(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _last(values: Sequence[float]) -> float:
    return values[-1]


def _count(values: Sequence[float]) -> float:
    return float(len(values))


REDUCERS: dict[str, Callable[[Sequence[float]], float]] = {
    "avg": _avg,
    "min": min,
    "max": max,
    "sum": sum,
    "last": _last,
    "count": _count,
}


def bucket_floor(ts: float, step: float) -> float:
    return ts - ts % step


def bucket_ceil(ts: float, step: float) -> float:
    """The first bucket start at or after `ts`."""
    floor = ts - ts % step
    return floor if floor == ts else floor + step


def bucket_raw(
    ts: Sequence[float],
    values: Sequence[float],
    step: float,
    agg: Aggregation,
    starts: list[float] | None = None,
    distinct: bool = False,
) -> Points:
    """Time-ordered samples → one point per non-empty bucket. `starts` (each sample's bucket)
    may be given; `distinct` says they are known to differ."""
    if not ts:
        return []
    if starts is None:
        starts = [t - t % step for t in ts]
    if distinct or len(set(starts)) == len(starts):  # one per bucket: the sample is the value
        if agg == "count":
            return [(b, 1.0) for b in starts]
        return list(zip(starts, values, strict=True))
    reduce = REDUCERS[agg]
    out: Points = []
    i, n = 0, len(starts)
    while i < n:
        b = starts[i]
        j = bisect_right(starts, b, i)
        out.append((b, reduce(values[i:j])))
        i = j
    return out


def bucket_rollups(columns: Sequence[Sequence[float]], step: float, agg: Aggregation) -> Points:
    """Time-ordered 1-minute rollup columns (minute, min, max, sum, count, last) → one point
    per non-empty bucket (a minute belongs to the bucket its start falls in)."""
    minutes, mins, maxs, sums, counts, lasts = columns
    starts = [m - m % step for m in minutes]
    out: Points = []
    i, n = 0, len(starts)
    while i < n:
        b = starts[i]
        j = bisect_right(starts, b, i)
        if agg == "avg":
            value = sum(sums[i:j]) / sum(counts[i:j])
        elif agg == "min":
            value = min(mins[i:j])
        elif agg == "max":
            value = max(maxs[i:j])
        elif agg == "sum":
            value = sum(sums[i:j])
        elif agg == "count":
            value = sum(counts[i:j])
        else:
            value = lasts[j - 1]
        out.append((b, value))
        i = j
    return out


def minute_rollups(ts: Sequence[float], values: Sequence[float]) -> list[array[float]]:
    """Time-ordered samples → columns per minute: start, min, max, sum, count, last."""
    columns: list[array[float]] = [array("d") for _ in range(6)]
    add_minute, add_min, add_max, add_sum, add_count, add_last = (c.append for c in columns)
    i, n = 0, len(ts)
    while i < n:
        m = ts[i] - ts[i] % 60.0
        j = bisect_left(ts, m + 60.0, i)
        seg = values[i:j]
        add_minute(m)
        add_min(min(seg))
        add_max(max(seg))
        add_sum(sum(seg))
        add_count(float(j - i))
        add_last(seg[-1])
        i = j
    return columns


def combine(series: Sequence[tuple[Points, Points | None]], agg: Aggregation) -> Points:
    """Merge the bucketed points of a group's series into one series.

    Each item is `(points, lasts)`; `lasts` (only for `last`) holds each bucket's newest
    sample time. Across series: avg is the mean of the series' values (each series counts
    once), sum and count add up, min/max are the extremes, last is the newest sample's value.
    """
    acc: dict[float, list[float]] = {}
    for points, lasts in series:
        for k, (b, value) in enumerate(points):
            cell = acc.get(b)
            when = lasts[k][1] if lasts is not None else 0.0
            if cell is None:
                acc[b] = [value, 1.0, when]
            elif agg in ("avg", "sum", "count"):
                cell[0] += value
                cell[1] += 1.0
            elif agg == "min":
                cell[0] = min(cell[0], value)
            elif agg == "max":
                cell[0] = max(cell[0], value)
            elif when >= cell[2]:
                cell[0], cell[2] = value, when
    if agg == "avg":
        return [(b, cell[0] / cell[1]) for b, cell in sorted(acc.items())]
    return [(b, cell[0]) for b, cell in sorted(acc.items())]


def bucket_last_times(ts: Sequence[float], step: float) -> Points:
    """For `last` across series: each bucket's newest sample time, `(b, t)`."""
    out: Points = []
    for t in ts:
        b = t - t % step
        if out and out[-1][0] == b:
            out[-1] = (b, t)
        else:
            out.append((b, t))
    return out
