"""ECS task definitions (JSON) → moorage specs, with every problem named by its field.

Accepts a task definition object (`family`, `containerDefinitions`, `volumes`, `networkMode`, …),
the output of `aws ecs describe-task-definition` (`{"taskDefinition": {…}}`), or a bare list of
container definitions. Every key is looked up in `import_keys` (the tables of docs/formats.md):
mapped keys become spec fields, ignored keys are warnings, refused keys errors.

Network modes: `bridge` is moorage's own; `awsvpc` (one ENI per task on AWS, every Fargate task)
becomes bridge with a dynamic host port per container port, said in a notice; `host` runs the
containers in the node's network, their ports static host ports (so two copies never share a
node). Fargate's task-level cpu and memory are shared among the containers that set none.
"""

from __future__ import annotations

import re
from typing import Any

from .compose_parts import account_keys, dns
from .errors import FieldError, SpecError
from .import_keys import ECS_CONTAINER
from .service import ServiceSpec
from .spec import validate_body

HANDLED_TASK = {"family", "containerDefinitions", "volumes", "networkMode", "cpu", "memory"}
HANDLED_CONTAINER = {
    *("name", "image", "cpu", "memory", "memoryReservation", "essential", "command"),
    *("entryPoint", "environment", "secrets", "portMappings", "mountPoints", "healthCheck"),
    *("dependsOn", "dockerLabels", "stopTimeout", "workingDirectory", "user", "ulimits"),
    *("linuxParameters", "privileged", "readonlyRootFilesystem", "systemControls"),
    *("extraHosts", "links"),
}
HANDLED_LINUX = {"capabilities", "initProcessEnabled", "sharedMemorySize", "tmpfs"}
UNKNOWN = "not an ECS task definition field, ignored"
DEPENDS = {"START": "started", "HEALTHY": "healthy"}
DEFAULT_CPU = 100
MODES = ("bridge", "awsvpc", "host", "default")


def _seconds(value: Any) -> str:
    return f"{value}s"


def task_units(value: Any, unit: str) -> int | None:
    """Task-level `cpu` ("256", "1 vCPU", 256) in CPU units, `memory` ("512", "1 GB") in MiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if match is None:
        return None
    number, suffix = float(match.group(1)), match.group(2).lower()
    if unit == "cpu" and suffix in ("vcpu", "vcpus"):
        return round(number * 1024)
    if unit == "memory" and suffix in ("gb", "gib"):
        return round(number * 1024)
    return round(number) if suffix in ("", "mb", "mib") else None


def from_ecs(
    data: Any, service: str | None = None, count: int | None = None
) -> tuple[ServiceSpec, list[FieldError]]:
    """One service from an ECS task definition, and the warnings about what was not used."""
    warnings: list[FieldError] = []
    errors: list[FieldError] = []
    if isinstance(data, dict) and isinstance(data.get("taskDefinition"), dict):
        data = data["taskDefinition"]  # describe-task-definition output
    if isinstance(data, list):
        task: dict[str, Any] = {"containerDefinitions": data}
    elif isinstance(data, dict):
        task = data
    else:
        raise SpecError([FieldError("", "an ECS task definition is a JSON object or a list")])
    account_keys(task, "ecs-task", HANDLED_TASK, "", warnings, errors, UNKNOWN)
    mode = str(task.get("networkMode") or "bridge")
    if mode not in MODES:
        errors.append(
            FieldError("networkMode", f"{mode!r} is not supported: bridge, awsvpc or host")
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
        container = _container(raw, at, mode, warnings, errors)
        names[str(raw.get("name", ""))] = container.get("name", "")
        containers.append(container)
    _share_task_resources(task, containers, errors)
    for container in containers:  # dependsOn names use the ECS names
        for dep in container.get("depends_on", []):
            dep["container"] = names.get(dep["container"], dep["container"])
    volumes = _volumes(task.get("volumes") or [], warnings, errors)
    if errors:
        raise SpecError(errors)
    name = service or dns(str(task.get("family") or containers[0]["name"]))
    body: dict[str, Any] = {"service": name, "containers": containers, "volumes": volumes}
    if count is not None:
        body["count"] = count
    return validate_body(ServiceSpec, body), warnings


def _share_task_resources(
    task: dict[str, Any], containers: list[dict[str, Any]], errors: list[FieldError]
) -> None:
    """Fargate: the task's cpu and memory, less what containers set, shared by the others."""
    for unit, default in (("cpu", DEFAULT_CPU), ("memory", None)):
        total = task_units(task[unit], unit) if task.get(unit) is not None else None
        if task.get(unit) is not None and total is None:
            errors.append(FieldError(unit, f"{task[unit]!r} is not a task {unit} value"))
        unset = [c for c in containers if c.get(unit) is None]
        if not unset:
            continue
        if total is None:
            if default is None:
                errors.extend(
                    FieldError(
                        f"containerDefinitions[{containers.index(c)}].memory",
                        "memory or memoryReservation is required (or the task's memory)",
                    )
                    for c in unset
                )
                continue
            share = default
        else:
            share = (total - sum(int(c[unit]) for c in containers if c.get(unit))) // len(unset)
            if share <= 0:
                errors.append(
                    FieldError(unit, f"the containers' own {unit} leaves none for the others")
                )
                continue
        for container in unset:
            container[unit] = share
            if unit == "memory" and container.get("memory_reservation", 0) > share:
                container["memory"] = container["memory_reservation"]


