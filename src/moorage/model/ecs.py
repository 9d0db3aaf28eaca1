"""ECS task definitions (JSON) → moorage specs, with every problem named by its field.

Accepts a task definition object (`family`, `containerDefinitions`, `volumes`, `networkMode`, …)
or a bare list of container definitions. Keys moorage does not use are reported as warnings,
never dropped silently; keys whose absence would change how a container runs are errors.
See docs/formats.md for the mapping table.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FieldError, SpecError
from .service import ServiceSpec
from .spec import validate_body

CONTAINER_KEYS = {
    "name",
    "image",
    "cpu",
    "memory",
    "memoryReservation",
    "essential",
    "command",
    "entryPoint",
    "environment",
    "secrets",
    "portMappings",
    "mountPoints",
    "healthCheck",
    "dependsOn",
    "dockerLabels",
    "stopTimeout",
    "workingDirectory",
    "user",
}
# Ignoring these would change how the container runs: refused, not dropped.
REFUSED = {
    "links": "container links are not supported; use PORT_<NAME> variables",
    "volumesFrom": "volumesFrom is not supported; declare the volume and mount it",
    "privileged": "privileged containers are not supported",
    "linuxParameters": "linuxParameters are not supported",
    "ulimits": "ulimits are not supported",
    "readonlyRootFilesystem": "read-only root filesystems are not supported yet",
    "systemControls": "systemControls are not supported",
    "extraHosts": "extraHosts are not supported",
}
TASK_KEYS = {"family", "containerDefinitions", "volumes", "networkMode", "cpu", "memory"}
TASK_IGNORED = {
    "taskRoleArn",
    "executionRoleArn",
    "requiresCompatibilities",
    "tags",
    "revision",
    "status",
    "taskDefinitionArn",
    "registeredAt",
    "registeredBy",
    "compatibilities",
    "requiresAttributes",
}
DEPENDS = {"START": "started", "HEALTHY": "healthy"}


def _dns(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "app"


def _seconds(value: Any) -> str:
    return f"{value}s"


def from_ecs(
    data: Any, service: str | None = None, count: int | None = None
) -> tuple[ServiceSpec, list[FieldError]]:
    """One service from an ECS task definition, and the warnings about what was not used."""
    warnings: list[FieldError] = []
    errors: list[FieldError] = []
    if isinstance(data, list):
        task: dict[str, Any] = {"containerDefinitions": data}
    elif isinstance(data, dict):
        task = data
    else:
        raise SpecError([FieldError("", "an ECS task definition is a JSON object or a list")])
    for key in task:
        if key in TASK_IGNORED:
            warnings.append(FieldError(key, "AWS-only, ignored"))
        elif key not in TASK_KEYS:
            warnings.append(FieldError(key, "unknown to moorage, ignored"))
    mode = task.get("networkMode", "bridge")
    if mode not in ("bridge", "default", None):
        errors.append(
            FieldError("networkMode", f"{mode!r} is not supported (moorage maps ports as bridge)")
        )
    definitions = task.get("containerDefinitions")
    if not isinstance(definitions, list) or not definitions:
        errors.append(FieldError("containerDefinitions", "is required: a non-empty list"))
        definitions = []
    names = {}
    containers = []
    for index, raw in enumerate(definitions):
        at = f"containerDefinitions[{index}]"
        if not isinstance(raw, dict):
            errors.append(FieldError(at, "must be an object"))
            continue
        container = _container(raw, at, warnings, errors)
        names[str(raw.get("name", ""))] = container.get("name", "")
        containers.append(container)
    for container in containers:  # dependsOn names use the ECS names
        for dep in container.get("depends_on", []):
            dep["container"] = names.get(dep["container"], dep["container"])
    volumes = _volumes(task.get("volumes") or [], warnings, errors)
    if errors:
        raise SpecError(errors)
    name = service or _dns(str(task.get("family") or containers[0]["name"]))
    body: dict[str, Any] = {"service": name, "containers": containers, "volumes": volumes}
    if count is not None:
        body["count"] = count
    return validate_body(ServiceSpec, body), warnings


def _container(
    raw: dict[str, Any], at: str, warnings: list[FieldError], errors: list[FieldError]
) -> dict[str, Any]:
    for key in raw:
        if key in REFUSED:
            errors.append(FieldError(f"{at}.{key}", REFUSED[key]))
        elif key not in CONTAINER_KEYS:
            warnings.append(FieldError(f"{at}.{key}", "not supported, ignored"))
    name = str(raw.get("name") or "")
    out: dict[str, Any] = {"name": _dns(name)}
    if _dns(name) != name:
        warnings.append(FieldError(f"{at}.name", f"{name!r} is named {_dns(name)!r} here"))
    for source, target in (
        ("image", "image"),
        ("command", "command"),
        ("entryPoint", "entrypoint"),
        ("essential", "essential"),
        ("workingDirectory", "workdir"),
        ("user", "user"),
        ("dockerLabels", "labels"),
    ):
        if source in raw:
            out[target] = raw[source]
    if raw.get("cpu"):
        out["cpu"] = raw["cpu"]
    memory, reservation = raw.get("memory"), raw.get("memoryReservation")
    if memory is None and reservation is None:
        errors.append(FieldError(f"{at}.memory", "memory or memoryReservation is required"))
    out["memory"] = memory if memory is not None else reservation
    if reservation is not None and memory is not None:
        out["memory_reservation"] = reservation
    if "stopTimeout" in raw:
        out["stop_timeout"] = _seconds(raw["stopTimeout"])
    out["env"] = {str(e.get("name")): str(e.get("value", "")) for e in raw.get("environment") or []}
    out["secrets"] = {
        str(s.get("name")): re.split(r"[:/]", str(s.get("valueFrom", "")))[-1]
        for s in raw.get("secrets") or []
    }
    ports = []
    for j, mapping in enumerate(raw.get("portMappings") or []):
        inside = mapping.get("containerPort")
        port: dict[str, Any] = {
            "name": str(mapping.get("name") or f"p{inside}"),
            "container": inside,
            "protocol": mapping.get("protocol", "tcp"),
        }
        if mapping.get("hostPort"):
            port["host"] = mapping["hostPort"]
        if inside is None:
            errors.append(FieldError(f"{at}.portMappings[{j}].containerPort", "is required"))
        ports.append(port)
    out["ports"] = ports
    out["mounts"] = [
        {
            "volume": _dns(str(m.get("sourceVolume", ""))),
            "path": m.get("containerPath"),
            "read_only": bool(m.get("readOnly", False)),
        }
        for m in raw.get("mountPoints") or []
    ]
    check = raw.get("healthCheck")
    if check:
        command = list(check.get("command") or [])
        if command[:1] == ["CMD-SHELL"]:
            command = ["sh", "-c", " ".join(command[1:])]
        elif command[:1] == ["CMD"]:
            command = command[1:]
        out["health"] = {
            "command": command,
            "interval": _seconds(check.get("interval", 30)),
            "timeout": _seconds(check.get("timeout", 5)),
            "retries": check.get("retries", 3),
            "start_period": _seconds(check.get("startPeriod", 0)),
        }
    depends = []
    for j, dep in enumerate(raw.get("dependsOn") or []):
        condition = DEPENDS.get(str(dep.get("condition", "START")))
        if condition is None:
            errors.append(
                FieldError(
                    f"{at}.dependsOn[{j}].condition",
                    f"{dep.get('condition')!r} is not supported (START or HEALTHY)",
                )
            )
            continue
        depends.append({"container": str(dep.get("containerName")), "condition": condition})
    out["depends_on"] = depends
    return out


def _volumes(
    raw: list[Any], warnings: list[FieldError], errors: list[FieldError]
) -> dict[str, Any]:
    volumes: dict[str, Any] = {}
    for index, volume in enumerate(raw):
        at = f"volumes[{index}]"
        if not isinstance(volume, dict) or not volume.get("name"):
            errors.append(FieldError(f"{at}.name", "is required"))
            continue
        spec: dict[str, Any] = {}
        docker = volume.get("dockerVolumeConfiguration")
        if docker:
            plugin = str(docker.get("driver") or "local")
            options = {k: str(v) for k, v in (docker.get("driverOpts") or {}).items()}
            spec |= {
                "scope": "shared" if docker.get("scope") == "shared" else "task",
                # ECS: autoprovision only applies to shared scope, and is off unless set
                "autoprovision": bool(docker.get("autoprovision", False)),
                "plugin": plugin,
                "plugin_options": options,
            }
            if plugin != "local":
                spec["driver"] = "shared"
                size = options.get("size")
                if plugin.startswith("rexray/") and size and size.isdigit():
                    spec["size"] = f"{size}GiB"  # REX-Ray's size option is in GiB
                warnings.append(
                    FieldError(
                        f"{at}.dockerVolumeConfiguration.driver",
                        f"{plugin} is served by moorage's shared volume driver: the volume "
                        "re-attaches on any node, one writer at a time (docs/volumes.md)",
                    )
                )
        host = volume.get("host")
        if host:
            spec["host_path"] = host.get("sourcePath")
        for key in volume:
            if key not in ("name", "dockerVolumeConfiguration", "host"):
                warnings.append(FieldError(f"{at}.{key}", "not supported, ignored"))
        volumes[_dns(str(volume["name"]))] = spec
    return volumes
