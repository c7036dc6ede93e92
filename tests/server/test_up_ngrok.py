"""`up --tunnel ngrok` through pyngrok against the stand-in agent: login, failures, secrets."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from helpers.ngrok_standin import BAD_TOKEN, GOOD_TOKEN, NOCARD_TOKEN
from helpers.sshkit import (
    assert_all_gone,
    client_key,
    cmdlines,
    pid_alive,
    pinned_ssh_config,
    remotectl,
    ssh,
    up_detached,
)

from remote import card as cards

pytestmark = pytest.mark.timeout(180)


def _env(tmp_path, token, **extra):
    key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, NGROK_AUTHTOKEN=token,
               FAKE_NGROK_ARGV_LOG=str(tmp_path / "argv.log"), **extra)
    return key, env


@pytest.mark.slow
def test_login_through_the_tunnel(ngrok_agent, tmp_path):
    key, env = _env(tmp_path, GOOD_TOKEN)
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, env=env)
    try:
        card = cards.decode(info["card"])
        assert card.tunnel == "ngrok" and info["tunnel"] == "ngrok"
        assert info["public_url"] == f"tcp://127.0.0.1:{info['port']}"
        assert info["port"] != info["local_port"]  # the public port is the agent's forward
        assert pid_alive(info["pids"]["agent"])
        config = pinned_ssh_config(tmp_path / "ssh", info, key)
        result = ssh(config, "echo through-the-tunnel")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "through-the-tunnel"
        status = json.loads(remotectl("status", "--json", "--state-dir", str(state_dir)).stdout)
        assert status["tunnel_up"] and status["running"]
        # the agent's config holds the token, 0600, in the state dir; argv never did
        assert stat.S_IMODE((state_dir / "ngrok.yml").stat().st_mode) == 0o600
        argvs = [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]
        # `--flag value` (pyngrok 9) or `--flag=value` (pyngrok 7): the same to the agent
        argvs = [[part for arg in a for part in (arg.split("=", 1) if arg.startswith("--") else [arg])]
                 for a in argvs]
        starts = [a for a in argvs if a and a[0] == "start"]
        assert starts and all("--config" in a and "--authtoken" not in a for a in starts)
        assert all(GOOD_TOKEN not in " ".join(a) for a in argvs)
        assert str(state_dir / "ngrok.yml") in starts[0]
        assert GOOD_TOKEN not in cmdlines()
        for path in state_dir.iterdir():
            if path.name != "ngrok.yml":
                assert GOOD_TOKEN not in path.read_bytes().decode(errors="replace"), path
    finally:
        down = remotectl("down", "--state-dir", str(state_dir))
    assert "agent (pid" in down.stdout and "is free" in down.stdout
    assert_all_gone(info)


@pytest.mark.parametrize("token, code, words", [
    (BAD_TOKEN, "ERR_NGROK_105", "dashboard.ngrok.com/get-started/your-authtoken"),
    (NOCARD_TOKEN, "ERR_NGROK_8013", "add a payment card"),
])
@pytest.mark.parametrize("detach", [True, False])
def test_ngrok_refusals_are_explained_and_nothing_left(ngrok_agent, tmp_path, token, code, words, detach):
    _key, env = _env(tmp_path, token)
    state_dir = tmp_path / "state"
    before = _our_processes(state_dir)
    args = ["up", "--state-dir", str(state_dir)] + (["--detach"] if detach else [])
    result = remotectl(*args, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("remotectl: error: ngrok")
    assert code in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr
    assert token not in result.stdout + result.stderr
    assert result.stdout == ""
    assert not (state_dir / "state.json").exists()
    assert _our_processes(state_dir) == before == []
    assert token not in (state_dir / "ngrok.log").read_text()


@pytest.mark.slow
def test_a_refusal_the_agent_dies_right_after_is_still_explained(ngrok_agent, tmp_path):
    """pyngrok stops reading once the agent has exited: the ERR_NGROK_105 line can still sit in
    the pipe. It is read from there, so a bad token is never a raw 'stopped during start-up'."""
    token = "burst_" + GOOD_TOKEN
    _key, env = _env(tmp_path, token)
    for attempt in range(3):
        state_dir = tmp_path / f"state{attempt}"
        result = remotectl("up", "--state-dir", str(state_dir), env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("remotectl: error: ngrok rejected the authtoken (ERR_NGROK_105)"), \
            result.stderr
        assert token not in result.stdout + result.stderr
        assert "ERR_NGROK_105" in (state_dir / "ngrok.log").read_text()
        assert token not in (state_dir / "ngrok.log").read_text()
        assert _our_processes(state_dir) == []


@pytest.mark.slow
def test_silent_agent_times_out_clearly(ngrok_agent, tmp_path):
    _key, env = _env(tmp_path, "silent_" + GOOD_TOKEN)
    state_dir = tmp_path / "state"
    started = time.monotonic()
    result = remotectl("up", "--timeout", "4", "--state-dir", str(state_dir), env=env)
    assert time.monotonic() - started < 40
    assert result.returncode == 1
    assert "did not report ready within" in result.stderr
    assert _our_processes(state_dir) == []


def test_agent_that_cannot_come_back_takes_the_server_down(ngrok_agent, tmp_path):
    """A dead agent is restarted (tests/follow); one ngrok then refuses for good (the token was
    revoked meanwhile) stops the server, everything recorded with it."""
    _key, env = _env(tmp_path, GOOD_TOKEN)
    mode_file = tmp_path / "agent-mode"
    env["FAKE_NGROK_MODE_FILE"] = str(mode_file)
    state_dir = tmp_path / "state"
    info = up_detached(state_dir, env=env)
    mode_file.write_text("bad-token")
    os.kill(info["pids"]["agent"], 9)
    assert_all_gone(info, timeout=30)
    log = (state_dir / "supervisor.log").read_text()
    assert "the ngrok agent exited" in log and "the tunnel cannot come back: ngrok rejected the authtoken" in log
    assert GOOD_TOKEN not in log
    assert not (state_dir / "state.json").exists()


def test_missing_agent_is_explained_without_download(tmp_path, isolated_server_env):
    _key, env = _env(tmp_path, GOOD_TOKEN)
    result = remotectl("up", "--state-dir", str(tmp_path / "state"), env=env)
    assert result.returncode == 1
    assert "PYNGROK_NGROK_PATH" in result.stderr and "not an executable" in result.stderr
    assert not isolated_server_env.exists()


def _our_processes(state_dir) -> list:
    """Processes whose argv names this state dir (sshd, agent, supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    argv = handle.read().decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in argv and pid_alive(int(entry)):
                found.append(int(entry))
    return found
