"""docker-compose files → moorage specs: one service per compose service.

Every key is looked up in `import_keys` (the table docs/formats.md shows): mapped keys become
spec fields here, ignored keys are warnings naming the key and the docs table, refused keys
are errors saying what to do instead. `build:` becomes a `Build` the CLI runs before deploying
(the spec names the image it will push); bind mounts of paths under the compose directory
become configs, absolute paths host volumes. `depends_on` is returned as an order (and
conditions) for `moorage compose up`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from . import compose_parts as parts
from .errors import FieldError, SpecError
from .import_keys import COMPOSE_SERVICE, COMPOSE_TOP, docs_ref
from .service import ServiceSpec
from .spec import validate_body

UNKNOWN = "not a compose key, ignored"
CONDITIONS = {"service_started": "started", "service_healthy": "healthy"}
HANDLED_TOP = {"services", "volumes", "configs", "secrets", "name", "networks", "version"}
HANDLED_DEPLOY = {"replicas", "resources", "restart_policy"}
HANDLED_SERVICE = {
    *("image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose"),
    *("healthcheck", "depends_on", "deploy", "restart", "volumes", "secrets", "configs"),
    *("working_dir", "user", "labels", "stop_grace_period", "stop_signal", "cap_add"),
    *("cap_drop", "ulimits", "sysctls", "shm_size", "tmpfs", "init", "extra_hosts"),
    *("read_only", "privileged", "network_mode", "networks", "mem_limit", "mem_reservation"),
    *("cpus", "cpu_shares", "scale", "links"),
}
COPIED = ("cap_add", "cap_drop", "ulimits", "stop_signal", "init", "read_only", "privileged")


@dataclass(frozen=True)
class Build:
    """A compose `build:`: what the CLI builds, and the image name the spec already uses."""

    service: str  # the compose service
    repository: str  # `<project>-<service>`: the image's name in the registry
    context: Path
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    image: str = ""
    named: bool = False  # the compose file gave `image:` too (--no-build uses it as it is)


@dataclass
class Compose:
    specs: list[ServiceSpec]
    depends: dict[str, dict[str, str]]
    warnings: list[FieldError]
    builds: list[Build]
    project: str


ImageNamer = Callable[[Build], str]


def default_image(build: Build) -> str:
    """Without a registry or a tag yet (validation): `<project>-<service>:latest`."""
    return f"{build.repository}:latest"


def from_compose(text: str, base_dir: Path, image_for: ImageNamer | None = None) -> Compose:
    """Specs in dependency order, each service's dependencies {service: condition}, the
    builds to run first, warnings."""
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
    parts.account_keys(data, "compose-top", HANDLED_TOP, "", warnings, errors, UNKNOWN)
    if "networks" in data:
        warnings.append(FieldError("networks", COMPOSE_TOP["networks"].why))
    project = parts.dns(str(data.get("name") or base_dir.resolve().name))
    context = _Context(
        base_dir,
        project,
        data.get("volumes") or {},
        parts.top_configs(data.get("configs"), base_dir, errors),
        image_for or default_image,
        warnings,
        errors,
    )
    bodies: dict[str, dict[str, Any]] = {}
    depends: dict[str, dict[str, str]] = {}
    for name, raw in data["services"].items():
        at = f"services.{name}"
        if not isinstance(raw, dict):
            errors.append(FieldError(at, "must be a mapping"))
            continue
        body, deps = context.service(str(name), raw, at)
        bodies[parts.dns(str(name))] = body
        depends[parts.dns(str(name))] = deps
    for name, deps in depends.items():
        for dep in deps:
            if dep not in bodies:
                errors.append(FieldError(f"services.{name}.depends_on", f"unknown service {dep!r}"))
    if errors:
        raise SpecError(errors)
    specs, spec_errors = [], []
    for name in _order(depends):
        try:
            specs.append(validate_body(ServiceSpec, bodies[name], prefix=f"services.{name}"))
        except SpecError as exc:
            spec_errors.extend(exc.errors)
    if spec_errors:
        raise SpecError(spec_errors)
    return Compose(specs, depends, warnings, context.builds, project)


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


@dataclass
class _Context:
    base_dir: Path
    project: str
    named_volumes: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    image_for: ImageNamer
    warnings: list[FieldError]
    errors: list[FieldError]
    builds: list[Build] = field(default_factory=list)

    def service(
        self, name: str, raw: dict[str, Any], at: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        warnings, errors = self.warnings, self.errors
        parts.account_keys(raw, "compose-service", HANDLED_SERVICE, at, warnings, errors, UNKNOWN)
        container: dict[str, Any] = {"name": "app"}
        body: dict[str, Any] = {"service": parts.dns(name), "containers": [container]}
        if "build" in raw:
            container["image"] = self.build(parts.dns(name), raw["build"], raw.get("image"), at)
        elif "image" in raw:
            container["image"] = str(raw["image"])
        else:
            errors.append(FieldError(f"{at}.image", "is required (or build)"))
        for source in ("command", "entrypoint"):
            if raw.get(source) is not None:
                value = raw[source]
                container[source] = ["sh", "-c", value] if isinstance(value, str) else list(value)
        for source, target in (("working_dir", "workdir"), ("user", "user")):
            if source in raw:
                container[target] = str(raw[source])
        for key in COPIED:
            if key in raw:
                container[key] = raw[key]
        if "stop_grace_period" in raw:
            container["stop_timeout"] = parts.seconds(raw["stop_grace_period"])
        if "sysctls" in raw:
            container["sysctls"] = parts.listing(raw["sysctls"])
        if "shm_size" in raw:
            size = parts.size_bytes(raw["shm_size"], f"{at}.shm_size", errors)
            container["shm_size"] = f"{size}B" if size else None
        if "extra_hosts" in raw:
            container["extra_hosts"] = parts.extra_hosts(raw["extra_hosts"])
        tmpfs = parts.tmpfs(raw.get("tmpfs"), at, errors)
        container["labels"] = parts.listing(raw.get("labels"))
        container["env"] = self.env(raw, at)
        container["ports"] = parts.ports(raw, at, errors)
        self.network(raw, container, at)
        self.health(raw.get("healthcheck"), container, at)
        self.secrets(raw, container, at)
        body["volumes"], body["configs"] = {}, {}
        self.mounts(raw, container, body, tmpfs, at)
        self.service_configs(raw, container, body, at)
        container["tmpfs"] = tmpfs
        self.resources(raw, container, body, at)
        deps: dict[str, str] = {}
        raw_deps = raw.get("depends_on") or {}
        for dep in raw_deps if isinstance(raw_deps, list) else raw_deps.items():
            dep_name, options = (dep, {}) if isinstance(dep, str) else dep
            condition = (options or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                errors.append(
                    FieldError(
                        f"{at}.depends_on.{dep_name}.condition",
                        f"{condition!r} is not supported (service_started or service_healthy)",
                    )
                )
                continue
            deps[parts.dns(str(dep_name))] = CONDITIONS[condition]
        return body, deps

    def build(self, service: str, raw: Any, image: Any, at: str) -> str:
        options = {"context": raw} if isinstance(raw, str) else dict(raw or {})
        context = self.base_dir / str(options.get("context") or ".")
        if not context.is_dir():
            self.errors.append(FieldError(f"{at}.build.context", f"{context} is not a directory"))
        for key in options:
            if key not in ("context", "dockerfile", "args", "target"):
                self.warnings.append(
                    FieldError(
                        f"{at}.build.{key}",
                        "not supported, ignored: moorage builds context, dockerfile, args and "
                        f"target (see {docs_ref('compose-service', 'build')})",
                    )
                )
        plan = Build(
            service,
            f"{self.project}-{service}",
            context,
            str(options.get("dockerfile") or "Dockerfile"),
            parts.listing(options.get("args")),
            str(options["target"]) if options.get("target") else None,
        )
        name = str(image) if image else self.image_for(plan)
        plan = replace(plan, image=name, named=bool(image))
        self.builds.append(plan)
        return name

    def env(self, raw: dict[str, Any], at: str) -> dict[str, str]:
        env: dict[str, str] = {}
        files = raw.get("env_file") or []
        for index, item in enumerate([files] if isinstance(files, str) else files):
            required = not isinstance(item, dict) or item.get("required", True)
            path = self.base_dir / str(item if isinstance(item, str) else item.get("path", ""))
            try:
                for line in path.read_text().splitlines():
                    line = line.strip()
                    if line and not line.startswith("#") and "=" in line:
                        key, _, value = line.removeprefix("export ").partition("=")
                        env[key.strip()] = value.strip().strip("'\"")
            except OSError as exc:
                if required:
                    self.errors.append(
                        FieldError(f"{at}.env_file[{index}]", f"cannot read {path}: {exc.strerror}")
                    )
        env.update(parts.listing(raw.get("environment")))
        return env

    def network(self, raw: dict[str, Any], container: dict[str, Any], at: str) -> None:
        mode = str(raw.get("network_mode", "bridge"))
        if mode == "host":
            container["network_mode"] = "host"
        elif mode not in ("bridge", "default"):
            self.errors.append(
                FieldError(
                    f"{at}.network_mode",
                    f"{mode!r} is not supported: bridge (the default) or host",
                )
            )
        if "networks" in raw or "links" in raw:
            key = "networks" if "networks" in raw else "links"
            self.warnings.append(FieldError(f"{at}.{key}", COMPOSE_SERVICE[key].why))
        for port in container["ports"]:
            if "host" not in port and mode != "host":
                self.warnings.append(
                    FieldError(
                        f"{at}.ports",
                        f"container port {port['container']} → a dynamic host port on its "
                        f"node; peers reach it by DNS ({container_service(at)}.service.moorage, "
                        "SRV) or the catalog",
                    )
                )

    def health(self, health: Any, container: dict[str, Any], at: str) -> None:
        if not isinstance(health, dict) or health.get("disable"):
            return
        test = health.get("test")
        if isinstance(test, list) and test[:1] == ["NONE"]:
            return
        if isinstance(test, str):
            command = ["sh", "-c", test]
        elif isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
            command = ["sh", "-c", " ".join(map(str, test[1:]))]
        elif isinstance(test, list) and test[:1] == ["CMD"]:
            command = [str(t) for t in test[1:]]
        else:
            self.errors.append(
                FieldError(f"{at}.healthcheck.test", "must be CMD, CMD-SHELL, NONE or a string")
            )
            return
        check: dict[str, Any] = {"command": command}
        for key in ("interval", "timeout", "start_period"):
            if key in health:
                check[key] = parts.seconds(health[key])
        if "retries" in health:
            check["retries"] = health["retries"]
        container["health"] = check

    def secrets(self, raw: dict[str, Any], container: dict[str, Any], at: str) -> None:
        secrets = raw.get("secrets") or []
        if secrets:
            self.warnings.append(FieldError(f"{at}.secrets", COMPOSE_SERVICE["secrets"].why))
        names = [str(s if isinstance(s, str) else s.get("source")) for s in secrets]
        container["secrets"] = {re.sub(r"\W", "_", n).upper(): n for n in names}

    def mounts(
        self,
        raw: dict[str, Any],
        container: dict[str, Any],
        body: dict[str, Any],
        tmpfs: list[dict[str, Any]],
        at: str,
    ) -> None:
        mounts, configs = [], []
        for index, item in enumerate(raw.get("volumes") or []):
            where = f"{at}.volumes[{index}]"
            kind, source, target, read_only = _mount(item, where, self.warnings)
            if not target:
                self.errors.append(FieldError(where, "needs a target path in the container"))
            elif kind == "tmpfs":
                tmpfs.append({"path": target})
            elif kind == "npipe" or kind == "cluster" or kind == "image":
                self.errors.append(FieldError(where, f"{kind} mounts are not supported"))
            elif kind == "volume" and not source:  # an anonymous volume: the task's own
                key = f"anon-{len(body['volumes'])}"
                body["volumes"][key] = {}
                mounts.append({"volume": key, "path": target, "read_only": read_only})
            elif kind == "volume":
                mounts.append(self.named(source, target, read_only, body))
            elif source.startswith("~"):
                self.errors.append(
                    FieldError(where, f"{source}: ~ is the CLI user's home; give a path")
                )
            elif source.startswith("/"):
                key = f"host-{parts.dns(Path(source).name or 'root')}"
                key = _unique(key, body["volumes"], {"host_path": source})
                body["volumes"][key] = {"host_path": source}
                mounts.append({"volume": key, "path": target, "read_only": read_only})
            else:
                config = parts.read_config(source, self.base_dir, where, self.errors)
                if config is not None:
                    key = _unique(parts.dns(Path(source).name), body["configs"], config)
                    body["configs"][key] = config
                    configs.append({"config": key, "path": target, "read_only": read_only})
        container["mounts"], container["configs"] = mounts, configs

    def named(
        self, source: str, target: str, read_only: bool, body: dict[str, Any]
    ) -> dict[str, Any]:
        options = self.named_volumes.get(source) or {}
        plugin = str(options.get("driver") or "local")
        # A named volume outlives the containers: a cluster volume (scope shared). Docker's
        # local driver keeps it on one node; any other driver is served by the shared driver.
        volume: dict[str, Any] = {"scope": "shared", "autoprovision": True}
        if plugin != "local":
            volume |= {"driver": "shared", "plugin": plugin}
            self.warnings.append(
                FieldError(
                    f"volumes.{source}.driver",
                    f"{plugin} is served by moorage's shared volume driver (docs/volumes.md)",
                )
            )
        body["volumes"][parts.dns(source)] = volume
        return {"volume": parts.dns(source), "path": target, "read_only": read_only}

    def service_configs(
        self, raw: dict[str, Any], container: dict[str, Any], body: dict[str, Any], at: str
    ) -> None:
        for index, item in enumerate(raw.get("configs") or []):
            source = str(item if isinstance(item, str) else item.get("source", ""))
            target = f"/{source}" if isinstance(item, str) else str(item.get("target") or "")
            if source not in self.configs:
                self.errors.append(
                    FieldError(f"{at}.configs[{index}]", f"unknown config {source!r}")
                )
                continue
            key = parts.dns(source)
            body["configs"][key] = self.configs[source]
            path = target if target.startswith("/") else f"/{target or source}"
            container["configs"].append({"config": key, "path": path})

    def resources(
        self, raw: dict[str, Any], container: dict[str, Any], body: dict[str, Any], at: str
    ) -> None:
        errors = self.errors
        deploy = raw.get("deploy") or {}
        where = f"{at}.deploy"
        parts.account_keys(deploy, "compose-deploy", HANDLED_DEPLOY, where, *_wl(self), UNKNOWN)
        if "replicas" in deploy or "scale" in raw:
            body["count"] = deploy.get("replicas", raw.get("scale"))
        resources = deploy.get("resources") or {}
        limits, reservations = resources.get("limits") or {}, resources.get("reservations") or {}
        cpus = limits.get("cpus", raw.get("cpus"))
        if cpus is not None:
            container["cpu"] = max(1, round(float(cpus) * 1024))
        elif "cpu_shares" in raw:
            container["cpu"] = int(raw["cpu_shares"])
        memory = limits.get("memory", raw.get("mem_limit"))
        if memory is not None:
            container["memory"] = parts.mib(memory, f"{at}.deploy.resources.limits.memory", errors)
        reserve = reservations.get("memory", raw.get("mem_reservation"))
        if reserve is not None:
            field_ = f"{at}.deploy.resources.reservations.memory"
            container["memory_reservation"] = parts.mib(reserve, field_, errors)
            if memory is None:  # a reservation alone: the limit is at least that
                container["memory"] = max(container["memory_reservation"] or 1, 128)
        restart = str(raw.get("restart", "")) or None
        policy = deploy.get("restart_policy") or {}
        if restart == "no" or policy.get("condition") == "none":
            body["restart"] = {"attempts": 0}
        elif restart is not None and restart.startswith("on-failure:"):
            body["restart"] = {"attempts": int(restart.partition(":")[2] or 3)}
        elif restart not in (None, "always", "on-failure", "unless-stopped"):
            errors.append(FieldError(f"{at}.restart", f"{restart!r} is not a restart policy"))
        if "max_attempts" in policy:
            body["restart"] = {"attempts": int(policy["max_attempts"])}
        if "delay" in policy:
            body.setdefault("restart", {})["delay"] = parts.seconds(policy["delay"])


def _wl(context: _Context) -> tuple[list[FieldError], list[FieldError]]:
    return context.warnings, context.errors


def container_service(at: str) -> str:
    return parts.dns(at.removeprefix("services."))


def _unique(key: str, taken: dict[str, Any], value: Any) -> str:
    """key, or key-2, key-3…: the first free name (or the one holding the same value)."""
    candidate, number = key, 1
    while candidate in taken and taken[candidate] != value:
        number += 1
        candidate = f"{key[:60]}-{number}"
    return candidate


def _mount(item: Any, at: str, warnings: list[FieldError]) -> tuple[str, str, str, bool]:
    """(type, source, target, read-only) of a `volumes:` entry, short or long syntax."""
    if isinstance(item, dict):
        kind = str(item.get("type", "volume"))
        source, target = str(item.get("source") or ""), str(item.get("target") or "")
        for key in item:
            if key not in ("type", "source", "target", "read_only", "bind", "volume", "tmpfs"):
                warnings.append(FieldError(f"{at}.{key}", "not supported, ignored"))
        return kind, source, target, bool(item.get("read_only", False))
    text = str(item)
    source, sep, rest = text.partition(":")
    if not sep:  # `/data`: an anonymous volume at that path
        return "volume", "", source, False
    target, _, mode = rest.partition(":")
    options = [o for o in mode.split(",") if o]
    for option in options:
        if option not in ("ro", "rw", "z", "Z", "cached", "delegated", "consistent"):
            warnings.append(FieldError(at, f"mount option {option!r} is not supported, ignored"))
    kind = "bind" if parts.is_bind(source) else "volume"
    return kind, source, target, "ro" in options
