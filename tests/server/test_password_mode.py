"""Password mode, run only inside a private mount namespace with its own copy of /etc.

Password mode sets the served user's system password (root's here), so every test in this
file runs `up`, `down` and the notebook API inside helpers.private_etc.PrivateEtc: the
namespace's /etc/shadow and /etc/remotectl are copies, and the real ones are checked to be
byte-identical afterwards (here, and by the session check in tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time

import paramiko
import pytest
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.serverkit import assert_nothing_left, our_processes
from helpers.sshkit import CLI, client_key, cmdlines, pid_alive

pytestmark = pytest.mark.timeout(300)

STRONG = "correct-horse-" + os.urandom(6).hex()
RECORD = "remotectl/password-restore.json"


def _env(tmp_path, password=STRONG, **extra):
    pub = tmp_path / "client" / "id_test.pub"
    public = pub.read_text().strip() if pub.exists() else client_key(tmp_path / "client")[1]
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, **extra)
    if password is not None:
        env["REMOTECTL_PASSWORD"] = password
    return env


def _up(etc, state_dir, env, *args):
    return etc.run([*CLI, "up", "--detach", "--json", "--tunnel", "direct", "--state-dir", str(state_dir),
                    *args], env=env)


def _down(etc, state_dir, env):
    return etc.run([*CLI, "down", "--state-dir", str(state_dir)], env=env)


def _password_client(info, password):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[{info['host']}]:{info['port']}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=base64.b64decode(info["host_key"].split()[1])))
    client.connect(info["host"], port=info["port"], username="root", password=password,
                   allow_agent=False, look_for_keys=False, timeout=30)
    return client


DRIVER = """
import json, os, sys
import remote
session = remote.launch_ssh(os.environ.pop("T_TOKEN"), os.environ.pop("T_PASSWORD"), state_dir=sys.argv[1])
print("INFO", json.dumps(session.info), flush=True)
sys.stdin.readline()
print("DOWN", json.dumps(session.down()), flush=True)
"""


@pytest.mark.slow
def test_launch_ssh_with_password_then_secrets_nowhere(ngrok_agent, tmp_path, etc):
    """The seed's call, through the notebook API: ngrok plus password; the secrets leak nowhere."""
    token = GOOD_TOKEN + os.urandom(4).hex()
    state_dir = tmp_path / "state"
    before = etc.shadow_line("root")
    env = dict(os.environ, T_TOKEN=token, T_PASSWORD=STRONG)
    kernel = etc.popen([sys.executable, "-c", DRIVER, str(state_dir)], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        printed = []
        while not printed or not printed[-1].startswith("INFO "):
            line = kernel.stdout.readline()
            assert line, kernel.stderr.read()
            printed.append(line.rstrip("\n"))
        info = json.loads(printed.pop()[5:])
        assert printed[-1] == info["connect_line"]  # launch_ssh's own lines, the line to paste last
        assert f"Host: {info['host']}" in printed and f"Port: {info['port']}" in printed
        assert info["password_login"] is True and info["tunnel"] == "ngrok"
        client = _password_client(info, STRONG)
        _, stdout, _ = client.exec_command("id -un")
        assert stdout.read().decode().strip() == "root"
        client.close()
        running = cmdlines()
        assert token not in running and STRONG not in running
        for path in state_dir.iterdir():
            text = path.read_bytes().decode(errors="replace")
            assert STRONG not in text, path
            if token in text:
                assert path.name == "ngrok.yml" and stat.S_IMODE(path.stat().st_mode) == 0o600
        config = (state_dir / "sshd_config").read_text()
        for line in ("PasswordAuthentication yes", "MaxAuthTries 3", "LoginGraceTime 20", "MaxStartups 10:30:60"):
            assert line in config.splitlines(), line
        changed = etc.shadow_hash("root")
        assert changed != before.split(":")[1] and changed.startswith("$6$rounds=500000$")
        record = etc.path(RECORD)
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
        assert json.loads(record.read_text())["original"] == before.split(":")[1]
        out, err = kernel.communicate("go\n", timeout=60)
    finally:
        if kernel.poll() is None:
            kernel.kill()
    assert "sshd" in json.loads(out.splitlines()[-1][5:]), err
    assert etc.shadow_line("root") == before  # the whole line: hash and date of last change
    assert not etc.path(RECORD).exists()
    assert token not in out + err and STRONG not in out + err
    assert_nothing_left(state_dir, info)


@pytest.mark.parametrize("password, words", [
    ("a", "has 1 characters"),
    ("eleven-char", "has 11 characters"),
    ("password1234", "guessing tools try first"),
    ("aaaaaaaaaaaaaaaa", "guessing tools try first"),
    ("1234567890123456", "guessing tools try first"),
    ("QwertyUiopAsdf", "guessing tools try first"),
    ("has:a-colon-in-it", "':'"),
])
def test_weak_passwords_are_refused_and_nothing_changes(tmp_path, etc, password, words):
    before = etc.path("shadow").read_bytes()
    state_dir = tmp_path / "state"
    result = _up(etc, state_dir, _env(tmp_path, password))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("remotectl: error: ") and words in result.stderr.splitlines()[0]
    assert "REMOTECTL_AUTHORIZED_KEY" in result.stderr  # the way out: key login
    assert password not in result.stderr + result.stdout or len(password) < 2
    assert etc.path("shadow").read_bytes() == before
    assert not etc.path(RECORD).exists() and not state_dir.exists()


@pytest.mark.slow
def test_sshd_allows_three_tries_per_connection_then_the_right_password(tmp_path, etc):
    state_dir = tmp_path / "state"
    result = _up(etc, state_dir, _env(tmp_path))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    try:
        transport = paramiko.Transport((info["host"], info["port"]))
        transport.start_client(timeout=20)
        refused = 0
        with pytest.raises((paramiko.SSHException, EOFError, OSError)) as cut:
            for attempt in range(10):
                try:
                    transport.auth_password("root", f"wrong-guess-{attempt}-xxxxx")
                except paramiko.AuthenticationException:
                    refused += 1
        assert refused == 3, (refused, cut.value)  # the fourth try finds the connection closed
        transport.close()
        client = _password_client(info, STRONG)
        client.close()
    finally:
        assert _down(etc, state_dir, _env(tmp_path)).returncode == 0


@pytest.mark.slow
def test_a_second_password_server_is_refused_while_one_runs(tmp_path, etc):
    before = etc.shadow_line("root")
    env = _env(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    assert _up(etc, first, env).returncode == 0
    try:
        refused = _up(etc, second, _env(tmp_path, password="another-" + STRONG))
        assert refused.returncode == 1
        assert refused.stderr.splitlines()[0] == (
            f"remotectl: error: a password server already runs on this machine (from {first}); two would "
            "fight over root's password")
        assert f"remotectl down --state-dir {first}" in refused.stderr
        assert our_processes(second) == []
        keys_only = _up(etc, second, _env(tmp_path, password=None))  # key servers share the machine
        assert keys_only.returncode == 0, keys_only.stderr
        assert _down(etc, second, env).returncode == 0
    finally:
        assert _down(etc, first, env).returncode == 0
    assert etc.shadow_line("root") == before and not etc.path(RECORD).exists()


def _crash_password_server(etc, state_dir, env):
    """A password server whose supervisor is SIGKILLed: sshd lives on, root keeps our password."""
    result = _up(etc, state_dir, env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return info


def test_after_a_crash_any_down_puts_the_password_back_once(tmp_path, etc):
    before = etc.shadow_line("root")
    env = _env(tmp_path)
    crashed = tmp_path / "crashed"
    _crash_password_server(etc, crashed, env)
    assert etc.shadow_line("root") != before
    elsewhere = _down(etc, tmp_path / "never-used", env)  # another state dir, where nothing ran
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "put root's previous password back" in elsewhere.stderr
    assert etc.shadow_line("root") == before and not etc.path(RECORD).exists()
    again = _down(etc, crashed, env)  # stops the sshd the crash left; the password is not touched twice
    assert again.returncode == 0 and "sshd" in again.stdout
    assert "password" not in again.stderr
    assert etc.shadow_line("root") == before
    assert_nothing_left(crashed)


@pytest.mark.slow
def test_two_password_servers_in_a_row_after_a_crash_leave_the_original(tmp_path, etc):
    """The issue's case: the second server must not save the first one's password as 'original'."""
    before = etc.shadow_line("root")
    env = _env(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    _crash_password_server(etc, first, env)
    started = _up(etc, second, _env(tmp_path, password="second-" + STRONG))
    assert started.returncode == 0, started.stderr
    assert json.loads(etc.path(RECORD).read_text())["original"] == before.split(":")[1]
    assert _down(etc, second, env).returncode == 0
    assert etc.shadow_line("root") == before
    assert _down(etc, first, env).returncode == 0
    assert etc.shadow_line("root") == before
    assert_nothing_left(first)
    assert_nothing_left(second)


def test_a_password_changed_after_the_crash_is_left_alone(tmp_path, etc):
    env = _env(tmp_path)
    crashed = tmp_path / "crashed"
    _crash_password_server(etc, crashed, env)
    admin = etc.run(["chpasswd"], input="root:the-admins-own-choice-42\n")  # someone sets it anew
    assert admin.returncode == 0, admin.stderr
    chosen = etc.shadow_line("root")
    result = _down(etc, crashed, env)
    assert result.returncode == 0
    assert "left root's password alone" in result.stderr
    assert etc.shadow_line("root") == chosen and not etc.path(RECORD).exists()
