"""`up --tunnel direct --detach`: the real OpenSSH client logs in with the card's host key pinned."""

from __future__ import annotations

import json
import os
import socket

import paramiko
import pytest
from helpers.sshkit import (
    assert_all_gone,
    client_key,
    pid_alive,
    pinned_ssh_config,
    remotectl,
    ssh,
    up_detached,
)

from remote import card as cards
from remote import keys

pytestmark = pytest.mark.timeout(180)

TRICKY = 'two words "quoted" back\\slash #hash $dollar'


@pytest.fixture
def served(tmp_path):
    """A detached direct server with a test key; always taken down."""
    key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, COLAB_REMOTECTL_TEST=TRICKY,
               CUDA_VISIBLE_DEVICES="0")
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, "--tunnel", "direct", "--port", "0", env=env)
    yield info, key, state_dir, tmp_path
    remotectl("down", "--state-dir", str(state_dir))


def test_key_login_with_pinned_host_key_and_carried_environment(served):
    info, key, state_dir, tmp = served
    card = cards.decode(info["connect_line"])
    assert (card.host, card.port, card.tunnel, card.user) == ("127.0.0.1", info["port"], "direct", "root")
    assert keys.fingerprint(card.host_key) == info["fingerprint"]
    host_pub = (state_dir / "ssh_host_ed25519_key.pub").read_text()
    assert keys.bare(host_pub) == card.host_key
    config = pinned_ssh_config(tmp / "ssh", info, key)
    result = ssh(config, 'printf "%s|%s|%s" "$(id -un)" "$COLAB_REMOTECTL_TEST" "$CUDA_VISIBLE_DEVICES"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"root|{TRICKY}|0"


def test_wrong_pinned_host_key_is_refused(served):
    info, key, _state, tmp = served
    _, other = keys.generate_ed25519()
    config = pinned_ssh_config(tmp / "ssh-wrong", dict(info, host_key=keys.bare(other)), key)
    result = ssh(config, "true")
    assert result.returncode == 255
    assert "host key" in result.stderr.lower() or "identification" in result.stderr.lower()


def test_password_login_refused_in_key_mode(served):
    info, key, state_dir, tmp = served
    assert "PasswordAuthentication no" in (state_dir / "sshd_config").read_text()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[127.0.0.1]:{info['port']}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=__import__("base64").b64decode(info["host_key"].split()[1])))
    with pytest.raises(paramiko.AuthenticationException):
        client.connect("127.0.0.1", port=info["port"], username="root", password="anything",
                       allow_agent=False, look_for_keys=False, timeout=20)
    client.close()
    # the OpenSSH client is offered no password method at all
    config = pinned_ssh_config(tmp / "ssh-pw", info, None)
    result = ssh(config, "true", "-o", "PreferredAuthentications=password", "-o", "PasswordAuthentication=yes")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_status_then_down_leaves_nothing(served):
    info, _key, state_dir, _tmp = served
    status = json.loads(remotectl("status", "--json", "--state-dir", str(state_dir)).stdout)
    assert status["running"] and status["sshd_up"] and status["tunnel_up"]
    assert status["fingerprint"] == info["fingerprint"]
    assert all(pid_alive(p) for p in info["pids"].values())
    down = remotectl("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert f"sshd (pid {info['pids']['sshd']})" in down.stdout
    assert f"supervisor (pid {info['pid']})" in down.stdout
    assert "is free" in down.stdout
    assert_all_gone(info)
    assert not (state_dir / "state.json").exists()
    again = json.loads(remotectl("status", "--json", "--state-dir", str(state_dir)).stdout)
    assert again["running"] is False
    assert "nothing runs" in remotectl("down", "--state-dir", str(state_dir)).stdout


def test_second_up_in_same_state_dir_is_refused(served):
    info, _key, state_dir, _tmp = served
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=info["host_key"] + " x")
    result = remotectl("up", "--tunnel", "direct", "--detach", "--state-dir", str(state_dir), env=env)
    assert result.returncode == 1
    assert "already runs" in result.stderr and "remotectl down" in result.stderr
    assert pid_alive(info["pids"]["sshd"])


def test_host_key_kept_but_session_new_per_run(tmp_path):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    state_dir = tmp_path / "state"
    first = up_detached(state_dir, "--tunnel", "direct", env=env)
    remotectl("down", "--state-dir", str(state_dir))
    second = up_detached(state_dir, "--tunnel", "direct", env=env)
    try:
        assert second["host_key"] == first["host_key"]
        assert second["session"] != first["session"]
    finally:
        remotectl("down", "--state-dir", str(state_dir))
    assert_all_gone(second)


def test_no_key_and_no_password_is_bad_input(tmp_path):
    result = remotectl("up", "--tunnel", "direct", "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert result.stderr.startswith("remotectl: error: no way to log in")
    assert "Traceback" not in result.stderr


def test_ngrok_without_token_is_bad_input(tmp_path):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    result = remotectl("up", "--state-dir", str(tmp_path / "s"), env=env)
    assert result.returncode == 2
    assert "NGROK_AUTHTOKEN" in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_explained_and_nothing_left(tmp_path):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = remotectl("up", "--tunnel", "direct", "--detach", "--port", str(port),
                           "--state-dir", str(tmp_path / "s"), env=env)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port 0" in result.stderr
    assert not (tmp_path / "s" / "state.json").exists()


def test_sshd_failing_to_start_shows_its_log(tmp_path):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    # An address this machine does not have: sshd starts, cannot bind, and says so in its log.
    result = remotectl("up", "--tunnel", "direct", "--bind", "192.0.2.77", "--port", "2299",
                       "--state-dir", str(tmp_path / "s"), env=env)
    assert result.returncode == 1, result.stderr
    assert "sshd" in result.stderr
    assert "Cannot assign requested address" in result.stderr or "in use" in result.stderr
    assert "Traceback" not in result.stderr