def _container(
    raw: dict[str, Any], at: str, mode: str, warnings: list[FieldError], errors: list[FieldError]
) -> dict[str, Any]:
    account_keys(raw, "ecs-container", HANDLED_CONTAINER, at, warnings, errors, UNKNOWN)
    name = str(raw.get("name") or "")
    out: dict[str, Any] = {"name": dns(name)}
    if dns(name) != name:
        warnings.append(FieldError(f"{at}.name", f"{name!r} is named {dns(name)!r} here"))
    for source, target in (
        ("image", "image"),
        ("command", "command"),
        ("entryPoint", "entrypoint"),
        ("essential", "essential"),
        ("workingDirectory", "workdir"),
        ("user", "user"),
        ("dockerLabels", "labels"),
        ("privileged", "privileged"),
        ("readonlyRootFilesystem", "read_only"),
    ):
        if raw.get(source) is not None:
            out[target] = raw[source]
    if raw.get("cpu"):
        out["cpu"] = raw["cpu"]
    memory, reservation = raw.get("memory"), raw.get("memoryReservation")
    if memory is not None or reservation is not None:
        out["memory"] = memory if memory is not None else reservation
    if reservation is not None:
        out["memory_reservation"] = reservation
    if "stopTimeout" in raw:
        out["stop_timeout"] = _seconds(raw["stopTimeout"])
    out["env"] = {str(e.get("name")): str(e.get("value", "")) for e in raw.get("environment") or []}
    out["secrets"] = {}
    for j, secret in enumerate(raw.get("secrets") or []):
        name, why = secret_name(str(secret.get("valueFrom", "")))
        if not name:
            errors.append(FieldError(f"{at}.secrets[{j}].valueFrom", why))
            continue
        if why:
            warnings.append(FieldError(f"{at}.secrets[{j}].valueFrom", why))
        out["secrets"][str(secret.get("name"))] = name
    if mode == "host":
        out["network_mode"] = "host"
    out["ports"] = _ports(raw, at, mode, warnings, errors)
    out["mounts"] = [
        {
            "volume": dns(str(m.get("sourceVolume", ""))),
            "path": m.get("containerPath"),
            "read_only": bool(m.get("readOnly", False)),
        }
        for m in raw.get("mountPoints") or []
    ]
    out["ulimits"] = {
        str(u.get("name")): {"soft": u.get("softLimit"), "hard": u.get("hardLimit")}
        for u in raw.get("ulimits") or []
    }
    out["sysctls"] = {
        str(s.get("namespace")): str(s.get("value")) for s in raw.get("systemControls") or []
    }
    out["extra_hosts"] = {
        str(h.get("hostname")): str(h.get("ipAddress")) for h in raw.get("extraHosts") or []
    }
    if raw.get("links"):
        warnings.append(FieldError(f"{at}.links", ECS_CONTAINER["links"].why))
    _linux(raw.get("linuxParameters") or {}, out, f"{at}.linuxParameters", warnings, errors)
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


