"""`down` and `status` from any process, and the clean-up after an owner that died.

They read what the owner recorded (children.json from the first moment, state.json once
ready) and check it live: a pid counts only with its recorded start time, a child whose
pid was never written is found by its own arguments (children.py). Nothing is looked up
by name.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from remote.errors import RemotectlError
from remote.server import children, login_probe, passwords, processes, state
from remote.server.sshd import banner_answers
from remote.server.tunnels import NGROK_CONFIG, PROVIDERS, forget_agent_config

Echo = Callable[[str], None]

# `status` exit codes, as LSB init scripts and `systemctl status` use them.
RUNNING, BROKEN, NOT_RUNNING = 0, 1, 3


def already_running(state_dir: Path) -> RemotectlError:
    record = children.Record.load(state_dir)
    where = f" (pid {record.owner.pid})" if record else ""
    return RemotectlError(f"a server already runs from {state_dir}{where}",
                          f"Stop it first: remotectl down --state-dir {shlex.quote(str(state_dir))}  "
                          "(or use another --state-dir)")


def clean_leftovers(state_dir: Path, echo: Optional[Echo] = None) -> Dict[str, int]:
    """With the state dir's lock held: stop what a dead owner left, undo its password, drop its secrets."""
    stopped = _stop_recorded_children(state_dir)
    notes = [passwords.release(state_dir), passwords.recover()]
    login_probe.strip_probe_lines(state_dir / "authorized_keys")
    forget_agent_config(state_dir)
    state.clear_state(state_dir)
    try:
        (state_dir / children.RECORD).unlink()
    except FileNotFoundError:
        pass
    if echo is not None:
        if stopped:
            echo(f"remotectl: stopped what an earlier server left running: {describe_stopped(stopped)}")
        for note in filter(None, notes):
            echo(f"remotectl: {note}")
    return stopped


def _stop_recorded_children(state_dir: Path) -> Dict[str, int]:
    record = children.Record.load(state_dir)
    if record is not None:
        return record.stop_children()
    legacy = _legacy_pids(state_dir)  # a state.json from before children.json existed
    stopped = {}
    for name, (pid, start) in legacy.items():
        if name != "owner" and processes.stop(pid, start):
            stopped[name] = pid
    return stopped


def _legacy_pids(state_dir: Path) -> Dict[str, tuple]:
    try:
        recorded = state.read_state(state_dir) or {}
    except RemotectlError:
        return {}
    starts = recorded.get("starts") or {}
    return {name: (pid, starts.get(name)) for name, pid in (recorded.get("pids") or {}).items()
            if isinstance(pid, int) and starts.get(name) is not None}


# -- down -----------------------------------------------------------------------------------------
def stop_recorded(state_dir: Path, grace: float = 10.0) -> Dict[str, Any]:
    """`down`: stop the owner (unless it is a notebook kernel), then every child it recorded.

    Stopping needs no write access; tidying does. What could not be tidied (a read-only
    state dir) is listed under "problems" instead of raising, so the caller still says
    what was stopped.
    """
    record = children.Record.load(state_dir)
    try:
        info = state.read_info(state_dir)
    except RemotectlError:
        info = None
    legacy = _legacy_pids(state_dir) if record is None else {}
    result: Dict[str, Any] = {"state_dir": str(state_dir), "stopped": {}, "problems": [],
                              "was_running": bool(record or info or legacy)}
    stopped: Dict[str, int] = {}
    kind = info.tunnel if info else "tunnel"
    if record is not None:
        owner = record.owner
        running_before = record.running()
        if owner.mode in ("supervisor", "foreground") and owner.pid != os.getpid() and owner.alive():
            # The owner tears its children down itself on SIGTERM; what it leaves, we stop below.
            if processes.stop(owner.pid, owner.start, grace=grace):
                stopped["supervisor" if owner.mode == "supervisor" else "up"] = owner.pid
        for name, found in running_before.items():
            stopped[f"{kind} agent" if name == "agent" else name] = next(iter(found))
        for name, pid in record.stop_children().items():  # what the owner left (or all, if it is gone)
            stopped[f"{kind} agent" if name == "agent" else name] = pid
    for name, (pid, start) in legacy.items():
        if name != "owner" and processes.stop(pid, start):
            stopped[f"{kind} agent" if name == "agent" else name] = pid
    notes = []
    for undo in (lambda: passwords.release(state_dir), passwords.recover):
        try:
            notes.append(undo())
        except RemotectlError as exc:
            result["problems"].append(exc.message)
    result["notes"] = [n for n in notes if n]
    result["problems"] += _tidy(state_dir)
    result["stopped"] = stopped
    if info is not None:
        result["port"] = info.local_port
        result["port_free"] = _wait_port_free(info.local_host, info.local_port)
    return result


