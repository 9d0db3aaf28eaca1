"""Blocking queries: `?index=N&wait=30s` waits until the resource's index passes N.

As Consul: the wait is capped (10 min) and gets a little jitter (wait/16) so a crowd of
watchers whose queries started together do not all return in the same instant.
"""

from __future__ import annotations

import random

from aiohttp import web

from moorage.model import FieldError, SpecError, parse_duration
from moorage.state import StateCache

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
INDEX_HEADER = "X-Moorage-Index"


def query_params(request: web.Request) -> tuple[int, float]:
    errors: list[FieldError] = []
    index, wait = 0, DEFAULT_WAIT
    raw_index = request.query.get("index", "0")
    try:
        index = int(raw_index)
        if index < 0:
            raise ValueError
    except ValueError:
        errors.append(FieldError("index", f"must be a non-negative integer, got {raw_index!r}"))
    if "wait" in request.query:
        try:
            wait = min(parse_duration(request.query["wait"]), MAX_WAIT)
        except ValueError as exc:
            errors.append(FieldError("wait", str(exc)))
    if errors:
        raise SpecError(errors, code="invalid_query")
    return index, wait


async def block(request: web.Request, cache: StateCache, topic: str) -> int:
    """Wait as the query asks (no wait without `index`); return the topic's current index."""
    index, wait = query_params(request)
    if index > 0:
        wait += random.uniform(0, wait / 16)
        return await cache.wait(topic, index, wait)
    return cache.index(topic)
