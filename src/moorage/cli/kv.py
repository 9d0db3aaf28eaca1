"""`moorage kv`: the Consul-compatible key/value store (get, put, rm, ls, watch)."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import click

from moorage.model import Conflict, FieldError, NotFound, SpecError

from .common import client, output_option
from .output import emit_json

WATCH_WAIT = 300.0  # seconds each blocking query may wait (Consul's default)


def _value(entry: dict[str, Any]) -> bytes:
    raw = entry.get("Value")
    return base64.b64decode(raw) if raw else b""


def _text(value: bytes) -> str:
    """A value for a line of text: itself when it is UTF-8, else its size."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return f"<{len(value)} bytes>"
    return (
        text if text.replace("\n", "").replace("\t", "").isprintable() else f"<{len(value)} bytes>"
    )


def _uint64(value: int | None, name: str) -> int | None:
    if value is not None and not 0 <= value < 1 << 64:
        raise SpecError([FieldError(name, f"must be an unsigned 64-bit integer, got {value}")])
    return value


@click.group()
def kv() -> None:
    """Key/value store with Consul's HTTP API (/v1/kv): configuration, feature flags."""


@kv.command(name="get")
@click.argument("key")
@output_option
@click.pass_context
def get(ctx: click.Context, key: str, output: str) -> None:
    """Print KEY's value (its raw bytes; `-o json`: Consul's entry, the value base64)."""
    with client(ctx) as api:
        entries, _index = api.kv_get(key)
    if not entries:
        raise NotFound(f"no key {key!r}")
    if output == "json":
        emit_json(entries[0])
        return
    value = _value(entries[0])
    sys.stdout.buffer.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@kv.command(name="put")
@click.argument("key")
@click.argument("value")
@click.option("--cas", type=int, help="Write only if KEY's ModifyIndex is N (0: only if absent).")
@click.option("--flags", type=int, help="Consul's Flags: an opaque unsigned 64-bit number.")
@click.pass_context
def put(ctx: click.Context, key: str, value: str, cas: int | None, flags: int | None) -> None:
    """Set KEY to VALUE (`-` reads the value from stdin, byte for byte)."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode()
    with client(ctx) as api:
        done, index = api.kv_put(key, data, cas=_uint64(cas, "cas"), flags=_uint64(flags, "flags"))
    if not done:
        why = "it exists" if cas == 0 else f"its ModifyIndex is not {cas}"
        raise Conflict(f"{key}: not written: {why} (index {index})")
    click.echo(f"{key}: written (index {index})")


@kv.command(name="rm")
@click.argument("key")
@click.option("--recurse", is_flag=True, help="Remove every key that starts with KEY.")
@click.option("--cas", type=int, help="Remove only if KEY's ModifyIndex is N.")
@click.pass_context
def remove(ctx: click.Context, key: str, recurse: bool, cas: int | None) -> None:
    """Remove KEY (a missing key is not an error, as in Consul)."""
    if recurse and cas is not None:
        raise click.UsageError("--cas does not combine with --recurse")
    with client(ctx) as api:
        done, index = api.kv_delete(key, recurse=recurse, cas=_uint64(cas, "cas"))
    if not done:
        raise Conflict(f"{key}: not removed: its ModifyIndex is not {cas} (index {index})")
    click.echo(f"{key}{'*' if recurse else ''}: removed")


@kv.command(name="ls")
@click.argument("prefix", default="")
@click.option("--recurse", is_flag=True, help="Every key under PREFIX, not one level of it.")
@output_option
@click.pass_context
def list_keys(ctx: click.Context, prefix: str, recurse: bool, output: str) -> None:
    """Keys under PREFIX, one level (folders end with `/`) unless --recurse."""
    with client(ctx) as api:
        keys = api.kv_keys(prefix, separator=None if recurse else "/")
    if output == "json":
        emit_json(keys)
        return
    for key in keys:
        click.echo(key)


@kv.command(name="watch")
@click.argument("key")
@click.option("--recurse", is_flag=True, help="Watch every key under KEY (a prefix).")
@output_option
@click.pass_context
def watch(ctx: click.Context, key: str, recurse: bool, output: str) -> None:
    """Print KEY's value now and again at each change, until Ctrl-C (blocking queries:
    only a write to KEY, or under it with --recurse, wakes this watch)."""
    index = 0
    try:
        with client(ctx) as api:
            while True:
                entries, found = api.kv_get(key, recurse=recurse, index=index, wait=WATCH_WAIT)
                if index == 0 or found != index:
                    _print_change(key, recurse, entries, found, output)
                index = found if found >= index else 0  # an index going back: read afresh
    except KeyboardInterrupt:
        return


def _print_change(
    key: str, recurse: bool, entries: list[dict[str, Any]], index: int, output: str
) -> None:
    if output == "json":
        click.echo(json.dumps({"index": index, "entries": entries}, sort_keys=True))
    elif recurse:
        click.echo(f"index {index}: {len(entries)} key(s) under {key!r}")
        for entry in entries:
            click.echo(f"  {entry['Key']} = {_text(_value(entry))}")
    elif entries:
        click.echo(f"index {index}: {_text(_value(entries[0]))}")
    else:
        click.echo(f"index {index}: (no key {key!r})")


COMMANDS = [kv]
