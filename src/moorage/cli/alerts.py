"""`moorage alerts` and `moorage silence`: alert instances, rules, notifiers and silences."""

from __future__ import annotations

import os
from typing import Any

import click

from moorage.model import FieldError, SpecError

from .common import client, output_option, read_spec_file
from .output import age, emit_json, table


def _labels(labels: dict[str, str]) -> str:
    shown = {k: v for k, v in sorted(labels.items()) if k not in ("alertname", "severity")}
    return ",".join(f"{k}={v}" for k, v in shown.items()) or "-"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _until(ts: float | None) -> str:
    import time

    if not ts:
        return "-"
    left = int(ts - time.time())
    return "now" if left <= 0 else f"in {left}s"


def _state(alert: dict[str, Any]) -> str:
    return str(alert["state"]) + (" (silenced)" if alert.get("silenced") else "")


@click.group(invoke_without_command=True)
@output_option
@click.pass_context
def alerts(ctx: click.Context, output: str) -> None:
    """Alert instances and failed notifications; `rules` and `notifiers` configure them."""
    if ctx.invoked_subcommand is not None:
        return
    with client(ctx) as api:
        data = api.alerts()
    if output == "json":
        emit_json(data)
        return
    rows = [
        (
            a["rule"],
            _state(a),
            a["labels"].get("severity", "-"),
            _labels(a["labels"]),
            age(a["since"]),
            _value(a.get("value")),
            age(a.get("last_notified")),
            a["annotations"].get("summary", ""),
        )
        for a in data["alerts"]
    ]
    if rows:
        columns = ["RULE", "STATE", "SEVERITY", "LABELS", "SINCE", "VALUE", "NOTIFIED", "SUMMARY"]
        table(columns, rows)
    else:
        click.echo("no alerts")
    failed = [g for g in data["notifications"] if g["failures"]]
    if failed:
        click.echo("\nfailed notifications (retried):")
        table(
            ["NOTIFIER", "GROUP", "FAILURES", "LAST ERROR", "FAILED", "NEXT TRY"],
            [
                (
                    g["notifier"],
                    g["group_key"],
                    g["failures"],
                    g["last_error"],
                    age(g.get("last_failure_at")),
                    _until(g.get("next_attempt_at")),
                )
                for g in failed
            ],
        )


@alerts.group()
def rules() -> None:
    """Alert rules: threshold, deadman, service_health, node_down, deployment_failed."""


@rules.command(name="apply")
@click.option("-f", "--file", "path", required=True, help="YAML or JSON rules file (- for stdin).")
@click.pass_context
def rules_apply(ctx: click.Context, path: str) -> None:
    """Create or replace the rules (and notifiers) in a file."""
    text = read_spec_file(path)
    with client(ctx) as api:
        applied = api.apply_alert_rules(text)
    for rule in applied:
        click.echo(f"rule {rule['name']} applied ({rule['kind']}, {rule['severity']})")


@rules.command(name="ls")
@output_option
@click.pass_context
def rules_ls(ctx: click.Context, output: str) -> None:
    """List the alert rules."""
    with client(ctx) as api:
        found = api.alert_rules()
    if output == "json":
        emit_json(found)
        return
    rows = [
        (
            r["name"],
            r["kind"],
            r["severity"],
            _condition(r),
            r["for"],
            ",".join(r["notify"]) or "all",
        )
        for r in found
    ]
    table(["NAME", "KIND", "SEVERITY", "CONDITION", "FOR", "NOTIFY"], rows)


def _condition(rule: dict[str, Any]) -> str:
    query = rule.get("query")
    if rule["kind"] == "threshold" and query:
        return (
            f"{query['agg']}({query['metric']}[{query['window']}]) {rule['op']} {rule['value']:g}"
        )
    if rule["kind"] == "deadman" and query:
        return f"no {query['metric']} for {query['window']}"
    return "-"


