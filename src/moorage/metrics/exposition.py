"""Prometheus exposition of the metrics store: the newest sample of every node, task and agent
series, as the text format 0.0.4 (prometheus-client renders it; `_created` series are off).

Series ending in `_total` are counters, every other one a gauge, with the labels the agents
gave them. A series whose newest sample is older than `stale_after` is left out: a task that
stopped disappears from /metrics instead of repeating its last value forever. Samples carry no
timestamp: Prometheus stamps them at scrape time, and its staleness handling works as usual.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import MetricsStore

__all__ = ["HELP", "STALE_AFTER", "StoreCollector", "label_name"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series (DEPENDENCIES.md): one process-wide switch

STALE_AFTER: Final = 120.0  # seconds: a few collection intervals
# Names this process exports itself: a store series by such a name is not re-exported.
RESERVED_PREFIXES: Final = ("moorage_", "process_", "python_")

HELP: Final[dict[str, str]] = {
    "node_cpu_percent": "CPU used on the node, percent of all its cores.",
    "node_load1": "The node's 1-minute load average.",
    "node_memory_used_bytes": "Memory used on the node.",
    "node_memory_available_bytes": "Memory available on the node.",
    "node_disk_used_bytes": "Disk space used on the filesystem holding `path`.",
    "node_disk_free_bytes": "Disk space free on the filesystem holding `path`.",
    "node_network_receive_bytes_total": "Bytes received by the node's interfaces.",
    "node_network_transmit_bytes_total": "Bytes sent by the node's interfaces.",
    "task_cpu_percent": "CPU used by a task's container, percent of one core.",
    "task_memory_rss_bytes": "Resident memory of a task's container.",
    "task_memory_limit_bytes": "Memory limit of a task's container.",
    "task_restarts_total": "Restarts of a task in place.",
    "task_health": "Health of a task's container: 0 passing, 1 warning, 2 critical.",
    "agent_metrics_buffered": "Points the agent holds, not yet accepted by a server.",
    "agent_metrics_dropped_total": "Points the agent dropped because its buffer was full.",
}

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """A valid Prometheus label name (an agent's odd label must not break the whole scrape)."""
    clean = _INVALID.sub("_", name)
    if clean.startswith("__"):  # reserved for Prometheus itself
        clean = "_" + clean.lstrip("_")
    return "_" + clean if not clean or clean[0].isdigit() else clean


class StoreCollector(Collector):
    """Collects the store's newest samples at scrape time (`store()`: None while there is no
    store yet, e.g. early in the server's start)."""

    def __init__(
        self,
        store: Callable[[], MetricsStore | None],
        clock: Callable[[], float],
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.store = store
        self.clock = clock
        self.stale_after = stale_after

    def collect(self) -> Iterator[Metric]:
        store = self.store()
        if store is None:
            return
        oldest = self.clock() - self.stale_after
        series: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for metric, labels, ts, value in store.latest():
            if ts < oldest or metric.startswith(RESERVED_PREFIXES):
                continue
            key = tuple(sorted((label_name(k), v) for k, v in labels.items()))
            series.setdefault(metric, {})[key] = value  # duplicates after cleaning: one wins
        for metric in sorted(series):
            yield _family(metric, series[metric])


def _family(metric: str, samples: dict[tuple[tuple[str, str], ...], float]) -> Metric:
    help_text = HELP.get(metric, f"moorage series {metric} (newest sample).")
    family: Metric
    if metric.endswith("_total"):
        family = CounterMetricFamily(metric, help_text)  # TYPE names it without `_total`
    else:
        family = GaugeMetricFamily(metric, help_text)
    for labels, value in samples.items():
        family.add_sample(metric, dict(labels), value)
    return family
