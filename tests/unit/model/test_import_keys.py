"""Every key of the compose specification and of an ECS task definition has one treatment in
moorage.model.import_keys, and docs/formats.md shows the same treatment for each.

The FACT lists below are the key sets of the formats, copied from their sources (named at each
list). A key the source adds fails `test_every_key_of_the_format_has_a_treatment` until it is
given a treatment; a table entry that is not a key of the format (a typo) fails
`test_every_table_entry_is_a_key_of_the_format`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from moorage.model.import_keys import (
    ANCHORS,
    COMPOSE_DEPLOY,
    COMPOSE_SERVICE,
    COMPOSE_TOP,
    DOCS_URL,
    ECS_CONTAINER,
    ECS_LINUX_PARAMETERS,
    ECS_TASK,
    TABLES,
    Key,
    Treatment,
    docs_ref,
    warning_text,
)

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / DOCS_URL
CORPUS = REPO / "tests" / "fixtures" / "imports"

# The compose specification's JSON schema (compose-spec/compose-spec, schema/compose-spec.json):
# the top-level "properties".
COMPOSE_TOP_FACTS = [
    "version",
    "name",
    "include",
    "services",
    "models",
    "networks",
    "volumes",
    "secrets",
    "configs",
]

# The same schema: definitions.service.properties (05-services.md documents each).
COMPOSE_SERVICE_FACTS = [
    "develop",
    "deploy",
    "annotations",
    "attach",
    "build",
    "blkio_config",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "label_file",
    "environment",
    "expose",
    "extends",
    "provider",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "models",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "pull_policy",
    "pull_refresh_after",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "security_opt",
    "shm_size",
    "secrets",
    "sysctls",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
    "uts",
    "userns_mode",
    "volumes",
    "volumes_from",
    "working_dir",
]

# The same schema: definitions.deployment.properties (deploy.md).
COMPOSE_DEPLOY_FACTS = [
    "mode",
    "endpoint_mode",
    "replicas",
    "labels",
    "rollback_config",
    "update_config",
    "resources",
    "restart_policy",
    "placement",
]

# AWS Amazon ECS API Reference: RegisterTaskDefinition request parameters, then the fields only
# the TaskDefinition data type (DescribeTaskDefinition's output) has.
ECS_TASK_FACTS = [
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "tags",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
    "enableFaultInjection",
    # TaskDefinition (output) only:
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "deregisteredAt",
    "deleteRequestedAt",
    "registeredBy",
]

# AWS Amazon ECS API Reference: the ContainerDefinition data type.
ECS_CONTAINER_FACTS = [
    "name",
    "image",
    "repositoryCredentials",
    "cpu",
    "memory",
    "memoryReservation",
    "links",
    "portMappings",
    "essential",
    "restartPolicy",
    "entryPoint",
    "command",
    "environment",
    "environmentFiles",
    "mountPoints",
    "volumesFrom",
    "linuxParameters",
    "secrets",
    "dependsOn",
    "startTimeout",
    "stopTimeout",
    "versionConsistency",
    "hostname",
    "user",
    "workingDirectory",
    "disableNetworking",
    "privileged",
    "readonlyRootFilesystem",
    "dnsServers",
    "dnsSearchDomains",
    "extraHosts",
    "dockerSecurityOptions",
    "interactive",
    "pseudoTerminal",
    "dockerLabels",
    "ulimits",
    "logConfiguration",
    "healthCheck",
    "systemControls",
    "resourceRequirements",
    "firelensConfiguration",
    "credentialSpecs",
]

# AWS Amazon ECS API Reference: the LinuxParameters data type.
ECS_LINUX_PARAMETERS_FACTS = [
    "capabilities",
    "devices",
    "initProcessEnabled",
    "sharedMemorySize",
    "tmpfs",
    "maxSwap",
    "swappiness",
]

FACTS: dict[str, list[str]] = {
    "compose-top": COMPOSE_TOP_FACTS,
    "compose-service": COMPOSE_SERVICE_FACTS,
    "compose-deploy": COMPOSE_DEPLOY_FACTS,
    "ecs-task": ECS_TASK_FACTS,
    "ecs-container": ECS_CONTAINER_FACTS,
    "ecs-linux-parameters": ECS_LINUX_PARAMETERS_FACTS,
}

# What the brief of this import settled; the importers implement exactly these as mapped/notice.
SETTLED: dict[str, dict[str, Treatment]] = {
    "compose-top": {"secrets": "notice", "networks": "notice", "services": "mapped"},
    "compose-service": {
        "build": "mapped",
        "privileged": "mapped",
        "network_mode": "mapped",
        "links": "notice",
        "secrets": "notice",
        "networks": "notice",
        "security_opt": "refused",
        "devices": "refused",
        "pid": "refused",
        "volumes_from": "refused",
        "extends": "refused",
        "logging": "ignored",
        "container_name": "ignored",
    },
    "ecs-task": {"requiresCompatibilities": "ignored", "pidMode": "refused", "cpu": "mapped"},
    "ecs-container": {"links": "notice", "environmentFiles": "refused", "privileged": "mapped"},
    "ecs-linux-parameters": {"devices": "refused", "maxSwap": "ignored", "tmpfs": "mapped"},
}


def test_the_tables_are_the_module_constants() -> None:
    assert TABLES == {
        "compose-top": COMPOSE_TOP,
        "compose-service": COMPOSE_SERVICE,
        "compose-deploy": COMPOSE_DEPLOY,
        "ecs-task": ECS_TASK,
        "ecs-container": ECS_CONTAINER,
        "ecs-linux-parameters": ECS_LINUX_PARAMETERS,
    }
    assert set(ANCHORS) == set(TABLES) == set(FACTS)


@pytest.mark.parametrize("table", list(FACTS))
def test_the_fact_lists_have_no_duplicates(table: str) -> None:
    assert len(FACTS[table]) == len(set(FACTS[table]))


@pytest.mark.parametrize("table", list(FACTS))
def test_every_key_of_the_format_has_a_treatment(table: str) -> None:
    assert sorted(set(FACTS[table]) - set(TABLES[table])) == []


@pytest.mark.parametrize("table", list(FACTS))
def test_every_table_entry_is_a_key_of_the_format(table: str) -> None:
    assert sorted(set(TABLES[table]) - set(FACTS[table])) == []


@pytest.mark.parametrize(("table", "key"), [(t, k) for t in TABLES for k in TABLES[t]])
def test_each_reason_is_one_short_sentence(table: str, key: str) -> None:
    entry = TABLES[table][key]
    assert isinstance(entry, Key)
    assert entry.treatment in get_args(Treatment)
    assert entry.why == entry.why.strip() and 0 < len(entry.why) <= 150
    assert "\n" not in entry.why and not entry.why.endswith(".")
    assert "|" not in entry.why  # it is a cell of a markdown table


@pytest.mark.parametrize("table", list(SETTLED))
def test_the_settled_treatments(table: str) -> None:
    got = {key: TABLES[table][key].treatment for key in SETTLED[table]}
    assert got == SETTLED[table]


def test_x_extension_fields_are_the_importers_job_not_a_table_entry() -> None:
    assert [k for t in TABLES.values() for k in t if k.startswith("x-")] == []


def test_docs_ref_and_warning_text() -> None:
    assert docs_ref("compose-service", "logging") == "docs/formats.md#compose-service-keys"
    assert docs_ref("ecs-linux-parameters", "maxSwap") == (
        "docs/formats.md#ecs-linuxparameters-keys"
    )
    assert warning_text("compose-service", "logging") == (
        f"{COMPOSE_SERVICE['logging'].why} (see docs/formats.md#compose-service-keys)"
    )
    with pytest.raises(KeyError):
        docs_ref("compose-services", "image")
    with pytest.raises(KeyError):
        warning_text("compose-service", "no-such-key")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _doc_tables() -> dict[str, dict[str, str]]:
    """Anchor of each heading → {key: treatment} of the key tables under it."""
    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    row = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*(mapped|notice|ignored|refused)\s*\|")
    for line in DOCS.read_text().splitlines():
        if line.startswith("#"):
            current = tables.setdefault(_slug(line.lstrip("#")), {})
        elif (match := row.match(line)) is not None:
            assert match.group(1) not in current, f"{match.group(1)} has two rows"
            current[match.group(1)] = match.group(2)
    return tables


@pytest.mark.parametrize("table", list(TABLES))
def test_the_docs_have_one_row_per_key_with_the_same_treatment(table: str) -> None:
    documented = _doc_tables()
    anchor = ANCHORS[table]
    assert anchor in documented, f"{DOCS_URL} has no heading with the anchor #{anchor}"
    rows = documented[anchor]
    assert sorted(set(TABLES[table]) - set(rows)) == [], "keys without a row"
    assert sorted(set(rows) - set(TABLES[table])) == [], "rows that are not keys"
    differ = {
        key: (rows[key], entry.treatment)
        for key, entry in TABLES[table].items()
        if rows[key] != entry.treatment
    }
    assert differ == {}, "docs treatment != module treatment"


# The import corpus (tests/fixtures/imports): its refused files are exactly those whose keys the
# tables refuse, each for one key. The importers are checked against the same EXPECTED.json by
# benchmarks/imports.py.


def corpus_files() -> dict[str, list[Path]]:
    compose = CORPUS / "compose"
    return {
        "compose": sorted(
            [
                *compose.glob("*.y*ml"),
                *compose.glob("*/compose.y*ml"),
                *compose.glob("*/docker-compose.y*ml"),
            ]
        ),
        "ecs": sorted((CORPUS / "ecs").glob("*.json")),
    }


def _set(value: Any) -> bool:
    """An empty value (`[]`, `{}`, `false`, `null`) asks for nothing: describe-task-definition
    prints `"volumesFrom": []` for every container."""
    return value is not None and value is not False and value not in ([], {}, "")


def _compose_keys(data: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    for key in data:
        if not key.startswith("x-"):
            yield key, "compose-top", key
    for name, service in (data.get("services") or {}).items():
        for key, value in service.items():
            if not key.startswith("x-") and _set(value):
                yield f"services.{name}.{key}", "compose-service", key
        for key in service.get("deploy") or {}:
            if not key.startswith("x-"):
                yield f"services.{name}.deploy.{key}", "compose-deploy", key


def _ecs_keys(data: Any) -> Iterator[tuple[str, str, str]]:
    if isinstance(data, dict) and "taskDefinition" in data:
        data = data["taskDefinition"]  # describe-task-definition output
    task = {"containerDefinitions": data} if isinstance(data, list) else data
    for key, value in task.items():
        if _set(value):
            yield key, "ecs-task", key
    for i, container in enumerate(task["containerDefinitions"]):
        for key, value in container.items():
            if _set(value):
                yield f"containerDefinitions[{i}].{key}", "ecs-container", key
        for key, value in (container.get("linuxParameters") or {}).items():
            if _set(value):
                at = f"containerDefinitions[{i}].linuxParameters.{key}"
                yield at, "ecs-linux-parameters", key


def _keys(kind: str, path: Path) -> list[tuple[str, str, str]]:
    if kind == "compose":
        return list(_compose_keys(yaml.safe_load(path.read_text())))
    return list(_ecs_keys(json.loads(path.read_text())))


def test_the_corpus_is_big_enough_and_mostly_importable() -> None:
    files = corpus_files()
    expected = json.loads((CORPUS / "EXPECTED.json").read_text())["refused"]
    assert len(files["compose"]) >= 42 and len(files["ecs"]) >= 16
    assert len(expected) <= 0.1 * (len(files["compose"]) + len(files["ecs"]))
    every = {str(p.relative_to(CORPUS)) for paths in files.values() for p in paths}
    assert sorted(set(expected) - every) == [], "EXPECTED.json names files not in the corpus"


def test_the_corpus_uses_only_keys_of_the_tables_and_refuses_what_expected_says() -> None:
    expected = json.loads((CORPUS / "EXPECTED.json").read_text())["refused"]
    unknown, refused = [], {}
    for kind, paths in corpus_files().items():
        for path in paths:
            name = str(path.relative_to(CORPUS))
            for field, table, key in _keys(kind, path):
                entry = TABLES[table].get(key)
                if entry is None:
                    unknown.append(f"{name}: {field}")
                elif entry.treatment == "refused":
                    refused.setdefault(name, []).append(field)
    assert unknown == []
    assert refused == {name: [reason["field"]] for name, reason in expected.items()}
