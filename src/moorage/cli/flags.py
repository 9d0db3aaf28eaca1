"""Reading the daemons' flags: addresses, servers, the join token, intervals, retention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from moorage.model import FieldError, SpecError

if TYPE_CHECKING:
    from moorage.metrics.influx import InfluxConfig

MAX_METRICS_INTERVAL = 60.0  # two of them fit in exposition.STALE_AFTER


def parse_addr(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError([FieldError(field, f"must be HOST:PORT, got {value!r}")])
    return host or "127.0.0.1", int(port)


def parse_servers(values: tuple[str, ...]) -> list[str]:
    """`--server` values (repeated and/or comma-separated; HOST:PORT or https://HOST:PORT, the
    servers' cluster port) → https URLs, in order."""
    found = [v.strip().rstrip("/") for value in values for v in value.split(",") if v.strip()]
    urls = []
    for value in found:
        scheme, sep, rest = value.partition("://")
        if not sep:
            scheme, rest = "https", value
        host, colon, port = rest.rpartition(":")
        if scheme != "https" or not colon or not host or not port.isdigit():
            raise SpecError(
                [
                    FieldError(
                        "server",
                        f"must be HOST:PORT (or https://HOST:PORT) of a server's cluster port "
                        f"(--cluster-addr, 7072 by default; nodes speak mutual TLS), "
                        f"got {value!r}",
                    )
                ]
            )
        urls.append(f"https://{rest}")
    if not urls:
        raise SpecError([FieldError("server", "at least one server address is needed")])
    return list(dict.fromkeys(urls))


def read_token(token_file: str | None, token: str | None) -> str | None:
    """The join token from `--token-file` (or MOORAGE_TOKEN / the legacy `--token`)."""
    if token_file is not None:
        try:
            return Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise SpecError([FieldError("token-file", f"{token_file}: {exc.strerror}")]) from None
    return token


def parse_handlers(values: tuple[str, ...]) -> dict[str, str]:
    handlers: dict[str, str] = {}
    for item in values:
        name, sep, command = item.partition("=")
        if not sep or not name.strip() or not command.strip():
            raise SpecError([FieldError("event-handler", f"must be NAME=COMMAND, got {item!r}")])
        handlers[name.strip()] = command
    return handlers


def parse_attrs(values: tuple[str, ...]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError([FieldError("attr", f"must be key=value, got {item!r}")])
        attrs[key.strip()] = value.strip()
    return attrs


def parse_interval(value: str, field: str) -> float:
    """`--metrics-interval`: a duration, 0 (no collection) or 1s to 60s (/metrics leaves out
    series not refreshed for two minutes: a longer interval would empty it)."""
    from moorage.model.duration import parse_duration

    try:
        seconds = 0.0 if value.strip() == "0" else parse_duration(value)
    except ValueError as exc:
        raise SpecError([FieldError(field, str(exc))]) from None
    if 0 < seconds < 1 or seconds > MAX_METRICS_INTERVAL:
        raise SpecError([FieldError(field, "must be 0 (off) or between 1s and 60s")])
    return seconds


def parse_influx(url: str | None, buffer: int) -> InfluxConfig | None:
    from moorage.metrics.influx import InfluxConfig

    if url is None:
        return None
    try:
        return InfluxConfig(url, buffer=buffer)
    except ValueError as exc:
        raise SpecError([FieldError("influx-url", str(exc))]) from None


def rules_file(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).resolve()
    if not path.is_file():
        raise SpecError([FieldError("alert-rules", f"{value} is not a file")])
    return path


def parse_retention(raw: str, rollup: str) -> tuple[float, float]:
    """`--metrics-retention` and `--metrics-rollup-retention` → seconds (raw, rollups)."""
    from moorage.metrics.tsdb import TsdbConfig
    from moorage.model.duration import parse_duration

    errors, seconds = [], {}
    for field, value in (("metrics-retention", raw), ("metrics-rollup-retention", rollup)):
        try:
            seconds[field] = parse_duration(value)
        except ValueError as exc:
            errors.append(FieldError(field, str(exc)))
    if not errors:
        config = TsdbConfig(seconds["metrics-retention"], seconds["metrics-rollup-retention"])
        names = {"raw_retention": "metrics-retention"}
        names["rollup_retention"] = "metrics-rollup-retention"
        errors = [FieldError(names[k], m) for k, m in config.problems().items() if k in names]
    if errors:
        raise SpecError(errors)
    return seconds["metrics-retention"], seconds["metrics-rollup-retention"]


def node_access_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """What an operator lets this node's tasks use beyond their own container."""
    f = click.option(
        "--allow-docker-socket",
        is_flag=True,
        help="Let a --host-volume share the Docker socket (root on this node).",
    )(f)
    f = click.option(
        "--allow-privileged",
        is_flag=True,
        help="Run containers that ask for `privileged: true` (root on this node).",
    )(f)
    return click.option(
        "--host-volume",
        "host_volumes",
        multiple=True,
        metavar="NAME=PATH",
        help="Share a directory of this node with tasks that mount it or a path under it "
        "(repeatable).",
    )(f)
