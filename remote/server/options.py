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

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


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
