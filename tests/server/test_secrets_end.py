"""Secrets end with the server: the agent config holding the token goes at `down` (and at every
owner's own stop); a --persist folder never holds the token."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.serverkit import assert_nothing_left
from helpers.sshkit import CLI, client_key, remotectl, up_detached

pytestmark = pytest.mark.timeout(180)


def _env(tmp_path, token):
    _key, public = client_key(tmp_path / "client")
    return dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, NGROK_AUTHTOKEN=token)


def _holding(folder, token):
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and token.encode() in p.read_bytes())


def test_down_removes_the_token_and_persist_never_holds_it(ngrok_agent, tmp_path):
    token = GOOD_TOKEN + os.urandom(4).hex()
    env = _env(tmp_path, token)
    state_dir, kept = tmp_path / "state", tmp_path / "drive" / "identity"
    info = up_detached(state_dir, "--persist", str(kept), env=env)
    assert _holding(state_dir, token) == [str(state_dir / "ngrok.yml")]
    assert (kept / "ssh_host_ed25519_key").exists() and _holding(kept, token) == []
    down = remotectl("down", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert _holding(state_dir, token) == [] and _holding(kept, token) == []
    assert_nothing_left(state_dir, info)


def test_a_foreground_up_removes_the_token_when_it_stops(ngrok_agent, tmp_path):
    token = GOOD_TOKEN + os.urandom(4).hex()
    state_dir = tmp_path / "state"
    proc = subprocess.Popen([*CLI, "up", "--state-dir", str(state_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path, token))
    try:
        for line in proc.stdout:
            if line.startswith("remotectl connect "):
                break
        assert (state_dir / "ngrok.yml").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _holding(state_dir, token) == []
    assert_nothing_left(state_dir)


def test_a_state_dir_inside_the_persist_folder_is_refused(tmp_path):
    kept = tmp_path / "drive" / "remotectl"
    result = remotectl("up", "--tunnel", "direct", "--persist", str(kept),
                       "--state-dir", str(kept / "state"), env=_env(tmp_path, GOOD_TOKEN))
    assert result.returncode == 2
    assert result.stderr.startswith(f"remotectl: error: the state dir {kept / 'state'} is inside the "
                                    f"--persist folder {kept}")
    assert not kept.exists()