def _tidy(state_dir: Path) -> List[str]:
    """Remove the token file and the records; what could not be removed, in words."""
    problems = []
    for name, what in ((NGROK_CONFIG, "the ngrok agent config (it holds your token)"),
                       (state.STATE_FILE, "state.json"), (children.RECORD, "children.json")):
        path = state_dir / name
        if not path.exists():
            continue  # (a read-only folder would refuse even to unlink a missing file)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"could not remove {what} from {state_dir}: {exc.strerror}")
    return problems


def _wait_port_free(host: str, port: int, timeout: float = 5.0) -> bool:
    bind = "127.0.0.1" if host in ("0.0.0.0", "") else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes.port_is_free(bind, port):
            return True
        time.sleep(0.05)
    return processes.port_is_free(bind, port)


def describe_stopped(stopped: Dict[str, int]) -> str:
    return ", ".join(f"{name} (pid {pid})" for name, pid in stopped.items())


# -- status ---------------------------------------------------------------------------------------
def status(state_dir: Path) -> Dict[str, Any]:
    """`status`: what runs from this state dir, checked live, and whether it serves.

    "state" is one of running (exit 0), starting or broken (exit 1: something runs but
    not all of it serves), not running (exit 3); "exit_code" carries the number.
    """
    record = children.Record.load(state_dir)
    info_problem = None
    try:
        info = state.read_info(state_dir)
    except RemotectlError as exc:
        info, info_problem = None, exc.message
    report: Dict[str, Any] = {"state_dir": str(state_dir), "gpu": gpu_report()}
    if info is not None:
        report.update(info.to_dict())
    live: Dict[str, int] = {}
    alive: Dict[str, bool] = {}
    if record is not None:
        alive["owner"] = record.owner.alive()
        if alive["owner"]:
            live[_owner_name(record.owner.mode)] = record.owner.pid
        found = record.running()
        kind = info.tunnel if info else "tunnel"
        for name in sorted(record.children, key=lambda n: (n != "sshd", n)):  # sshd, then the agent
            alive[name] = name in found
            if name in found:
                live[f"{kind} agent" if name == "agent" else name] = next(iter(found[name]))
    sshd_up = bool(info and alive.get("sshd") and banner_answers(_loopback(info.local_host), info.local_port))
    provider = PROVIDERS.get(info.tunnel) if info else None
    tunnel_up = bool(provider and provider.recorded_up(info.to_dict(), alive.get("agent", False), sshd_up))
    if info is not None and alive.get("owner") and sshd_up and tunnel_up:
        what, code = "running", RUNNING
    elif record is not None and alive.get("owner") and info is None:
        what, code = "starting", BROKEN
    elif live:
        what, code = "broken", BROKEN
    else:
        what, code = "not running", NOT_RUNNING
    report.update({"state": what, "exit_code": code, "running": what == "running",
                   "sshd_up": sshd_up, "tunnel_up": tunnel_up, "alive": alive, "live": live})
    if info_problem:
        report["problem"] = info_problem
    if what == "broken":
        report["fix"] = f"remotectl down --state-dir {shlex.quote(str(state_dir))}"
    return report


def _owner_name(mode: str) -> str:
    return {"supervisor": "supervisor", "foreground": "up", "kernel": "notebook kernel"}.get(mode, mode)


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def gpu_report() -> Optional[str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None

