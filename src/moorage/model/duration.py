"""Durations as users write them: `10s`, `1m30s`, `500ms`, `2h`, or a number of seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 100 * 365 * 86400.0  # a sanity bound: nothing moorage waits for is longer
# What the API documents (JSON Schema): up to three parts of up to four digits (< 100 years).
DURATION_PATTERN = r"^([0-9]{1,4}(\.[0-9]{1,3})?(ms|s|m|h|d)){1,3}$"
DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
        {"type": "string", "pattern": DURATION_PATTERN},
    ]
}


def parse_duration(value: Any) -> float:
    """Return seconds; raise ValueError with a message fit for a field error."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 10s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return _bounded(float(value))
    if not isinstance(value, str):
        raise ValueError("must be a duration such as 10s, 5m or 1h")
    text = value.strip()
    if not text:
        raise ValueError("must be a duration such as 10s, 5m or 1h")
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{value!r} is not a duration (use forms such as 10s, 5m, 1h30m)")
    return _bounded(total)


def _bounded(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError("must be at most 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return out + (f"{secs}s" if secs or not out else "")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(DURATION_SCHEMA, mode="validation"),
]
"""A duration field: accepts `10s`/`5m`/numbers, holds seconds, serializes back to `10s`."""


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration (`120000ms`, `1m30s`, `5m`); ValueError when it is not one."""
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _GO_UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{text!r} is not a Go duration (such as 10s, 120000ms, 5m)")
    return total
