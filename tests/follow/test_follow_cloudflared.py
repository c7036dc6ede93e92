"""Cloudflare's two ways to stay reachable: quick tunnels followed by their record, and a named
tunnel whose hostname never changes (its token from TUNNEL_TOKEN, never argv, logs or files).

Real parts: remotectl's `up` (supervisor, sshd), the OpenSSH client, paramiko; only Cloudflare's
edge is the stand-in `cloudflared` (tests/helpers/cloudflared_standin.py), on PATH at both ends.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from _followkit import clean_env, remotectl, ssh
from helpers.cloudflared_standin import REGISTRY_ENV, ROUTES_ENV, make_standin
from helpers.serverkit import assert_nothing_left
from helpers.sshd import free_port
from helpers.sshkit import cmdlines

from remote import endpoint_record as records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def edge(tmp_path) -> dict:
    folder = tmp_path / "cf bin"
    folder.mkdir()
    make_standin(folder)
    registry = tmp_path / "cf-registry"
    registry.mkdir()
    return {"PATH": f"{folder}{os.pathsep}{SYSTEM_PATH}", REGISTRY_ENV: str(registry),
            "XDG_DATA_HOME": str(tmp_path / "xdg")}


def _up(state_dir: Path, env: dict, *args: str) -> dict:
    done = remotectl("up", "--tunnel", "cloudflared", "--detach", "--json", "--state-dir", str(state_dir),
                     *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _down(state_dir: Path, env: dict) -> None:
    assert remotectl("down", "--state-dir", str(state_dir), env=env).returncode == 0
    assert_nothing_left(state_dir)


def test_quick_tunnels_are_followed_through_their_records(tmp_path, laptop, edge, request):
    env = clean_env(REMOTECTL_AUTHORIZED_KEY=laptop.public, **edge)
    persist = tmp_path / "identity"
    states = [tmp_path / "state-1", tmp_path / "state-2"]
    request.addfinalizer(lambda: [remotectl("down", "--state-dir", str(s), env=env) for s in states])
    first = _up(states[0], env, "--persist", str(persist))
    record = records.verify((persist / records.FILE_NAME).read_text(), first["host_key"])
    assert record.kind == "cloudflared" and record.host == first["host"] and record.port == 22
    done = laptop.connect(first["card"], str(persist), env=clean_env(**edge))
    assert done.returncode == 0, done.stderr
    _down(states[0], env)
    second = _up(states[1], env, "--persist", str(persist))
    assert second["host"] != first["host"] and second["host"].endswith(".trycloudflare.com")
    out = ssh(laptop.ssh_dir, "colab", "echo through-a-new-quick-tunnel", env=clean_env(**edge))
    assert out.returncode == 0 and out.stdout.strip() == "through-a-new-quick-tunnel", out.stderr
    check = remotectl("check", "colab", "--quick", "--json", "--ssh-dir", str(laptop.ssh_dir), env=clean_env(**edge))
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["followed"]["host"] == second["host"]
    _down(states[1], env)


def _named(tmp_path: Path, port: int, secret: str = "s3cret-of-the-tunnel") -> str:
    """A named tunnel as Cloudflare's dashboard would hold it, and its token (base64 JSON, as real)."""
    routes = tmp_path / "cloudflare-routes.json"
    routes.write_text(json.dumps({"tid-1234": {"hostname": "ssh.example.test",
                                               "service": f"ssh://localhost:{port}", "secret": secret}}))
    return base64.b64encode(json.dumps({"a": "acct", "t": "tid-1234", "s": secret}).encode()).decode(), routes


def test_a_named_tunnel_keeps_its_hostname_and_its_token_stays_out_of_sight(tmp_path, laptop, edge, request):
    port = free_port()
    token, routes = _named(tmp_path, port)
    env = clean_env(REMOTECTL_AUTHORIZED_KEY=laptop.public, TUNNEL_TOKEN=token, **edge, **{ROUTES_ENV: str(routes)})
    states = [tmp_path / "state-1", tmp_path / "state-2"]
    request.addfinalizer(lambda: [remotectl("down", "--state-dir", str(s), env=env) for s in states])
    persist = tmp_path / "identity"  # the same host key on the next machine, so the pin holds too
    first = _up(states[0], env, "--hostname", "ssh.example.test", "--port", str(port), "--persist", str(persist))
    assert (first["host"], first["port"], first["tunnel"]) == ("ssh.example.test", 22, "cloudflared")
    assert token not in cmdlines()
    for path in [*states[0].rglob("*"), *persist.rglob("*")]:
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
    laptop_env = clean_env(**edge, **{ROUTES_ENV: str(routes)})
    done = remotectl("connect", first["card"], "--ssh-dir", str(laptop.ssh_dir), "--identity", str(laptop.identity),
                     env=laptop_env)
    assert done.returncode == 0, done.stderr
    _down(states[0], env)
    second = _up(states[1], env, "--hostname", "ssh.example.test", "--port", str(port), "--persist", str(persist))
    assert second["card"] != first["card"] and second["host"] == first["host"]  # same address, no paste
    out = ssh(laptop.ssh_dir, "colab", "echo named", env=laptop_env)
    assert out.returncode == 0 and out.stdout.strip() == "named", out.stderr
    _down(states[1], env)


def test_a_named_tunnel_without_its_token_or_port_or_with_a_bad_one(tmp_path, laptop, edge):
    port = free_port()
    _token, routes = _named(tmp_path, port)
    env = clean_env(REMOTECTL_AUTHORIZED_KEY=laptop.public, **edge, **{ROUTES_ENV: str(routes)})
    state_dir = tmp_path / "state"
    missing = remotectl("up", "--tunnel", "cloudflared", "--hostname", "ssh.example.test", "--port", str(port),
                        "--state-dir", str(state_dir), env=env)
    assert missing.returncode == 2 and "needs its token" in missing.stderr and "TUNNEL_TOKEN" in missing.stderr
    no_port = remotectl("up", "--tunnel", "cloudflared", "--hostname", "ssh.example.test",
                        "--state-dir", str(state_dir), env=dict(env, TUNNEL_TOKEN=_token))
    assert no_port.returncode == 2 and "pass --port N" in no_port.stderr
    wrong = base64.b64encode(json.dumps({"a": "acct", "t": "tid-1234", "s": "guessed"}).encode()).decode()
    bad = remotectl("up", "--tunnel", "cloudflared", "--hostname", "ssh.example.test", "--port", str(port),
                    "--detach", "--state-dir", str(state_dir), env=dict(env, TUNNEL_TOKEN=wrong))
    assert bad.returncode == 1 and "before the named tunnel was ready" in bad.stderr
    assert "Provided Tunnel token is not valid" in bad.stderr and wrong not in bad.stderr
    assert_nothing_left(state_dir)
