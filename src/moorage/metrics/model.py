"""What a metric point, a series and a query are — shared by the agent's collector, the
time-series store, the query API, the alert rules, the CLI and the dashboard.

A series is a metric name plus labels (`node`, and for task series `service`, `task`,
`container`; `path` for disk series, `interface` for network ones). Values are floats; times
are Unix seconds (float). Names follow Prometheus conventions (`_bytes`, `_percent`, counters
end in `_total`).

Node series (label `node`):
    node_cpu_percent, node_load1, node_memory_used_bytes, node_memory_available_bytes,
    node_disk_used_bytes{path}, node_disk_free_bytes{path} (data dir and volume roots),
    node_network_receive_bytes_total, node_network_transmit_bytes_total
Task series (labels `node`, `service`, `task`, `container`):
    task_cpu_percent, task_memory_rss_bytes, task_memory_limit_bytes, task_restarts_total,
    task_health (0 passing, 1 warning, 2 critical; absent without checks)
Agent series (label `node`): agent_metrics_buffered, agent_metrics_dropped_total
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

Aggregation = Literal["avg", "min", "max", "sum", "last", "count"]

# What a query's `agg` does within a step (and across series when grouped):
AGGREGATIONS: tuple[Aggregation, ...] = ("avg", "min", "max", "sum", "last", "count")


class Point(BaseModel):
    """One sample."""

    model_config = ConfigDict(frozen=True)

    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    labels: dict[str, str] = Field(default_factory=dict)
    ts: float
    value: float


class Batch(BaseModel):
    """An agent's batch: `POST /v1/metrics/ingest` (join token)."""

    node: str = Field(min_length=1)
    points: list[Point]
    dropped: int = 0  # points the agent had to drop since its last batch (buffer bound)


class Series(BaseModel):
    """A query result: one series, its points `(ts, value)` in time order."""

    metric: str
    labels: dict[str, str]
    points: list[tuple[float, float]]


class SeriesInfo(BaseModel):
    """A series the store knows and its last sample: `GET /v1/metrics/series`."""

    metric: str
    labels: dict[str, str]
    last_ts: float | None = None
    last_value: float | None = None


class Query(BaseModel):
    """`GET /v1/metrics/query?metric=task_cpu_percent&service=web&from=-1h&step=60s&agg=avg`

    Every other query parameter is a label matcher (exact value). `from`/`to` take absolute
    Unix seconds or a negative duration relative to now (`-1h`); `step` is the resolution;
    `by` (comma-separated labels) groups series, aggregating the others away with `agg`."""

    metric: str
    matchers: dict[str, str] = Field(default_factory=dict)
    start: float
    end: float
    step: float = Field(gt=0)
    agg: Aggregation = "avg"
    by: list[str] | None = None  # None: every series on its own


class MetricsStore(Protocol):
    """The server's embedded time-series store, as the API, alerts and exposition use it."""

    def ingest(self, points: Iterable[Point]) -> int:
        """Store samples (out of order within a window is fine); how many were kept."""
        ...

    def query(self, query: Query) -> list[Series]:
        """Series matching `query.metric` and every matcher, bucketed by `step` with `agg`."""
        ...

    def latest(self, metric: str | None = None) -> list[tuple[str, dict[str, str], float, float]]:
        """The last sample `(metric, labels, ts, value)` of every series (of `metric`)."""
        ...
