"""The whole promise with remotectl's own server: a runtime comes back at a new address and the
laptop's `ssh NAME` follows it, with no remotectl command run on the laptop in between.

`up --tunnel ngrok --persist P --detach` runs for real (its sshd, its supervisor, pyngrok)
against the ngrok agent stand-in, which hands out a new public port each time; `--follow ngrok`
reads the ngrok API stand-in (tests/helpers/ngrok_api.py), which lists what the agent opened.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from _followkit import clean_env, remotectl, remotectl_lines, sign_record, snapshot, ssh
from helpers.ngrok_api import NgrokApi, endpoint_shape
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.serverkit import assert_nothing_left

from remote import endpoint_record as records
from remote import keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
API_KEY = "2ApiKey_standin_0123456789abcdefABCDEF"


class Runtimes:
    """Successive `up --persist` runs from one persist folder, as successive Colab runtimes are."""

    def __init__(self, tmp_path: Path, laptop, ngrok_agent: Path, cloud: Path) -> None:
        self.persist = tmp_path / "drive" / "identity"
        self.env = clean_env(PYNGROK_NGROK_PATH=str(ngrok_agent), NGROK_AUTHTOKEN=GOOD_TOKEN,
                             REMOTECTL_AUTHORIZED_KEY=laptop.public, FAKE_NGROK_CLOUD_DIR=str(cloud))
        self.tmp = tmp_path
        self.count = 0
        self.state_dirs = []

    def up(self) -> dict:
        self.count += 1
        state_dir = self.tmp / f"state-{self.count}"  # a fresh machine: nothing local survives
        self.state_dirs.append(state_dir)
        done = remotectl("up", "--tunnel", "ngrok", "--persist", str(self.persist), "--detach", "--json",
                         "--state-dir", str(state_dir), env=self.env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def down(self) -> None:
        state_dir = self.state_dirs[-1]
        done = remotectl("down", "--state-dir", str(state_dir), env=self.env)
        assert done.returncode == 0, done.stderr
        assert_nothing_left(state_dir)

    def down_all(self) -> None:
        for state_dir in self.state_dirs:
            remotectl("down", "--state-dir", str(state_dir), env=self.env)


@pytest.fixture
def cloud(tmp_path) -> Path:
    folder = tmp_path / "ngrok-cloud"
    folder.mkdir()
    return folder


@pytest.fixture
def runtimes(tmp_path, laptop, ngrok_agent, cloud, request) -> Runtimes:
    rts = Runtimes(tmp_path, laptop, ngrok_agent, cloud)
    request.addfinalizer(rts.down_all)
    return rts


@pytest.fixture
def api(cloud, request) -> NgrokApi:
    server = NgrokApi(cloud, API_KEY).start()
    request.addfinalizer(server.stop)
    return server


def _check(laptop, env=None) -> dict:
    done = remotectl("check", "colab", "--quick", "--json", "--ssh-dir", str(laptop.ssh_dir), env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["check"]["ok"], result
    return result


def test_a_new_runtime_is_followed_through_the_synced_folder(runtimes, laptop):
    first = runtimes.up()
    record = json.loads((runtimes.persist / records.FILE_NAME).read_text())
    assert record["fp"] == first["fingerprint"] and first["published"]["port"] == first["port"]
    # The laptop's copy of the folder: here the same folder (Drive for desktop would sync it).
    done = laptop.connect(first["card"], str(runtimes.persist))
    assert done.returncode == 0, done.stderr
    assert ssh(laptop.ssh_dir, "colab", "true").returncode == 0
    runtimes.down()

    second = runtimes.up()  # the next runtime: same host key from the persist folder, a new port
    assert second["port"] != first["port"] and second["host_key"] == first["host_key"]
    assert second["published"]["seq"] > first["published"]["seq"]
    out = ssh(laptop.ssh_dir, "colab", "echo $REMOTECTL_PYTHON")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    result = _check(laptop)  # paramiko, resolved the same way
    assert result["followed"]["port"] == second["port"] and result["followed"]["session"] == second["session"]
    runtimes.down()


def test_a_killed_agent_comes_back_at_a_new_address_and_ssh_follows(runtimes, laptop):
    first = runtimes.up()
    assert laptop.connect(first["card"], str(runtimes.persist), "colab", "--no-check").returncode == 0
    assert ssh(laptop.ssh_dir, "colab", "true").returncode == 0
    os.kill(first["pids"]["agent"], signal.SIGKILL)
    state = runtimes.state_dirs[-1] / "state.json"
    deadline = time.monotonic() + 60
    info = first
    while time.monotonic() < deadline:
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("tunnel_restarts") == 1:
            break
        time.sleep(0.2)
    assert info.get("tunnel_restarts") == 1, (runtimes.state_dirs[-1] / "supervisor.log").read_text()
    assert info["port"] != first["port"] and info["pids"]["agent"] != first["pids"]["agent"]
    assert info["published"]["port"] == info["port"]
    out = ssh(laptop.ssh_dir, "colab", "echo back")
    assert out.returncode == 0 and out.stdout.strip() == "back", out.stderr
    status = json.loads(remotectl("status", "--json", "--state-dir", str(runtimes.state_dirs[-1]),
                                  env=runtimes.env).stdout)
    assert status["state"] == "running" and status["public_url"] == info["public_url"]
    log = (runtimes.state_dirs[-1] / "supervisor.log").read_text()
    assert "the ngrok agent exited; opening a new tunnel" in log and "tunnel back at" in log
    runtimes.down()


def test_a_new_runtime_is_followed_through_the_ngrok_api(runtimes, laptop, api):
    first = runtimes.up()
    env = clean_env(NGROK_API_KEY=API_KEY, REMOTECTL_NGROK_API_URL=api.url)
    done = laptop.connect(first["card"], "ngrok", env=env)
    assert done.returncode == 0, done.stderr
    key_file = laptop.ssh_dir / "remotectl" / "ngrok_api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # for ssh and VS Code started without the shell
    for written in ("config", "hosts.json"):
        assert API_KEY not in (laptop.ssh_dir / "remotectl" / written).read_text()
    runtimes.down()
    second = runtimes.up()
    assert second["port"] != first["port"]
    # No NGROK_API_KEY now (VS Code from the dock): the key file serves; only the API's URL is set.
    bare = clean_env(REMOTECTL_NGROK_API_URL=api.url)
    out = ssh(laptop.ssh_dir, "colab", "echo via-api", env=bare)
    assert out.returncode == 0 and out.stdout.strip() == "via-api", out.stderr
    assert _check(laptop, env=bare)["followed"]["port"] == second["port"]
    asked = api.requests[-1]["headers"]
    assert asked.get("Authorization") == f"Bearer {API_KEY}" and asked.get("Ngrok-Version") == "2"
    assert API_KEY not in out.stderr

    # A wrong key: one line, nothing changed.
    key_file.write_text("wrong-key\n")
    before = snapshot(laptop.ssh_dir)
    out = ssh(laptop.ssh_dir, "colab", "true", env=bare)
    lines = remotectl_lines(out.stderr)
    assert out.returncode == 255 and len(lines) == 1 and "refused the API key (ERR_NGROK_203)" in lines[0]
    assert snapshot(laptop.ssh_dir) == before
    runtimes.down()


def test_forged_and_older_ngrok_endpoints_do_not_win(runtimes, laptop, api):
    first = runtimes.up()
    env = clean_env(NGROK_API_KEY=API_KEY, REMOTECTL_NGROK_API_URL=api.url)
    assert laptop.connect(first["card"], "ngrok", env=env).returncode == 0
    # Someone with the account's token opens an endpoint labelled with our fingerprint, a higher seq,
    # signed by their own key: it is skipped, the genuine one is used.
    attacker, _ = keys.generate_ed25519()
    forged = json.loads(sign_record(attacker, "127.0.0.1", 9, seq=10 ** 15, kind="ngrok"))
    forged["fp"] = first["fingerprint"]
    api.extra.append(endpoint_shape("tcp://127.0.0.1:9", json.dumps(forged)))
    out = ssh(laptop.ssh_dir, "colab", "echo genuine", env=env)
    assert out.returncode == 0 and out.stdout.strip() == "genuine", out.stderr
    runtimes.down()  # only the forged one is left
    before = snapshot(laptop.ssh_dir)
    out = ssh(laptop.ssh_dir, "colab", "true", env=env)
    lines = remotectl_lines(out.stderr)
    assert out.returncode == 255 and len(lines) == 1 and "signed by another key" in lines[0], out.stderr
    api.extra.clear()
    out = ssh(laptop.ssh_dir, "colab", "true", env=env)
    lines = remotectl_lines(out.stderr)
    assert len(lines) == 1 and "no online ngrok endpoint carries a record of its host key" in lines[0]
    assert snapshot(laptop.ssh_dir) == before


def test_a_reserved_address_is_kept_and_an_unreserved_one_explained(runtimes, laptop, tmp_path):
    from helpers.sshd import free_port

    port = free_port()
    state_dir = tmp_path / "state-reserved"
    runtimes.state_dirs.append(state_dir)
    done = remotectl("up", "--url", f"tcp://127.0.0.1:{port}", "--persist", str(runtimes.persist), "--detach",
                     "--json", "--state-dir", str(state_dir), env=runtimes.env)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["host"], info["port"]) == ("127.0.0.1", port)
    assert laptop.connect(info["card"], str(runtimes.persist), "colab", "--no-check").returncode == 0
    assert ssh(laptop.ssh_dir, "colab", "true").returncode == 0
    runtimes.down()
    refused = remotectl("up", "--url", "tcp://1.tcp.ngrok.io:21234", "--detach", "--state-dir",
                        str(tmp_path / "state-other"), env=runtimes.env)
    assert refused.returncode == 1 and "not reserved by this account (ERR_NGROK_307)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert_nothing_left(tmp_path / "state-other")
    bad = remotectl("up", "--tunnel", "direct", "--url", "tcp://1.tcp.ngrok.io:1", "--state-dir",
                    str(tmp_path / "state-bad"), env=runtimes.env)
    assert bad.returncode == 2 and "--url is an ngrok reserved TCP address" in bad.stderr


KERNEL = """
import sys
import remote
session = remote.up("ngrok", persist=sys.argv[1], state_dir=sys.argv[2], quiet=True)
print("ready", flush=True)
sys.stdin.read()  # the notebook kernel lives until the test closes this
session.down()
"""


def test_the_notebook_kernel_brings_a_dead_agent_back_too(runtimes, laptop, tmp_path):
    """The cell's default: the server lives in the kernel, whose watcher restarts the agent."""
    import subprocess
    import sys

    state_dir = tmp_path / "state-kernel"
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, str(runtimes.persist), str(state_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=runtimes.env)
    try:
        assert kernel.stdout.readline().strip() == "ready", kernel.stderr.read()
        first = json.loads((state_dir / "state.json").read_text())
        assert laptop.connect(first["card"], str(runtimes.persist), "colab", "--no-check").returncode == 0
        os.kill(first["pids"]["agent"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        info = first
        while time.monotonic() < deadline and info.get("tunnel_restarts") != 1:
            time.sleep(0.2)
            try:
                info = json.loads((state_dir / "state.json").read_text())
            except (OSError, ValueError):
                pass
        assert info.get("tunnel_restarts") == 1 and info["port"] != first["port"]
        out = ssh(laptop.ssh_dir, "colab", "echo kernel-back")
        assert out.returncode == 0 and out.stdout.strip() == "kernel-back", out.stderr
    finally:
        kernel.stdin.close()
        kernel.wait(60)
    assert kernel.returncode == 0
    assert_nothing_left(state_dir)


def test_a_restart_that_fails_for_a_while_is_tried_again_with_backoff(runtimes, laptop, tmp_path):
    """ngrok's edge misbehaving for a while (its endpoints drop every connection): each new tunnel
    fails its proven login and is retried, 1 s, 2 s, ... later, until one works."""
    mode = tmp_path / "agent-mode"
    runtimes.env["FAKE_NGROK_MODE_FILE"] = str(mode)
    first = runtimes.up()
    log = runtimes.state_dirs[-1] / "supervisor.log"
    assert laptop.connect(first["card"], str(runtimes.persist), "colab", "--no-check").returncode == 0
    mode.write_text("drop")
    os.kill(first["pids"]["agent"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and log.read_text().count("a new tunnel failed") < 2:
        time.sleep(0.2)
    text = log.read_text()
    assert "trying again in 1 s" in text and "trying again in 2 s" in text, text
    mode.unlink()  # the edge recovers
    state = runtimes.state_dirs[-1] / "state.json"
    while time.monotonic() < deadline and json.loads(state.read_text()).get("tunnel_restarts") != 1:
        time.sleep(0.2)
    assert json.loads(state.read_text())["tunnel_restarts"] == 1, log.read_text()
    out = ssh(laptop.ssh_dir, "colab", "echo recovered")
    assert out.returncode == 0 and out.stdout.strip() == "recovered", out.stderr
    runtimes.down()
