"""Ready means proven: a card is printed only after a real login through the public endpoint.

Real sshd, the real ngrok stand-in (which can be told to drop connections or to forward to
another SSH server), real paramiko. A state dir that sshd's StrictModes would reject is
refused before anything starts.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.serverkit import assert_nothing_left, our_processes
from helpers.sshd import SshServer
from helpers.sshkit import client_key, pinned_ssh_config, remotectl, ssh, up_detached

from remote import keys
from remote.errors import RemotectlError
from remote.server import login_probe

pytestmark = pytest.mark.timeout(180)


def _env(tmp_path, **extra):
    key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, NGROK_AUTHTOKEN=GOOD_TOKEN, **extra)
    return key, public, env


def test_the_card_comes_after_a_probe_login_through_the_tunnel(ngrok_agent, tmp_path):
    key, public, env = _env(tmp_path)
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, env=env)
    try:
        accepted = [line for line in (state_dir / "sshd.log").read_text().splitlines()
                    if "Accepted publickey" in line]
        # exactly one login happened before up returned: the probe's, with a key that is not the user's
        assert len(accepted) == 1, accepted
        assert keys.fingerprint(public) not in accepted[0]
        assert 0 < info["proof_seconds"] <= info["ready_seconds"]
        # ...and its key is gone again: authorized_keys holds the user's key only
        assert (state_dir / "authorized_keys").read_text() == public + "\n"
        result = ssh(pinned_ssh_config(tmp_path / "ssh", info, key), "echo user-login")
        assert result.stdout.strip() == "user-login", result.stderr
    finally:
        remotectl("down", "--state-dir", str(state_dir))
    assert_nothing_left(state_dir, info)


@pytest.mark.parametrize("detach", [True, False])
def test_a_tunnel_that_never_reaches_sshd_prints_no_card(ngrok_agent, tmp_path, detach):
    _key, public, env = _env(tmp_path, FAKE_NGROK_MODE="drop")
    state_dir = tmp_path / "state"
    result = remotectl("up", "--json", "--state-dir", str(state_dir), *(["--detach"] if detach else []),
                       env=env)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("remotectl: error: the login through 127.0.0.1:")
    assert "never reached sshd" in result.stderr and "Traceback" not in result.stderr
    assert our_processes(state_dir) == []
    assert not (state_dir / "state.json").exists() and not (state_dir / "children.json").exists()
    assert (state_dir / "authorized_keys").read_text() == public + "\n"  # the probe's line is gone
    assert not (state_dir / "ngrok.yml").exists()


def test_a_tunnel_to_another_ssh_server_prints_no_card(ngrok_agent, tmp_path):
    other = SshServer(tmp_path / "other-sshd").start()
    try:
        _key, _public, env = _env(tmp_path, FAKE_NGROK_FORWARD_TO=f"127.0.0.1:{other.port}")
        state_dir = tmp_path / "state"
        result = remotectl("up", "--state-dir", str(state_dir), env=env)
    finally:
        other.stop()
    assert result.returncode == 1
    assert "reached an SSH server with another host key" in result.stderr
    assert result.stdout == "" and our_processes(state_dir) == []


def test_the_probe_explains_strictmodes_from_sshds_own_log(tmp_path):
    """A real sshd that refuses keys because the folder of authorized_keys is writable by all."""
    server = SshServer(tmp_path / "sshd").start()
    try:
        os.chmod(server.root, 0o777)
        target = login_probe.Target(host="127.0.0.1", port=server.port, user="root",
                                    host_key=server.host_public_key)
        with pytest.raises(RemotectlError) as caught:
            login_probe.prove(target, server.authorized_keys_path, [], server.log_path, timeout=20)
    finally:
        os.chmod(server.root, 0o700)
        server.stop()
    error = caught.value
    assert error.message == f"sshd refuses every key: StrictModes rejects {server.root} (mode 0777)"
    assert "--state-dir only you can write" in error.hint and f"chmod go-w {server.root}" in error.hint
    assert server.authorized_keys_path.read_text() == ""  # the probe's line was taken out again


@pytest.mark.parametrize("mode, group, words", [
    (0o1777, None, "writable by everyone"),
    (0o775, "nogroup", "writable by its group nogroup, which has other members"),  # nobody's group
])
def test_a_state_dir_strictmodes_would_reject_is_refused_up_front(tmp_path, mode, group, words):
    _key, public, env = _env(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    if group:
        shutil.chown(shared, group=group)
    state_dir = shared / "remotectl" / "state"
    result = remotectl("up", "--tunnel", "direct", "--detach", "--state-dir", str(state_dir), env=env)
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first == (f"remotectl: error: --state-dir {state_dir}: {shared} (mode {mode:04o}, owner root) "
                     f"is {words}")
    assert "StrictModes" in result.stderr and "--state-dir only you can write" in result.stderr
    # chmod is offered for a folder of one's own, never for a shared sticky one such as /tmp
    assert (f"chmod go-w {shared}" in result.stderr) == (not mode & stat.S_ISVTX)
    assert not (shared / "remotectl").exists()  # nothing was made


def test_a_group_writable_folder_of_a_private_group_is_accepted_as_sshd_accepts_it(tmp_path):
    """Debian's sshd accepts group write when the group's only member is the owner (root's group)."""
    key, public, env = _env(tmp_path)
    os.chmod(tmp_path, 0o770)
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, "--tunnel", "direct", env=env)  # the probe login proves sshd agreed
    try:
        assert ssh(pinned_ssh_config(tmp_path / "ssh", info, key), "true").returncode == 0
    finally:
        remotectl("down", "--state-dir", str(state_dir))


def test_folders_up_makes_above_the_state_dir_are_private(tmp_path):
    _key, public, env = _env(tmp_path)
    os.umask(0o002)  # a permissive umask (inherited by the CLI) must not make a folder group-writable
    try:
        state_dir = tmp_path / "a" / "b" / "state"
        info = up_detached(state_dir, "--tunnel", "direct", env=env)
    finally:
        os.umask(0o022)
    try:
        for folder in (tmp_path / "a", tmp_path / "a" / "b", state_dir):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert json.loads((state_dir / "state.json").read_text())["session"] == info["session"]
    finally:
        remotectl("down", "--state-dir", str(state_dir))
