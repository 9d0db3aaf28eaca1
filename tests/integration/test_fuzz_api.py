"""The API fuzzed from its own OpenAPI document (schemathesis), against a real server with ACLs
on: with no token and with a read-only token, every generated request — valid bodies and
parameters, and ones built to break the schema — gets an answer that is no 5xx, a 4xx whose
JSON body names the problem, and no write goes through. Bounded: a few examples per operation
and mode, a few minutes in all."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from .cluster import Cluster

pytestmark = pytest.mark.integration

EXAMPLES = 6  # per operation, per mode, per caller
SKIP = {
    ("GET", "/v1/events/stream"),  # a stream: it answers, then lasts as long as the caller
    ("GET", "/v1/exec/{target}"),  # a WebSocket
    ("GET", "/v1/services/{name}/logs"),  # streams relayed from agents
    ("GET", "/v1/tasks/{id}/logs"),
    ("GET", "/v1/snapshots/{volume}/{id}/archive"),
}


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, server_args=["--acl"]) as cluster:
        yield cluster


def consul_not_found(case: Any, response: Any) -> bool:
    """The one 4xx without a JSON body, as Consul answers it and its clients expect it."""
    return bool(
        case.path == "/v1/kv/{key}"
        and response.status_code == 404
        and not response.content
        and any(name.lower() == "x-consul-index" for name in response.headers)
    )


# What a write could change, read with the management token: the store's revision moves on its
# own (tasks report, nodes heartbeat), so the test compares what users own instead.
OWNED = [
    "/v1/kv/?recurse",
    "/v1/secrets",
    "/v1/volumes",
    "/v1/snapshots",
    "/v1/acl/policies",
    "/v1/acl/tokens",
    "/v1/alerts/rules",
    "/v1/alerts/notifiers",
    "/v1/silences",
    "/v1/event/list",
    "/v1/agent/services",
]
VOLATILE = {"running", "healthy", "status", "updated_at", "message", "LastUsed", "last_used"}


def owned(cluster: Cluster, admin: dict[str, str]) -> dict[str, Any]:
    def keep(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: keep(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [keep(v) for v in value]
        return value

    found = {url: keep(cluster.http.get(url, headers=admin).json()) for url in OWNED}
    services = cluster.http.get("/v1/services", headers=admin).json()
    found["services"] = sorted((s["name"], s["revision"], s["desired"]) for s in services)
    nodes = cluster.http.get("/v1/nodes", headers=admin).json()
    found["nodes"] = sorted((n["name"], n["eligibility"]) for n in nodes)
    return found


def test_fuzzed_requests_get_no_5xx_and_change_nothing(acl_server: Cluster) -> None:
    cluster = acl_server
    admin = {"X-Moorage-Token": cluster.management_token()}
    policy = {"Name": "reader", "Rules": ["service:=read", "node:=read", "kv:=read", "event:=read"]}
    assert cluster.http.put("/v1/acl/policy", json=policy, headers=admin).status_code == 200
    created = cluster.http.put("/v1/acl/token", json={"Policies": ["reader"]}, headers=admin)
    reader = {"X-Moorage-Token": created.json()["SecretID"]}
    # Something to find: a service, a secret, a KV key (the fuzzer's names rarely hit them).
    spec = "service: web\ncontainers: [{name: app, command: [sleep, '600'], memory: 16}]\n"
    yaml = {**admin, "Content-Type": "application/yaml"}
    assert cluster.http.post("/v1/services", content=spec, headers=yaml).status_code == 200
    assert cluster.http.put("/v1/kv/app/x", content=b"1", headers=admin).status_code == 200
    before = owned(cluster, admin)

    schema = schemathesis.openapi.from_url(f"{cluster.addr}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in SKIP]
    assert len(operations) > 60
    problems: list[str] = []
    calls = 0
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for caller in ({}, reader):
                calls += _fuzz(cluster, operation, mode, caller, problems)
    assert problems == [], "\n".join(problems[:20])
    assert owned(cluster, admin) == before  # no write went through
    assert calls > 500 and time.monotonic() - started < 600


def _fuzz(
    cluster: Cluster,
    operation: Any,
    mode: GenerationMode,
    caller: dict[str, str],
    problems: list[str],
) -> int:
    made = [0]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        made[0] += 1
        if case.query and ("index" in case.query or "wait" in case.query):
            case.query["wait"] = "1s"  # a blocking query may wait 10 minutes: keep it short
        response = case.call(base_url=cluster.addr, headers=dict(caller), timeout=30)
        where = (
            f"{case.method} {case.formatted_path} ({mode.value}, {'token' if caller else 'none'})"
        )
        if response.status_code >= 500:
            problems.append(f"{where}: {response.status_code} {response.text[:200]}")
        elif consul_not_found(case, response):
            return  # Consul's answer for a missing key: 404, no body, X-Consul-Index
        elif response.status_code >= 400:
            try:
                body = response.json()
            except json.JSONDecodeError:
                problems.append(f"{where}: {response.status_code} without a JSON body")
                return
            if not (isinstance(body, dict) and body.get("message") and "code" in body):
                problems.append(f"{where}: {response.status_code} names no problem: {body}")
            elif mode == GenerationMode.POSITIVE and body["code"] == "invalid_path":
                # the document states each path parameter's pattern: what it generates passes
                problems.append(f"{where}: a documented path refused: {body['message']}")
        elif case.method.upper() not in ("GET", "HEAD") and response.status_code < 300:
            problems.append(f"{where}: a write was accepted ({response.status_code})")

    try:
        run()
    except Unsatisfiable:  # nothing to break: no parameters and no body (negative mode)
        assert mode == GenerationMode.NEGATIVE, operation.path
    return made[0]
