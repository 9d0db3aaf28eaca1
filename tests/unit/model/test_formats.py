"""ECS task definitions and compose files become moorage specs; nothing is dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moorage.model import SpecError
from moorage.model.compose import from_compose
from moorage.model.ecs import from_ecs

ECS = {
    "family": "Web_App",
    "networkMode": "bridge",
    "taskRoleArn": "arn:aws:iam::1:role/x",
    "containerDefinitions": [
        {
            "name": "app",
            "image": "registry.local/web:5",
            "cpu": 256,
            "memory": 512,
            "memoryReservation": 256,
            "essential": True,
            "command": ["serve", "--port", "8080"],
            "entryPoint": ["/bin/sh", "-c"],
            "environment": [{"name": "RAILS_ENV", "value": "production"}],
            "secrets": [{"name": "DATABASE_URL", "valueFrom": "arn:aws:ssm:r:1:parameter/db-url"}],
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
            "healthCheck": {
                "command": ["CMD-SHELL", "wget -q -O- localhost:8080/health"],
                "interval": 10,
                "timeout": 2,
                "retries": 3,
                "startPeriod": 5,
            },
            "dependsOn": [{"containerName": "Sidecar", "condition": "START"}],
            "dockerLabels": {"team": "web"},
            "stopTimeout": 20,
            "logConfiguration": {"logDriver": "awslogs"},
        },
        {"name": "Sidecar", "image": "registry.local/proxy:1", "memory": 64, "essential": False},
    ],
}


def test_ecs_task_definition_maps_field_by_field() -> None:
    spec, warnings = from_ecs(ECS)
    app, sidecar = spec.containers
    assert spec.service == "web-app" and sidecar.name == "sidecar"
    assert (app.cpu, app.memory, app.memory_reservation) == (256, 512, 256)
    assert app.entrypoint == ["/bin/sh", "-c"] and app.command == ["serve", "--port", "8080"]
    assert app.env == {"RAILS_ENV": "production"}
    assert app.secrets == {"DATABASE_URL": "db-url"}
    assert [(p.name, p.container, p.host) for p in app.ports] == [("p8080", 8080, None)]
    assert app.health is not None and app.health.command == [
        "sh",
        "-c",
        "wget -q -O- localhost:8080/health",
    ]
    assert (app.health.interval, app.health.start_period) == (10.0, 5.0)
    assert [(d.container, d.condition) for d in app.depends_on] == [("sidecar", "started")]
    assert app.labels == {"team": "web"} and app.stop_timeout == 20.0
    assert sidecar.essential is False
    fields = {w.field for w in warnings}
    assert {"taskRoleArn", "containerDefinitions[0].logConfiguration"} <= fields
    assert "containerDefinitions[1].name" in fields  # renamed to a DNS label, and said so


def test_ecs_keys_that_would_change_behaviour_are_refused() -> None:
    data = {
        "containerDefinitions": [
            {
                "name": "a",
                "image": "x",
                "memory": 8,
                "dependsOn": [{"containerName": "b", "condition": "COMPLETE"}],
                "linuxParameters": {"devices": [{"hostPath": "/dev/fuse"}]},
                "dockerSecurityOptions": ["seccomp=unconfined"],
            }
        ],
        "networkMode": "none",
        "pidMode": "host",
    }
    with pytest.raises(SpecError) as caught:
        from_ecs(data)
    assert {e.field for e in caught.value.errors} == {
        "networkMode",
        "pidMode",
        "containerDefinitions[0].dependsOn[0].condition",
        "containerDefinitions[0].linuxParameters.devices",
        "containerDefinitions[0].dockerSecurityOptions",
    }


def test_ecs_volumes_map_to_moorage_volumes() -> None:
    data = {
        "family": "ebs",
        "containerDefinitions": [
            {
                "name": "a",
                "image": "x",
                "memory": 100,
                "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}],
            }
        ],
        "volumes": [
            {
                "name": "data",
                "dockerVolumeConfiguration": {
                    "scope": "shared",
                    "autoprovision": True,
                    "driver": "rexray/ebs",
                    "driverOpts": {"size": "5"},
                },
            }
        ],
    }
    spec, warnings = from_ecs(data, service="db")
    volume = spec.volumes["data"]
    assert (volume.driver, volume.scope, volume.autoprovision, volume.size_mib) == (
        "shared",
        "shared",
        True,
        5 * 1024,  # REX-Ray's size is in GiB
    )
    assert (volume.plugin, volume.plugin_options) == ("rexray/ebs", {"size": "5"})
    (notice,) = warnings
    assert notice.field == "volumes[0].dockerVolumeConfiguration.driver"
    assert "rexray/ebs" in notice.message and "shared volume driver" in notice.message
    # one writer at a time: a single-writer volume takes one task
    with pytest.raises(SpecError) as exc:
        from_ecs(data, service="db", count=2)
    assert exc.value.errors[0].field == "count" and "single-writer" in exc.value.errors[0].message
    # ECS defaults: task scope, autoprovision off, Docker's local driver → a local volume
    data["volumes"] = [{"name": "data", "dockerVolumeConfiguration": {}}]
    plain, warnings = from_ecs(data, service="db", count=2)
    assert warnings == []
    assert (plain.volumes["data"].driver, plain.volumes["data"].scope) == ("local", "task")
    # a host path is a host volume: placed only where an agent shares it
    data["volumes"] = [{"name": "data", "host": {"sourcePath": "/srv/data/../data/"}}]
    with pytest.raises(SpecError, match="without '\\.\\.'"):
        from_ecs(data, service="db")
    data["volumes"] = [{"name": "data", "host": {"sourcePath": "/srv//data/"}}]
    host, _ = from_ecs(data, service="db")
    assert host.volumes["data"].host_path == "/srv/data"


COMPOSE = """
services:
  web:
    image: registry.local/web:5
    command: bundle exec puma
    environment: [RAILS_ENV=production, "EMPTY="]
    env_file: web.env
    ports: ["8080:80", "443"]
    expose: ["9000"]
    depends_on:
      api: {condition: service_started}
    deploy:
      replicas: 3
      resources: {limits: {cpus: "0.5", memory: 512M}, reservations: {memory: 256M}}
      placement: {constraints: ["node.role == worker"]}
    restart: unless-stopped
    logging: {driver: json-file}
  api:
    image: registry.local/api:2
    depends_on:
      db: {condition: service_healthy}
    volumes: ["cache:/var/cache"]
    secrets: [db-url]
    restart: "no"
  db:
    image: postgres:16
    healthcheck:
      test: ["CMD-SHELL", "pg_isready"]
      interval: 5s
      retries: 5
      start_period: 10s
