"""`remotectl`: the click group and its error handling.

Commands live in `remote/cli/server.py` (runs on the remote machine) and
`remote/cli/client.py` (runs on the user's computer); this module only parses
global options, dispatches, and turns exceptions into `remotectl: error: ...`
with exit code 1 (runtime failure) or 2 (bad input). Heavy libraries (paramiko,
pyngrok, torch, cryptography) are imported inside commands, never here.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import click

from remote.cli.common import fail
from remote.errors import RemotectlError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="remotectl", prog_name="remotectl")
@click.option("--debug", is_flag=True, envvar="REMOTECTL_DEBUG",
              help="Show tracebacks (also REMOTECTL_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Turn a notebook GPU into a VS Code Remote-SSH machine.

    \b
    On the remote machine (Colab, Kaggle, a VM):  remotectl up
    On your computer:                            remotectl connect <card>
    """
    ctx.obj = {"debug": debug}


def _register() -> None:
    from remote.cli import client, cloudflared, doctor, server

    for module in (server, client, cloudflared, doctor):
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point: run the group, map errors to one line and an exit code."""
    debug = os.environ.get("REMOTECTL_DEBUG", "") not in ("", "0") or "--debug" in (argv or sys.argv[1:])
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="remotectl",
                      standalone_mode=False)
    except RemotectlError as exc:
        if debug:
            raise
        fail(exc.message, exc.hint, exc.exit_code)
    except click.exceptions.Abort:
        click.echo("remotectl: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `remotectl` (click >= 8.2): the help, not an error
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            sys.exit(0)
        hint = None
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f"Try '{exc.ctx.command_path} --help'."
        fail(exc.format_message(), hint, exc.exit_code)
    except KeyboardInterrupt:
        click.echo("remotectl: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line unless debugging
        if debug:
            raise
        fail(f"{type(exc).__name__}: {exc}", "Run again with --debug for the traceback, and report it.", 1)
    sys.exit(rv if isinstance(rv, int) else 0)


# Registered at import, so `click.testing.CliRunner().invoke(cli, ...)` sees every command.
_register()
