"""Processes we started, named by pid *and* start time, so a recycled pid is never signalled.

`down` stops what `up` recorded (see children.py) and nothing else: never by name. A
process whose pid was not yet recorded is found by its command line holding arguments
that name our own state dir, and only if it started within the moments `up` meant to
start it (`find_started`).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Dict, List, Optional, Sequence


def start_time(pid: int) -> Optional[int]:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    if fields and fields[0] == "Z":
        return None  # a zombie has already exited
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def ticks_now() -> int:
    """Now, in the unit of `start_time` (clock ticks since boot)."""
    with open("/proc/uptime", "rb") as handle:
        uptime = float(handle.read().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def ticks_per_second() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def command_line(pid: int) -> List[str]:
    """The arguments of `pid` ([] if gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def has_arguments(argv: Sequence[str], marker: Sequence[str]) -> bool:
    """Whether `marker` appears in `argv` as consecutive arguments.

    `--name=value` counts as `--name value` (pyngrok 7 writes the one, 9 the other). A
    process that rewrote its title (sshd's listener: "sshd: /usr/sbin/sshd -D -f CFG
    [listener] ...") shows one space-joined string, which is matched as words.
    """
    marker = list(marker)
    if not marker:
        return False
    argv = [part for arg in argv for part in _split_option(arg)]  # --config=P is --config P
    n = len(marker)
    if any(list(argv[i:i + n]) == marker for i in range(len(argv) - n + 1)):
        return True
    joined = f" {' '.join(argv)} "
    return len(argv) == 1 and f" {' '.join(marker)} " in joined


def _split_option(arg: str) -> List[str]:
    if arg.startswith("--") and "=" in arg:
        name, _, value = arg.partition("=")
        return [name, value]
    return [arg]


def find_started(marker: Sequence[str], not_before: int, not_after: int) -> Dict[int, int]:
    """{pid: start time} of live processes with `marker` in their arguments, started in the window."""
    found: Dict[int, int] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        started = start_time(pid)
        if started is None or not not_before <= started <= not_after:
            continue
        if has_arguments(command_line(pid), marker):
            found[pid] = started
    return found


def children_of(pid: int) -> List[int]:
    """The live direct children of `pid` (sshd's per-connection processes)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] != "Z":
            kids.append(int(entry))
    return kids


def is_alive(pid: Optional[int], started: Optional[int]) -> bool:
    """True if `pid` still runs and is the very process recorded (same start time).

    Without a recorded start time nothing proves that a live `pid` is still ours (pids are
    reused), so it does not count: a damaged or foreign record never gets an unrelated
    process signalled. Neither do pid 1 and below (init; `kill(-1)` would be everyone).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    if not isinstance(started, int) or isinstance(started, bool):
        return False
    return start_time(pid) == started


def stop(pid: Optional[int], started: Optional[int], grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; True if we stopped something."""
    if not is_alive(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid, started):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and is_alive(pid, started):
        _reap(pid)
        time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now (with SO_REUSEADDR, as sshd binds)."""
    return bind_error(host, port) is None


def bind_error(host: str, port: int) -> Optional[OSError]:
    """Why host:port cannot be bound now (errno EADDRINUSE: taken), or None if it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (bind to 0, read it, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
