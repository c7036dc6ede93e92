"""Ready means proven: one real login through the public endpoint before the card is printed.

`up` makes a fresh Ed25519 key pair in memory, adds its public half to authorized_keys
as `restrict,command="echo <nonce>"` (no shell, no forwarding, no pty), logs in through
the endpoint the card will name (the tunnel's host:port, or cloudflared's route) with
paramiko, pinning our own host key, and expects the nonce back. Then the line is taken
out again, whatever happened: the key was good for this one login only, and its private
half never touched a disk. When the login fails, sshd's log since the attempt says why
(StrictModes, a refused key, no connection at all), and `up` says it in one paragraph.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import secrets
import shlex
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from remote import keys
from remote.errors import RemotectlError
from remote.files import atomic_write
from remote.server import strictmodes

PROBE_COMMENT = "remotectl-probe"


@dataclass(frozen=True)
class Target:
    """Where and how the card's user will connect."""

    host: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..."
    proxy: Optional[List[str]] = None  # a ProxyCommand argv (cloudflared), else plain TCP


def authorized_lines(keys_lines: List[str]) -> str:
    return "".join(line + "\n" for line in keys_lines)


def strip_probe_lines(path: Path) -> None:
    """Remove any probe line a crashed `up` left in an authorized_keys file."""
    try:
        text = path.read_text()
    except OSError:
        return
    kept = [line for line in text.splitlines() if not line.rstrip().endswith(PROBE_COMMENT)]
    if len(kept) != len(text.splitlines()):
        atomic_write(path, "".join(line + "\n" for line in kept), mode=0o600)


def prove(target: Target, authorized_keys: Path, keys_lines: List[str], log_path: Path,
          timeout: float) -> float:
    """Log in once through `target` with a one-use key; seconds it took, or an explained error."""
    import paramiko

    _quiet_paramiko()
    private_pem, public_line = keys.generate_ed25519(PROBE_COMMENT)
    nonce = "remotectl-probe-ok-" + secrets.token_hex(8)
    probe_line = f'restrict,command="echo {nonce}" {public_line}'
    log_from = _size(log_path)
    began = time.monotonic()
    atomic_write(authorized_keys, authorized_lines(keys_lines + [probe_line]), mode=0o600)
    client = paramiko.SSHClient()
    try:
        pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private_pem.decode()))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kind, blob = target.host_key.split()[:2]
        name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        client.get_host_keys().add(name, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
        sock = paramiko.ProxyCommand(shlex.join(target.proxy)) if target.proxy else None
        client.connect(target.host, port=target.port, username=target.user, pkey=pkey, sock=sock,
                       allow_agent=False, look_for_keys=False, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)
        _, stdout, _ = client.exec_command("probe", timeout=timeout)
        answer = stdout.readline(200)  # the nonce's line; no need to wait for the session's end
        if nonce not in answer:
            raise RemotectlError(f"the probe login through {_where(target)} ran, but its forced command "
                                 f"answered {answer.strip()[:80]!r}",
                                 "Something other than this server's sshd answered; see sshd.log in the "
                                 "state dir.")
    except RemotectlError:
        raise
    except paramiko.BadHostKeyException:
        raise RemotectlError(f"the login through {_where(target)} reached an SSH server with another host key",
                             "The tunnel forwards somewhere else than this server's sshd; run up again "
                             "(a new tunnel gets a new address).") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise explain(target, exc, _log_since(log_path, log_from)) from None
    finally:
        client.close()
        atomic_write(authorized_keys, authorized_lines(keys_lines), mode=0o600)
    return time.monotonic() - began


def _quiet_paramiko() -> None:
    """paramiko logs a failed handshake with a traceback; without a handler Python prints it on
    stderr. The failure is explained by us instead (a NullHandler still lets a configured root
    logger see it)."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def explain(target: Target, exc: BaseException, log: str) -> RemotectlError:
    """One paragraph from sshd's own words about the failed login."""
    where = _where(target)
    for line in log.splitlines():
        if "Authentication refused" in line and "bad ownership or modes" in line:
            folder = line.split("bad ownership or modes for", 1)[1].strip().split(" ", 1)[-1]
            try:
                info: Optional[os.stat_result] = os.stat(folder)
            except OSError:
                info = None
            return RemotectlError(f"sshd refuses every key: StrictModes rejects {_mode_of(folder)}",
                                  strictmodes.refusal_hint(Path(folder), info))
    if "Accepted publickey" not in log and "Connection from" not in log and "Connection closed" not in log \
            and "Received disconnect" not in log and "authenticating user" not in log:
        return RemotectlError(
            f"the login through {where} never reached sshd ({type(exc).__name__}: {exc})",
            "The tunnel is up but does not forward to this server's sshd. Run up again; if it keeps "
            "failing, see ngrok.log / cloudflared.log in the state dir.")
    refused = [line.strip() for line in log.splitlines()
               if any(w in line for w in ("refused", "not allowed", "Disconnecting", "Failed", "error"))]
    detail = refused[-1] if refused else f"{type(exc).__name__}: {exc}"
    return RemotectlError(f"sshd refused the probe login through {where}: {detail[:200]}",
                          "See sshd.log in the state dir; fix what it names, then run up again.")


def _where(target: Target) -> str:
    return target.host if target.proxy else f"{target.host}:{target.port}"


def _mode_of(folder: str) -> str:
    try:
        info = os.stat(folder)
    except OSError:
        return folder
    return f"{folder} (mode {stat.S_IMODE(info.st_mode):04o})"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_since(path: Path, offset: int, settle: float = 0.15, limit: float = 1.5) -> str:
    """sshd's log lines written since `offset`, once the log has stopped growing (sshd may lag)."""
    deadline = time.monotonic() + limit
    size, steady_since = _size(path), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < settle:
        time.sleep(0.03)
        now = _size(path)
        if now != size:
            size, steady_since = now, time.monotonic()
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(65536).decode(errors="replace")
    except OSError:
        return ""
