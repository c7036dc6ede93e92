"""`up --tunnel cloudflared` to `connect` to the real ssh and `remotectl check`, end to end.

Real parts: our own `remotectl up` (detached supervisor, private sshd), `remotectl connect`
writing the ssh entry, the OpenSSH client and paramiko. Only Cloudflare's edge is the
stand-in `cloudflared` (tests/helpers/cloudflared_standin.py), found on PATH at both ends
from a folder whose name holds a space, `%`, `$` and a quote.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict

import pytest
from helpers.sshkit import assert_all_gone, client_key, cmdlines, remotectl, up_detached

from remote import card as cards
from remote import cloudflared, keys

pytestmark = pytest.mark.timeout(240)

STRIPPED = ("NGROK_AUTHTOKEN", "REMOTECTL_PASSWORD", "REMOTECTL_AUTHORIZED_KEY", "REMOTECTL_STATE_DIR",
            "REMOTECTL_SSH_DIR", "REMOTECTL_CLOUDFLARED", cloudflared.BASE_URL_ENV, "REMOTECTL_DEBUG")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_env(standin, tmp_path: Path, with_cloudflared: bool = True) -> Dict[str, str]:
    """The stand-in's env; PATH has cloudflared only when asked; no install dir is found."""
    env = {k: v for k, v in standin.env.items() if k not in STRIPPED}
    env["PATH"] = (f"{standin.path.parent}{os.pathsep}" if with_cloudflared else "") + SYSTEM_PATH
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")  # remotectl's own install dir: empty
    return env


