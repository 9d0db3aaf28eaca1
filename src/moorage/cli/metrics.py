"""`moorage top` (live per-service and per-node figures) and `moorage metrics` (sparklines).

Both read the server's metrics API (docs/metrics.md): `top` the newest sample of each series
(`GET /v1/metrics/series`) with the task and node lists, `metrics` a range query
(`GET /v1/metrics/query`). The shaping here is pure (`top_view`, `sparkline`), so it is tested
without a server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click

from .common import client, output_option
from .output import emit_json

REFRESH = 2.0
# A series whose newest sample is this much older than the newest one of its metric belongs
# to a task or node that is gone (agents sample every 10 s by default).
STALE = 35.0
TOP_METRICS = (
    "task_cpu_percent",
    "task_memory_rss_bytes",
    "task_memory_limit_bytes",
    "node_cpu_percent",
    "node_load1",
    "node_memory_used_bytes",
    "node_memory_available_bytes",
    "node_disk_used_bytes",
    "node_disk_free_bytes",
)
BARS = "▁▂▃▄▅▆▇█"
LIVE = ("assigned", "starting", "running")


# ---- shaping (pure) --------------------------------------------------------------------------
def fresh(series: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The series whose newest sample is recent, relative to the newest of them all (the
    server's clock, not this machine's)."""
    found = [s for s in series if s.get("last_ts") is not None and s.get("last_value") is not None]
    newest = max((float(s["last_ts"]) for s in found), default=0.0)
    return [s for s in found if float(s["last_ts"]) >= newest - STALE]


def _sum_by(series: Iterable[Mapping[str, Any]], label: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for s in fresh(series):
        key = s["labels"].get(label, "")
        totals[key] = totals.get(key, 0.0) + float(s["last_value"])
    return totals


def top_view(
    latest: Mapping[str, Sequence[Mapping[str, Any]]],
    tasks: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Per service: tasks, healthy, CPU % (sum over its tasks), memory; per node: status, CPU
    %, load, memory and disk (of its data dir: the largest disk it reports)."""
    live = [t for t in tasks if t.get("desired") == "run" and t.get("status") in LIVE]
    cpu = _sum_by(latest.get("task_cpu_percent", []), "service")
    rss = _sum_by(latest.get("task_memory_rss_bytes", []), "service")
    limit = _sum_by(latest.get("task_memory_limit_bytes", []), "service")
    names = sorted({str(t["service"]) for t in live} | set(cpu) | set(rss))
    services = [
        {
            "service": name,
            "tasks": sum(1 for t in live if t["service"] == name),
            "healthy": sum(
                1
                for t in live
                if t["service"] == name
                and t["status"] == "running"
                and t.get("health") in (None, "passing")
            ),
            "cpu_percent": cpu.get(name),
            "memory_rss_bytes": rss.get(name),
            "memory_limit_bytes": limit.get(name),
        }
        for name in names
        if name
    ]
    per_node = {
        metric: _sum_by(latest.get(metric, []), "node")
        for metric in ("node_cpu_percent", "node_load1", "node_memory_used_bytes")
    }
    available = _sum_by(latest.get("node_memory_available_bytes", []), "node")
    disks = _node_disks(latest)
    node_rows = [
        {
            "node": n["name"],
            "status": n.get("status"),
            "tasks": sum(1 for t in live if t.get("node") == n["name"]),
            "cpu_percent": per_node["node_cpu_percent"].get(n["name"]),
            "load1": per_node["node_load1"].get(n["name"]),
            "memory_used_bytes": per_node["node_memory_used_bytes"].get(n["name"]),
            "memory_available_bytes": available.get(n["name"]),
            "disk_used_bytes": disks.get(n["name"], (None, None))[0],
            "disk_free_bytes": disks.get(n["name"], (None, None))[1],
        }
        for n in sorted(nodes, key=lambda n: str(n["name"]))
    ]
    return {"services": services, "nodes": node_rows}


def _node_disks(
    latest: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, tuple[float, float]]:
    """node → (used, free) of its data dir: the first path it reports (the agent reports its
    data dir first, then the volume root)."""
    used = {
        (s["labels"].get("node"), s["labels"].get("path")): float(s["last_value"])
        for s in fresh(latest.get("node_disk_used_bytes", []))
    }
    out: dict[str, tuple[float, float]] = {}
    for s in fresh(latest.get("node_disk_free_bytes", [])):
        node, path = s["labels"].get("node"), s["labels"].get("path")
        if node and (node, path) in used and node not in out:
            out[node] = (used[(node, path)], float(s["last_value"]))
    return out


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """Values as block characters, from their min to their max; averaged down to `width`."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    if len(values) > width:
        size = len(values) / width
        values = [
            sum(chunk) / len(chunk)
            for i in range(width)
            if (chunk := values[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)])
        ]
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(int((v - low) / span * len(BARS)), len(BARS) - 1)] for v in values)