def secret_name(value_from: str) -> tuple[str, str]:
    """The moorage secret an ECS `valueFrom` names, and a notice (or why there is none).

    SSM parameters (`arn:…:parameter/prod/db/password`, or a bare name) → their last path
    element; Secrets Manager ARNs (`arn:…:secret:prod/db-creds-AbC123[:json-key:…]`) → the
    secret's name without AWS's six-character suffix, with `-<json-key>` when a JSON key is
    picked (a moorage secret holds one value: store that key's value under this name)."""
    if ":secret:" in value_from:
        rest = value_from.split(":secret:", 1)[1].split(":")
        base = re.sub(r"-[A-Za-z0-9]{6}$", "", rest[0]).rsplit("/", 1)[-1]
        key = rest[1] if len(rest) > 1 else ""
        name = dns(f"{base}-{key}" if key else base) if base else ""
        if not name:
            return "", f"{value_from!r} names no secret"
        if key:
            return name, f"the JSON key {key!r} of {base}: store its value as secret {name!r}"
        return name, ""
    name = re.split(r"[:/]", value_from)[-1]
    return (name, "") if name else ("", f"{value_from!r} names no secret")


def _ports(
    raw: dict[str, Any], at: str, mode: str, warnings: list[FieldError], errors: list[FieldError]
) -> list[dict[str, Any]]:
    ports = []
    for j, mapping in enumerate(raw.get("portMappings") or []):
        inside = mapping.get("containerPort")
        if inside is None:
            errors.append(FieldError(f"{at}.portMappings[{j}].containerPort", "is required"))
            continue
        port: dict[str, Any] = {
            "name": dns(str(mapping.get("name") or f"p{inside}")),
            "container": inside,
            "protocol": mapping.get("protocol", "tcp"),
        }
        if mode == "awsvpc":  # hostPort is containerPort there: here it is a dynamic port
            warnings.append(
                FieldError(
                    f"{at}.portMappings[{j}]",
                    f"awsvpc: container port {inside} → a dynamic host port on its node; peers "
                    "reach it by DNS (<service>.service.moorage, SRV) or the catalog",
                )
            )
        elif mapping.get("hostPort"):
            port["host"] = mapping["hostPort"]
        ports.append(port)
    return ports


def _linux(
    raw: dict[str, Any],
    out: dict[str, Any],
    at: str,
    warnings: list[FieldError],
    errors: list[FieldError],
) -> None:
    account_keys(raw, "ecs-linux-parameters", HANDLED_LINUX, at, warnings, errors, UNKNOWN)
    capabilities = raw.get("capabilities") or {}
    out["cap_add"] = list(capabilities.get("add") or [])
    out["cap_drop"] = list(capabilities.get("drop") or [])
    if "initProcessEnabled" in raw:
        out["init"] = bool(raw["initProcessEnabled"])
    if raw.get("sharedMemorySize"):
        out["shm_size"] = f"{int(raw['sharedMemorySize'])}MiB"
    out["tmpfs"] = [
        {"path": t.get("containerPath"), **({"size": f"{t['size']}MiB"} if t.get("size") else {})}
        for t in raw.get("tmpfs") or []
    ]


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
        efs = volume.get("efsVolumeConfiguration")
        if efs:
            spec |= {"scope": "shared", "driver": "shared", "autoprovision": True}
            warnings.append(
                FieldError(
                    f"{at}.efsVolumeConfiguration",
                    "EFS is served by moorage's shared volume driver: one writer at a time, "
                    "re-attached where the task runs (docs/volumes.md)",
                )
            )
        host = volume.get("host")
        if host and host.get("sourcePath"):
            spec["host_path"] = host.get("sourcePath")
        for key in volume:
            if key not in ("name", "dockerVolumeConfiguration", "host", "efsVolumeConfiguration"):
                warnings.append(FieldError(f"{at}.{key}", "not supported, ignored"))
        volumes[dns(str(volume["name"]))] = spec
    return volumes