@rules.command(name="rm")
@click.argument("name")
@click.pass_context
def rules_rm(ctx: click.Context, name: str) -> None:
    """Delete an alert rule (its alerts go with it)."""
    with client(ctx) as api:
        api.delete_alert_rule(name)
    click.echo(f"rule {name} deleted")


@alerts.group()
def notifiers() -> None:
    """Where notifications go: webhook (Alertmanager JSON), slack, pagerduty."""


@notifiers.command(name="set")
@click.argument("name")
@click.option("--kind", type=click.Choice(["webhook", "slack", "pagerduty"]), default="webhook")
@click.option("--url", default="", help="The receiver's URL (pagerduty: Events v2 by default).")
@click.option("--routing-key", default=None, envvar="MOORAGE_PAGERDUTY_KEY", help="PagerDuty.")
@click.option("--timeout", default="10s", show_default=True)
@click.pass_context
def notifiers_set(
    ctx: click.Context, name: str, kind: str, url: str, routing_key: str | None, timeout: str
) -> None:
    """Create or replace notifier NAME."""
    body: dict[str, Any] = {"kind": kind, "url": url, "timeout": timeout}
    if routing_key:
        body["routing_key"] = routing_key
    with client(ctx) as api:
        api.set_notifier(name, body)
    click.echo(f"notifier {name} set ({kind})")


@notifiers.command(name="ls")
@output_option
@click.pass_context
def notifiers_ls(ctx: click.Context, output: str) -> None:
    """List the notifiers."""
    with client(ctx) as api:
        found = api.notifiers()
    if output == "json":
        emit_json(found)
        return
    table(["NAME", "KIND", "URL"], [(n["name"], n["kind"], n["url"] or "-") for n in found])


@notifiers.command(name="rm")
@click.argument("name")
@click.pass_context
def notifiers_rm(ctx: click.Context, name: str) -> None:
    """Delete a notifier."""
    with client(ctx) as api:
        api.delete_notifier(name)
    click.echo(f"notifier {name} deleted")


@click.group()
def silence() -> None:
    """Silences: mute the notifications of matching alerts until they expire."""


def _matchers(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([FieldError("match", f"must be LABEL=VALUE, got {item!r}")])
        out[key.strip()] = value.strip()
    return out


@silence.command(name="add")
@click.option(
    "--match", "-m", "match", multiple=True, required=True, help="LABEL=VALUE (repeatable)."
)
@click.option("--duration", "-d", default="1h", show_default=True, help="How long it lasts.")
@click.option("--comment", "-c", default="", help="Why.")
@click.option("--author", default=None, help="Who (default: $USER).")
@click.pass_context
def silence_add(
    ctx: click.Context, match: tuple[str, ...], duration: str, comment: str, author: str | None
) -> None:
    """Silence the alerts whose labels match every LABEL=VALUE."""
    body = {
        "matchers": _matchers(match),
        "duration": duration,
        "comment": comment,
        "created_by": author or os.environ.get("USER", ""),
    }
    with client(ctx) as api:
        created = api.add_silence(body)
    click.echo(created["id"])


@silence.command(name="ls")
@output_option
@click.pass_context
def silence_ls(ctx: click.Context, output: str) -> None:
    """List silences, active and expired."""
    with client(ctx) as api:
        found = api.silences()
    if output == "json":
        emit_json(found)
        return
    rows = [
        (
            s["id"],
            s["state"],
            ",".join(f"{k}={v}" for k, v in sorted(s["matchers"].items())),
            _until(s["ends_at"]),
            s["created_by"] or "-",
            s["comment"],
        )
        for s in found
    ]
    table(["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"], rows)


@silence.command(name="rm")
@click.argument("silence_id")
@click.pass_context
def silence_rm(ctx: click.Context, silence_id: str) -> None:
    """Remove a silence (its alerts notify again)."""
    with client(ctx) as api:
        api.delete_silence(silence_id)
    click.echo(f"silence {silence_id} removed")


COMMANDS = [alerts, silence]