volumes:
  cache: {}
secrets:
  db-url: {file: ./db-url.txt}
"""


def test_compose_file_maps_services_in_dependency_order(tmp_path: Path) -> None:
    (tmp_path / "web.env").write_text("# comment\nFROM_FILE='yes'\nRAILS_ENV=development\n")
    loaded = from_compose(COMPOSE, tmp_path)
    specs, depends, warnings = loaded.specs, loaded.depends, loaded.warnings
    assert [s.service for s in specs] == ["db", "api", "web"]
    assert depends == {"web": {"api": "started"}, "api": {"db": "healthy"}, "db": {}}
    db, api, web = specs
    assert db.containers[0].health is not None
    assert db.containers[0].health.command == ["sh", "-c", "pg_isready"]
    assert (db.containers[0].health.retries, db.containers[0].health.start_period) == (5, 10.0)
    app = web.containers[0]
    assert web.count == 3 and app.command == ["sh", "-c", "bundle exec puma"]
    assert app.env == {"FROM_FILE": "yes", "RAILS_ENV": "production", "EMPTY": ""}
    assert [(p.container, p.host) for p in app.ports] == [(80, 8080), (443, None), (9000, None)]
    assert (app.cpu, app.memory, app.memory_reservation) == (512, 512, 256)
    assert api.restart.attempts == 0
    assert api.containers[0].mounts[0].volume == "cache" and "cache" in api.volumes
    assert api.containers[0].secrets == {"DB_URL": "db-url"}
    fields = {w.field for w in warnings}
    assert {
        "services.web.logging",
        "services.web.deploy.placement",
        "services.api.secrets",
    } <= fields


def test_compose_refuses_what_it_cannot_run_naming_each_field(tmp_path: Path) -> None:
    text = (
        "services:\n  app:\n    image: x\n    volumes: ['./missing:/src', '../up:/up']\n"
        "    pid: host\n    network_mode: none\n    devices: ['/dev/fuse']\n"
        "    depends_on: {db: {condition: service_completed_successfully}}\n  db: {image: y}\n"
    )
    with pytest.raises(SpecError) as caught:
        from_compose(text, tmp_path)
    messages = {e.field: e.message for e in caught.value.errors}
    assert set(messages) == {
        "services.app.volumes[0]",
        "services.app.volumes[1]",
        "services.app.pid",
        "services.app.network_mode",
        "services.app.devices",
        "services.app.depends_on.db.condition",
    }
    assert "does not exist" in messages["services.app.volumes[0]"]
    assert "outside the compose file's directory" in messages["services.app.volumes[1]"]
    assert "docs/formats.md#" in messages["services.app.pid"]


def test_compose_read_only_mounts_stay_read_only(tmp_path: Path) -> None:
    text = """
services:
  app:
    image: x
    volumes:
      - "conf:/etc/app:ro"
      - "data:/data:rw"
      - "cache:/cache"
      - {type: volume, source: seed, target: /seed, read_only: true}
      - {type: volume, source: logs, target: /logs, read_only: false, volume: {nocopy: true}}
      - "spool:/spool:ro,z"
"""
    loaded = from_compose(text, tmp_path)
    [spec], warnings = loaded.specs, loaded.warnings
    mounts = [(m.volume, m.path, m.read_only) for m in spec.containers[0].mounts]
    assert mounts == [
        ("conf", "/etc/app", True),
        ("data", "/data", False),
        ("cache", "/cache", False),
        ("seed", "/seed", True),
        ("logs", "/logs", False),
        ("spool", "/spool", True),
    ]
    assert set(spec.volumes) == {"conf", "data", "cache", "seed", "logs", "spool"}
    # nocopy: moorage never copies an image's files into a volume; z: an SELinux label
    assert warnings == []
    bind = "services:\n  app:\n    image: x\n    volumes: [{type: bind, source: /s, target: /t}]\n"
    [host] = from_compose(bind, tmp_path).specs
    assert host.volumes["host-s"].host_path == "/s"
    assert host.containers[0].mounts[0].path == "/t"


def test_compose_dependency_cycle_is_refused(tmp_path: Path) -> None:
    text = "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: y, depends_on: [a]}\n"
    with pytest.raises(SpecError, match="cycle"):
        from_compose(text, tmp_path)


def test_ecs_from_json_text_round_trip() -> None:
    spec, _ = from_ecs(json.loads(json.dumps(ECS)))
    assert spec.model_dump(mode="json")["containers"][0]["secrets"] == {"DATABASE_URL": "db-url"}