def human(metric: str, value: float | None) -> str:
    """A value as its unit reads: bytes (KiB..TiB), percent, or a plain number."""
    if value is None or not math.isfinite(value):
        return "-"
    if metric.endswith("_bytes") or metric.endswith("_bytes_total"):
        size = float(value)
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(size) < 1024 or unit == "TiB":
                return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            size /= 1024
    if metric.endswith("_percent"):
        return f"{value:.1f}%"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def series_stats(points: Sequence[Sequence[float]]) -> dict[str, float | None]:
    values = [float(v) for _, v in points if math.isfinite(float(v))]
    if not values:
        return {"min": None, "avg": None, "max": None, "last": None}
    return {
        "min": min(values),
        "avg": sum(values) / len(values),
        "max": max(values),
        "last": values[-1],
    }


def describe(labels: Mapping[str, str]) -> str:
    order = ("node", "service", "task", "container", "path", "interface")
    keys = sorted(labels, key=lambda k: (order.index(k) if k in order else len(order), k))
    return " ".join(f"{k}={labels[k]}" for k in keys) or "(all)"


# ---- rendering -------------------------------------------------------------------------------
def _share(used: float | None, other: float | None) -> str:
    if used is None:
        return "-"
    text = human("_bytes", used)
    if other is not None and used + other > 0:
        text += f" ({100 * used / (used + other):.0f}%)"
    return text


def _top_tables(view: dict[str, list[dict[str, Any]]]) -> Any:
    from rich.console import Group
    from rich.table import Table

    services = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for column in ("SERVICE", "TASKS", "HEALTHY", "CPU", "MEMORY", "LIMIT"):
        services.add_column(column)
    for s in view["services"]:
        services.add_row(
            s["service"],
            str(s["tasks"]),
            str(s["healthy"]),
            human("_percent", s["cpu_percent"]),
            human("_bytes", s["memory_rss_bytes"]),
            human("_bytes", s["memory_limit_bytes"]),
        )
    nodes = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NODE", "STATUS", "TASKS", "CPU", "LOAD", "MEMORY", "DISK"):
        nodes.add_column(column)
    for n in view["nodes"]:
        nodes.add_row(
            n["node"],
            str(n["status"]),
            str(n["tasks"]),
            human("_percent", n["cpu_percent"]),
            human("load1", n["load1"]),
            _share(n["memory_used_bytes"], n["memory_available_bytes"]),
            _share(n["disk_used_bytes"], n["disk_free_bytes"]),
        )
    return Group(services, "", nodes)


def _fetch_top(ctx: click.Context) -> dict[str, list[dict[str, Any]]]:
    with client(ctx) as api:
        latest = {metric: api.metrics_series(metric) for metric in TOP_METRICS}
        return top_view(latest, api.tasks(), api.nodes())


# ---- commands --------------------------------------------------------------------------------
@click.command()
@click.option("--once", is_flag=True, help="Print the table once and exit (for scripts).")
@output_option
@click.pass_context
def top(ctx: click.Context, once: bool, output: str) -> None:
    """Live CPU, memory and health per service, and CPU, memory and disk per node."""
    if output == "json":
        emit_json(_fetch_top(ctx))
        return
    from rich.console import Console

    console = Console()
    if once or not console.is_terminal:
        console.print(_top_tables(_fetch_top(ctx)))
        return
    from rich.live import Live

    try:
        with Live(_top_tables(_fetch_top(ctx)), console=console, screen=False) as live:
            while True:
                time.sleep(REFRESH)
                live.update(_top_tables(_fetch_top(ctx)))
    except KeyboardInterrupt:
        return


@click.command()
@click.argument("metric")
@click.option("--service", default=None, help="Only series of this service.")
@click.option("--node", default=None, help="Only series of this node.")
@click.option("--label", "labels", multiple=True, help="Another label matcher KEY=VALUE.")
@click.option("--from", "start", default="-1h", show_default=True, help="-DURATION or Unix time.")
@click.option("--step", default="60s", show_default=True, help="Resolution.")
@click.option(
    "--agg",
    type=click.Choice(["avg", "min", "max", "sum", "last", "count"]),
    default="avg",
    show_default=True,
    help="How samples within a step (and grouped series) combine.",
)
@click.option("--by", default=None, help="Group by these labels (comma-separated).")
@output_option
@click.pass_context
def metrics(
    ctx: click.Context,
    metric: str,
    service: str | None,
    node: str | None,
    labels: tuple[str, ...],
    start: str,
    step: str,
    agg: str,
    by: str | None,
    output: str,
) -> None:
    """A metric's series over time: a sparkline per series with min, avg, max and last."""
    from moorage.model import FieldError, SpecError

    matchers = {"service": service, "node": node}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError([FieldError("label", f"must be KEY=VALUE, got {item!r}")])
        matchers[key] = value
    wanted = {k: v for k, v in matchers.items() if v is not None}
    with client(ctx) as api:
        found = api.metrics_query(metric, wanted, start=start, step=step, agg=agg, by=by)
    rows = [
        {
            "metric": s["metric"],
            "labels": s["labels"],
            **series_stats(s["points"]),
            "points": s["points"],
        }
        for s in found
    ]
    if output == "json":
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no samples of {metric} match", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    out = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SERIES", "", "MIN", "AVG", "MAX", "LAST"):
        out.add_column(column)
    for row in rows:
        values = [float(v) for _, v in row["points"]]
        stats = [human(metric, row[k]) for k in ("min", "avg", "max", "last")]
        out.add_row(describe(row["labels"]), sparkline(values, 40), *stats)
    Console().print(out)


COMMANDS = [top, metrics]
