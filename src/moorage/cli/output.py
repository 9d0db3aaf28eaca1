"""Rendering for humans (rich tables, imported lazily) and for scripts (`-o json`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(width=200 if not sys.stdout.isatty() else None).print(out)


def age(timestamp: float | None, now: float | None = None) -> str:
    if not timestamp:
        return "-"
    seconds = max(0, int((now or time.time()) - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def ports(mapping: dict[str, int]) -> str:
    return ",".join(f"{name}={port}" for name, port in sorted(mapping.items())) or "-"
