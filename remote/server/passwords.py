"""Password login, the one place remotectl touches the system: the served user's password.

OpenSSH 9.x checks passwords only against the system (shadow file, or PAM's service
"sshd"): there is no private password file for a private sshd. So, only when a
password is given, we set that user's system password with `chpasswd` (reading
`user:password` on stdin, never argv), after saving the previous hash in the state
dir (0600), and put the old hash back (`chpasswd -e`) when the server stops. This
needs root (an ordinary user's sshd cannot read /etc/shadow either), which Colab
has; as an ordinary user password login is refused with an explanation. Key login,
the default, changes nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write

RESTORE_FILE = "password.restore"
SHADOW = "/etc/shadow"


def check_possible(user: str) -> None:
    if os.geteuid() != 0:
        raise BadInput(
            f"password login needs root (sshd checks the system password of {user!r}, which only "
            "root can read and set)",
            "Use key login instead: set REMOTECTL_AUTHORIZED_KEY to the line `remotectl keygen` "
            "printed on your computer, and leave REMOTECTL_PASSWORD unset.")


def current_hash(user: str) -> Optional[str]:
    try:
        with open(SHADOW, encoding="utf-8") as handle:
            for line in handle:
                parts = line.rstrip("\n").split(":")
                if parts[0] == user and len(parts) > 1:
                    return parts[1]
    except OSError:
        return None
    return None


def set_password(state_dir: Path, user: str, password: str) -> None:
    """Set `user`'s password, keeping the old hash (from before any earlier crash) to restore."""
    check_possible(user)
    restore = state_dir / RESTORE_FILE
    if not restore.exists():
        old = current_hash(user)
        if old is None:
            raise RemotectlError(f"cannot read {user!r}'s entry in {SHADOW}",
                                 "Password login needs a shadow password file; use key login.")
        atomic_write(restore, f"{user}:{old}\n", mode=0o600)
    _chpasswd(f"{user}:{password}\n", encrypted=False)


def restore_password(state_dir: Path) -> bool:
    """Put back the hash saved by `set_password`; True if there was one."""
    restore = state_dir / RESTORE_FILE
    try:
        line = restore.read_text()
    except FileNotFoundError:
        return False
    user, _, old = line.rstrip("\n").partition(":")
    # An empty field would mean "no password needed"; lock the account instead.
    _chpasswd(f"{user}:{old or '*'}\n", encrypted=True)
    restore.unlink()
    return True


def _chpasswd(line: str, encrypted: bool) -> None:
    argv = ["chpasswd", "-e"] if encrypted else ["chpasswd"]
    try:
        result = subprocess.run(argv, input=line, text=True, capture_output=True, timeout=30,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RemotectlError(f"chpasswd failed: {exc}") from None
    if result.returncode != 0:
        # chpasswd's message names the user, never the password.
        raise RemotectlError(f"chpasswd failed: {result.stderr.strip()[:200]}")
