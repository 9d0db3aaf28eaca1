"""The embedded time-series store, with an explicit clock: ingest, queries, out-of-order
samples, flush and restart, sealing into blocks and rollups, retention."""

from __future__ import annotations

import math
from array import array
from pathlib import Path

import pytest

from moorage.metrics.disk import pack, unpack
from moorage.metrics.model import Point, Query
from moorage.metrics.tsdb import HOUR, TimeSeriesStore, TsdbConfig

T0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR  # an hour boundary


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cpu(task: str, ts: float, value: float, service: str = "web", node: str = "n1") -> Point:
    labels = {"node": node, "service": service, "task": task}
    return Point(metric="task_cpu_percent", labels=labels, ts=ts, value=value)


def q(start: float, end: float, step: float = 10.0, **kw: object) -> Query:
    return Query.model_validate(
        {"metric": "task_cpu_percent", "start": start, "end": end, "step": step, **kw}
    )


def points(store: TimeSeriesStore, query: Query) -> dict[str, list[tuple[float, float]]]:
    return {s.labels.get("task", ",".join(s.labels.values())): s.points for s in store.query(query)}


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 600)


def test_buckets_and_aggregations(clock: Clock) -> None:
    store = TimeSeriesStore(None, clock=clock)
    samples = [cpu("t1", T0 + i * 10 + 1, float(i)) for i in range(12)]  # 2 minutes
    assert store.ingest(samples) == 12
    raw = points(store, q(T0, T0 + 119))
    assert raw["t1"] == [(T0 + i * 10, float(i)) for i in range(12)]
    expected = {
        "avg": [(T0, 2.5), (T0 + 60, 8.5)],
        "min": [(T0, 0.0), (T0 + 60, 6.0)],
        "max": [(T0, 5.0), (T0 + 60, 11.0)],
        "sum": [(T0, 15.0), (T0 + 60, 51.0)],
        "last": [(T0, 5.0), (T0 + 60, 11.0)],
        "count": [(T0, 6.0), (T0 + 60, 6.0)],
    }
    for agg, want in expected.items():
        assert points(store, q(T0, T0 + 119, 60, agg=agg))["t1"] == want, agg
    # the range bounds samples; buckets are epoch-aligned
    assert points(store, q(T0 + 35, T0 + 65, 60))["t1"] == [(T0, 4.5), (T0 + 60, 6.0)]


def test_matchers_grouping_and_listing(clock: Clock) -> None:
    store = TimeSeriesStore(None, clock=clock)
    store.ingest([cpu("w1", T0 + 1, 10), cpu("w2", T0 + 2, 30), cpu("d1", T0 + 3, 5, "db", "n2")])
    store.ingest([Point(metric="node_load1", labels={"node": "n1"}, ts=T0 + 1, value=0.5)])
    assert set(points(store, q(T0, T0 + 60))) == {"w1", "w2", "d1"}
    assert set(points(store, q(T0, T0 + 60, matchers={"service": "web"}))) == {"w1", "w2"}
    assert points(store, q(T0, T0 + 60, matchers={"service": "nope"})) == {}
    grouped = store.query(q(T0, T0 + 60, 60, by=["service"], agg="avg"))
    assert [(s.labels, s.points) for s in grouped] == [
        ({"service": "db"}, [(T0, 5.0)]),
        ({"service": "web"}, [(T0, 20.0)]),
    ]
    summed = store.query(q(T0, T0 + 60, 60, by=["node"], agg="sum"))
    assert [(s.labels, s.points) for s in summed] == [
        ({"node": "n1"}, [(T0, 40.0)]),
        ({"node": "n2"}, [(T0, 5.0)]),
    ]
    newest = store.query(q(T0, T0 + 60, 60, by=["node"], agg="last"))
    assert newest[0].points == [(T0, 30.0)]  # w2's sample is the newer
    assert [s.labels["task"] for s in store.series("task_cpu_percent", {"node": "n1"})] == [
        "w1",
        "w2",
    ]
    assert len(store.series()) == 4
    latest = {(m, labels.get("task")): v for m, labels, _, v in store.latest()}
    assert latest == {
        ("task_cpu_percent", "w1"): 10,
        ("task_cpu_percent", "w2"): 30,
        ("task_cpu_percent", "d1"): 5,
        ("node_load1", None): 0.5,
    }
    assert [m for m, *_ in store.latest("node_load1")] == ["node_load1"]
    assert store.last_value("node_load1", {"node": "n1"}) == 0.5
    assert store.last_value("node_load1", {"node": "n9"}) is None


