"""Pieces of a compose service that need the compose file's directory or careful parsing:
bind mounts (→ configs or host volumes), top-level configs, ports, sizes, tmpfs, extra hosts.

Every helper appends FieldErrors (errors or warnings) naming the compose field; none raises.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import CONFIG_BYTES, CONFIG_FILES
from .errors import FieldError
from .import_keys import TABLES, warning_text

UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}
MAX_PORT_RANGE = 100


def absent(value: Any) -> bool:
    """An empty value says nothing (`devices: []`, `privileged: false`): as if not given."""
    return value is None or value is False or value == "" or value == [] or value == {}


def account_keys(
    raw: dict[str, Any],
    table: str,
    handled: set[str],
    at: str,
    warnings: list[FieldError],
    errors: list[FieldError],
    unknown: str,
) -> None:
    """Every key of `raw` against its import table (import_keys, docs/formats.md): refused keys
    are errors, ignored ones warnings naming the docs table; mapped keys are the caller's
    (`handled`). Compose's `x-*` extension fields and empty values are skipped."""
    for key, value in raw.items():
        if str(key).startswith("x-") or absent(value):
            continue
        where = f"{at}.{key}" if at else str(key)
        entry = TABLES[table].get(str(key))
        if entry is None:
            warnings.append(FieldError(where, unknown))
        elif entry.treatment == "refused":
            errors.append(FieldError(where, warning_text(table, str(key))))
        elif entry.treatment == "ignored" or key not in handled:
            warnings.append(FieldError(where, warning_text(table, str(key))))


