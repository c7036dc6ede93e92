"""Where a secret could still hide while the server runs: the environment of every process on
the machine (/proc/*/environ: the supervisor, sshd, the agent, a logged-in session), the
environment an ssh session gets through SetEnv, and every file in the state dir but the
agent's own 0600 config. Held when tried; kept so that it stays held."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.sshkit import client_key, pinned_ssh_config, remotectl, ssh, up_detached

pytestmark = pytest.mark.timeout(180)


def _holders(secret: bytes):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for part in ("environ", "cmdline"):
            try:
                data = Path(f"/proc/{entry}/{part}").read_bytes()
            except OSError:
                continue
            if secret in data:
                found.append((int(entry), part))
    return found


@pytest.mark.slow
def test_the_token_is_in_no_process_environment_and_no_ssh_session(ngrok_agent, tmp_path):
    token = GOOD_TOKEN + os.urandom(6).hex()
    hf_token = "hf_" + os.urandom(8).hex()  # under a carried prefix (HF_), but a credential
    key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, NGROK_AUTHTOKEN=token, HF_TOKEN=hf_token,
               CUDA_VISIBLE_DEVICES="0")
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, env=env)
    try:
        session = ssh(pinned_ssh_config(tmp_path / "ssh", info, key),
                      "env; tr '\\0' '\\n' < /proc/$$/environ; sleep 0.5")
        assert session.returncode == 0, session.stderr
        assert "CUDA_VISIBLE_DEVICES=0" in session.stdout  # the notebook's variables do arrive
        assert token not in session.stdout and hf_token not in session.stdout
        assert _holders(token.encode()) == []
        # A credential of the notebook's own (HF_TOKEN) stays out of ssh sessions; the supervisor
        # and the agent inherit the notebook's environment like any child of it (root-only /proc).
        assert all(part == "environ" for _, part in _holders(hf_token.encode()))
        holding = sorted(p.name for p in state_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes())
        assert holding == ["ngrok.yml"] and oct((state_dir / "ngrok.yml").stat().st_mode & 0o777) == "0o600"
    finally:
        down = remotectl("down", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert not [p for p in state_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
