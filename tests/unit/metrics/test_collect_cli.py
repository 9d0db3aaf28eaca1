"""How `moorage top` and `moorage metrics` shape what the metrics API answers (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from moorage.cli.main import cli
from moorage.cli.metrics import describe, human, series_stats, sparkline, top_view


def info(metric: str, value: float, ts: float = 1000.0, **labels: str) -> dict[str, Any]:
    return {"metric": metric, "labels": labels, "last_ts": ts, "last_value": value}


def test_top_sums_fresh_task_series_per_service_and_reads_nodes() -> None:
    latest = {
        "task_cpu_percent": [
            info("task_cpu_percent", 30.0, service="web", task="w1", node="n1"),
            info("task_cpu_percent", 20.0, service="web", task="w2", node="n1"),
            info("task_cpu_percent", 99.0, ts=900.0, service="web", task="gone", node="n1"),
        ],
        "task_memory_rss_bytes": [info("task_memory_rss_bytes", 1024.0, service="web")],
        "node_cpu_percent": [info("node_cpu_percent", 12.5, node="n1")],
        "node_memory_used_bytes": [info("node_memory_used_bytes", 3.0, node="n1")],
        "node_memory_available_bytes": [info("node_memory_available_bytes", 1.0, node="n1")],
        "node_disk_used_bytes": [info("node_disk_used_bytes", 7.0, node="n1", path="/d")],
        "node_disk_free_bytes": [info("node_disk_free_bytes", 3.0, node="n1", path="/d")],
    }
    tasks = [
        {"service": "web", "node": "n1", "desired": "run", "status": "running", "health": None},
        {
            "service": "web",
            "node": "n1",
            "desired": "run",
            "status": "running",
            "health": "critical",
        },
        {"service": "web", "node": "n1", "desired": "stop", "status": "stopped"},
        {"service": "db", "node": "n2", "desired": "run", "status": "starting"},
    ]
    nodes = [{"name": "n2", "status": "down"}, {"name": "n1", "status": "ready"}]
    view = top_view(latest, tasks, nodes)
    assert view["services"] == [
        {
            "service": "db",
            "tasks": 1,
            "healthy": 0,
            "cpu_percent": None,
            "memory_rss_bytes": None,
            "memory_limit_bytes": None,
        },
        {
            "service": "web",
            "tasks": 2,
            "healthy": 1,
            "cpu_percent": 50.0,  # the stale series of a gone task is not counted
            "memory_rss_bytes": 1024.0,
            "memory_limit_bytes": None,
        },
    ]
    n1, n2 = view["nodes"]
    assert n1["node"] == "n1" and n1["cpu_percent"] == 12.5 and n1["tasks"] == 2
    assert (n1["disk_used_bytes"], n1["disk_free_bytes"]) == (7.0, 3.0)
    assert n2["status"] == "down" and n2["cpu_percent"] is None


def test_sparkline_spans_min_to_max_and_averages_down() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▁▁▁"
    assert sparkline([]) == ""
    down = sparkline(list(range(1000)), width=10)
    assert len(down) == 10 and down[0] == "▁" and down[-1] == "█" and list(down) == sorted(down)
    assert len(sparkline([float("nan"), 1.0, 2.0])) == 2


def test_units_and_labels_read_as_people_write_them() -> None:
    assert human("task_memory_rss_bytes", 3 * 1024 * 1024) == "3.0 MiB"
    assert human("node_network_receive_bytes_total", 512) == "512 B"
    assert human("task_cpu_percent", 12.345) == "12.3%"
    assert human("node_load1", 0.5) == "0.50"
    assert human("x", None) == "-"
    assert describe({"container": "app", "service": "web", "node": "n1"}) == (
        "node=n1 service=web container=app"
    )
    assert series_stats([(1, 1.0), (2, 3.0)]) == {"min": 1.0, "avg": 2.0, "max": 3.0, "last": 3.0}
    assert series_stats([])["avg"] is None


def test_a_bad_label_matcher_is_an_input_error() -> None:
    result = CliRunner().invoke(cli, ["metrics", "task_cpu_percent", "--label", "oops"])
    assert result.exit_code == 2 and "label" in result.output


def test_the_metrics_interval_is_off_or_between_one_second_and_a_minute() -> None:
    from moorage.cli.daemons import parse_interval
    from moorage.model import SpecError

    assert parse_interval("0", "metrics-interval") == 0.0
    assert parse_interval("10s", "metrics-interval") == 10.0
    assert parse_interval("1m", "metrics-interval") == 60.0
    for bad in ("500ms", "61s", "5m", "soon"):
        with pytest.raises(SpecError) as refused:
            parse_interval(bad, "metrics-interval")
        assert refused.value.errors[0].field == "metrics-interval", bad
