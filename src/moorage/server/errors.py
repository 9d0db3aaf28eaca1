"""The one place where errors become HTTP responses (status + stable JSON body)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from moorage.model import (
    Conflict,
    Forbidden,
    MoorageError,
    NotFound,
    SpecError,
    Unauthorized,
    Unavailable,
)
from moorage.store import StoreError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_status(exc: MoorageError) -> int:
    if isinstance(exc, SpecError):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, Unavailable):
        return 503
    return 500


def error_response(exc: MoorageError) -> web.Response:
    return web.json_response(exc.to_json(), status=http_status(exc))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Convert every error escaping a handler at this single boundary."""
    try:
        return await handler(request)
    except MoorageError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            code = "not_found" if exc.status == 404 else "http_error"
            if exc.status == 405:
                code = "method_not_allowed"
            body = {"code": code, "message": exc.reason, "errors": []}
            return web.json_response(body, status=exc.status, headers=_allow(exc))
        raise
    except StoreError as exc:
        log.exception("store error")
        return error_response(Unavailable(f"state store: {exc}"))


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