def test_label_order_does_not_make_a_new_series(clock: Clock) -> None:
    store = TimeSeriesStore(None, clock=clock)
    a = Point(metric="m", labels={"a": "1", "b": "2"}, ts=T0 + 1, value=1)
    b = Point(metric="m", labels={"b": "2", "a": "1"}, ts=T0 + 11, value=2)
    store.ingest([a, b])
    assert [s.points for s in store.query(Query(metric="m", start=T0, end=T0 + 60, step=10))] == [
        [(T0, 1.0), (T0 + 10, 2.0)]
    ]


def test_acceptance_window(clock: Clock) -> None:
    config = TsdbConfig()
    store = TimeSeriesStore(None, config, clock)
    now = clock.now
    kept = store.ingest(
        [
            cpu("t", now - config.raw_retention - 1, 1),  # older than the raw retention
            cpu("t", now + config.future + 1, 2),  # too far ahead
            cpu("t", now, math.nan),
            cpu("t", now, math.inf),
            cpu("t", now + 60, 3),  # a little ahead: a skewed agent clock
        ]
    )
    assert kept == 1


def test_out_of_order_and_duplicates(clock: Clock) -> None:
    store = TimeSeriesStore(None, clock=clock)
    store.ingest([cpu("t", T0 + 30, 3), cpu("t", T0 + 10, 1), cpu("t", T0 + 20, 2)])
    assert points(store, q(T0, T0 + 59))["t"] == [(T0 + 10, 1), (T0 + 20, 2), (T0 + 30, 3)]
    store.ingest([cpu("t", T0 + 20, 22), cpu("t", T0 + 5, 0.5)])  # a rewrite; an older one
    assert points(store, q(T0, T0 + 59))["t"] == [
        (T0, 0.5),
        (T0 + 10, 1),
        (T0 + 20, 22),
        (T0 + 30, 3),
    ]
    assert store.latest()[0][2:] == (T0 + 30, 3)


def test_repeated_queries_see_new_samples(clock: Clock) -> None:
    """The per-series bucket cache stays right across appends, rewrites and step changes."""
    store = TimeSeriesStore(None, clock=clock)
    store.ingest([cpu("t", T0 + i * 10, i) for i in range(6)])
    assert len(points(store, q(T0, T0 + 100))["t"]) == 6
    store.ingest([cpu("t", T0 + 60, 6), cpu("t", T0 + 65, 7)])  # two in one 10 s bucket
    assert points(store, q(T0, T0 + 100))["t"][-1] == (T0 + 60, 6.5)
    store.ingest([cpu("t", T0 + 15, 100)])  # out of order
    assert points(store, q(T0, T0 + 100))["t"][1] == (T0 + 10, 50.5)
    assert points(store, q(T0, T0 + 100, 30))["t"][0] == (T0, (0 + 1 + 100 + 2) / 4)
    assert points(store, q(T0, T0 + 100))["t"][1] == (T0 + 10, 50.5)


