"""What an `up` is asked to do, and every check that needs no running process.

Bad input fails here, before anything starts or is written: an unknown tunnel, a port
out of range, a state dir sshd's StrictModes would reject or that cannot be written, a
state dir inside the --persist folder (the ngrok token would land there), no way to log
in, a weak password, or a second password server on this machine.
"""

from __future__ import annotations

import errno
import os
import pwd
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from remote.errors import BadInput, RemotectlError
from remote.server import passwords, persist, state, strictmodes
from remote.server.credentials import Credentials
from remote.server.tunnels import PROVIDERS, TunnelRequest, make_tunnel

DEFAULT_TIMEOUT = 30.0
Echo = Callable[[str], None]


@dataclass
class UpOptions:
    """Everything about an `up` except its secrets."""

    tunnel: str = "ngrok"
    port: int = 0
    bind: str = "127.0.0.1"
    region: Optional[str] = None
    state_dir: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT
    persist: Optional[str] = None  # a folder that keeps the host key and authorized keys
    workdir: Optional[str] = None  # the folder the card tells VS Code to open [default: cwd]
    url: Optional[str] = None  # ngrok: a reserved TCP address (tcp://N.tcp.ngrok.io:PORT), the same every start
    hostname: Optional[str] = None  # cloudflared: a named tunnel's fixed hostname (its token: TUNNEL_TOKEN)

    def validate(self) -> None:
        if self.tunnel not in PROVIDERS:
            raise BadInput(f"unknown tunnel {self.tunnel!r} (available: {', '.join(sorted(PROVIDERS))})")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise BadInput(f"port {self.port!r} is out of range (0-65535; 0 picks a free port)")
        if self.port and self.port < 1024 and os.geteuid() != 0:
            raise BadInput(f"port {self.port} needs root; pick one above 1024, or 0 for any free port")
        if self.timeout <= 0:
            raise BadInput("--timeout must be positive")
        self.state_dir = str(state.resolve(self.state_dir))
        if self.persist:
            self.persist = str(persist.check_dir(self.persist))
        if self.url is not None:
            self.url = reserved_url(self.url, self.tunnel)
        if self.hostname is not None:
            self.hostname = named_hostname(self.hostname, self.tunnel, self.port)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def reserved_url(url: str, tunnel: str) -> str:
    """`tcp://HOST:PORT` (or HOST:PORT) of an ngrok reserved TCP address, checked like a card's."""
    from remote.card import valid_host

    if tunnel != "ngrok":
        raise BadInput(f"--url is an ngrok reserved TCP address; it does not apply to --tunnel {tunnel}",
                       "For a fixed Cloudflare address use a named tunnel: --hostname with TUNNEL_TOKEN.")
    text = url.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "tcp":
            raise BadInput(f"--url {url!r}: ssh needs a TCP address (tcp://N.tcp.ngrok.io:PORT)")
    host, _, port = text.rpartition(":")
    if not valid_host(host) or ":" in host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadInput(f"--url {url!r} is not tcp://HOST:PORT",
                       "Copy the address from https://dashboard.ngrok.com/tcp-addresses, e.g. "
                       "tcp://1.tcp.ngrok.io:21234.")
    return f"tcp://{host.lower()}:{int(port)}"


def named_hostname(hostname: str, tunnel: str, port: int) -> str:
    """A Cloudflare named tunnel's public hostname; its ingress names sshd's port, so --port is needed."""
    from remote.card import valid_host

    if tunnel != "cloudflared":
        raise BadInput(f"--hostname names a Cloudflare named tunnel's hostname; it does not apply to "
                       f"--tunnel {tunnel}")
    name = hostname.strip().lower().rstrip(".")
    if not valid_host(name) or "." not in name or name.replace(".", "").isdigit():
        raise BadInput(f"--hostname {hostname!r} is not a DNS name (e.g. ssh.example.com)")
    if not port:
        raise BadInput("a named tunnel forwards to the port its Cloudflare configuration names: pass --port N",
                       "N is the port in the public hostname's service, ssh://localhost:N (e.g. 2222).")
    return name


