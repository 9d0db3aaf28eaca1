"""The moorage YAML spec: every invalid document fails with all its errors, each with a path."""

from __future__ import annotations

import pytest

from moorage.model import Constraint, SpecError, parse_specs
from moorage.model.duration import format_duration, parse_duration

APP = "{name: app, command: [x]}"

# (spec text, the exact field paths reported)
MALFORMED: dict[str, tuple[str, set[str]]] = {
    "count-wrong-type": (f"service: web\ncount: three\ncontainers: [{APP}]", {"count"}),
    "count-negative": (f"service: web\ncount: -1\ncontainers: [{APP}]", {"count"}),
    "memory-negative": (
        "service: web\ncontainers: [{name: app, command: [x], memory: -5}]",
        {"containers[0].memory"},
    ),
    "memory-wrong-type": (
        "service: web\ncontainers: [{name: app, command: [x], memory: lots}]",
        {"containers[0].memory"},
    ),
    "cpu-zero": (
        "service: web\ncontainers: [{name: app, command: [x], cpu: 0}]",
        {"containers[0].cpu"},
    ),
    "service-missing": (f"containers: [{APP}]", {"service"}),
    "service-not-a-dns-label": (f"service: Web_1\ncontainers: [{APP}]", {"service"}),
    "containers-missing": ("service: web", {"containers"}),
    "containers-empty": ("service: web\ncontainers: []", {"containers"}),
    "container-name-missing": (
        "service: web\ncontainers: [{command: [x]}]",
        {"containers[0].name"},
    ),
    "neither-image-nor-command": (
        "service: web\ncontainers: [{name: app}]",
        {"containers[0].command"},
    ),
    "unknown-top-level-key": (f"service: web\nimage: x\ncontainers: [{APP}]", {"image"}),
    "unknown-nested-key": (
        "service: web\ncontainers: [{name: app, command: [x], memroy: 5}]",
        {"containers[0].memroy"},
    ),
    "duplicate-container-names": (
        "service: web\ncontainers: [{name: app, command: [x]}, {name: app, command: [y]}]",
        {"containers[1].name"},
    ),
    "duplicate-port-names": (
        "service: web\ncontainers: [{name: app, command: [x], ports: [{name: http}, {name: http}]}]",
        {"containers[0].ports[1].name"},
    ),
    "clashing-host-ports": (
        "service: web\ncontainers:\n"
        "  - {name: a, command: [x], ports: [{name: p1, host: 8080}]}\n"
        "  - {name: b, command: [y], ports: [{name: p2, host: 8080}]}\n",
        {"containers[1].ports[0].host"},
    ),
    "port-out-of-range": (
        "service: web\ncontainers: [{name: app, command: [x], ports: [{name: p, host: 70000}]}]",
        {"containers[0].ports[0].host"},
    ),
    "bad-duration": (
        "service: web\ncontainers: [{name: app, command: [x], stop_timeout: 10 parsecs}]",
        {"containers[0].stop_timeout"},
    ),
    "bad-constraint": (
        f"service: web\ncontainers: [{APP}]\nplacement: {{constraints: ['zone ~ a']}}",
        {"placement.constraints"},
    ),
    "bad-strategy": (
        f"service: web\ncontainers: [{APP}]\nplacement: {{strategy: random}}",
        {"placement.strategy"},
    ),
    "unknown-volume": (
        "service: web\ncontainers: [{name: app, command: [x], mounts: [{volume: data, path: /d}]}]",
        {"containers[0].mounts[0].volume"},
    ),
    "unknown-dependency": (
        "service: web\ncontainers: [{name: app, command: [x], depends_on: [{container: db}]}]",
        {"containers[0].depends_on[0].container"},
    ),
    "health-port-undeclared": (
        "service: web\ncontainers: [{name: app, command: [x], health: {http: /, port: web}}]",
        {"containers[0].health.port"},
    ),
    "reservation-above-limit": (
        "service: web\ncontainers: [{name: app, command: [x], memory: 64, memory_reservation: 128}]",
        {"containers[0].memory_reservation"},
    ),
    "discovery-port-undeclared": (
        f"service: web\ncontainers: [{APP}]\ndiscovery: {{port: http}}",
        {"discovery.port"},
    ),
    "yaml-syntax-error": (
        "service: web\ncontainers: [{name: app, command: [x]\n",
        {"line 3, column 1"},
    ),
    "not-a-mapping": ("- a\n- list\n", {""}),
    "empty-file": ("# nothing\n", {""}),
    "second-document-invalid": (
        f"service: web\ncontainers: [{APP}]\n---\nservice: db\ncount: x\ncontainers: [{APP}]\n",
        {"[1].count"},
    ),
    "same-service-twice": (
        f"service: web\ncontainers: [{APP}]\n---\nservice: web\ncontainers: [{APP}]\n",
        {"service"},
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_specs_name_the_field(case: str) -> None:
    text, fields = MALFORMED[case]
    with pytest.raises(SpecError) as caught:
        parse_specs(text)
    reported = {e.field for e in caught.value.errors}
    assert reported == fields, [str(e) for e in caught.value.errors]
    assert all(e.message for e in caught.value.errors)
    assert caught.value.code == "invalid_spec"


def test_all_errors_of_a_document_are_reported_at_once() -> None:
    text = "service: Web\ncount: x\ncontainers: [{name: a, command: [x], cpu: -1, bogus: 1}]\n"
    with pytest.raises(SpecError) as caught:
        parse_specs(text)
    assert {e.field for e in caught.value.errors} == {
        "service",
        "count",
        "containers[0].cpu",
        "containers[0].bogus",
    }


def test_messages_read_like_sentences() -> None:
    with pytest.raises(SpecError) as caught:
        parse_specs("service: web\ncontainers: [{name: app, command: [x], memory: 0}]")
    assert str(caught.value.errors[0]) == "containers[0].memory: must be greater than 0"
    with pytest.raises(SpecError) as caught:
        parse_specs(f"service: web\ncontainers: [{APP}]\nbogus: 1")
    assert str(caught.value.errors[0]) == "bogus: unknown field"


def test_a_valid_spec_is_normalized_with_defaults() -> None:
    text = """
service: web
count: 3
containers:
  - name: app
    command: ["python3", "-m", "http.server", "${PORT_HTTP}"]
    cpu: 256
    memory: 128
    ports: [{name: http}]
    env: {DEBUG: 1, RATIO: 0.5, VERBOSE: true}
    stop_timeout: 1m30s
placement: {strategy: spread, spread_attr: zone, constraints: ["zone in [a, b]", "lifecycle != spot"]}
restart: {attempts: 5, interval: 5m, delay: 2s}
"""
    (spec,) = parse_specs(text)
    container = spec.containers[0]
    assert (spec.service, spec.count, container.cpu, container.memory) == ("web", 3, 256, 128)
    assert container.env == {"DEBUG": "1", "RATIO": "0.5", "VERBOSE": "true"}
    assert container.stop_timeout == 90.0
    assert container.essential is True
    assert container.driver == "process"
    assert spec.restart.interval == 300.0
    assert [str(c) for c in spec.placement.parsed_constraints()] == [
        "zone in [a, b]",
        "lifecycle != spot",
    ]
    dumped = spec.model_dump(mode="json")
    assert dumped["containers"][0]["stop_timeout"] == "1m30s"
    assert parse_specs(_yaml(dumped))[0] == spec  # the normalized form parses to the same spec


def test_several_documents_parse_in_order() -> None:
    text = f"service: web\ncontainers: [{APP}]\n---\nservice: worker\ncontainers: [{APP}]\n"
    assert [s.service for s in parse_specs(text)] == ["web", "worker"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), (5, 5.0), ("1d", 86400.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "-5s", "5 s", "1m 30s", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "attrs", "matches"),
    [
        ("zone == a", {"zone": "a"}, True),
        ("zone == a", {"zone": "b"}, False),
        ("zone != a", {}, True),
        ("zone in [a, b]", {"zone": "b"}, True),
        ("zone in [a, b]", {"zone": "c"}, False),
        ("zone not in [a, b]", {"zone": "c"}, True),
        ("node.name == n1", {"node.name": "n1"}, True),
    ],
)
def test_constraints(text: str, attrs: dict[str, str], matches: bool) -> None:
    assert Constraint.parse(text).matches(attrs) is matches


def _yaml(data: object) -> str:
    import yaml

    return str(yaml.safe_dump(data))
