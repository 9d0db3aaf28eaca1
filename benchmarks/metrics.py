"""The embedded time-series store: ingest rate and query time, in one process.

    ingest_points_per_s   `--nodes` (100) agents x `--tasks` (10) tasks x 5 task metrics
                          (5,000 series), one `Batch` per node every 10 s of simulated time
                          (as agents send them, label order as the collector writes it,
                          sub-second jitter), for `--minutes` (65) of simulated time.
                          Timed: `store.ingest(batch.points)` for every batch, plus the
                          server's own work as time passes: a flush (one SQLite row) every
                          10 s and `maintain()` (sealing hours into blocks and rollups,
                          retention, trimming) every minute. Not timed: building the
                          pydantic batches (the HTTP handler's JSON validation).
                          Goal ≥ 250,000/s (InfluxDB 1.x calls under 250k field writes/s
                          "moderate").
    query_ms              `task_cpu_percent` over the last hour at a 10 s step, avg: 1,000
                          series x 360 buckets; the p50 of `--runs` (9) runs. Goal ≤ 100 ms.
                          (The store keeps each series' bucket starts for the last step asked,
                          so a repeated query buckets only new samples: `query_cold_ms` is
                          the first run, without them.)
    query_by_ms           the same hour at 60 s, `by=service` (10 groups): informational.

The store lives in a temp dir (SQLite on the local disk). Prints one JSON line per figure.

Run: `python benchmarks/metrics.py [--nodes 100] [--tasks 10] [--minutes 65] [--runs 9]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from moorage.metrics.model import Batch, Point, Query  # noqa: E402
from moorage.metrics.tsdb import TimeSeriesStore, TsdbConfig  # noqa: E402

GOALS = {"ingest_points_per_s": 250_000.0, "query_ms": 100.0}
TASK_METRICS = [
    "task_cpu_percent",
    "task_memory_rss_bytes",
    "task_memory_limit_bytes",
    "task_restarts_total",
    "task_health",
]
INTERVAL = 10.0


def emit(metric: str, value: float, unit: str, params: dict[str, Any], **extra: Any) -> None:
    line: dict[str, Any] = {"bench": "metrics", "metric": metric, "value": round(value, 3)}
    line |= {"unit": unit, "params": params, **extra}
    if metric in GOALS:
        line["goal"] = GOALS[metric]
    print(json.dumps(line), flush=True)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def batches(nodes: int, tasks: int, when: float, rng: random.Random) -> list[Batch]:
    """One batch per node: its tasks' five metrics, labels in the collector's order."""
    out = []
    for n in range(nodes):
        node = f"node-{n:03d}"
        points = []
        for t in range(tasks):
            service = f"svc-{t}"
            labels = {"node": node, "service": service, "task": f"{service}-{n:03d}-{t}"}
            labels["container"] = "app"
            ts = when + n * 0.05 + rng.random() * 0.02
            values = (rng.random() * 100, 5e7 + rng.random() * 1e6, 2.68e8, 0.0, 0.0)
            points += [
                Point(metric=m, labels=labels, ts=ts, value=v)
                for m, v in zip(TASK_METRICS, values, strict=True)
            ]
        out.append(Batch(node=node, points=points))
    return out


def run_ingest(
    store: TimeSeriesStore, clock: Clock, args: argparse.Namespace
) -> tuple[float, int, float]:
    rng = random.Random(7)
    elapsed, total, maintain_s = 0.0, 0, 0.0
    steps = int(args.minutes * 60 / INTERVAL)
    start = clock.now
    for k in range(steps):
        when = start + k * INTERVAL
        work = batches(args.nodes, args.tasks, when, rng)
        clock.now = when + 1.0  # the batches arrive about a second after collection
        begin = time.perf_counter()
        for batch in work:
            total += store.ingest(batch.points)
        store.flush()
        if k % 6 == 5:
            mark = time.perf_counter()
            while store.maintain(budget=500):
                pass
            maintain_s += time.perf_counter() - mark
        elapsed += time.perf_counter() - begin
    return elapsed, total, maintain_s


def time_query(
    store: TimeSeriesStore, query: Query, runs: int
) -> tuple[float, int, int, list[float]]:
    times = []
    result = []
    for _ in range(runs):
        begin = time.perf_counter()
        result = store.query(query)
        times.append((time.perf_counter() - begin) * 1000)
    points = sum(len(s.points) for s in result)
    return statistics.median(times), len(result), points, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=65)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    # Start 30 minutes into an hour, so the run seals one (partial) hour on the way.
    clock = Clock(1_700_000_000.0 - 1_700_000_000.0 % 3600 + 1800)
    with tempfile.TemporaryDirectory(prefix="moorage-bench-metrics-") as tmp:
        path = Path(tmp) / "metrics.db"
        store = TimeSeriesStore(path, TsdbConfig(), clock)
        elapsed, total, maintain_s = run_ingest(store, clock, args)
        series = args.nodes * args.tasks * len(TASK_METRICS)
        params = {
            "series": series,
            "batch_points": args.tasks * len(TASK_METRICS),
            "batches": int(args.minutes * 6) * args.nodes,
            "points": total,
            "simulated_minutes": args.minutes,
            "seconds": round(elapsed, 3),
            "maintain_seconds": round(maintain_s, 3),
            "db_bytes": path.stat().st_size + _size(Path(f"{path}-wal")),
            "load1": os.getloadavg()[0],
        }
        emit("ingest_points_per_s", total / elapsed, "1/s", params)

        now = clock.now
        hour = Query(metric="task_cpu_percent", start=now - 3600, end=now, step=10, agg="avg")
        p50, found, points, times = time_query(store, hour, args.runs)
        params = {"series": found, "points": points, "step": "10s", "range": "1h", "agg": "avg"}
        params |= {"runs": args.runs, "all_ms": [round(t, 1) for t in times]}
        emit("query_ms", p50, "ms", params | {"load1": os.getloadavg()[0]})
        emit("query_cold_ms", times[0], "ms", params | {"note": "first run: no bucket cache"})

        grouped = hour.model_copy(update={"step": 60.0, "by": ["service"]})
        p50, found, points, _ = time_query(store, grouped, args.runs)
        params = {"groups": found, "points": points, "step": "60s", "range": "1h", "by": "service"}
        emit("query_by_ms", p50, "ms", params | {"runs": args.runs})
        store.close()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


if __name__ == "__main__":
    main()
