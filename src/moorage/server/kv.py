"""Consul's KV HTTP API (`/v1/kv/<key>`) on moorage's API port: GET, PUT, DELETE.

Semantics are Consul's (docs/kv.md lists the differences): values are raw bytes, JSON answers
carry them base64-encoded in Consul's `DirEntry` fields; `CreateIndex` / `ModifyIndex` are store
revisions. Every answer carries `X-Consul-Index` (≥ 1; 404s and errors too) and the same number
in `X-Moorage-Index`. Blocking queries (`?index=N&wait=5s`) wait on the key, or on the prefix
with `?recurse` / `?keys`: a write wakes only the queries on that key and on its prefixes.

Writes are one store transaction each (durable when acknowledged), then wait until the cache
has applied them, so a client reads its own writes. A query parameter moorage does not
implement is refused with 400 naming it, never ignored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from moorage.model import FieldError, Forbidden, MoorageError, SpecError
from moorage.model.acl import Level
from moorage.model.duration import parse_go_duration
from moorage.ops import Kv
from moorage.state import StateCache
from moorage.state.kv import MAX_FLAGS, KvEntry

from .acl import authorizer
from .blocking import INDEX_HEADER
from .errors import error_response
from .routes import RouteTable, acl, path

routes = RouteTable()

DATACENTER = "dc1"
CONSUL_INDEX = "X-Consul-Index"
MAX_VALUE = 512 * 1024  # bytes, Consul's default kv_max_value_size
DEFAULT_WAIT = 300.0  # Consul's: 5 minutes
MAX_WAIT = 600.0  # Consul's cap: 10 minutes

# Accepted by every KV call: `stale` / `consistent` are no-ops (one server answers from memory,
# always with the newest committed state); `token` is read by `authorize`; `pretty` indents.
COMMON = frozenset({"dc", "stale", "consistent", "token", "pretty"})
GET_PARAMS = COMMON | {"index", "wait", "recurse", "keys", "separator", "raw"}
PUT_PARAMS = COMMON | {"cas", "flags"}
DELETE_PARAMS = COMMON | {"cas", "recurse"}
WHY_NOT = {
    "acquire": "sessions and locks are not supported by moorage's KV store",
    "release": "sessions and locks are not supported by moorage's KV store",
    "filter": "filter expressions are not supported by moorage's KV API",
    "ns": "namespaces are a Consul Enterprise feature moorage does not have",
    "partition": "admin partitions are a Consul Enterprise feature moorage does not have",
    "cached": "agent caching does not apply to the KV API",
}

Access = Literal["read", "list", "write"]


class KvPair(BaseModel):
    """Consul's DirEntry, as GET answers it (Value is base64, null when empty)."""

    LockIndex: int = 0
    Key: str
    Flags: int = Field(0, ge=0, le=MAX_FLAGS)
    Value: str | None
    CreateIndex: int
    ModifyIndex: int


def _bad(name: str, message: str, code: str = "invalid_query") -> SpecError:
    return SpecError([FieldError(name, message)], code=code)


def _flag(request: web.Request, name: str) -> bool:
    """A Consul switch: present (`?recurse`, `=1`, `=true`) is on; `=false` / `=0` is off."""
    value = request.query.get(name)
    return value is not None and value.lower() not in ("false", "0", "no")


def _uint64(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > MAX_FLAGS:
        raise _bad(name, f"must be an unsigned 64-bit integer, got {raw!r}")
    return int(raw)


def _check(request: web.Request, allowed: frozenset[str]) -> None:
    if not request.query:
        return
    unknown = sorted(name for name in set(request.query) if name not in allowed)
    if unknown:
        raise SpecError(
            [
                FieldError(name, WHY_NOT.get(name, "is not a parameter moorage's KV API supports"))
                for name in unknown
            ],
            code="unsupported_parameter",
        )
    dc = request.query.get("dc")
    if dc not in (None, "", DATACENTER):
        raise _bad("dc", f"no path to datacenter {dc!r} (this one is {DATACENTER!r})")


def _blocking(request: web.Request) -> tuple[int, float]:
    """`index` and `wait` (capped at 10 minutes, plus up to wait/16 of jitter, as Consul)."""
    raw = request.query.get("index", "0") or "0"
    if not raw.isdigit():
        raise _bad("index", f"must be a non-negative integer, got {raw!r}")
    wait = DEFAULT_WAIT
    if "wait" in request.query:
        try:
            wait = min(parse_go_duration(request.query["wait"]), MAX_WAIT)
        except ValueError as exc:
            raise _bad("wait", str(exc)) from None
    return int(raw), wait + random.uniform(0, wait / 16)


_LEADER = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}


def _headers(index: int) -> dict[str, str]:
    text = str(max(1, index))
    return {CONSUL_INDEX: text, INDEX_HEADER: text, **_LEADER}


def _json(body: bytes, index: int) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=_headers(index))


def _dump(value: object, request: web.Request) -> bytes:
    if _flag(request, "pretty"):
        return json.dumps(value, indent=4).encode()
    return json.dumps(value, separators=(",", ":")).encode()


def _entries(entries: list[KvEntry], request: web.Request) -> bytes:
    if _flag(request, "pretty"):
        return _dump([e.consul() for e in entries], request)
    return b"[" + b",".join(e.json() for e in entries) + b"]"


