"""Query parameters → Query, and the 400s naming each bad field."""

from __future__ import annotations

import pytest

from moorage.metrics.params import parse_query
from moorage.model import SpecError

NOW = 1_700_000_000.0


def fields(params: dict[str, str]) -> set[str]:
    with pytest.raises(SpecError) as caught:
        parse_query(params, NOW)
    return {e.field for e in caught.value.errors}


def test_defaults_and_forms() -> None:
    query = parse_query({"metric": "task_cpu_percent", "service": "web", "token": "x"}, NOW)
    assert (query.start, query.end, query.step, query.agg, query.by) == (
        NOW - 3600,
        NOW,
        10.0,
        "avg",
        None,
    )
    assert query.matchers == {"service": "web"}
    query = parse_query(
        {
            "metric": "m",
            "from": "-1d",
            "to": str(NOW - 60),
            "step": "5m",
            "agg": "max",
            "by": "service, node",
        },
        NOW,
    )
    assert (query.start, query.end, query.step) == (NOW - 86400, NOW - 60, 300.0)
    assert query.agg == "max" and query.by == ["service", "node"]
    assert parse_query({"metric": "m", "from": "-30d"}, NOW).step == 7200.0  # range / 360


def test_bad_input_names_the_field() -> None:
    assert fields({}) == {"metric"}
    assert fields({"metric": "bad-name"}) == {"metric"}
    assert fields({"metric": "m", "from": "yesterday"}) == {"from"}
    assert fields({"metric": "m", "to": "-1x"}) == {"to"}
    assert fields({"metric": "m", "from": "now"}) == {"from"}  # not before `to`
    assert fields({"metric": "m", "step": "0"}) == {"step"}
    assert fields({"metric": "m", "step": "fast"}) == {"step"}
    assert fields({"metric": "m", "from": "-30d", "step": "1s"}) == {"step"}  # too many points
    assert fields({"metric": "m", "agg": "median"}) == {"agg"}
    assert fields({"metric": "m", "by": "a b"}) == {"by"}
    assert fields({"agg": "p99", "step": "-"}) == {"metric", "agg", "step"}
