"""The rest of the ways `up` and `down` can fail: one line, what to do, nothing lost.

A read-only state dir is made for real with a read-only bind mount inside a private mount
namespace (`unshare --mount`): root ignores permission bits, but not a read-only mount.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers.serverkit import assert_nothing_left, our_processes
from helpers.sshkit import CLI, client_key, pid_alive, remotectl, up_detached

pytestmark = pytest.mark.timeout(180)

READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'


def _read_only(folder, command, env):
    """Run `command` in a mount namespace where `folder` is a read-only mount (needs root)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", READ_ONLY,
                           "sh", str(folder), *command], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


def _env(tmp_path):
    _key, public = client_key(tmp_path / "client")
    return dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)


def test_up_on_a_read_only_state_dir_is_one_line_and_starts_nothing(tmp_path):
    env = _env(tmp_path)
    folder = tmp_path / "readonly"
    folder.mkdir(mode=0o700)
    result = _read_only(folder, [*CLI, "up", "--tunnel", "direct", "--detach", "--state-dir",
                                 str(folder / "state")], env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"remotectl: error: the state dir {folder / 'state'} is on a read-only file system"
    assert "--state-dir" in lines[1] and "Traceback" not in result.stderr and "report" not in result.stderr
    assert our_processes(folder) == []


def test_down_on_a_state_dir_that_became_read_only_still_stops_everything(tmp_path):
    env = _env(tmp_path)
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, "--tunnel", "direct", env=env)
    os.kill(info["pid"], signal.SIGKILL)  # its owner is gone, so only down can stop and tidy
    deadline = time.monotonic() + 10
    while pid_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    result = _read_only(state_dir, [*CLI, "down", "--state-dir", str(state_dir)], env)
    assert result.returncode == 1
    assert result.stdout.startswith(f"stopped sshd (pid {info['pids']['sshd']})")
    lines = result.stderr.splitlines()
    assert lines[0] == (f"remotectl: error: could not remove state.json from {state_dir}: Read-only file "
                        "system (and 1 more)")
    assert "Everything recorded has stopped" in result.stderr and "Traceback" not in result.stderr
    assert not pid_alive(info["pids"]["sshd"]) and our_processes(state_dir) == []
    # once the folder is writable again, down tidies what it could not
    again = remotectl("down", "--state-dir", str(state_dir), env=env)
    assert again.returncode == 0, again.stderr
    assert_nothing_left(state_dir, info)


def test_direct_on_loopback_says_the_card_works_only_here(tmp_path):
    env = _env(tmp_path)
    state_dir = tmp_path / "state"
    result = remotectl("up", "--tunnel", "direct", "--detach", "--json", "--state-dir", str(state_dir), env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert ("note: --tunnel direct with --bind 127.0.0.1: the card works only on this machine. "
                "To reach it from another, add --bind 0.0.0.0") in result.stderr
        assert json.loads(result.stdout)["host"] == "127.0.0.1"  # stdout stays one JSON object
    finally:
        remotectl("down", "--state-dir", str(state_dir), env=env)
    bound = remotectl("up", "--tunnel", "direct", "--bind", "0.0.0.0", "--detach", "--state-dir",
                      str(state_dir), env=env)
    try:
        assert bound.returncode == 0, bound.stderr
        assert "note:" not in bound.stderr
    finally:
        remotectl("down", "--state-dir", str(state_dir), env=env)