def test_flush_and_restart(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "metrics.db"
    store = TimeSeriesStore(path, clock=clock)
    store.ingest([cpu("t1", T0 + i * 10, i) for i in range(30)])
    assert store.flush() == 30
    store.ingest([cpu("t1", T0 + 300, 30)])  # never flushed: the crash loses it
    store.disk.close()  # type: ignore[union-attr]  # a crash: no close(), no last flush
    again = TimeSeriesStore(path, clock=clock)
    got = points(again, q(T0, T0 + 400))["t1"]
    assert len(got) == 30 and got[-1] == (T0 + 290, 29)
    again.ingest([cpu("t2", T0 + 1, 5)])
    again.close()  # a clean stop flushes
    third = TimeSeriesStore(path, clock=clock)
    assert set(points(third, q(T0, T0 + 400))) == {"t1", "t2"}
    third.ingest([cpu("t3", T0 + 1, 5)])  # the ids of new series do not collide
    assert set(points(third, q(T0, T0 + 400))) == {"t1", "t2", "t3"}
    third.close()


def test_sealing_rollups_and_restart(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "metrics.db"
    store = TimeSeriesStore(path, clock=clock)
    clock.now = T0 + HOUR
    store.ingest([cpu(f"t{k}", T0 + i * 10, i) for i in range(360) for k in range(3)])
    clock.now = T0 + HOUR + 200
    store.ingest([cpu("t0", T0 + HOUR - 5, 99)])  # late, but within the out-of-order window
    assert not store.maintain()  # not due: the hour ended less than 5 minutes ago
    assert store.disk is not None and not list(store.disk.blocks(None, 0, math.inf))
    clock.now = T0 + HOUR + 301
    assert store.maintain(budget=2)  # sealing goes a slice of series at a time...
    assert store.ingest([cpu("t0", T0 + HOUR - 1, 1)]) == 0  # ...and the hour is closed
    assert not store.maintain(budget=2)
    assert len(list(store.disk.blocks(None, 0, math.inf))) == 3
    assert store.ingest([cpu("t0", T0 + HOUR - 1, 1)]) == 0
    assert store.ingest([cpu("t0", T0 + HOUR + 1, 1)]) == 1
    whole = points(store, q(T0, T0 + HOUR - 1, 600))
    assert whole["t0"][0] == (T0, 29.5) and whole["t0"][-1] == (
        T0 + 3000,
        (sum(range(300, 360)) + 99) / 61,
    )
    store.close()
    # a restart reads the hour back from its blocks
    again = TimeSeriesStore(path, clock=clock)
    assert points(again, q(T0, T0 + HOUR - 1, 600)) == whole
    # past the hot window, the head lets the hour go and queries read the blocks
    clock.now = T0 + 3 * HOUR
    again.maintain()
    assert not again._series[1].ts  # the head holds nothing of it any more
    assert points(again, q(T0, T0 + HOUR - 1, 600)) == whole
    again.close()


def test_retention_raw_then_rollups(tmp_path: Path, clock: Clock) -> None:
    config = TsdbConfig(raw_retention=2 * HOUR, rollup_retention=5 * HOUR)
    store = TimeSeriesStore(tmp_path / "m.db", config, clock)
    clock.now = T0 + HOUR
    store.ingest([cpu("t", T0 + i * 10, i % 6) for i in range(360)])
    clock.now = T0 + HOUR + 400
    store.maintain()
    minute = points(store, q(T0, T0 + 59, 60))["t"]
    assert minute == [(T0, 2.5)]
    # beyond the raw retention the same buckets come from the 1-minute rollups
    clock.now = T0 + 3 * HOUR + 400
    store.maintain()
    assert list(store.disk.blocks(None, 0, math.inf)) == []  # type: ignore[union-attr]
    for agg, want in {"avg": 2.5, "min": 0, "max": 5, "sum": 15, "count": 6, "last": 5}.items():
        assert points(store, q(T0, T0 + 59, 60, agg=agg))["t"] == [(T0, want)], agg
    hourly = points(store, q(T0, T0 + HOUR - 1, HOUR, agg="count"))["t"]
    assert hourly == [(T0, 360.0)]
    # a raw step over rollups: one point a minute
    assert len(points(store, q(T0, T0 + 599, 10))["t"]) == 10
    # the rollups expire too, and then the series itself
    clock.now = T0 + 6 * HOUR + 400
    store.maintain()
    assert points(store, q(T0, clock.now, 60)) == {}
    assert store.series() == []
    store.close()
    assert TimeSeriesStore(tmp_path / "m.db", config, clock).series() == []


def test_query_straddling_raw_retention(tmp_path: Path, clock: Clock) -> None:
    config = TsdbConfig(raw_retention=2 * HOUR, rollup_retention=10 * HOUR)
    store = TimeSeriesStore(tmp_path / "m.db", config, clock)
    for hour in range(4):
        clock.now = T0 + (hour + 1) * HOUR + 400
        store.ingest([cpu("t", T0 + hour * HOUR + i * 10, 1.0) for i in range(360)])
        store.maintain()
    got = points(store, q(T0, clock.now, HOUR, agg="count"))["t"]
    assert got == [(T0 + h * HOUR, 360.0) for h in range(4)]  # rollups, then raw
    store.close()


def test_config_problems() -> None:
    assert TsdbConfig().problems() == {}
    bad = TsdbConfig(raw_retention=HOUR, rollup_retention=10.0).problems()
    assert set(bad) == {"raw_retention", "rollup_retention"}


def test_pack_round_trip() -> None:
    ints = array("q", [1, 2, 3, 1 << 40])
    floats = array("d", [0.5, -1.0, math.pi, 1e300])
    got = unpack(pack([ints, floats]), 4, "qd")
    assert got == [ints, floats]
    assert unpack(pack([array("d")]), 0, "d") == [array("d")]
