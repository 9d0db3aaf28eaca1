"""Spec files in the three formats moorage reads: its own YAML, ECS task definitions, compose.

Whatever the format, `load` returns normalized specs, warnings (what was not used, or done
moorage's way), compose's dependency order, and the images to build first. Files a spec names
(`configs: {nginx: {file: ./nginx.conf}}`, compose bind mounts) are read here, relative to
the spec file: the server only ever receives content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click
import yaml

from moorage.model import FieldError, ServiceSpec, SpecError, parse_specs
from moorage.model.compose import Build, ImageNamer, from_compose
from moorage.model.compose_parts import read_config
from moorage.model.ecs import from_ecs
from moorage.model.spec import load_yaml_documents

Format = Literal["moorage", "ecs", "compose"]
FORMATS = ("auto", "moorage", "ecs", "compose")


@dataclass
class Loaded:
    kind: Format
    specs: list[ServiceSpec]
    warnings: list[FieldError] = field(default_factory=list)
    depends: dict[str, dict[str, str]] = field(default_factory=dict)
    builds: list[Build] = field(default_factory=list)
    text: str | None = None  # a moorage spec that names no files: sent as it is


def detect(text: str) -> Format:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            return "moorage"
        if isinstance(data, list) or (
            isinstance(data, dict) and ("containerDefinitions" in data or "taskDefinition" in data)
        ):
            return "ecs"
        return "moorage"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return "moorage"  # its parser reports the syntax error with line and column
    if isinstance(data, dict) and isinstance(data.get("services"), dict):
        return "compose"
    return "moorage"


def load(
    text: str,
    fmt: str,
    base_dir: Path,
    service: str | None = None,
    count: int | None = None,
    image_for: ImageNamer | None = None,
) -> Loaded:
    """Specs, warnings, compose dependencies and builds, from any format."""
    kind = detect(text) if fmt == "auto" else fmt
    if kind == "ecs":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError([FieldError("file", f"not JSON: {exc}")]) from None
        spec, warnings = from_ecs(data, service, count)
        return Loaded("ecs", [spec], warnings)
    if kind == "compose":
        loaded = from_compose(text, base_dir, image_for)
        return Loaded("compose", loaded.specs, loaded.warnings, loaded.depends, loaded.builds)
    resolved = resolve_files(text, base_dir)
    return Loaded("moorage", parse_specs(resolved or text), text=None if resolved else text)


def resolve_files(text: str, base_dir: Path) -> str | None:
    """A moorage spec whose configs say `file:` or `dir:`, with the content read in (as YAML
    text again); None when it names no files."""
    try:
        docs = load_yaml_documents(text)
    except SpecError:
        return None  # parse_specs reports it
    changed = False
    errors: list[FieldError] = []
    for index, doc in enumerate(docs):
        configs = doc.get("configs") if isinstance(doc, dict) else None
        if not isinstance(configs, dict):
            continue
        prefix = f"[{index}]." if len(docs) > 1 else ""
        for name, body in configs.items():
            if not isinstance(body, dict):
                continue
            for key in ("file", "dir"):
                if key in body:
                    at = f"{prefix}configs.{name}.{key}"
                    content = read_config(str(body[key]), base_dir, at, errors)
                    if key == "file" and content is not None and "files" in content:
                        errors.append(FieldError(at, f"{body[key]} is a directory: use dir:"))
                    if key == "dir" and content is not None and "files" not in content:
                        errors.append(FieldError(at, f"{body[key]} is a file: use file:"))
                    configs[name] = {
                        **{k: v for k, v in body.items() if k != key},
                        **(content or {}),
                    }
                    changed = True
    if errors:
        raise SpecError(errors)
    if not changed:
        return None
    return yaml.safe_dump_all(docs, sort_keys=False)


def dump(specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json", exclude_defaults=True) for s in specs]


def warn(warnings: list[FieldError]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
