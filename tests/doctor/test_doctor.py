"""`remotectl doctor`: each broken setup gives its finding and fix; a healthy one exits 0.

Real files with real modes, the real `ssh -V` and `ssh -G`, a real sshd for the healthy
case and a real detached `up` for the remote side; the unreachable host is a closed port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from helpers.sshd import SshServer
from helpers.sshkit import CLI, assert_all_gone, up_detached

from remote import keys
from remote.card import Card, connect_line, new_session_id
from remote.client import sshconfig

pytestmark = pytest.mark.timeout(180)


def _env(home: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTECTL_", "NGROK_", "FAKE_"))}
    env.update(HOME=str(home), REMOTECTL_SSH_DIR=str(home / ".ssh"))
    return env


class User:
    """A user's computer: its own HOME and ssh folder, the CLI run for real in a subprocess."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir(mode=0o700)
        self.ssh_dir = self.home / ".ssh"
        self.key = self.ssh_dir / "remotectl_ed25519"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(self.home),
                              timeout=120, stdin=subprocess.DEVNULL)

    def keygen(self) -> str:
        out = self.cli("keygen", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["public_key"]

    def connect(self, card: Card, *extra: str) -> subprocess.CompletedProcess:
        out = self.cli(*connect_line(card).split()[1:], *extra)
        assert out.returncode == 0, out.stderr
        return out

    def doctor(self, *extra: str) -> tuple:
        out = self.cli("doctor", "--json", *extra)
        assert "Traceback" not in out.stderr, out.stderr
        return out.returncode, json.loads(out.stdout), out.stderr


def closed_port() -> int:
    """A loopback port nothing listens on (the kernel just handed it out and it was closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def some_card(port: int) -> Card:
    _, public = keys.generate_ed25519("doctor-test-host")
    return Card(user="root", host="127.0.0.1", port=port, host_key=keys.bare(public), session=new_session_id())


def findings(report: Dict, check: str, side: str = "user") -> List[Dict]:
    return [f for f in report[side] if f["check"] == check]


def one(report: Dict, check: str, status: Optional[str] = None, side: str = "user") -> Dict:
    found = [f for f in findings(report, check, side) if status is None or f["status"] == status]
    assert found, f"no {status or ''} finding for {check!r}: {json.dumps(report[side], indent=1)}"
    return found[0]


@pytest.fixture
def user(tmp_path) -> User:
    return User(tmp_path)


def test_group_writable_config_is_a_problem_with_its_chmod_fix(user):
    user.keygen()
    user.connect(some_card(closed_port()), "--no-check")
    config = user.ssh_dir / "config"
    config.chmod(0o666)

    code, report, human = user.doctor()
    assert code == 1
    finding = one(report, "ssh config", "problem")
    assert "0666" in finding["detail"] and "Bad owner or permissions" in finding["detail"]
    assert finding["fix"] == f"chmod 600 {config}"
    assert "PROBLEM" in human and f"fix: chmod 600 {config}" in human

    config.chmod(0o600)  # the fix, applied, clears the finding
    _, report, _ = user.doctor()
    assert one(report, "ssh config")["status"] == "ok"


def test_group_writable_included_file_is_what_ssh_refuses(user):
    """ssh checks an Include'd file like ~/.ssh/config (-F skips that check only for the top file)."""
    user.keygen()
    user.connect(some_card(closed_port()), "--no-check")
    managed = user.ssh_dir / "remotectl" / "config"
    managed.chmod(0o666)  # (Debian lets a private group write; nobody lets others)
    refused = subprocess.run(["ssh", "-G", "-F", str(user.ssh_dir / "config"), "colab"], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "Bad owner or permissions" in refused.stderr

    code, report, _ = user.doctor()
    assert code == 1
    assert one(report, "managed config", "problem")["fix"] == f"chmod 600 {managed}"
    assert "Bad owner or permissions" in one(report, "host colab", "problem")["detail"]  # from ssh -G itself


def test_include_below_host_star_is_shadowed(user):
    user.ssh_dir.mkdir(mode=0o700)
    config = user.ssh_dir / "config"
    config.write_text("Host *\n    Port 2222\n    ServerAliveInterval 60\n")
    config.chmod(0o600)
    user.keygen()
    card = some_card(closed_port())
    user.connect(card, "--no-check")
    data = config.read_bytes()
    start, end = sshconfig.find_block(data)
    config.write_bytes(data[:start] + data[end:] + data[start:end])  # moved under `Host *`
    assert sshconfig.include_is_shadowed(config.read_bytes())

    code, report, human = user.doctor()
    assert code == 1
    finding = one(report, "Include line", "problem")
    assert "below `Host *` (line 1)" in finding["detail"] and "shadowed" in finding["detail"]
    assert "to the top of" in finding["fix"] and "above line 1" in finding["fix"]
    # And the real client agrees: `Host *`'s Port wins over the entry's.
    resolved = one(report, "host colab", "problem")
    assert "port 2222" in resolved["detail"] and f"(entry: {card.port})" in resolved["detail"]

    config.write_bytes(data)  # back at the top: fixed
    _, report, _ = user.doctor()
    assert one(report, "Include line")["status"] == "ok"
    assert not [f for f in findings(report, "host colab") if "ssh -G" in f["detail"]]


def test_missing_key_is_a_problem_with_the_keygen_fix(user):
    user.keygen()
    user.connect(some_card(closed_port()), "--no-check")
    user.key.unlink()

    code, report, _ = user.doctor()
    assert code == 1
    finding = one(report, "key remotectl_ed25519", "problem")
    assert str(user.key) in finding["detail"] and "does not exist" in finding["detail"]
    assert finding["fix"].startswith("remotectl keygen")


def test_readable_key_is_a_problem_with_its_chmod_fix(user):
    user.keygen()
    user.key.chmod(0o644)
    code, report, _ = user.doctor()
    assert code == 1
    assert one(report, "key remotectl_ed25519", "problem")["fix"] == f"chmod 600 {user.key}"


def test_unreachable_host_is_a_problem_with_what_to_do(user):
    user.keygen()
    port = closed_port()
    user.connect(some_card(port), "--no-check")

    code, report, human = user.doctor("--timeout", "2")
    assert code == 1
    finding = one(report, "host colab", "problem")
    assert f"root@127.0.0.1:{port} does not answer" in finding["detail"]
    assert "remotectl connect <card>" in finding["fix"] and "remotectl disconnect colab" in finding["fix"]
    # Everything else about this setup is fine: that is the only problem.
    assert report["problems"] == 1, human


def test_openssh_version_is_the_real_clients(user):
    real = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=30).stderr.strip()
    _, report, _ = user.doctor()
    finding = one(report, "OpenSSH client", "ok")
    assert finding["detail"].startswith(real)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_healthy_setup_exits_zero(user, tmp_path_factory, request):
    public = user.keygen()
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    request.addfinalizer(server.stop)
    server.authorize(public)
    server.start()
    user.connect(server.card(session=new_session_id()))

    code, report, human = user.doctor()
    assert code == 0, human
    assert report["problems"] == 0
    assert not [f for f in report["user"] if f["status"] == "problem"]
    assert one(report, "host colab", "ok")["detail"].startswith(f"root@127.0.0.1:{server.port} answers (SSH-2.0-")
    assert one(report, "Include line", "ok")["detail"].startswith("at line 1 of")
    assert "remote" not in report  # no server was recorded here: the user's side only

    code, report, human = user.doctor("--deep")
    assert code == 0, human
    assert "logged in as root" in one(report, "host colab", "ok")["detail"]

    plain = user.cli("doctor")
    assert plain.returncode == 0 and "No problems found." in plain.stdout
    assert len(plain.stdout.splitlines()) <= 25  # one screen


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_remote_side_running_server_then_stopped(tmp_path):
    env = _env(tmp_path)
    state_dir = tmp_path / "state"
    _, public = keys.generate_ed25519("doctor-remote")
    info = up_detached(state_dir, "--tunnel", "direct", "--authorized-key", keys.bare(public), env=env)
    try:
        out = subprocess.run([*CLI, "doctor", "--remote", "--json", "--state-dir", str(state_dir),
                              "--saved", str(tmp_path)], capture_output=True, text=True, env=env, timeout=240)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert "user" not in report
        assert one(report, "sshd", "ok", side="remote")["detail"].startswith(f"answers on 127.0.0.1:{info['local_port']}")
        assert one(report, "tunnel", "ok", side="remote")["detail"].startswith("direct")
        assert "torch" in one(report, "torch", "ok", side="remote")["detail"]
        assert "GB free" in one(report, "disk", "ok", side="remote")["detail"]
        assert one(report, "GPU", side="remote")["status"] in ("ok", "note")
    finally:
        subprocess.run([*CLI, "down", "--state-dir", str(state_dir)], capture_output=True, env=env, timeout=120)
    assert_all_gone(info)
    out = subprocess.run([*CLI, "doctor", "--remote", "--json", "--state-dir", str(state_dir)],
                         capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 1
    finding = one(json.loads(out.stdout), "server", "problem", side="remote")
    assert "no server recorded" in finding["detail"] and "remotectl up" in finding["fix"]
