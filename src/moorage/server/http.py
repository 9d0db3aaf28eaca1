"""What every handler does with HTTP: read a body, answer JSON (with the blocking index)."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from moorage.model import FieldError, SpecError
from moorage.model.spec import refuse_unencodable

from .blocking import INDEX_HEADER


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


def respond(value: Any, index: int | None = None) -> web.Response:
    headers = {INDEX_HEADER: str(index)} if index is not None else None
    return web.json_response(dump(value), headers=headers)


SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # a UTF-16 surrogate escaped in JSON


async def read_json(request: web.Request) -> object:
    """The request body as JSON, or a 400 naming the problem."""
    raw = await request.read()
    if not raw:
        raise SpecError([FieldError("", "the request body is empty")], code="invalid_body")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SpecError([FieldError("", f"invalid JSON: {exc}")], code="invalid_body") from None
    if SURROGATE.search(raw):  # rare: only then walk the document
        refuse_unencodable(data)
    return data


async def read_optional_json(request: web.Request) -> object:
    """The body as JSON, or {} when there is none (bodies that only carry options)."""
    raw = await request.read()
    return await read_json(request) if raw.strip() else {}


async def read_text(request: web.Request) -> str:
    """A non-empty UTF-8 body (YAML or JSON documents), or a 400 naming the problem."""
    raw = await request.read()
    if not raw.strip():
        raise SpecError([FieldError("", "the request body is empty")], code="invalid_body")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise SpecError([FieldError("", "the body is not UTF-8")], code="invalid_body") from None


def int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SpecError(
            [FieldError(name, f"must be an integer, got {raw!r}")], code="invalid_query"
        ) from None
