"""Server-side commands (`up`, `down`, `status`): they run on the remote machine.

Parsing and printing only; the steps live in remote/server/. Secrets are never
flags: they come from the environment or Colab's Secrets panel.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

import click

from remote.cli.common import emit_json, info, json_option, state_dir_option
from remote.errors import RemotectlError
from remote.server.tunnels import PROVIDERS


@click.command()
@click.option("--tunnel", type=click.Choice(sorted(PROVIDERS)), default="ngrok", show_default=True,
              help="ngrok: a public TCP address (needs NGROK_AUTHTOKEN); cloudflared: a Cloudflare "
                   "quick tunnel (no account; your computer needs cloudflared); direct: this "
                   "machine's own address.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="sshd's local port; 0 picks a free one.")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address sshd listens on (with --tunnel direct, the address in the card).")
@click.option("--authorized-key", "authorized_keys", multiple=True, metavar="KEY",
              help="A public key line or .pub file allowed to log in (repeatable) "
                   "[default: $REMOTECTL_AUTHORIZED_KEY or the Colab secret].")
@click.option("--region", default=None, help="ngrok region (optional; ngrok picks the nearest).")
@click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds to wait for sshd and the tunnel.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="The remote folder the card tells VS Code to open [default: the current folder].")
@click.option("--detach", is_flag=True,
              help="Leave a supervisor running in the background and return once ready.")
@click.option("--persist", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Keep the host key and authorized keys in DIR (e.g. on Google Drive), so a "
                   "fresh runtime presents the same host key; publish the signed address in "
                   "DIR/endpoint.json for `connect --follow`.")
@click.option("--url", default=None, metavar="tcp://HOST:PORT",
              help="ngrok: a TCP address reserved on your account (dashboard: TCP Addresses), the same "
                   "on every start.")
@click.option("--hostname", default=None, metavar="HOST",
              help="cloudflared: a named tunnel's public hostname (its token from TUNNEL_TOKEN; with "
                   "--port, the port its service ssh://localhost:PORT names).")
@state_dir_option
@json_option
def up(tunnel: str, port: int, bind: str, authorized_keys: Tuple[str, ...], region: Optional[str],
       timeout: float, workdir: Optional[str], detach: bool, persist: Optional[str], url: Optional[str],
       hostname: Optional[str], state_dir: Optional[str], as_json: bool) -> None:
    """Start a private sshd behind a tunnel; print the line to paste on your computer.

    \b
    Secrets (never flags): NGROK_AUTHTOKEN, REMOTECTL_AUTHORIZED_KEY, REMOTECTL_PASSWORD
    from the environment or Colab's Secrets panel. Key login only unless a password is set.
    \b
    Examples:
      remotectl up                                   # ngrok, stays until Ctrl-C
      remotectl up --detach                          # returns; `remotectl down` stops it
      remotectl up --tunnel cloudflared --persist /content/drive/MyDrive/remotectl/identity
      remotectl up --persist DIR --detach            # DIR/endpoint.json: laptops `connect --follow` it
      remotectl up --url tcp://1.tcp.ngrok.io:21234  # an ngrok reserved address
      remotectl up --tunnel direct --bind 0.0.0.0 --port 2222
    """
    from remote.server import options as up_options
    from remote.server import owner, serving
    from remote.server.credentials import gather

    def echo(line: str) -> None:
        click.echo(line, err=True)

    creds = gather(authorized_keys=authorized_keys, want_tunnel_token=bool(hostname))
    options = up_options.UpOptions(tunnel=tunnel, port=port, bind=bind, region=region,
                                   state_dir=state_dir, timeout=timeout, persist=persist,
                                   workdir=os.path.abspath(workdir or os.getcwd()), url=url, hostname=hostname)
    if detach:
        from remote.server.supervisor import detach as start_detached

        serving.install_stop_signals()
        result = start_detached(options, creds, echo)
        _print_up(result, as_json, detached=True)
        return
    server = owner.Server(options, creds, mode="foreground", echo=echo)
    serving.install_stop_signals()
    server.preflight()
    state_dir_shown = []

    def announce(result) -> bool:
        state_dir_shown.append(result.state_dir)
        _print_up(result, as_json, detached=False)
        echo("remotectl: serving; Ctrl-C (or `remotectl down`) stops sshd and the tunnel")
        return True

    from remote.server.restart import AgentRestarts

    why = serving.own(server, echo, announce, on_problem=AgentRestarts(echo))
    if why.endswith("exited"):
        raise RemotectlError(f"{why}, so the server stopped",
                             f"See the logs in {state_dir_shown[0]} and run up again.")


def _print_up(result, as_json: bool, detached: bool) -> None:
    from remote.server import report

    if as_json:
        emit_json(dict(result.to_dict(), detached=detached))
    else:
        for line in report.up_report(result, detached=detached):
            click.echo(line)


@click.command()
@state_dir_option
@json_option
def down(state_dir: Optional[str], as_json: bool) -> None:
    """Stop the server started by `up` from this state dir (by pid, never by name)."""
    from remote.server import control, state

    folder = state.resolve(state_dir)
    result = control.stop_recorded(folder)
    if as_json:
        emit_json(result)
    elif not result["was_running"]:
        info(f"nothing runs from {folder}")
    else:
        stopped = control.describe_stopped(result["stopped"]) or "nothing (it had already stopped)"
        line = f"stopped {stopped}"
        if result.get("port"):
            line += f"; port {result['port']} is {'free' if result['port_free'] else 'STILL IN USE'}"
        info(line)
    for note in result.get("notes", []):
        click.echo(f"remotectl: {note}", err=True)
    if result["problems"]:
        raise RemotectlError(result["problems"][0] + (f" (and {len(result['problems']) - 1} more)"
                                                      if len(result["problems"]) > 1 else ""),
                             "Everything recorded has stopped. Remove those files once the folder is "
                             "writable again (the ngrok config holds your token); the next up there "
                             "ignores a stale record.")


@click.command()
@state_dir_option
@json_option
def status(state_dir: Optional[str], as_json: bool) -> None:
    """Is sshd up, is the tunnel up; the endpoint, host key fingerprint and GPU.

    \b
    Exit status: 0 running; 1 broken or starting (something runs but does not serve:
    run `remotectl down`); 3 not running (as `systemctl status` does).
    """
    from remote.server import control, report, state

    result = control.status(state.resolve(state_dir))
    if as_json:
        emit_json(result)
    else:
        for line in report.status_report(result):
            info(line)
    sys.exit(result["exit_code"])


COMMANDS = [up, down, status]
