"""`status` tells the truth: running (0), broken with what runs and the fix (1), not running (3)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.serverkit import assert_nothing_left, status
from helpers.sshkit import client_key, pid_alive, remotectl, up_detached

pytestmark = pytest.mark.timeout(180)


@pytest.mark.slow
def test_status_follows_what_really_runs(ngrok_agent, tmp_path):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, NGROK_AUTHTOKEN=GOOD_TOKEN)
    state_dir = tmp_path / "state"

    code, report = status(state_dir, env=env)
    assert (code, report["state"], report["running"]) == (3, "not running", False)
    human = remotectl("status", "--state-dir", str(state_dir), env=env)
    assert human.returncode == 3 and human.stdout.startswith(f"not running (state dir {state_dir})")

    info = up_detached(state_dir, env=env)
    code, report = status(state_dir, env=env)
    assert (code, report["state"]) == (0, "running")
    assert report["live"] == {"supervisor": info["pid"], "sshd": info["pids"]["sshd"],
                              "ngrok agent": info["pids"]["agent"]}
    assert report["connect_line"] == info["connect_line"]

    os.kill(info["pid"], signal.SIGKILL)  # the supervisor dies; sshd and the agent live on
    deadline = time.monotonic() + 10
    while pid_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    code, report = status(state_dir, env=env)
    assert (code, report["state"], report["running"]) == (1, "broken", False)
    assert report["live"] == {"sshd": info["pids"]["sshd"], "ngrok agent": info["pids"]["agent"]}
    assert report["alive"]["owner"] is False
    assert report["fix"] == f"remotectl down --state-dir {state_dir}"
    human = remotectl("status", "--state-dir", str(state_dir), env=env)
    assert human.returncode == 1
    first = human.stdout.splitlines()[0]
    assert first == (f"BROKEN: not serving, but sshd (pid {info['pids']['sshd']}), "
                     f"ngrok agent (pid {info['pids']['agent']}) still run")
    assert f"remotectl down --state-dir {state_dir}" in human.stdout
    assert "remotectl connect" not in human.stdout  # a broken server offers no line to paste

    down = remotectl("down", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert f"sshd (pid {info['pids']['sshd']})" in down.stdout
    assert f"ngrok agent (pid {info['pids']['agent']})" in down.stdout
    assert_nothing_left(state_dir, info)
    code, report = status(state_dir, env=env)
    assert (code, report["state"]) == (3, "not running")


def test_status_of_a_kernel_server_whose_kernel_died(tmp_path):
    """The notebook kernel that owned the server is gone (a runtime restart): broken, not running."""
    import subprocess
    import sys

    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    state_dir = tmp_path / "state"
    kernel = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, remote; remote.up('direct', state_dir=sys.argv[1], "
         "quiet=True); print('ready', flush=True); time.sleep(600)", str(state_dir)],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert kernel.stdout.readline().strip() == "ready"
        code, report = status(state_dir, env=env)
        assert (code, report["state"], report["mode"]) == (0, "running", "kernel")
        assert report["live"]["notebook kernel"] == kernel.pid
        kernel.kill()
        kernel.wait(10)
        code, report = status(state_dir, env=env)
        assert (code, report["state"]) == (1, "broken") and list(report["live"]) == ["sshd"]
    finally:
        if kernel.poll() is None:
            kernel.kill()
    assert remotectl("down", "--state-dir", str(state_dir), env=env).returncode == 0
    assert_nothing_left(state_dir)
