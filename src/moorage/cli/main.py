"""The `moorage` command line: one module per command group, one error → exit code mapping.

Exit codes: 0 success, 1 operational error (not found, server unreachable...), 2 invalid
input (a bad spec, flag or argument: the message names the field).

The process commands (`dev`, `server`, `agent`) are registered at import; the other command
modules load on the first lookup of any other command (or `--help`). A `moorage agent` process
so never imports the API client (httpx, and through it rich and pygments), the spec formats or
the other commands: about 7 MB of the agent's memory (benchmarks/agent_footprint.py).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from moorage import __version__
from moorage.model import MoorageError, SpecError

from . import daemons

# The modules whose COMMANDS load on first use, in the order they are registered.
LAZY_MODULES = (
    "alerts",
    "services",
    "cluster",
    "secrets",
    "execute",
    "compose",
    "tag",
    "acl",
    "userevents",
    "kv",
    "volumes",
    "metrics",
    "trust",
)


def exit_code(exc: BaseException) -> int:
    """The one place where errors become exit codes."""
    if isinstance(exc, SpecError | click.UsageError):
        return 2
    return 1


class Group(click.Group):
    _loaded = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._loaded:
            self._load_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_commands()
        return super().list_commands(ctx)

    def _load_commands(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name in LAZY_MODULES:
            module = importlib.import_module(f"{__package__}.{name}")
            for command in module.COMMANDS:
                self.add_command(command)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except BaseExceptionGroup as group:  # from a daemon's task group: report its cause
                raise _leaf(group) from group
        except BrokenPipeError:
            # `moorage logs web | head`: the reader left; that is not an error.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
            sys.exit(0)
        except MoorageError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _print_error(exc)
            sys.exit(exit_code(exc))
        except (
            click.ClickException,
            click.exceptions.Exit,
            click.Abort,
            SystemExit,
            KeyboardInterrupt,
        ):
            raise
        except Exception as exc:  # a bug: still one line, unless --debug asks for the traceback
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(
                f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True
            )
            sys.exit(1)


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _print_error(exc: MoorageError) -> None:
    if isinstance(exc, SpecError) and len(exc.errors) > 1:
        click.echo(f"error: {len(exc.errors)} problems:", err=True)
        for error in exc.errors:
            click.echo(f"  {error}", err=True)
    else:
        click.echo(f"error: {exc}", err=True)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--addr",
    envvar="MOORAGE_ADDR",
    default="http://127.0.0.1:7070",
    show_default=True,
    help="Server address (env MOORAGE_ADDR).",
)
@click.option(
    "--token",
    envvar="MOORAGE_HTTP_TOKEN",
    default=None,
    help="ACL token, when the server runs with --acl (env MOORAGE_HTTP_TOKEN).",
)
@click.option(
    "--ca-cert",
    envvar="MOORAGE_CACERT",
    default=None,
    help="The cluster CA (PEM) HTTPS answers are checked against (env MOORAGE_CACERT; "
    "default: the one `moorage ca fetch` saved).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="moorage")
@click.pass_context
def cli(ctx: click.Context, addr: str, token: str | None, ca_cert: str | None, debug: bool) -> None:
    """moorage: run a small team's services on a handful of machines."""
    ctx.ensure_object(dict)
    ctx.obj["addr"] = addr
    ctx.obj["token"] = token
    ctx.obj["ca_cert"] = ca_cert
    ctx.obj["debug"] = debug


for command in daemons.COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="moorage")
