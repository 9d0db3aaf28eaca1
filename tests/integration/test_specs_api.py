"""Bad input through the real server and CLI: field-named errors, and nothing written."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from .cluster import Cluster, http_spec

pytestmark = pytest.mark.integration

BASE = "service: web\ncontainers:\n  - name: app\n    command: [sleep, '60']\n"

MALFORMED = {
    "wrong-type-count": (
        "service: web\ncount: three\ncontainers: [{name: app, command: [x]}]",
        "count",
    ),
    "wrong-type-memory": (
        "service: web\ncontainers: [{name: app, command: [x], memory: big}]",
        "containers[0].memory",
    ),
    "negative-memory": (
        "service: web\ncontainers: [{name: app, command: [x], memory: -5}]",
        "containers[0].memory",
    ),
    "zero-cpu": (
        "service: web\ncontainers: [{name: app, command: [x], cpu: 0}]",
        "containers[0].cpu",
    ),
    "missing-service": ("containers: [{name: app, command: [x]}]", "service"),
    "missing-containers": ("service: web\ncount: 1", "containers"),
    "missing-container-name": ("service: web\ncontainers: [{command: [x]}]", "containers[0].name"),
    "no-image-no-command": ("service: web\ncontainers: [{name: app}]", "containers[0]"),
    "unknown-top-key": (BASE + "bogus: 1\n", "bogus"),
    "unknown-nested-key": (
        "service: web\ncontainers: [{name: app, command: [x], memroy: 5}]",
        "containers[0].memroy",
    ),
    "duplicate-container-names": (
        "service: web\ncontainers: [{name: app, command: [x]}, {name: app, command: [y]}]",
        "containers",
    ),
    "clashing-port-names": (
        "service: web\ncontainers: [{name: app, command: [x], ports: [{name: http}, {name: http}]}]",
        "containers[0]",
    ),
    "clashing-host-ports": (
        "service: web\ncontainers: [{name: a, command: [x], ports: [{name: p1, host: 8080}]}, {name: b, command: [y], ports: [{name: p2, host: 8080}]}]",
        "containers",
    ),
    "yaml-syntax": ("service: web\ncontainers: [{name: app, command: [x]\n", "line"),
    "bad-duration": (
        "service: web\ncontainers: [{name: app, command: [x], stop_timeout: 10 parsecs}]",
        "containers[0].stop_timeout",
    ),
    "bad-constraint": (BASE + "placement: {constraints: ['zone ~ a']}\n", "placement.constraints"),
    "uppercase-name": ("service: Web\ncontainers: [{name: app, command: [x]}]", "service"),
    "negative-count": ("service: web\ncount: -1\ncontainers: [{name: app, command: [x]}]", "count"),
    "not-a-mapping": ("- just\n- a list\n", ""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spec_is_rejected_with_field_and_store_unchanged(
    cluster: Cluster, case: str, tmp_path: Path
) -> None:
    text, field = MALFORMED[case]
    before = cluster.http.get("/v1/status").json()["revision"]
    response = cluster.http.post(
        "/v1/services", content=text.encode(), headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_spec"
    assert body["errors"], body
    assert any(e["field"].startswith(field) for e in body["errors"]), body["errors"]
    assert all(e["message"] for e in body["errors"])
    assert cluster.http.get("/v1/status").json()["revision"] == before
    assert cluster.http.get("/v1/services").json() == []
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    for command in ("validate", "deploy"):
        result = cluster.cli(command, "-f", str(spec), check=False)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert field.split("[")[0] in result.stderr
    assert cluster.http.get("/v1/status").json()["revision"] == before


def test_json_body_errors_name_the_field(cluster: Cluster) -> None:
    response = cluster.http.post("/v1/services/web/scale", json={"count": -3})
    assert response.status_code in (400, 404)
    cluster.deploy(http_spec(count=1))
    response = cluster.http.post("/v1/services/web/scale", json={"count": "many"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "count"
    response = cluster.http.post("/v1/services/web/scale", content=b"{not json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_body"
    response = cluster.http.get("/v1/tasks", params={"index": "x"})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "index"


def test_validate_prints_the_normalized_spec(cluster: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text(http_spec(count=2))
    result = cluster.cli("validate", "-f", str(spec), "-o", "json")
    import json

    normalized = json.loads(result.stdout)[0]
    assert normalized["count"] == 2
    assert normalized["restart"]["interval"] == "5m"
    assert normalized["containers"][0]["memory"] == 64


def test_concurrent_deploys_never_share_a_revision(cluster: Cluster) -> None:
    specs = [http_spec(count=1, memory=32 + i) for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(cluster.deploy, specs))
    revisions = [r[0]["revision"] for r in results]
    assert len(set(revisions)) == len(revisions)
    defs = cluster.http.get("/v1/taskdefs/web").json()
    assert [d["revision"] for d in defs] == list(range(1, 13))
    memories = sorted(d["containers"][0]["memory"] for d in defs)
    assert memories == sorted(32 + i for i in range(12))


def test_blocking_query_wakes_on_its_own_topic_only(cluster: Cluster) -> None:
    cluster.deploy(http_spec(name="web", count=1))
    cluster.deploy(http_spec(name="api", count=1))
    cluster.wait_running("web", 1)
    cluster.wait_running("api", 1)
    first = cluster.http.get("/v1/services/web")
    index = int(first.headers["X-Moorage-Index"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            cluster.http.get, "/v1/services/web", params={"index": index, "wait": "3s"}
        )
        cluster.cli("scale", "api", "2")  # another service: must not wake the web query
        import time

        start = time.monotonic()
        response = pending.result()
        waited = time.monotonic() - start
    assert int(response.headers["X-Moorage-Index"]) == index
    assert waited > 1.0
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            cluster.http.get, "/v1/services/web", params={"index": index, "wait": "20s"}
        )
        cluster.cli("scale", "web", "2")
        response = pending.result()
    assert int(response.headers["X-Moorage-Index"]) > index


def test_openapi_document_is_generated(cluster: Cluster) -> None:
    doc = cluster.http.get("/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/services" in doc["paths"] and "post" in doc["paths"]["/v1/services"]
    schemas = doc["components"]["schemas"]
    assert "Task" in schemas and "memory" in schemas["Container"]["properties"]
