"""Foreground `up` (Ctrl-C / SIGTERM tear down), the notebook API, and cheap `import remote`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers.sshkit import CLI, assert_all_gone, client_key, pinned_ssh_config, ssh

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_up_serves_until_signalled(tmp_path, sig):
    key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    state_dir = tmp_path / "state"
    proc = subprocess.Popen([*CLI, "up", "--tunnel", "direct", "--json", "--state-dir", str(state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(_read_json_object(proc))
        assert info["mode"] == "foreground" and info["pid"] == proc.pid and info["detached"] is False
        result = ssh(pinned_ssh_config(tmp_path / "ssh", info, key), "echo fg")
        assert result.stdout.strip() == "fg", result.stderr
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert "stopped sshd" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_all_gone(dict(info, pids={"sshd": info["pids"]["sshd"]}))
    assert not (state_dir / "state.json").exists()


def _read_json_object(proc) -> str:
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("up exited early: " + proc.stderr.read())
        lines.append(line)
        if line.rstrip() == "}":
            return "".join(lines)
    raise AssertionError("no JSON from up")


def test_human_output_ends_with_the_connect_line(tmp_path):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    state_dir = tmp_path / "state"
    result = subprocess.run([*CLI, "up", "--tunnel", "direct", "--detach", "--state-dir", str(state_dir)],
                            capture_output=True, text=True, env=env, timeout=120)
    try:
        assert result.returncode == 0, result.stderr
        last = result.stdout.splitlines()[-1]
        assert last.startswith("remotectl connect rc1.")
        assert "SHA256:" in result.stdout and "remotectl down" in result.stdout
    finally:
        subprocess.run([*CLI, "down", "--state-dir", str(state_dir)], capture_output=True, timeout=60)


def test_notebook_api_in_kernel_and_rerun(tmp_path, capsys):
    import remote
    from remote.server import kernel

    key, public = client_key(tmp_path / "client")
    state_dir = tmp_path / "state"
    first = remote.up("direct", authorized_keys=public, state_dir=state_dir)
    second = remote.up("direct", authorized_keys=[public], state_dir=state_dir)  # a re-run cell
    try:
        out = capsys.readouterr()
        assert "previous server" in out.err
        assert out.out.splitlines()[-1] == second.connect_line
        assert first.session != second.session and first.host_key == second.host_key
        assert not _alive(first.pids["sshd"])
        assert second.info["mode"] == "kernel" and second.pids["owner"] == os.getpid()
        assert isinstance(second, remote.Session) and second.fingerprint.startswith("SHA256:")
        assert second.as_card().port == second.port
        result = ssh(pinned_ssh_config(tmp_path / "ssh", second.info, key), "echo api")
        assert result.stdout.strip() == "api", result.stderr
        assert second.connect_line in repr(second)
    finally:
        stopped = second.down()
    assert stopped.get("sshd") == second.pids["sshd"]
    assert kernel.server_for(str(state_dir)) is None
    assert_all_gone(dict(second.info, pids={"sshd": second.pids["sshd"]}))


def test_down_from_another_process_stops_a_kernel_server(tmp_path):
    import remote

    _key, public = client_key(tmp_path / "client")
    state_dir = tmp_path / "state"
    session = remote.up("direct", authorized_keys=public, state_dir=state_dir, quiet=True)
    result = subprocess.run([*CLI, "down", "--state-dir", str(state_dir)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "sshd" in result.stdout
    assert "up" not in result.stdout.split("stopped", 1)[1].split(",")[0]  # the kernel itself lives
    assert_all_gone(dict(session.info, pids={"sshd": session.pids["sshd"]}))
    deadline = time.monotonic() + 10  # the kernel's watcher notices and releases the state dir
    from remote.server import kernel

    while time.monotonic() < deadline and not kernel.server_for(str(state_dir)).stopped:
        time.sleep(0.1)
    assert kernel.server_for(str(state_dir)).stopped
    session.down()


def _alive(pid: int) -> bool:
    from helpers.sshkit import pid_alive

    return pid_alive(pid)


def test_import_remote_stays_cheap():
    code = ("import sys, remote; heavy = [m for m in ('pyngrok', 'paramiko', 'cryptography', 'torch') "
            "if m in sys.modules]; print(heavy); remote.up; print(callable(remote.launch_ssh))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["[]", "True"], out.stderr
