"""sshd's StrictModes, checked before anything starts: would it refuse keys under this folder?

sshd (safe_path in OpenSSH's misc.c) refuses every key in an authorized_keys file when
that file, or any folder above it up to the user's home (or up to `/` outside the home),
is writable by others, or by a group, or owned by someone other than root or the user.
Debian and Ubuntu (Colab) patch one exception in: a group-writable folder is fine when
that group's only member is the folder's owner (user private groups). A state dir under
`/tmp` (mode 1777) is the common case: sshd would start, the card would print, and every
login would fail with "Permission denied (publickey)". So `up` refuses such a folder up
front, naming it, its mode and owner, and what to do; where this check and a platform's
sshd still disagree, the probe login (login_probe.py) explains from sshd's own log.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import Optional, Tuple


def problem(folder: Path, uid: Optional[int] = None) -> Optional[str]:
    """Why sshd would refuse an authorized_keys in `folder` (which may not exist yet), or None."""
    found = first_refused(folder, uid)
    return describe(*found) if found else None


def first_refused(folder: Path, uid: Optional[int] = None) -> Optional[Tuple[Path, os.stat_result]]:
    """The lowest folder at or above `folder` that StrictModes refuses, with its stat, or None.

    Folders not made yet are made by `up` with mode 0700, so only existing ones are checked.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        home = os.path.realpath(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        home = None
    current = Path(os.path.realpath(folder))
    while not current.exists() and current != current.parent:
        current = current.parent
    while True:
        try:
            info = current.stat()
        except OSError:
            return None  # sshd cannot stat it either; writing there fails first, with its own error
        if not secure(info, uid):
            return current, info
        if str(current) == home or current == current.parent:
            return None
        current = current.parent


def secure(info: os.stat_result, uid: int) -> bool:
    """One folder as sshd judges it (with Debian's user-private-group rule for group write)."""
    if info.st_uid not in (0, uid) or info.st_mode & 0o002:
        return False
    return not info.st_mode & 0o020 or _only_member_is_owner(info.st_gid, info.st_uid)


def _only_member_is_owner(gid: int, owner: int) -> bool:
    try:
        group = grp.getgrgid(gid)
        owner_name = pwd.getpwuid(owner).pw_name
    except KeyError:
        return False
    primary = [p.pw_uid for p in pwd.getpwall() if p.pw_gid == gid]
    if any(member != owner for member in primary):
        return False
    extra = list(group.gr_mem)
    if extra and extra != [owner_name]:
        return False
    return bool(primary or extra)


def describe(folder: Path, info: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    mode = stat.S_IMODE(info.st_mode)
    why = []
    if info.st_mode & 0o002:
        why.append("writable by everyone")
    elif info.st_mode & 0o020:
        try:
            group = grp.getgrgid(info.st_gid).gr_name
        except KeyError:
            group = str(info.st_gid)
        why.append(f"writable by its group {group}, which has other members")
    if info.st_uid not in (0, os.geteuid()):
        why.append(f"owned by {owner}")
    return f"{folder} (mode {mode:04o}, owner {owner}) is {' and '.join(why)}"


def refusal_hint(folder: Path, info: Optional[os.stat_result] = None) -> str:
    """What to do: another state dir; chmod only for a folder of the user's own (never /tmp's kind)."""
    text = ("sshd's StrictModes refuses every key kept under a folder that others can write, so no "
            "login could work. Use a --state-dir only you can write (the default is "
            "~/.local/state/remotectl)")
    shared = info is not None and (info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid())
    if info is None or shared:
        return text + "."
    return text + f", or take the write bit away: chmod go-w {folder}"
