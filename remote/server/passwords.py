"""Password login, the one place remotectl touches the system: the served user's password.

OpenSSH checks passwords only against the system (the shadow file, with `UsePAM no`):
there is no private password file for a private sshd. So, only when a password is
given, `up` sets that user's system password with `chpasswd` (reading `user:password` on
stdin, never argv) and puts the previous hash back when the server stops. This needs
root, which Colab has; key login, the default, changes nothing.

Because the change is machine-wide, so is its record: `/etc/remotectl/password-restore.json`
(folder 0700, file 0600), beside the shadow file it undoes, holds the original hash,
the hash we set, and the owner (pid + start time, state dir). Under one lock:

- a second password server is refused while the recorded owner lives (from any state dir);
- once the owner is gone (stopped, or killed), the next `up` or `down` from any state dir
  puts the original hash back, exactly once: only while the hash is still the one we set
  (a password changed since by someone else is left alone), and the record then goes.

The password must resist guessing through a public tunnel: at least 12 characters and
not a well-known one; the hash is SHA-512 with many rounds so that each guess costs the
server ~0.2 s of CPU (see scripts/bench_guessing.py), on top of sshd's MaxAuthTries 3.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write
from remote.server import processes

SHADOW = Path("/etc/shadow")
RECORD_DIR = Path("/etc/remotectl")
RECORD = RECORD_DIR / "password-restore.json"
LEGACY_RESTORE = "password.restore"  # the per-state-dir record of remotectl 0.1
MIN_LENGTH = 12
# libxcrypt, which chpasswd hashes with, takes passphrases shorter than 512 bytes (and sshd
# checks none longer than 1024): a longer one could never be set, nor logged in with.
MAX_BYTES = 511
HASH_ROUNDS = 500_000
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}

# Passwords of 12+ characters that lead the public leak lists, and patterns people type.
COMMON = frozenset("""
123456789012 1234567890123 12345678901234 123456789123 1234567890qwe 123456789000 111111111111
000000000000 123123123123 121212121212 qwertyuiop12 qwertyuiop123 qwertyuiopasdf 1qaz2wsx3edc
1q2w3e4r5t6y 1q2w3e4r5t6y7u 1qazxsw23edc q1w2e3r4t5y6 zaq12wsxcde3 asdfghjkl123 zxcvbnm12345
password1234 password12345 password123456 passwordpassword password1! password!123 p@ssw0rd1234
iloveyou1234 iloveyou12345 letmein12345 welcome12345 welcome123456 administrator admin1234567
adminadmin123 rootroot1234 rootpassword toortoortoor changeme1234 changemenow1 trustno1trustno1
sunshine1234 football1234 baseball1234 superman1234 princess1234 dragon123456 monkey123456
masterkey123 starwars1234 whatever1234 abcdefghijkl abcdef123456 abc123456789 abcd12345678
qwerty123456 qwertyqwerty asdfasdfasdf 1234qwerasdf googlecolab1 colabcolab12 remotectl123
ngrokpassword sshpassword1 mypassword12 mypassword123 secretpassword supersecret1 correcthorsebatterystaple
""".split())


def check_strength(password: str, user: str) -> None:
    """BadInput unless the password could stand up to guessing through a public endpoint."""
    hint = ("Choose at least 12 characters that are not a known password (a few random words work), "
            "or better, use key login: set REMOTECTL_AUTHORIZED_KEY to the line `remotectl keygen` "
            "printed on your computer and leave REMOTECTL_PASSWORD unset.")
    if any(c in password for c in ("\n", "\r", ":", "\0")):
        raise BadInput("the password may not hold a newline, ':' or NUL (chpasswd reads user:password lines)",
                       hint)
    size = len(password.encode("utf-8", "surrogateescape"))
    if size > MAX_BYTES:
        raise BadInput(f"the password is {size} bytes long; the system's password hashing (crypt) "
                       f"takes at most {MAX_BYTES}", hint)
    if len(password) < MIN_LENGTH:
        raise BadInput(f"the password has {len(password)} characters; password login through a public "
                       f"tunnel needs at least {MIN_LENGTH}", hint)
    folded = password.lower()
    if folded in COMMON or _too_simple(folded, user.lower()):
        raise BadInput("the password is one that guessing tools try first (too common or too simple)", hint)


def _too_simple(folded: str, user: str) -> bool:
    """One or two characters repeated, a run along the keyboard or alphabet, or the user's name padded."""
    if len(set(folded)) <= 2:
        return True
    for ring in ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm"):
        if folded in ring * 4 or folded in ring[::-1] * 4:
            return True
    return bool(user) and user in folded and len(folded) - len(user) < 8


def check_possible(user: str) -> None:
    if os.geteuid() != 0:
        raise BadInput(
            f"password login needs root (sshd checks the system password of {user!r}, which only "
            "root can read and set)",
            "Use key login instead: set REMOTECTL_AUTHORIZED_KEY to the line `remotectl keygen` "
            "printed on your computer, and leave REMOTECTL_PASSWORD unset.")


def shadow_entry(user: str) -> Optional[List[str]]:
    """`user`'s fields in the shadow file (name, hash, last change, ...), or None."""
    try:
        with open(SHADOW, encoding="utf-8") as handle:
            for line in handle:
                parts = line.rstrip("\n").split(":")
                if parts[0] == user and len(parts) > 2:
                    return parts
    except OSError:
        return None
    return None


