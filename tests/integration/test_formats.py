"""Specs users already have: an ECS task definition and a compose file, run for real."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SLEEP360 = {
    "family": "sleep360",
    "containerDefinitions": [
        {
            "name": "sleep",
            "image": "busybox",
            "cpu": 10,
            "command": ["sleep", "360"],
            "memory": 10,
            "essential": True,
        }
    ],
}

# The task definition of the EBS write-up in seeds/004, placeholders filled, the Terraform
# `volume` block as its JSON.
SEED_004 = {
    "family": "ecs-task-definition",
    "containerDefinitions": [
        {
            "essential": True,
            "memory": 100,
            "name": "web-app",
            "cpu": 1,
            "image": "registry.local/web:master.5",
            "environment": [],
            "portMappings": [{"hostPort": 80, "containerPort": 8080}],
            "mountPoints": [
                {"sourceVolume": "ecs-ebs-volume", "containerPath": "/mnt/ecs-ebs-volume"}
            ],
        }
    ],
    "volumes": [
        {
            "name": "ecs-ebs-volume",
            "dockerVolumeConfiguration": {
                "scope": "shared",
                "autoprovision": True,
                "driver": "rexray/ebs",
                "driverOpts": {"volumetype": "gp2", "size": "5"},
            },
        }
    ],
}


def test_the_classic_ecs_sleep360_example_runs(
    cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    subprocess.run(["docker", "tag", docker_image, "busybox:latest"], check=True)
    path = tmp_path / "sleep360.json"
    path.write_text(json.dumps(SLEEP360))
    result = cluster.cli("deploy", "--ecs", str(path), "--count", "2")
    assert "sleep360: registered revision 1, count 2" in result.stdout
    running = cluster.wait_running("sleep360", 2)
    assert all(t["containers"][0]["name"] == "sleep" for t in running)
    assert cluster.cli("validate", "-f", str(path)).returncode == 0


def test_seed_004_task_definition_validates_with_one_notice_about_its_volume(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "taskdef.json"
    path.write_text(json.dumps(SEED_004))
    result = cluster.cli("validate", "-f", str(path))
    assert "ecs-task-definition: valid" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "volumes[0].dockerVolumeConfiguration.driver" in warnings[0]
    assert "rexray/ebs" in warnings[0] and "shared volume driver" in warnings[0]
    # two tasks cannot share one single-writer volume: refused before anything is written
    deploy = cluster.cli("deploy", "--ecs", str(path), "--count", "2", check=False)
    assert deploy.returncode == 2 and "count" in deploy.stderr and "single-writer" in deploy.stderr
    assert cluster.http.get("/v1/services").json() == []
    assert cluster.http.get("/v1/volumes").json() == []


def test_compose_file_starts_in_dependency_order(
    cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(f"""
services:
  web:
    image: {docker_image}
    command: ["sleep", "300"]
    depends_on: [api]
  api:
    image: {docker_image}
    command: ["sleep", "300"]
    depends_on:
      db: {{condition: service_healthy}}
    deploy: {{replicas: 2}}
  db:
    image: {docker_image}
    environment: {{PORT: "8080"}}
    ports: ["8080"]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health"]
      interval: 1s
      retries: 2
    logging: {{driver: json-file}}
""")
    result = cluster.cli("compose", "up", "-f", str(compose))
    assert (
        "warning: services.db.logging: moorage keeps each task's logs itself (`moorage logs`)"
        in result.stderr
    )
    assert "(see docs/formats.md#compose-service-keys)" in result.stderr
    lines = [line.split(":")[0] for line in result.stdout.splitlines() if ", count" in line]
    assert lines == ["db", "api", "web"]
    db = cluster.running("db")[0]
    api = cluster.tasks("api")
    assert db["health"] == "passing" and db["healthy_since"] is not None
    assert min(t["created_at"] for t in api) >= db["healthy_since"]
    cluster.wait_running("api", 2)
    cluster.wait_running("web", 1)
