"""docker-compose files → moorage specs: one service per compose service.

Keys moorage does not use are warnings naming the key, never silently dropped; `build:` and keys
whose absence would change behaviour are errors. `depends_on` between compose services is
returned as an order (and conditions) for `moorage compose up`. See docs/formats.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import FieldError, SpecError
from .service import ServiceSpec
from .spec import validate_body

SERVICE_KEYS = {
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "healthcheck",
    "depends_on",
    "deploy",
    "restart",
    "volumes",
    "secrets",
    "working_dir",
    "user",
    "labels",
    "stop_grace_period",
    "container_name",
}
REFUSED = {
    "build": "build the image and push it to a registry first, then give its `image:`",
    "network_mode": "network_mode is not supported (ports are mapped per task)",
    "privileged": "privileged containers are not supported",
    "volumes_from": "volumes_from is not supported; use named volumes",
    "links": "links are not supported; use PORT_<NAME> variables",
    "pid": "pid namespaces are not supported",
    "ipc": "ipc namespaces are not supported",
    "cap_add": "capabilities are not supported",
    "devices": "devices are not supported",
}
TOP_KEYS = {"services", "volumes", "secrets", "version", "name"}
CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
}
UNITS = {"b": 1 / 1048576, "k": 1 / 1024, "kb": 1 / 1024, "m": 1, "mb": 1, "g": 1024, "gb": 1024}


def _dns(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "app"


def _mib(value: Any, field: str, errors: list[FieldError]) -> int | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = (match.group(2).lower() if match else "") or "b"
    if match is None or unit not in UNITS:
        errors.append(FieldError(field, f"{value!r} is not a size such as 512M or 1G"))
        return None
    return max(1, round(float(match.group(1)) * UNITS[unit]))


def _seconds(value: Any) -> Any:
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return f"{text}s"
    return text.replace("us", "ms") if text.endswith("us") else text


def from_compose(
    text: str, base_dir: Path
) -> tuple[list[ServiceSpec], dict[str, dict[str, str]], list[FieldError]]:
    """Specs in dependency order, each service's dependencies {service: condition}, warnings."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "yaml"
        raise SpecError(
            [FieldError(where, f"YAML syntax error: {getattr(exc, 'problem', exc)}")]
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise SpecError([FieldError("services", "a compose file needs a `services:` mapping")])
    warnings: list[FieldError] = []
    errors: list[FieldError] = []
    for key in data:
        if key not in TOP_KEYS:
            warnings.append(FieldError(key, "not supported, ignored"))
    named_volumes = data.get("volumes") or {}
    bodies: dict[str, dict[str, Any]] = {}
    depends: dict[str, dict[str, str]] = {}
    for name, raw in data["services"].items():
        at = f"services.{name}"
        if not isinstance(raw, dict):
            errors.append(FieldError(at, "must be a mapping"))
            continue
        body, deps = _service(str(name), raw, at, base_dir, named_volumes, warnings, errors)
        bodies[_dns(str(name))] = body
        depends[_dns(str(name))] = deps
    for name, deps in depends.items():
        for dep in deps:
            if dep not in bodies:
                errors.append(FieldError(f"services.{name}.depends_on", f"unknown service {dep!r}"))
    if errors:
        raise SpecError(errors)
    order = _order(depends)
    specs, spec_errors = [], []
    for name in order:
        try:
            specs.append(validate_body(ServiceSpec, bodies[name], prefix=f"services.{name}"))
        except SpecError as exc:
            spec_errors.extend(exc.errors)
    if spec_errors:
        raise SpecError(spec_errors)
    return specs, depends, warnings


def _order(depends: dict[str, dict[str, str]]) -> list[str]:
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise SpecError([FieldError(f"services.{name}.depends_on", "forms a cycle")])
        visiting.add(name)
        for dep in depends.get(name, {}):
            visit(dep)
        visiting.discard(name)
        done.append(name)

    for name in depends:
        visit(name)
    return done


def _service(
    name: str,
    raw: dict[str, Any],
    at: str,
    base_dir: Path,
    named_volumes: dict[str, Any],
    warnings: list[FieldError],
    errors: list[FieldError],
) -> tuple[dict[str, Any], dict[str, str]]:
    for key in raw:
        if key in REFUSED:
            errors.append(FieldError(f"{at}.{key}", REFUSED[key]))
        elif key not in SERVICE_KEYS:
            warnings.append(FieldError(f"{at}.{key}", "not supported, ignored"))
    container: dict[str, Any] = {"name": "app"}
    if "image" in raw:
        container["image"] = raw["image"]
    elif "build" not in raw:
        errors.append(FieldError(f"{at}.image", "is required"))
    for source, target in (("command", "command"), ("entrypoint", "entrypoint")):
        if source in raw:
            value = raw[source]
            container[target] = ["sh", "-c", value] if isinstance(value, str) else list(value)
    if "working_dir" in raw:
        container["workdir"] = raw["working_dir"]
    if "user" in raw:
        container["user"] = str(raw["user"])
    if "stop_grace_period" in raw:
        container["stop_timeout"] = _seconds(raw["stop_grace_period"])
    labels = raw.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(_pair(str(item)) for item in labels)
    container["labels"] = {str(k): str(v) for k, v in labels.items()}
    env: dict[str, str] = {}
    files = raw.get("env_file") or []
    for index, file in enumerate([files] if isinstance(files, str) else files):
        path = base_dir / str(file if isinstance(file, str) else file.get("path", ""))
        try:
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, value = line.partition("=")
                    env[key.strip()] = value.strip().strip("'\"")
        except OSError as exc:
            errors.append(
                FieldError(f"{at}.env_file[{index}]", f"cannot read {path}: {exc.strerror}")
            )
    environment = raw.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(_pair(item) for item in map(str, environment))
    env.update({str(k): "" if v is None else str(v) for k, v in environment.items()})
    container["env"] = env
    container["ports"] = _ports(raw, at, errors)
    health = raw.get("healthcheck")
    if isinstance(health, dict) and not health.get("disable"):
        test = health.get("test")
        if isinstance(test, str):
            command = ["sh", "-c", test]
        elif isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
            command = ["sh", "-c", " ".join(test[1:])]
        elif isinstance(test, list) and test[:1] == ["CMD"]:
            command = [str(t) for t in test[1:]]
        else:
            command = []
            errors.append(
                FieldError(f"{at}.healthcheck.test", "must be CMD, CMD-SHELL or a string")
            )
        container["health"] = {"command": command}
        for key, target in (
            ("interval", "interval"),
            ("timeout", "timeout"),
            ("start_period", "start_period"),
        ):
            if key in health:
                container["health"][target] = _seconds(health[key])
        if "retries" in health:
            container["health"]["retries"] = health["retries"]
    secrets = raw.get("secrets") or []
    if secrets:
        warnings.append(
            FieldError(
                f"{at}.secrets",
                "compose mounts secrets as files; moorage sets them as "
                "environment variables (upper-cased names)",
            )
        )
    container["secrets"] = {
        re.sub(r"\W", "_", str(s if isinstance(s, str) else s.get("source"))).upper(): str(
            s if isinstance(s, str) else s.get("source")
        )
        for s in secrets
    }
    mounts, volumes = [], {}
    for index, item in enumerate(raw.get("volumes") or []):
        source, target, read_only = _mount(item, f"{at}.volumes[{index}]", warnings)
        if not target or source.startswith((".", "/", "~")):
            errors.append(
                FieldError(
                    f"{at}.volumes[{index}]", "only named volumes are supported (name:/path)"
                )
            )
            continue
        mounts.append({"volume": _dns(source), "path": target, "read_only": read_only})
        options = named_volumes.get(source) or {}
        plugin = str(options.get("driver") or "local")
        # A named volume outlives the containers: a cluster volume (scope shared). Docker's
        # local driver keeps it on one node; any other driver is served by the shared driver.
        volume: dict[str, Any] = {"scope": "shared", "autoprovision": True}
        if plugin != "local":
            volume |= {"driver": "shared", "plugin": plugin}
            warnings.append(
                FieldError(
                    f"volumes.{source}.driver",
                    f"{plugin} is served by moorage's shared volume driver (docs/volumes.md)",
                )
            )
        volumes[_dns(source)] = volume
    container["mounts"] = mounts
    deploy = raw.get("deploy") or {}
    body: dict[str, Any] = {"service": _dns(name), "containers": [container], "volumes": volumes}
    if "replicas" in deploy:
        body["count"] = deploy["replicas"]
    for key in deploy:
        if key not in ("replicas", "resources", "restart_policy"):
            warnings.append(FieldError(f"{at}.deploy.{key}", "not supported, ignored"))
    limits = (deploy.get("resources") or {}).get("limits") or {}
    reservations = (deploy.get("resources") or {}).get("reservations") or {}
    if "cpus" in limits:
        container["cpu"] = max(1, round(float(limits["cpus"]) * 1024))
    if "memory" in limits:
        container["memory"] = _mib(limits["memory"], f"{at}.deploy.resources.limits.memory", errors)
    if "memory" in reservations:
        container["memory_reservation"] = _mib(
            reservations["memory"], f"{at}.deploy.resources.reservations.memory", errors
        )
    restart = raw.get("restart")
    if restart == "no":
        body["restart"] = {"attempts": 0}
    elif restart not in (None, "always", "on-failure", "unless-stopped"):
        errors.append(FieldError(f"{at}.restart", f"{restart!r} is not a compose restart policy"))
    deps: dict[str, str] = {}
    raw_deps = raw.get("depends_on") or {}
    for dep in raw_deps if isinstance(raw_deps, list) else raw_deps.items():
        dep_name, options = (dep, {}) if isinstance(dep, str) else dep
        condition = (options or {}).get("condition", "service_started")
        if condition not in CONDITIONS:
            errors.append(
                FieldError(
                    f"{at}.depends_on.{dep_name}.condition", f"{condition!r} is not supported"
                )
            )
            continue
        deps[_dns(str(dep_name))] = CONDITIONS[condition]
    return body, deps


def _mount(item: Any, at: str, warnings: list[FieldError]) -> tuple[str, str, bool]:
    """(source, target, read-only) of a service's `volumes:` entry: `name:/path[:ro|rw]`, or
    the long syntax `{source, target, read_only}`. Other options are warnings."""
    if isinstance(item, dict):
        if item.get("type", "volume") != "volume":
            return "", "", False  # bind, tmpfs: refused as not a named volume
        source, target = str(item.get("source", "")), str(item.get("target", ""))
        for key in item:
            if key not in ("type", "source", "target", "read_only"):
                warnings.append(FieldError(f"{at}.{key}", "not supported, ignored"))
        return source, target, bool(item.get("read_only", False))
    source, _, rest = str(item).partition(":")
    target, _, mode = rest.partition(":")
    options = [o for o in mode.split(",") if o]
    for option in options:
        if option not in ("ro", "rw"):
            warnings.append(FieldError(at, f"mount option {option!r} is not supported, ignored"))
    return source, target, "ro" in options


def _pair(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def _ports(raw: dict[str, Any], at: str, errors: list[FieldError]) -> list[dict[str, Any]]:
    ports = []
    for index, item in enumerate(raw.get("ports") or []):
        if isinstance(item, dict):
            target, published, protocol = (
                item.get("target"),
                item.get("published"),
                item.get("protocol", "tcp"),
            )
        else:
            text, _, protocol = str(item).partition("/")
            parts = text.split(":")
            target = parts[-1]
            published = parts[-2] if len(parts) >= 2 else None
            protocol = protocol or "tcp"
        try:
            port: dict[str, Any] = {
                "name": f"p{int(str(target))}",
                "container": int(str(target)),
                "protocol": protocol,
            }
            if published not in (None, ""):
                port["host"] = int(str(published))
        except ValueError:
            errors.append(FieldError(f"{at}.ports[{index}]", f"{item!r} is not a port mapping"))
            continue
        ports.append(port)
    for item in raw.get("expose") or []:
        try:
            number = int(str(item).split("/")[0])
        except ValueError:
            errors.append(FieldError(f"{at}.expose", f"{item!r} is not a port"))
            continue
        if all(p["container"] != number for p in ports):
            ports.append({"name": f"p{number}", "container": number})
    return ports
