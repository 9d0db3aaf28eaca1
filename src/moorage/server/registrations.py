"""Services registered from outside, Consul's agent API: a database on its own VM, a managed
cache, anything moorage does not run but clients should find through the catalog and DNS.

    PUT /v1/agent/service/register[?node=N]     Consul's body: ID, Name, Tags, Address, Port,
                                                Meta, Check / Checks (HTTP, TCP, TTL, Args)
    PUT /v1/agent/service/deregister/<id>
    PUT /v1/agent/check/pass|warn|fail/<check id>[?note=]   TTL checks
    PUT /v1/agent/check/update/<check id>       {"Status", "Output"}
    GET /v1/agent/services                      what is registered, by id

The node (`?node=`, else the node whose address the request comes from, else the only node) is
the one whose agent runs the HTTP, TCP and command checks and expires the TTL ones; agents
watch `GET /v1/nodes/<node>/registrations` and report through
`PUT /v1/registrations/<id>/checks/<check id>` (both guarded by the join token).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from moorage.model import FieldError, Health, NotFound, SpecError
from moorage.model.acl import Level
from moorage.model.catalog import RegisteredCheck, Registration
from moorage.state import StateCache, StateWriter, Topic
from moorage.state import keys as k
from moorage.state.writer import new_event

from .api import respond, table
from .authz import authorizer
from .blocking import block
from .consul import check_params, consul_json, parse_go_duration
from .errors import read_json
from .join import JoinGuard

ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _duration(value: Any, field: str, default: float, problems: list[FieldError]) -> float:
    if value in (None, ""):
        return default
    try:
        return parse_go_duration(str(value))
    except ValueError as exc:
        problems.append(FieldError(field, str(exc)))
        return default


def parse_registration(body: Any, node: str, now: float) -> Registration:
    """Consul's registration body → Registration; every problem reported with its field."""
    if not isinstance(body, dict):
        raise SpecError([FieldError("", "must be a JSON object")])
    problems: list[FieldError] = []
    name = body.get("Name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        problems.append(FieldError("Name", "must be a DNS label (lower-case letters, digits, -)"))
        name = "invalid"
    service_id = body.get("ID") or name
    if not isinstance(service_id, str) or not ID.match(service_id):
        problems.append(FieldError("ID", "must be 1-128 letters, digits, '.', '_', ':' or '-'"))
        service_id = "invalid"
    port = body.get("Port", 0)
    if not isinstance(port, int) or not 0 <= port < 65536:
        problems.append(FieldError("Port", "must be a port number"))
        port = 0
    tags = body.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(FieldError("Tags", "must be a list of strings"))
        tags = []
    meta = body.get("Meta") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        problems.append(FieldError("Meta", "must be a mapping of strings"))
        meta = {}
    raw_checks = list(body.get("Checks") or [])
    if body.get("Check"):
        raw_checks.insert(0, body["Check"])
    checks: list[RegisteredCheck] = []
    for i, raw in enumerate(raw_checks):
        field = f"Checks[{i}]"
        if not isinstance(raw, dict):
            problems.append(FieldError(field, "must be an object"))
            continue
        kinds = [kind for kind in ("HTTP", "TCP", "TTL", "Args") if raw.get(kind)]
        if len(kinds) != 1:
            problems.append(FieldError(field, "needs exactly one of HTTP, TCP, TTL or Args"))
            continue
        kind = {"HTTP": "http", "TCP": "tcp", "TTL": "ttl", "Args": "command"}[kinds[0]]
        default_id = f"service:{service_id}" + (f":{i + 1}" if len(raw_checks) > 1 else "")
        check_id = raw.get("CheckID") or raw.get("ID") or default_id
        status = raw.get("Status") or "critical"
        if status not in {h.value for h in Health}:
            problems.append(FieldError(f"{field}.Status", "must be passing, warning or critical"))
            status = "critical"
        args = raw.get("Args") or []
        if kind == "command" and not (
            isinstance(args, list) and all(isinstance(a, str) for a in args)
        ):
            problems.append(FieldError(f"{field}.Args", "must be a list of strings"))
            args = []
        checks.append(
            RegisteredCheck(
                id=str(check_id),
                name=str(raw.get("Name") or f"{kind} check of {name}"),
                kind=kind,
                target=str(raw.get("HTTP") or raw.get("TCP") or ""),
                args=list(args) if kind == "command" else [],
                interval=max(
                    1.0, _duration(raw.get("Interval"), f"{field}.Interval", 10, problems)
                ),
                timeout=_duration(raw.get("Timeout"), f"{field}.Timeout", 2, problems),
                ttl=_duration(raw.get("TTL"), f"{field}.TTL", 0, problems),
                status=Health(status),
                notes=str(raw.get("Notes") or ""),
                updated_at=now,
            )
        )
    if len({c.id for c in checks}) != len(checks):
        problems.append(FieldError("Checks", "check ids must be unique"))
    if problems:
        raise SpecError(problems)
    return Registration(
        id=service_id,
        name=name,
        node=node,
        address=str(body.get("Address") or ""),
        port=port,
        tags=tags,
        meta=meta,
        checks=checks,
        created_at=now,
    )


class RegistrationsApi:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.guard: JoinGuard | None = None

    def _node_for(self, request: web.Request) -> str:
        named = request.query.get("node")
        if named:
            if named not in self.cache.nodes:
                raise SpecError([FieldError("node", f"no node {named!r}")])
            return named
        remote = request.remote or ""
        for node in self.cache.nodes.values():
            if node.address == remote:
                return node.name
        if len(self.cache.nodes) == 1:
            return next(iter(self.cache.nodes))
        raise SpecError(
            [FieldError("node", "name the node whose agent runs the checks (?node=NAME)")]
        )

    @table.add(
        "PUT",
        "/v1/agent/service/register",
        "Consul: register a service from outside",
        tags=("consul",),
    )
    async def consul_service_register(self, request: web.Request) -> web.Response:
        check_params(request, {"node", "replace-existing-checks"})
        node = self._node_for(request)
        registration = parse_registration(await read_json(request), node, self.clock())
        authorizer(request).require("service", registration.name, Level.WRITE)
        if registration.id in self.cache.tasks:
            raise SpecError([FieldError("ID", f"{registration.id!r} is a task of moorage's")])
        text = f"service {registration.name} ({registration.id}) registered on {node}"

        replace = request.query.get("replace-existing-checks", "false").lower()
        if replace not in ("", "true", "false", "1", "0"):
            raise SpecError([FieldError("replace-existing-checks", "must be true or false")])

        def change(current: Registration | None) -> tuple[Registration, list[Any]]:
            fresh = registration
            if current is not None and replace in ("false", "0"):
                # As Consul: without replace-existing-checks, the checks of the earlier
                # registration that this one does not name are kept.
                named = {c.id for c in registration.checks}
                kept = [c for c in current.checks if c.id not in named]
                fresh = registration.model_copy(update={"checks": [*registration.checks, *kept]})
            return fresh, [new_event("service.registered", text, now=self.clock(), node=node)]

        await self.writer.update(k.registration_key(registration.id), Registration, change)
        return consul_json(None, self.cache.index(Topic.REGISTRATIONS))

    @table.add(
        "PUT",
        "/v1/agent/service/deregister/{id}",
        "Consul: remove a registered service",
        tags=("consul",),
    )
    async def consul_service_deregister(self, request: web.Request) -> web.Response:
        check_params(request)
        service_id = request.match_info["id"]
        current = self.cache.registrations.get(service_id)
        if current is None:
            raise NotFound(f"no registered service {service_id!r}")
        authorizer(request).require("service", current.name, Level.WRITE)

        def change(found: Registration | None) -> tuple[Registration | None, list[Any]]:
            text = f"service {current.name} ({service_id}) deregistered"
            return None, [new_event("service.deregistered", text, now=self.clock())]

        await self.writer.update(k.registration_key(service_id), Registration, change)
        return consul_json(None, self.cache.index(Topic.REGISTRATIONS))

    @table.add("GET", "/v1/agent/services", "Consul: registered services", tags=("consul",))
    async def consul_agent_services(self, request: web.Request) -> web.Response:
        check_params(request)
        authz = authorizer(request)
        out = {
            r.id: {
                "ID": r.id,
                "Service": r.name,
                "Tags": r.tags,
                "Meta": r.meta,
                "Port": r.port,
                "Address": r.address,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False,
                "Datacenter": "dc1",
            }
            for r in sorted(self.cache.registrations.values(), key=lambda r: r.id)
            if authz.allows("service", r.name, Level.READ)
        }
        return consul_json(out, self.cache.index(Topic.REGISTRATIONS))

    async def _set_check(
        self, request: web.Request, check_id: str, status: Health, output: str
    ) -> web.Response:
        owner = next(
            (
                r
                for r in self.cache.registrations.values()
                if any(c.id == check_id for c in r.checks)
            ),
            None,
        )
        if owner is None:
            raise NotFound(f"no check {check_id!r}")
        authorizer(request).require("service", owner.name, Level.WRITE)
        await self._write_check(owner.id, check_id, status, output, ttl_only=True)
        return consul_json(None, self.cache.index(Topic.REGISTRATIONS))

    async def _write_check(
        self, registration_id: str, check_id: str, status: Health, output: str, ttl_only: bool
    ) -> None:
        now = self.clock()

        def change(current: Registration | None) -> tuple[Registration, list[Any]]:
            if current is None:
                raise NotFound(f"no registered service {registration_id!r}")
            checks = []
            for check in current.checks:
                if check.id == check_id:
                    if ttl_only and check.kind != "ttl":
                        raise SpecError([FieldError("check", f"{check_id!r} is not a TTL check")])
                    check = check.model_copy(
                        update={"status": status, "output": output[:4096], "updated_at": now}
                    )
                checks.append(check)
            if not any(c.id == check_id for c in checks):
                raise NotFound(f"no check {check_id!r}")
            return current.model_copy(update={"checks": checks}), []

        await self.writer.update(k.registration_key(registration_id), Registration, change)

    @table.add(
        "PUT", "/v1/agent/check/pass/{check}", "Consul: a TTL check passes", tags=("consul",)
    )
    async def consul_check_pass(self, request: web.Request) -> web.Response:
        check_params(request, {"note"})
        note = request.query.get("note", "")
        return await self._set_check(request, request.match_info["check"], Health.PASSING, note)

    @table.add("PUT", "/v1/agent/check/warn/{check}", "Consul: a TTL check warns", tags=("consul",))
    async def consul_check_warn(self, request: web.Request) -> web.Response:
        check_params(request, {"note"})
        note = request.query.get("note", "")
        return await self._set_check(request, request.match_info["check"], Health.WARNING, note)

    @table.add("PUT", "/v1/agent/check/fail/{check}", "Consul: a TTL check fails", tags=("consul",))
    async def consul_check_fail(self, request: web.Request) -> web.Response:
        check_params(request, {"note"})
        note = request.query.get("note", "")
        return await self._set_check(request, request.match_info["check"], Health.CRITICAL, note)

    @table.add("PUT", "/v1/agent/check/update/{check}", "Consul: set a TTL check", tags=("consul",))
    async def consul_check_update(self, request: web.Request) -> web.Response:
        check_params(request)
        body = await read_json(request)
        status = body.get("Status") if isinstance(body, dict) else None
        if status not in {h.value for h in Health}:
            raise SpecError([FieldError("Status", "must be passing, warning or critical")])
        output = str(body.get("Output", "")) if isinstance(body, dict) else ""
        return await self._set_check(request, request.match_info["check"], Health(status), output)

    # ---- the agents' side ----------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/nodes/{name}/registrations",
        "Agent: the registered services whose checks this node runs",
        blocking=True,
        tags=("agents",),
    )
    async def node_registrations(self, request: web.Request) -> web.Response:
        if self.guard is not None:
            self.guard.check(request)
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.node_registrations(name))
        found = [r for r in self.cache.registrations.values() if r.node == name]
        return respond(sorted(found, key=lambda r: r.id), index)

    @table.add(
        "PUT",
        "/v1/registrations/{id}/checks/{check}",
        "Agent: a registered service's check result",
        tags=("agents",),
    )
    async def registration_check(self, request: web.Request) -> web.Response:
        if self.guard is not None:
            self.guard.check(request)
        body = await read_json(request)
        status = body.get("status") if isinstance(body, dict) else None
        if status not in {h.value for h in Health}:
            raise SpecError([FieldError("status", "must be passing, warning or critical")])
        output = str(body.get("output", "")) if isinstance(body, dict) else ""
        await self._write_check(
            request.match_info["id"], request.match_info["check"], Health(status), output, False
        )
        return respond(True)
