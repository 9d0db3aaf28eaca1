"""Volumes in specs: sizes, the one-writer rules a spec must respect, and the cluster volumes a
deploy needs (missing, or existing with another driver or access)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moorage.model import SpecError, parse_specs
from moorage.model.compose import from_compose
from moorage.model.runtime import size_mib
from moorage.model.spec import volume_problems
from moorage.model.volume import Volume


@pytest.mark.parametrize(
    ("text", "mib"),
    [("5GiB", 5120), ("5G", 5120), ("512MiB", 512), ("512", 512), ("1048576B", 1), ("1T", 2**20)],
)
def test_sizes(text: str, mib: int) -> None:
    assert size_mib(text) == mib


def spec(volumes: str, count: int = 1, mount: str = "{volume: data, path: /data}") -> str:
    return f"""
service: db
count: {count}
containers: [{{name: app, command: [x], mounts: [{mount}]}}]
volumes: {volumes}
"""


def errors(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        parse_specs(text)
    return {e.field: e.message for e in exc.value.errors}


def test_a_single_writer_volume_takes_one_task() -> None:
    shared = "{data: {driver: shared, scope: shared, size: 5GiB}}"
    (ok,) = parse_specs(spec(shared))
    assert ok.volumes["data"].size_mib == 5120
    assert "single-writer" in errors(spec(shared, count=3))["count"]
    # read-only-many: many tasks, each mounting it read-only
    many = "{data: {driver: shared, scope: shared, access: read-only-many}}"
    parse_specs(spec(many, count=3, mount="{volume: data, path: /data, read_only: true}"))
    problems = errors(spec(many, count=3))
    assert "read-only-many" in problems["containers[0].mounts[0].read_only"]
    # task-scoped volumes are per task: any count
    parse_specs(spec("{data: {size: 64MiB}}", count=3))


def test_volume_spec_fields_are_checked() -> None:
    assert "size" in errors(spec("{data: {size: lots}}"))["volumes.data.size"]
    problems = errors(spec("{data: {size: lots, driver: nfs}}"))
    assert set(problems) == {"volumes.data.size", "volumes.data.driver"}
    two = "{data: {scope: shared, source: vol}, more: {scope: shared, source: vol}}"
    assert "also" in errors(spec(two))["volumes.more.source"]
    assert "scope: shared" in errors(spec("{data: {source: vol}}"))["volumes.data.source"]


def test_a_deploy_needs_its_cluster_volumes_or_autoprovision() -> None:
    (missing,) = parse_specs(spec("{data: {driver: shared, scope: shared, autoprovision: false}}"))
    (problem,) = volume_problems(missing, {})
    assert problem.field == "volumes.data" and "moorage volume create data" in problem.message
    (auto,) = parse_specs(spec("{data: {driver: shared, scope: shared}}"))
    assert volume_problems(auto, {}) == []
    existing: dict[str, Any] = {"data": Volume(name="data", driver="local", node="n1")}
    fields = {p.field: p.message for p in volume_problems(auto, existing)}
    assert fields == {"volumes.data.driver": "volume 'data' exists with driver local, not shared"}
    ro = Volume(name="data", driver="shared", access="read-only-many")
    fields = {p.field for p in volume_problems(auto, {"data": ro})}
    assert fields == {"volumes.data.access"}
    (named,) = parse_specs(spec("{data: {driver: shared, scope: shared, source: pgdata}}"))
    assert volume_problems(named, {"pgdata": Volume(name="pgdata", driver="shared")}) == []


def test_compose_named_volumes_are_cluster_volumes() -> None:
    text = """
services:
  db: {image: postgres, volumes: ["pgdata:/var/lib/postgresql/data"]}
  cache: {image: redis, volumes: ["cache:/data"]}
volumes:
  pgdata: {}
  cache: {driver: rexray/ebs}
"""
    loaded = from_compose(text, Path("."))
    specs, warnings = loaded.specs, loaded.warnings
    by_name = {s.service: s for s in specs}
    pg = by_name["db"].volumes["pgdata"]
    assert (pg.driver, pg.scope, pg.autoprovision) == ("local", "shared", True)
    assert by_name["db"].containers[0].mounts[0].path == "/var/lib/postgresql/data"
    cache = by_name["cache"].volumes["cache"]
    assert (cache.driver, cache.plugin) == ("shared", "rexray/ebs")
    assert [w.field for w in warnings] == ["volumes.cache.driver"]
