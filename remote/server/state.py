"""The state directory: one running server's files, and state.json describing it.

Layout (folder 0700, and every folder `up` makes above it; files 0600 unless said):

    sshd_config                  our sshd's private config
    ssh_host_ed25519_key(.pub)   host key, generated once per state dir (.pub 0644)
    authorized_keys              the public keys allowed to log in (+ the probe's one-use key, briefly)
    sshd.pid  sshd.log           written by sshd (-e: its log goes to sshd.log)
    ngrok.yml                    the ngrok agent's config, holding the authtoken (ngrok only; deleted
                                 when the server stops)
    ngrok.log                    the agent's log lines, authtoken redacted
    cloudflared.log              the quick tunnel's stdout and stderr (cloudflared only)
    bin/cloudflared              the pinned cloudflared, when none was on PATH (+ .installed.json)
    supervisor.log               the detached supervisor's own log (--detach)
    lock                         flock held by the process that owns the running server
    children.json                the owner and each process it starts, from before it starts (children.py)
    state.json                   the ServerInfo (info.py) once the server is proven ready

Password mode's record of the previous hash is machine-wide, not here (see passwords.py).
With `up --persist DIR`, the host key and authorized_keys are copied in from DIR (see persist.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from remote.errors import RemotectlError
from remote.files import atomic_write, private_dir
from remote.server.info import STATE_VERSION, ServerInfo

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "remotectl"


def resolve(state_dir: Optional[os.PathLike]) -> Path:
    """The state dir as an absolute path (not created)."""
    return Path(os.path.abspath(os.path.expanduser(str(state_dir)))) if state_dir else default_state_dir()


def prepare(state_dir: Path) -> Path:
    """Make the state dir 0700; folders made above it are 0700 too (sshd's StrictModes checks them)."""
    missing = []
    current = Path(state_dir)
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing[1:]):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
    return private_dir(state_dir)


def read_state(state_dir: Path) -> Optional[Dict[str, Any]]:
    """state.json as a dict, or None if no server was recorded here."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RemotectlError(f"cannot read {path}: {exc}",
                             "Remove that file if no server runs from this state dir.") from None
    return data if isinstance(data, dict) else None


def read_info(state_dir: Path) -> Optional[ServerInfo]:
    """state.json as a ServerInfo, or None if no server was recorded ready here."""
    data = read_state(state_dir)
    return ServerInfo.from_dict(data) if data is not None else None


def write_info(state_dir: Path, info: ServerInfo) -> None:
    data = dict(info.to_dict(), version=STATE_VERSION)
    atomic_write(state_dir / STATE_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


def clear_state(state_dir: Path) -> None:
    try:
        (state_dir / STATE_FILE).unlink()
    except FileNotFoundError:
        pass


class StateLock:
    """An exclusive flock on `<state>/lock`: one server per state dir, released when its owner dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether some other process owns a server here now."""
        if self._fd is not None:
            return False
        if not self.acquire():
            return True
        self.release()
        return False


def tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