def current_hash(user: str) -> Optional[str]:
    entry = shadow_entry(user)
    return entry[1] if entry else None


# -- the machine-wide record ----------------------------------------------------------------------
@contextmanager
def _locked() -> Iterator[None]:
    try:
        RECORD_DIR.mkdir(mode=0o700, exist_ok=True)
        os.chmod(RECORD_DIR, 0o700)
        fd = os.open(RECORD_DIR / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RemotectlError(f"cannot keep the saved password hash in {RECORD_DIR}: {exc.strerror}",
                             "Password login needs a writable /etc; use key login instead.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read() -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(RECORD.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RemotectlError(f"cannot read {RECORD}: {exc}",
                             f"It holds {RECORD_DIR}'s saved password hash; repair or remove it by hand.") from None
    return data if isinstance(data, dict) else None


def _write(data: Dict[str, Any]) -> None:
    atomic_write(RECORD, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o600)


def _owner_alive(data: Dict[str, Any]) -> bool:
    return processes.is_alive(data.get("owner_pid"), data.get("owner_start"))


def _put_back(data: Dict[str, Any]) -> str:
    """Restore the original hash if ours is still in place; remove the record. Says what it did."""
    user, original, ours = data.get("user", ""), data.get("original"), data.get("ours")
    now = current_hash(user)
    if ours is None or now == ours:
        # An empty original would mean "no password needed": lock the account instead.
        _chpasswd(f"{user}:{original or '*'}\n", encrypted=True)
        _set_last_change(user, data.get("last_change"))
        what = f"put {user}'s previous password back"
    else:
        what = f"left {user}'s password alone (it was changed after remotectl set it)"
    RECORD.unlink()
    return what


def recover() -> Optional[str]:
    """After an owner died without cleaning up (any state dir): undo its password. Says what it did."""
    if os.geteuid() != 0 or not RECORD.exists():
        return None
    with _locked():
        data = _read()
        if data is None or _owner_alive(data):
            return None
        return _put_back(data)


def running_elsewhere() -> Optional[str]:
    """The state dir of a live password server, if one runs on this machine."""
    if os.geteuid() != 0:
        return None
    try:
        data = _read()
    except RemotectlError:
        return None
    return str(data.get("state_dir")) if data and _owner_alive(data) else None


def claim(state_dir: Path, user: str, password: str) -> None:
    """Record the current hash (owner: this process), then set `user`'s password."""
    check_possible(user)
    with _locked():
        data = _read()
        if data is not None:
            if _owner_alive(data):
                raise RemotectlError(
                    f"a password server already runs on this machine (from {data.get('state_dir')}, "
                    f"pid {data.get('owner_pid')}); two would fight over {user}'s password",
                    f"Stop it first: remotectl down --state-dir {data.get('state_dir')}   "
                    "(or use key login, which any number of servers can share)")
            _put_back(data)
        entry = shadow_entry(user)
        if entry is None:
            raise RemotectlError(f"cannot read {user!r}'s entry in {SHADOW}",
                                 "Password login needs a shadow password file; use key login.")
        me = os.getpid()
        data = {"user": user, "original": entry[1], "last_change": entry[2], "ours": None,
                "state_dir": str(state_dir),
                "owner_pid": me, "owner_start": processes.start_time(me)}
        _write(data)  # before chpasswd: a crash from here on is undone by the next up or down
        _chpasswd(f"{user}:{password}\n", encrypted=False)
        data["ours"] = current_hash(user)
        _write(data)


def release(state_dir: Path) -> Optional[str]:
    """The server of `state_dir` has stopped: put the original hash back. Says what it did."""
    if os.geteuid() != 0:
        return None
    _legacy_restore(state_dir)
    if not RECORD.exists():
        return None
    with _locked():
        data = _read()
        if data is None or data.get("state_dir") != str(state_dir):
            return None
        return _put_back(data)


def _legacy_restore(state_dir: Path) -> None:
    """remotectl 0.1 kept the old hash in the state dir; honour such a file once."""
    legacy = state_dir / LEGACY_RESTORE
    try:
        user, _, old = legacy.read_text().rstrip("\n").partition(":")
    except OSError:
        return
    _chpasswd(f"{user}:{old or '*'}\n", encrypted=True)
    legacy.unlink()


def _set_last_change(user: str, last_change: Optional[str]) -> None:
    """chpasswd stamps today as the last change; put the recorded day back (empty: none)."""
    if last_change is None:
        return
    day = last_change if last_change.strip() else "-1"
    try:
        subprocess.run(["chage", "-d", day, user], capture_output=True, timeout=30, env=_ENV)
    except (OSError, subprocess.TimeoutExpired):
        pass  # the hash is back; only the date of the last change differs


def _chpasswd(line: str, encrypted: bool) -> None:
    argv = ["chpasswd", "-e"] if encrypted else ["chpasswd", "-c", "SHA512", "-s", str(HASH_ROUNDS)]
    try:
        result = subprocess.run(argv, input=line, text=True, capture_output=True, timeout=60, env=_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RemotectlError(f"chpasswd failed: {exc}") from None
    if result.returncode != 0:
        # chpasswd's message names the user, never the password.
        raise RemotectlError(f"chpasswd failed: {result.stderr.strip()[:200]}")