def dns(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-") or "app"


def size_bytes(value: Any, field: str, errors: list[FieldError]) -> int | None:
    """`512m`, `1g`, `1048576` (bytes), as compose writes sizes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = (match.group(2).lower() if match else "") or "b"
    if match is None or unit not in UNITS:
        errors.append(FieldError(field, f"{value!r} is not a size such as 512m or 1g"))
        return None
    return max(1, round(float(match.group(1)) * UNITS[unit]))


def mib(value: Any, field: str, errors: list[FieldError]) -> int | None:
    size = size_bytes(value, field, errors)
    return None if size is None else max(1, -(-size // 1048576))


def seconds(value: Any) -> Any:
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return f"{text}s"
    return text.replace("us", "ms") if text.endswith("us") else text


def pair(item: str, separators: str = "=") -> tuple[str, str]:
    for sep in separators:
        key, found, value = item.partition(sep)
        if found:
            return key.strip(), value.strip()
    return item.strip(), ""


# ---- bind mounts ---------------------------------------------------------------------------
@dataclass
class Bind:
    """A compose bind mount: a config (under the compose directory) or a host volume."""

    source: str
    target: str
    read_only: bool


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "/" in source


def read_config(
    source: str, base_dir: Path, at: str, errors: list[FieldError]
) -> dict[str, Any] | None:
    """A file or directory under the compose directory as a config body ({text|data|files})."""
    base = base_dir.resolve()
    path = (base_dir / source).resolve()
    if path != base and base not in path.parents:
        errors.append(
            FieldError(
                at,
                f"{source} is outside the compose file's directory: only files under it "
                "become configs (use an absolute path for a host volume)",
            )
        )
        return None
    if not path.exists():
        errors.append(FieldError(at, f"{source} does not exist (a config is read at import)"))
        return None
    try:
        if path.is_file():
            return _file_body(path.read_bytes())
        files: dict[str, str] = {}
        total = 0
        for file in sorted(path.rglob("*")):
            real = file.resolve()
            if base not in real.parents:
                errors.append(FieldError(at, f"{file} leads out of the compose directory"))
                return None
            if not file.is_file():
                continue
            data = file.read_bytes()
            total += len(data)
            if total > CONFIG_BYTES or len(files) >= CONFIG_FILES:
                errors.append(
                    FieldError(
                        at,
                        f"{source} holds more than {CONFIG_FILES} files or 1 MiB: configs "
                        "travel with every task; bake it into the image or use a volume",
                    )
                )
                return None
            files[file.relative_to(path).as_posix()] = base64.b64encode(data).decode()
        return {"files": files}
    except OSError as exc:
        errors.append(FieldError(at, f"cannot read {source}: {exc.strerror}"))
        return None


def _file_body(data: bytes) -> dict[str, Any]:
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode()}


def top_configs(raw: Any, base_dir: Path, errors: list[FieldError]) -> dict[str, dict[str, Any]]:
    """Compose's top-level `configs:` → config bodies by name."""
    configs: dict[str, dict[str, Any]] = {}
    if not isinstance(raw, dict):
        return configs
    for name, options in raw.items():
        at = f"configs.{name}"
        options = options or {}
        if options.get("external"):
            errors.append(FieldError(f"{at}.external", "external configs live in a swarm"))
        elif "file" in options:
            body = read_config(str(options["file"]), base_dir, f"{at}.file", errors)
            if body is not None:
                configs[str(name)] = body
        elif "content" in options:
            configs[str(name)] = {"text": str(options["content"])}
        elif "environment" in options:
            value = os.environ.get(str(options["environment"]))
            if value is None:
                errors.append(
                    FieldError(f"{at}.environment", f"${options['environment']} is not set")
                )
            else:
                configs[str(name)] = {"text": value}
        else:
            errors.append(FieldError(at, "needs file, content or environment"))
    return configs


# ---- ports, tmpfs, hosts -------------------------------------------------------------------
def _range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    first, last = int(low), int(high or low)
    if last < first or last - first >= MAX_PORT_RANGE:
        raise ValueError(text)
    return list(range(first, last + 1))


def ports(raw: dict[str, Any], at: str, errors: list[FieldError]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, item in enumerate(raw.get("ports") or []):
        try:
            if isinstance(item, dict):
                targets = _range(str(item["target"]))
                published = str(item.get("published") or "")
                protocol = str(item.get("protocol", "tcp"))
            else:
                text, _, protocol = str(item).partition("/")
                parts = text.rsplit(":", 2)
                targets = _range(parts[-1])
                published = parts[-2] if len(parts) >= 2 else ""
                protocol = protocol or "tcp"
            hosts = _range(published) if published else [None] * len(targets)
            if len(hosts) != len(targets):
                raise ValueError(item)
        except (ValueError, KeyError, TypeError):
            errors.append(FieldError(f"{at}.ports[{index}]", f"{item!r} is not a port mapping"))
            continue
        for target, host in zip(targets, hosts, strict=True):
            port: dict[str, Any] = {
                "name": f"p{target}" + ("" if protocol == "tcp" else f"-{protocol}"),
                "container": target,
                "protocol": protocol,
            }
            if host is not None:
                port["host"] = host
            if all(p["name"] != port["name"] for p in out):
                out.append(port)
    for item in raw.get("expose") or []:
        try:
            numbers = _range(str(item).split("/")[0])
        except ValueError:
            errors.append(FieldError(f"{at}.expose", f"{item!r} is not a port"))
            continue
        for number in numbers:
            if all(p["container"] != number for p in out):
                out.append({"name": f"p{number}", "container": number})
    return out


def tmpfs(value: Any, at: str, errors: list[FieldError]) -> list[dict[str, Any]]:
    out = []
    for item in [value] if isinstance(value, str) else list(value or []):
        path, _, options = str(item).partition(":")
        entry: dict[str, Any] = {"path": path}
        for option in filter(None, options.split(",")):
            key, value_ = pair(option)
            if key == "size":
                size = size_bytes(value_, f"{at}.tmpfs", errors)
                if size is not None:
                    entry["size"] = f"{size}B"
            elif key == "mode":
                entry["mode"] = int(value_, 8)
        out.append(entry)
    return out


def extra_hosts(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    hosts = {}
    for item in value or []:
        host, address = pair(str(item), "=:")
        hosts[host] = address.strip("[]")
    return hosts


def listing(value: Any) -> dict[str, str]:
    """`[A=1, B]` or `{A: 1}` → {A: "1"} (labels, sysctls, environment)."""
    if isinstance(value, list):
        return dict(pair(str(item)) for item in value)
    return {str(k): "" if v is None else str(v) for k, v in (value or {}).items()}