class KvApi:
    """`/v1/kv/<key>` over the cache's `KvState` (reads) and the store (transactions)."""

    def __init__(self, kv: Kv, cache: StateCache) -> None:
        self.kv = kv
        self.cache = cache

    # ---- the ACL hook ----------------------------------------------------------------------
    def authorize(self, request: web.Request, resource: str, name: str, access: Access) -> None:
        """Raise Forbidden unless the request's token may `access` `name`.

        The middleware has checked the key (or the prefix) itself already; what it cannot see is
        a recursive delete's tree (`recurse` with write: every rule below the prefix must grant
        write too, as Consul's KeyWritePrefix). Listings are filtered key by key (`_readable`).
        """
        recursive = access == "write" and _flag(request, "recurse")
        if recursive and not authorizer(request).allows_tree(resource, name, Level.WRITE):
            raise Forbidden(
                f"permission denied: a rule under kv:{name} does not grant write, so the"
                " tree cannot be deleted as a whole"
            )

    def _readable(self, request: web.Request, names: list[str]) -> list[str]:
        """The keys (or `?keys` folders) of a listing the token may read: Consul filters them."""
        authz = authorizer(request)
        if authz.management:
            return names
        return [name for name in names if authz.allows("kv", name, Level.READ)]

    # ---- handlers --------------------------------------------------------------------------
    @routes.get(
        "/v1/kv/{key:.*}",
        "Consul KV: read a key (`?raw` for its bytes), or list a prefix (`?recurse`, `?keys`)",
        response=list[KvPair],
        query=("recurse", "keys", "separator", "raw", "dc", "stale", "consistent"),
        blocking=True,
        auth=acl("kv", path("key")),
        tags=("kv",),
    )
    async def kv_get(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._get)

    @routes.put(
        "/v1/kv/{key:.*}",
        "Consul KV: write a key (body = the raw value, ≤ 512 KiB); `?cas=N` (0: only if absent),"
        " `?flags=N`; answers true or false",
        response=bool,
        query=("cas", "flags", "dc"),
        auth=acl("kv", path("key")),
        tags=("kv",),
    )
    async def kv_put(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._put)

    @routes.delete(
        "/v1/kv/{key:.*}",
        "Consul KV: delete a key (`?recurse`: every key under the prefix; `?cas=N`); answers"
        " true or false",
        response=bool,
        query=("recurse", "cas", "dc"),
        auth=acl("kv", path("key")),
        tags=("kv",),
    )
    async def kv_delete(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._delete)

    # ---- implementation ----------------------------------------------------------------------
    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> web.Response:
        """Errors keep Consul's index header (clients read it on every answer)."""
        try:
            return await handler(request)
        except MoorageError as exc:
            response = error_response(exc)
            response.headers.update(_headers(self.cache.kv.prefix_index("")))
            return response

    async def _get(self, request: web.Request) -> web.Response:
        _check(request, GET_PARAMS)
        key = request.match_info["key"]
        keys, recurse = _flag(request, "keys"), _flag(request, "recurse")
        separator = request.query.get("separator")
        if separator is not None and not keys:
            raise _bad("separator", "applies to `?keys` listings only")
        if _flag(request, "raw") and (keys or recurse):
            raise _bad("raw", "reads one key: it does not combine with `?keys` or `?recurse`")
        index, wait = _blocking(request)
        state = self.cache.kv
        if keys or recurse:
            self.authorize(request, "kv", key, "list")
            if index:
                found = await state.wait_prefix(key, index, wait)
            else:
                found = state.prefix_index(key)
            if keys:
                names = self._readable(request, state.keys(key, separator or ""))
                if not names:
                    return web.Response(status=404, headers=_headers(found))
                return _json(_dump(names, request), found)
            readable = set(self._readable(request, state.keys_under(key)))
            entries = [e for e in state.entries_under(key) if e.key in readable]
            if not entries:
                return web.Response(status=404, headers=_headers(found))
            return _json(_entries(entries, request), found)
        self.authorize(request, "kv", key, "read")
        found = await state.wait_key(key, index, wait) if index else state.key_index(key)
        entry = state.get(key)
        if entry is None:
            return web.Response(status=404, headers=_headers(found))
        if _flag(request, "raw"):
            return web.Response(
                body=entry.value,
                content_type="application/octet-stream",
                headers=_headers(entry.modify_index),
            )
        return _json(_entries([entry], request), entry.modify_index)

    async def _put(self, request: web.Request) -> web.Response:
        _check(request, PUT_PARAMS)
        key = request.match_info["key"]
        if not key:
            raise _bad("key", "is missing: PUT /v1/kv/<key>", code="invalid_key")
        flags = _uint64(request, "flags") or 0
        cas = _uint64(request, "cas")
        self.authorize(request, "kv", key, "write")
        value = await _read_value(request)
        return _done(*await self.kv.put(key, value, flags, cas))

    async def _delete(self, request: web.Request) -> web.Response:
        _check(request, DELETE_PARAMS)
        key = request.match_info["key"]
        recurse = _flag(request, "recurse")
        cas = _uint64(request, "cas")
        if recurse and cas is not None:
            raise _bad("cas", "does not combine with `?recurse` (a tree has no one ModifyIndex)")
        if not key and not recurse:
            raise _bad("key", "is missing: DELETE /v1/kv/<key> (or /v1/kv/?recurse)", "invalid_key")
        self.authorize(request, "kv", key, "write")
        return _done(*await self.kv.delete(key, recurse, cas))


def _done(done: bool, revision: int) -> web.Response:
    return _json(b"true" if done else b"false", revision)


async def _read_value(request: web.Request) -> bytes:
    length = request.content_length
    if length is not None:
        if length > MAX_VALUE:
            raise _too_large(length)
        return await request.read()
    chunks: list[bytes] = []  # chunked: read until the limit
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_VALUE:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int) -> SpecError:
    return SpecError(
        [FieldError("value", f"is {size} bytes; the most a key holds is {MAX_VALUE} (512 KiB)")],
        code="value_too_large",
    )
