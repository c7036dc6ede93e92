"""Server-side checks for tests: what still runs from a state dir, and that nothing is left.

    our_processes(state_dir) -> pids of live processes whose arguments name the state dir
        (sshd -f <state>/sshd_config, the agent's --config <state>/ngrok.yml, the supervisor,
        an `up` still running); sshd's listener keeps the path in its rewritten title
    assert_nothing_left(state_dir, info=None, timeout=20) -> polls until nothing of ours runs,
        then checks the records and the agent's token file are gone and sshd's port is free
    status(state_dir, env=None, runner=None) -> (exit code, the --json object)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from helpers.sshkit import CLI, pid_alive, remotectl

from remote.server.processes import port_is_free


def our_processes(state_dir: Path) -> List[int]:
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) in argv and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def wait_gone(state_dir: Path, timeout: float = 20) -> List[int]:
    deadline = time.monotonic() + timeout
    left = our_processes(state_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = our_processes(state_dir)
    return left


def assert_nothing_left(state_dir: Path, info: Optional[Dict] = None, timeout: float = 20) -> None:
    left = wait_gone(state_dir, timeout)
    assert not left, f"still running from {state_dir}: {left}"
    for name in ("children.json", "state.json", "ngrok.yml"):
        assert not (state_dir / name).exists(), f"{name} was left in {state_dir}"
    if info:
        pids = [p for p in (info.get("pids") or {}).values() if p and p != os.getpid()]
        assert not [p for p in pids if pid_alive(p)], f"recorded pids still run: {pids}"
        host = info.get("local_host") or "127.0.0.1"
        assert port_is_free("127.0.0.1" if host == "0.0.0.0" else host, int(info["local_port"]))


def status(state_dir: Path, env: Optional[Dict[str, str]] = None,
           runner: Optional[Callable] = None) -> Tuple[int, Dict]:
    args = ["status", "--json", "--state-dir", str(state_dir)]
    if runner is None:
        result = remotectl(*args, env=env)
    else:
        result = runner([*CLI, *args], env=env)
    return result.returncode, json.loads(result.stdout)