def ssh(ssh_dir: Path, name: str, command: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    """The real OpenSSH client with only remotectl's config; a prompt fails instead of hanging."""
    return subprocess.run(["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes", name, command],
                          capture_output=True, text=True, timeout=90, env=env, stdin=subprocess.DEVNULL)


def snapshot(folder: Path) -> Dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def assert_nothing_runs_from(*folders: Path) -> None:
    text = cmdlines()
    for folder in folders:
        assert str(folder) not in text, f"a process still runs from {folder}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(standin, tmp_path, request):
    """Start `up --tunnel cloudflared --detach` (stand-in on PATH); always `down` afterwards."""
    key, public = client_key(tmp_path / "client")
    env = dict(base_env(standin, tmp_path), REMOTECTL_AUTHORIZED_KEY=public)
    state_dir = tmp_path / "state"
    request.addfinalizer(lambda: remotectl("down", "--state-dir", str(state_dir), env=env))
    info = up_detached(state_dir, "--tunnel", "cloudflared", "--timeout", "60", env=env)
    return info, key, state_dir, env


@pytest.mark.slow
def test_up_connect_ssh_check_down(server, standin, tmp_path):
    info, key, state_dir, env = server
    card = cards.decode(info["connect_line"])
    hostname = info["tunnel_info"]["hostname"]
    assert card.tunnel == "cloudflared" and card.host == hostname and card.port == 22
    assert hostname.endswith(".trycloudflare.com") and standin.entries() == [hostname]
    assert keys.bare((state_dir / "ssh_host_ed25519_key.pub").read_text()) == card.host_key
    assert info["pids"]["agent"] and (state_dir / "cloudflared.log").exists()
    status = json.loads(remotectl("status", "--json", "--state-dir", str(state_dir), env=env).stdout)
    assert status["running"] and status["tunnel_up"] and status["tunnel"] == "cloudflared"

    ssh_dir = tmp_path / "dot-ssh"
    done = remotectl("connect", info["connect_line"], "--ssh-dir", str(ssh_dir), "--identity", str(key),
                     "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["check"]["ok"], result  # paramiko through the ProxyCommand
    assert result["proxy_command"] == cloudflared.proxy_command(standin.path)
    assert "ProxyCommand " + result["proxy_command"] in (ssh_dir / "remotectl" / "config").read_text()
    pinned = (ssh_dir / "remotectl" / "known_hosts").read_text()
    assert pinned == f"remotectl.colab {card.host_key}\n"  # keyed by the host alias, not the card

    out = ssh(ssh_dir, "colab", "echo through-cloudflared; id -un", env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["through-cloudflared", "root"]

    check = remotectl("check", "colab", "--quick", "--ssh-dir", str(ssh_dir), "--json", env=env)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["check"]["ok"]

    down = remotectl("down", "--json", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stderr
    stopped = json.loads(down.stdout)["stopped"]
    assert "supervisor" in stopped
    assert_all_gone(info)
    assert standin.entries() == []  # the stand-in's edge registration is gone with it
    assert not (state_dir / "state.json").exists()
    assert_nothing_runs_from(state_dir, standin.path.parent)


def test_a_wrong_host_key_is_refused_through_the_proxy(server, tmp_path):
    info, key, _state, env = server
    card = cards.decode(info["connect_line"])
    _, other = keys.generate_ed25519()
    forged = cards.Card(user=card.user, host=card.host, port=22, host_key=keys.bare(other),
                        session=cards.new_session_id(), tunnel="cloudflared")
    ssh_dir = tmp_path / "dot-ssh-forged"
    done = remotectl("connect", cards.connect_line(forged), "--ssh-dir", str(ssh_dir),
                     "--identity", str(key), env=env)
    assert done.returncode == 1 and "host key mismatch" in done.stderr, done.stderr
    out = ssh(ssh_dir, "colab", "true", env)
    assert out.returncode == 255 and "host key" in out.stderr.lower()


# -- failures: each a clear message, nothing left running, no files changed ------------------------
def test_server_without_cloudflared_and_no_download(standin, tmp_path):
    _, public = client_key(tmp_path / "client")
    env = dict(base_env(standin, tmp_path, with_cloudflared=False), REMOTECTL_AUTHORIZED_KEY=public)
    env[cloudflared.BASE_URL_ENV] = f"http://127.0.0.1:{closed_port()}/nowhere"
    state_dir = tmp_path / "state"
    for mode in ([], ["--detach"]):
        result = remotectl("up", "--tunnel", "cloudflared", "--state-dir", str(state_dir), *mode, env=env)
        assert result.returncode == 1, result.stderr
        assert "could not download cloudflared from http://127.0.0.1:" in result.stderr
        assert "apt-get install cloudflared" in result.stderr and "Traceback" not in result.stderr
        assert not (state_dir / "state.json").exists()
        assert [p.name for p in (state_dir / "bin").iterdir()] == []  # no partial download
        assert_nothing_runs_from(state_dir)


def test_server_checksum_mismatch_installs_nothing(standin, tmp_path, request):
    _, public = client_key(tmp_path / "client")
    asset = cloudflared.asset_for()
    body = b"#!/bin/sh\necho not the pinned cloudflared\n"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    request.addfinalizer(httpd.server_close)
    request.addfinalizer(httpd.shutdown)
    env = dict(base_env(standin, tmp_path, with_cloudflared=False), REMOTECTL_AUTHORIZED_KEY=public)
    env[cloudflared.BASE_URL_ENV] = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    state_dir = tmp_path / "state"
    result = remotectl("up", "--tunnel", "cloudflared", "--detach", "--state-dir", str(state_dir), env=env)
    assert result.returncode == 1, result.stderr
    assert f"checksum mismatch for {asset.name}" in result.stderr
    assert hashlib.sha256(body).hexdigest() in result.stderr and "Traceback" not in result.stderr
    assert list((state_dir / "bin").iterdir()) == []
    assert_nothing_runs_from(state_dir)


@pytest.mark.slow
def test_quick_tunnel_that_never_reports_a_hostname(standin, tmp_path):
    _, public = client_key(tmp_path / "client")
    env = dict(base_env(standin, tmp_path), REMOTECTL_AUTHORIZED_KEY=public,
               CLOUDFLARED_STANDIN_MODE="no-hostname")
    state_dir = tmp_path / "state"
    try:
        result = remotectl("up", "--tunnel", "cloudflared", "--detach", "--timeout", "4",
                           "--state-dir", str(state_dir), env=env)
    finally:
        remotectl("down", "--state-dir", str(state_dir), env=env)
    assert result.returncode == 1, result.stderr
    assert "cloudflared reported no quick-tunnel hostname within" in result.stderr
    assert "Requesting new quick Tunnel" in result.stderr  # the log's tail is shown
    assert not (state_dir / "state.json").exists()
    assert_nothing_runs_from(state_dir, standin.path.parent)


def test_client_without_cloudflared_changes_nothing(standin, tmp_path):
    key, _ = client_key(tmp_path / "client")
    ssh_dir = tmp_path / "dot-ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_text("Host *\n  ServerAliveInterval 30\n")
    before = snapshot(ssh_dir)
    _, host_key = keys.generate_ed25519()
    card = cards.Card(user="root", host="amber-basin-cedar-delta.trycloudflare.com", port=22,
                      host_key=keys.bare(host_key), session=cards.new_session_id(), tunnel="cloudflared")
    env = base_env(standin, tmp_path, with_cloudflared=False)
    result = remotectl("connect", cards.connect_line(card), "--ssh-dir", str(ssh_dir),
                       "--identity", str(key), env=env)
    assert result.returncode == 1, result.stderr
    assert "cloudflared is not installed on this computer; nothing was written" in result.stderr
    assert "remotectl install-cloudflared" in result.stderr and "apt-get install cloudflared" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(ssh_dir) == before
    # an explicit --cloudflared that is not a program is bad input (2), also with nothing written
    result = remotectl("connect", cards.connect_line(card), "--ssh-dir", str(ssh_dir), "--identity",
                       str(key), "--cloudflared", str(tmp_path / "nope"), env=env)
    assert result.returncode == 2 and "not an executable file" in result.stderr
    assert snapshot(ssh_dir) == before


# -- a runtime reset with `--persist`: same host key, the entry updated in place -------------------
@pytest.mark.slow
def test_persist_survives_a_wiped_state_dir(standin, tmp_path, request):
    key, public = client_key(tmp_path / "client")
    persist = tmp_path / "drive" / "remotectl"
    state_dir = tmp_path / "state"
    env = dict(base_env(standin, tmp_path), REMOTECTL_AUTHORIZED_KEY=public)
    request.addfinalizer(lambda: remotectl("down", "--state-dir", str(state_dir), env=env))
    first = up_detached(state_dir, "--tunnel", "cloudflared", "--persist", str(persist), env=env)
    assert oct(persist.stat().st_mode & 0o777) == "0o700"
    for name in ("ssh_host_ed25519_key", "authorized_keys"):
        assert oct((persist / name).stat().st_mode & 0o777) == "0o600", name
    assert keys.bare((persist / "ssh_host_ed25519_key.pub").read_text()) == first["host_key"]
    ssh_dir = tmp_path / "dot-ssh"
    done = remotectl("connect", first["connect_line"], "--ssh-dir", str(ssh_dir), "--identity", str(key),
                     "--json", env=env)
    assert done.returncode == 0, done.stderr
    alias = json.loads(done.stdout)["alias"]
    assert ssh(ssh_dir, "colab", "echo one", env).stdout.strip() == "one"
    known_before = (ssh_dir / "remotectl" / "known_hosts").read_bytes()
    assert remotectl("down", "--state-dir", str(state_dir), env=env).returncode == 0
    assert_all_gone(first)

    # A fresh runtime: the state dir is gone and the secret is not set; the Drive folder remains.
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    env.pop("REMOTECTL_AUTHORIZED_KEY")
    second = up_detached(state_dir, "--tunnel", "cloudflared", "--persist", str(persist), env=env)
    assert second["session"] != first["session"] and second["host"] != first["host"]
    assert second["fingerprint"] == first["fingerprint"] and second["host_key"] == first["host_key"]
    assert second["authorized_keys"] == 1  # the kept key, though no secret was set this time

    done = remotectl("connect", second["connect_line"], "--ssh-dir", str(ssh_dir), "--identity", str(key),
                     "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["change"] == "address-updated" and result["alias"] == alias
    assert result["host"] == second["host"] and result["check"]["ok"]
    assert "recognised: same host key, address updated" in done.stderr
    assert (ssh_dir / "remotectl" / "known_hosts").read_bytes() == known_before
    config = (ssh_dir / "remotectl" / "config").read_text()
    assert f"HostName {second['host']}" in config and first["host"] not in config
    assert ssh(ssh_dir, "colab", "echo two", env).stdout.strip() == "two"


def test_notebook_api_serves_a_quick_tunnel_and_down_stops_it(standin, tmp_path, monkeypatch):
    """`remote.up("cloudflared")` in this process (the notebook kernel owns the tunnel)."""
    import remote

    for name, value in base_env(standin, tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in STRIPPED:
        monkeypatch.delenv(name, raising=False)
    key, public = client_key(tmp_path / "client")
    session = remote.up("cloudflared", authorized_keys=public, state_dir=tmp_path / "state", quiet=True,
                        persist=tmp_path / "kept")
    try:
        assert session.tunnel == "cloudflared" and session.port == 22
        assert standin.entries() == [session.host]
        assert keys.bare((tmp_path / "kept" / "ssh_host_ed25519_key.pub").read_text()) == session.host_key
        ssh_dir = tmp_path / "dot-ssh"
        done = remotectl("connect", session.connect_line, "--ssh-dir", str(ssh_dir), "--identity", str(key),
                         "--no-check", env=base_env(standin, tmp_path))
        assert done.returncode == 0, done.stderr
        assert ssh(ssh_dir, "colab", "echo api", base_env(standin, tmp_path)).stdout.strip() == "api"
    finally:
        stopped = session.down()
    assert "cloudflared" in stopped and "sshd" in stopped
    assert standin.entries() == []
    assert_all_gone(session.info)
