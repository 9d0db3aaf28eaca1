"""Spec files in the three formats moorage reads: its own YAML, ECS task definitions, compose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click
import yaml

from moorage.model import FieldError, ServiceSpec, SpecError, parse_specs
from moorage.model.compose import from_compose
from moorage.model.ecs import from_ecs

Format = Literal["moorage", "ecs", "compose"]
FORMATS = ("auto", "moorage", "ecs", "compose")


def detect(text: str) -> Format:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            return "moorage"
        if isinstance(data, list) or (isinstance(data, dict) and "containerDefinitions" in data):
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
) -> tuple[list[ServiceSpec], list[FieldError], dict[str, dict[str, str]]]:
    """Specs, warnings (what was not used) and compose dependencies, from any format."""
    kind = detect(text) if fmt == "auto" else fmt
    if kind == "ecs":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError([FieldError("file", f"not JSON: {exc}")]) from None
        spec, warnings = from_ecs(data, service, count)
        return [spec], warnings, {}
    if kind == "compose":
        specs, depends, warnings = from_compose(text, base_dir)
        return specs, warnings, depends
    return parse_specs(text), [], {}


def warn(warnings: list[FieldError]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
