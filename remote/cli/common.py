"""Options and output helpers every command shares (so flags mean the same everywhere)."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, Optional

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout and nothing else there.")

ssh_dir_option = click.option(
    "--ssh-dir", type=click.Path(file_okay=False), envvar="REMOTECTL_SSH_DIR",
    default=None, show_envvar=True, help="SSH folder to manage [default: ~/.ssh].")

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False), envvar="REMOTECTL_STATE_DIR",
    default=None, show_envvar=True,
    help="Where the server keeps its sshd config, host key, pids and log "
         "[default: ~/.local/state/remotectl].")


def emit_json(obj: Any) -> None:
    """The one JSON object a `--json` command prints."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def safe(text: str) -> str:
    """The last gate before the terminal: text from a remote or a card can hold ESC/OSC/BEL/CR
    sequences (retitle, clear, OSC 52 clipboard writes); they are shown escaped (`\\x1b`)."""
    from remote.client.untrusted import clean_text

    return clean_text(text)


def info(message: str = "", as_json: bool = False) -> None:
    """Human output: stdout normally, stderr under --json so stdout stays one JSON object."""
    click.echo(safe(message), err=as_json)


def warn(message: str) -> None:
    """`remotectl: warning: <first line>` on stderr, further lines indented."""
    first, *rest = safe(message).strip().splitlines() or [""]
    click.echo(f"remotectl: warning: {first}", err=True)
    for line in rest:
        click.echo(f"  {line.strip()}" if not line.startswith("    ") else line, err=True)


def fail(message: str, hint: Optional[str] = None, code: int = 1) -> NoReturn:
    """`remotectl: error: <one line>` (plus a few lines of what to do) and exit."""
    first, *rest = safe(message).strip().splitlines() or ["failed"]
    click.echo(f"remotectl: error: {first}", err=True)
    for line in rest:
        click.echo(f"  {line}", err=True)
    if hint:
        for line in safe(hint).strip().splitlines():
            click.echo(f"  {line}", err=True)
    sys.exit(code)
