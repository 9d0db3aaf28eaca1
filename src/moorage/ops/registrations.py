"""Services registered from outside (Consul's agent API): a database on its own VM, a managed
cache, anything moorage does not run but clients should find through the catalog and DNS.

    register(body, node, replace, authz)   Consul's body: ID, Name, Tags, Address, Port, Meta,
                                           Check / Checks (HTTP, TCP, TTL, Args)
    deregister(id, authz)
    set_ttl(check, status, output, authz)  Consul's check pass / warn / fail / update
    record(id, check, CheckReport)         an agent's result of an HTTP, TCP or command check

The node (`?node=`, else the node whose address the request comes from, else the only node) is
the one whose agent runs the HTTP, TCP and command checks and expires the TTL ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from moorage.model import FieldError, Forbidden, Health, NotFound, SpecError
from moorage.model.acl import Authorizer, Level
from moorage.model.catalog import RegisteredCheck, Registration
from moorage.model.duration import parse_go_duration
from moorage.model.messages import CheckReport
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Op

ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
Change = tuple[Registration | None, list[Op]]


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


class Registrations:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock

    def node_for(self, named: str | None, remote: str) -> str:
        """The node whose agent runs a registration's checks: the one named, else the one at
        the caller's address, else the only node."""
        if named:
            if named not in self.cache.nodes:
                raise SpecError([FieldError("node", f"no node {named!r}")])
            return named
        for node in self.cache.nodes.values():
            if node.address == remote:
                return node.name
        if len(self.cache.nodes) == 1:
            return next(iter(self.cache.nodes))
        raise SpecError(
            [FieldError("node", "name the node whose agent runs the checks (?node=NAME)")]
        )

    def listed(self, authz: Authorizer) -> list[Registration]:
        """What is registered, that the token may read."""
        found = sorted(self.cache.registrations.values(), key=lambda r: r.id)
        return [r for r in found if authz.allows("service", r.name, Level.READ)]

    def of_node(self, node: str) -> list[Registration]:
        """The registrations whose checks the node's agent runs."""
        found = [r for r in self.cache.registrations.values() if r.node == node]
        return sorted(found, key=lambda r: r.id)

    async def register(self, body: object, node: str, replace: str, authz: Authorizer) -> None:
        """Register (or re-register); without `replace`, checks it does not name are kept."""
        registration = parse_registration(body, node, self.clock())
        authz.require("service", registration.name, Level.WRITE)
        if registration.id in self.cache.tasks:
            raise SpecError([FieldError("ID", f"{registration.id!r} is a task of moorage's")])
        if replace not in ("", "true", "false", "1", "0"):
            raise SpecError([FieldError("replace-existing-checks", "must be true or false")])
        text = f"service {registration.name} ({registration.id}) registered on {node}"

        def change(current: Registration | None) -> Change:
            fresh = registration
            if current is not None and replace in ("false", "0"):
                # As Consul: without replace-existing-checks, the checks of the earlier
                # registration that this one does not name are kept.
                named = {c.id for c in registration.checks}
                kept = [c for c in current.checks if c.id not in named]
                fresh = registration.model_copy(update={"checks": [*registration.checks, *kept]})
            return fresh, [new_event("service.registered", text, now=self.clock(), node=node)]

        await self.writer.update(kinds.REGISTRATION, registration.id, change)

    async def deregister(self, service_id: str, authz: Authorizer) -> None:
        current = self.cache.registrations.get(service_id)
        if current is None:
            raise NotFound(f"no registered service {service_id!r}")
        authz.require("service", current.name, Level.WRITE)
        text = f"service {current.name} ({service_id}) deregistered"

        def change(found: Registration | None) -> Change:
            return None, [new_event("service.deregistered", text, now=self.clock())]

        await self.writer.update(kinds.REGISTRATION, service_id, change)

    async def set_ttl(self, check_id: str, status: Health, output: str, authz: Authorizer) -> None:
        """A TTL check's state, set by the service itself (Consul's check pass/warn/fail)."""
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
        authz.require("service", owner.name, Level.WRITE)
        await self._write_check(owner.id, check_id, status, output, ttl_only=True)

    async def record(
        self, registration_id: str, check_id: str, report: CheckReport, node: str | None = None
    ) -> None:
        """A check result from the agent that runs it (`node`: only its own registrations)."""
        current = self.cache.registrations.get(registration_id)
        if node is not None and current is not None and current.node != node:
            raise Forbidden(f"node {node} does not run the checks of {registration_id!r}")
        await self._write_check(
            registration_id, check_id, report.status, report.output, ttl_only=False
        )

    async def _write_check(
        self, registration_id: str, check_id: str, status: Health, output: str, ttl_only: bool
    ) -> None:
        now = self.clock()

        def change(current: Registration | None) -> Change:
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

        await self.writer.update(kinds.REGISTRATION, registration_id, change)