def served_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def check_input(options: UpOptions, creds: Credentials, echo: Echo) -> None:
    """Everything that can be refused before a file is written or a process started."""
    options.validate()
    folder = Path(options.state_dir or state.default_state_dir())
    if not creds.authorized_keys and not creds.password:
        raise BadInput("no way to log in: give a public key or a password",
                       "Set REMOTECTL_AUTHORIZED_KEY (the line `remotectl keygen` printed on your "
                       "computer) in the environment or Colab's Secrets panel, or pass --authorized-key.")
    if creds.password:
        user = served_user()
        passwords.check_possible(user)
        passwords.check_strength(creds.password, user)
    if options.tunnel == "ngrok" and not creds.ngrok_token:
        make_tunnel("ngrok", TunnelRequest(state_dir=folder))  # raises BadInput
    if options.hostname and not creds.tunnel_token:
        raise BadInput(f"the named tunnel {options.hostname} needs its token, and none was found",
                       "Put the tunnel's token (Cloudflare dashboard: Networks > Tunnels > your tunnel: the "
                       "eyJ... string of its install command) in the environment variable TUNNEL_TOKEN or "
                       "Colab's Secrets panel under that name. Without one, leave --hostname out for a quick "
                       "tunnel.")
    if options.persist and _inside(folder, Path(options.persist)):
        raise BadInput(f"the state dir {folder} is inside the --persist folder {options.persist}",
                       "The state dir holds this run's secrets (the ngrok token); keep it on this machine "
                       "(leave --state-dir out) and only the identity in the persist folder.")
    if creds.password:
        other = passwords.running_elsewhere()
        if other and other != str(folder):
            raise RemotectlError(
                f"a password server already runs on this machine (from {other}); two would fight "
                f"over {served_user()}'s password",
                f"Stop it first: remotectl down --state-dir {other}   (or use key login)")
    check_state_dir(folder)  # last: it makes the folder, which a refusal above should not leave
    if options.tunnel == "direct" and options.bind in ("127.0.0.1", "::1", "localhost"):
        echo(f"note: --tunnel direct with --bind {options.bind}: the card works only on this machine. "
             "To reach it from another, add --bind 0.0.0.0 (or this machine's address) and a --port "
             "your network lets through.")


def check_state_dir(folder: Path) -> None:
    """The state dir can be made private and written, and sshd's StrictModes would accept it."""
    odd = next((ch for ch in str(folder) if ch in '"\\' or ord(ch) < 32 or ord(ch) == 127), None)
    if odd is not None:  # sshd_config names files in the state dir: no quoting holds these everywhere
        raise BadInput(f"--state-dir {str(folder)!r} holds {odd!r}, which sshd's config file cannot name",
                       "Give --state-dir a path without double quotes, backslashes or control characters "
                       "(the default is ~/.local/state/remotectl).")
    refused = strictmodes.first_refused(folder)
    if refused:
        raise BadInput(f"--state-dir {folder}: {strictmodes.describe(*refused)}",
                       strictmodes.refusal_hint(*refused))
    try:
        state.prepare(folder)
        probe = folder / ".remotectl-write-test"
        with open(probe, "w") as handle:
            handle.write("ok")
        probe.unlink()
    except OSError as exc:
        raise unwritable(folder, exc) from None


def unwritable(folder: Path, exc: OSError) -> BadInput:
    why = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable by you",
           errno.EPERM: "is not writable by you", errno.ENOSPC: "is on a full disk",
           errno.ENOTDIR: "has a file where a folder should be"}.get(exc.errno, f"cannot be written "
                                                                              f"({exc.strerror})")
    return BadInput(f"the state dir {folder} {why}",
                    "Give --state-dir a folder on this machine that you can write (the default is "
                    "~/.local/state/remotectl; REMOTECTL_STATE_DIR sets it too).")


def _inside(child: Path, parent: Path) -> bool:
    child, parent = Path(os.path.realpath(child)), Path(os.path.realpath(parent))
    return child == parent or parent in child.parents
