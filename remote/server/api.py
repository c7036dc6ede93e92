"""The notebook API behind `remote.up` and `remote.launch_ssh`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from remote import card as cards
from remote.server import control, kernel, report
from remote.server.credentials import gather
from remote.server.info import ServerInfo
from remote.server.options import DEFAULT_TIMEOUT, UpOptions


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Session(ServerInfo):
    """A running server, as the notebook sees it: ServerInfo's fields, and `down()`.

    card (the token), connect_line, host, port, user, host_key, fingerprint, session
    (id), tunnel, public_url, state_dir, local_host, local_port, pids, ...: see
    remote/server/info.py. `detached` says whether a supervisor owns it.
    """

    detached: bool = False

    @classmethod
    def of(cls, info: ServerInfo, detached: bool) -> Session:
        return cls(**info.to_dict(), detached=detached)

    @property
    def info(self) -> Dict[str, Any]:
        """Everything, as state.json holds it."""
        data = self.to_dict()
        data.pop("detached", None)
        return data

    def as_card(self) -> cards.Card:
        return cards.decode(self.card)

    def down(self) -> Dict[str, int]:
        """Stop sshd and the tunnel (and the supervisor when detached); returns what was stopped."""
        server = kernel.server_for(self.state_dir)
        if server is not None and not self.detached:
            kernel.forget(self.state_dir)
            return server.stop()
        return control.stop_recorded(Path(self.state_dir))["stopped"]

    def __repr__(self) -> str:
        return f"<remotectl Session {self.session} {self.user}@{self.host}:{self.port}>\n{self.connect_line}"


def up(tunnel: str = "ngrok", *, port: int = 0, bind: str = "127.0.0.1",
       authorized_keys: Union[str, Iterable[str], None] = None, password: Optional[str] = None,
       ngrok_token: Optional[str] = None, region: Optional[str] = None,
       state_dir: Optional[Union[str, os.PathLike]] = None, detach: bool = False,
       timeout: float = DEFAULT_TIMEOUT, quiet: bool = False,
       persist: Optional[Union[str, os.PathLike]] = None,
       workdir: Optional[Union[str, os.PathLike]] = None, url: Optional[str] = None,
       hostname: Optional[str] = None, tunnel_token: Optional[str] = None) -> Session:
    """Start a private sshd behind a tunnel and print the line to paste on your computer.

    Secrets come from these arguments, then the environment (NGROK_AUTHTOKEN,
    REMOTECTL_AUTHORIZED_KEY, REMOTECTL_PASSWORD), then Colab's Secrets panel. By
    default the server lives in this Python process (the notebook kernel); with
    `detach=True` a supervisor process owns it and outlives this one. `tunnel` is
    "ngrok", "cloudflared" (no account needed) or "direct". `persist` names a folder (a
    Drive folder in Colab) that keeps the host key and authorized keys across runtimes.
    `workdir` (default: the current folder) travels in the card, so `remotectl connect`
    prints, and `remotectl open` opens, the folder the project lives in. It returns only
    once a login through the public endpoint has worked. With `persist`, each tunnel's address
    is published, signed, in `<persist>/endpoint.json` (`remotectl connect --follow`); a dead
    agent is brought back at a new address. `url` is an ngrok reserved TCP address; `hostname`
    a Cloudflare named tunnel's (token: `tunnel_token`, else TUNNEL_TOKEN).
    """
    if isinstance(authorized_keys, str):
        authorized_keys = [authorized_keys]
    creds = gather(ngrok_token=ngrok_token, password=password, authorized_keys=authorized_keys or (),
                   tunnel_token=tunnel_token, want_tunnel_token=bool(hostname))
    options = UpOptions(tunnel=tunnel, port=port, bind=bind, region=region,
                        state_dir=str(state_dir) if state_dir else None, timeout=timeout,
                        persist=os.fspath(persist) if persist else None,
                        workdir=os.path.abspath(workdir or os.getcwd()), url=url, hostname=hostname)
    echo = (lambda _line: None) if quiet else _echo
    if detach:
        from remote.server.supervisor import detach as start_detached

        info = start_detached(options, creds, echo)
    else:
        server = kernel.start(options, creds, echo)
        assert server.info is not None
        info = server.info
    result = Session.of(info, detached=detach)
    if not quiet:
        for line in report.up_report(info, detached=detach):
            print(line, flush=True)
    return result


def launch_ssh(ngrok_token: str, password: str = "", region: str = "us", **kwargs: Any) -> Session:
    """Drop-in for colab-ssh's `launch_ssh(token, password)`: ngrok, password login if given.

    Unlike colab-ssh it also accepts keys (REMOTECTL_AUTHORIZED_KEY), refuses a password
    that guessing would find (under 12 characters, or a common one), never puts the token
    or password on a command line, and prints the host key's card.
    """
    result = up("ngrok", ngrok_token=ngrok_token, password=password or None, region=region,
                quiet=True, **kwargs)
    print(f"Host: {result.host}", flush=True)
    print(f"Port: {result.port}", flush=True)
    print(f"User: {result.user}", flush=True)
    print(f"Host key: {result.fingerprint}", flush=True)
    print(result.connect_line, flush=True)
    return result
