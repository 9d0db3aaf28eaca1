"""Query parameters as the HTTP API takes them → a `Query` (400 naming the field otherwise).

metric   required
from     Unix seconds, `now`, or a negative duration relative to now (`-1h`); default -1h
to       the same forms; default now
step     a duration (`10s`, `1m`) or seconds; default: the range / 360, at least 10 s
agg      avg | min | max | sum | last | count; default avg
by       comma-separated label names: one series per distinct value set
other    label matchers (exact value); `token` is never one (the legacy ACL parameter)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from moorage.model import FieldError, SpecError, parse_duration

from .model import AGGREGATIONS, Aggregation, Query

RESERVED = {"metric", "from", "to", "step", "agg", "by", "token"}
METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_POINTS = 11_000  # buckets a query may ask per series (Prometheus' limit)
DEFAULT_BUCKETS = 360
MIN_DEFAULT_STEP = 10.0


def parse_time(text: str, now: float, field: str) -> float:
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("-"):
        try:
            return now - parse_duration(value[1:])
        except ValueError as exc:
            raise SpecError([FieldError(field, str(exc))]) from None
    try:
        when = float(value)
    except ValueError:
        when = math.nan
    if not math.isfinite(when):
        message = f"{text!r} is not a time: Unix seconds, `now` or a negative duration (-1h)"
        raise SpecError([FieldError(field, message)])
    return when


def parse_query(params: Mapping[str, str], now: float) -> Query:
    """The query the parameters describe, or a SpecError listing each bad field."""
    errors: list[FieldError] = []
    metric = params.get("metric", "")
    if not metric:
        errors.append(FieldError("metric", "is required"))
    elif not METRIC.match(metric):
        errors.append(FieldError("metric", f"{metric!r} is not a metric name"))
    start = end = now
    try:
        start = parse_time(params.get("from", "-1h"), now, "from")
    except SpecError as exc:
        errors += exc.errors
    try:
        end = parse_time(params.get("to", "now"), now, "to")
    except SpecError as exc:
        errors += exc.errors
    if start >= end and not errors:
        errors.append(FieldError("from", "must be before `to`"))
    step = _step(params.get("step"), end - start, errors)
    agg = params.get("agg", "avg")
    if agg not in AGGREGATIONS:
        errors.append(FieldError("agg", f"must be one of {', '.join(AGGREGATIONS)}"))
    by = _by(params.get("by"), errors)
    matchers = {k: v for k, v in params.items() if k not in RESERVED}
    if errors:
        raise SpecError(errors)
    chosen: Aggregation = agg  # type: ignore[assignment]
    return Query(
        metric=metric, matchers=matchers, start=start, end=end, step=step, agg=chosen, by=by
    )


def _step(text: str | None, span: float, errors: list[FieldError]) -> float:
    if text is None:
        return max(MIN_DEFAULT_STEP, float(math.ceil(span / DEFAULT_BUCKETS)))
    try:
        step = parse_duration(text)
    except ValueError as exc:
        errors.append(FieldError("step", str(exc)))
        return 1.0
    if step <= 0:
        errors.append(FieldError("step", "must be more than 0"))
    elif span > 0 and span / step > MAX_POINTS:
        errors.append(FieldError("step", f"asks {span / step:.0f} points; at most {MAX_POINTS}"))
    return step if step > 0 else 1.0


def _by(text: str | None, errors: list[FieldError]) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if not LABEL.match(name)]
    if bad or not names:
        errors.append(FieldError("by", "must be comma-separated label names"))
    return names
