"""Password mode with the passwords people really pick (or paste): a leading dash, non-ASCII
letters, a 500-character passphrase; and ones longer than the system can hash (libxcrypt takes
under 512 bytes; chpasswd then failed with "crypt method not supported", exit 1, after the
server had started). Run inside helpers.private_etc's namespace: the real /etc/shadow is never
touched."""

from __future__ import annotations

import base64
import json
import os
import random
import string

import paramiko
import pytest
from helpers.sshkit import CLI, client_key

pytestmark = pytest.mark.timeout(300)


def _env(tmp_path, password):
    public = client_key(tmp_path / "client")[1]
    return dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, REMOTECTL_PASSWORD=password)


def _login(info, password) -> bool:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[{info['host']}]:{info['port']}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=base64.b64decode(info["host_key"].split()[1])))
    try:
        client.connect(info["host"], port=info["port"], username="root", password=password,
                       allow_agent=False, look_for_keys=False, timeout=30)
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


_rng = random.Random(7)
LONG = "".join(_rng.choice(string.ascii_letters + string.digits + "-_ .") for _ in range(500))


@pytest.mark.slow
@pytest.mark.parametrize("password", ["--leading-dash-" + "x7Qm", "пароль-для-колаба-ключ", LONG],
                         ids=["leading-dash", "non-ascii", "500-chars"])
def test_passwords_people_pick_log_in_and_are_put_back(password, tmp_path, etc):
    before = etc.shadow_line("root")
    state_dir = tmp_path / "state"
    env = _env(tmp_path, password)
    up = etc.run([*CLI, "up", "--detach", "--json", "--tunnel", "direct", "--state-dir", str(state_dir)], env=env)
    assert up.returncode == 0, up.stderr
    try:
        info = json.loads(up.stdout)
        assert _login(info, password) and not _login(info, password[:-1] + "!")
    finally:
        down = etc.run([*CLI, "down", "--state-dir", str(state_dir)], env=env)
    assert down.returncode == 0, down.stderr
    assert etc.shadow_line("root") == before


@pytest.mark.parametrize("password, size", [
    ("".join(_rng.choice(string.ascii_letters) for _ in range(1000)), 1000),
    ("".join(_rng.choice("äöüß") for _ in range(256)), 512),  # 256 characters, 512 bytes
], ids=["1000-chars", "512-bytes"])
def test_a_password_longer_than_the_system_can_hash_is_refused_before_anything_changes(password, size, tmp_path,
                                                                                     etc):
    before = etc.path("shadow").read_bytes()
    state_dir = tmp_path / "state"
    up = etc.run([*CLI, "up", "--detach", "--json", "--tunnel", "direct", "--state-dir", str(state_dir)],
                 env=_env(tmp_path, password))
    try:
        assert up.returncode == 2, up.stderr
        lines = [line for line in up.stderr.splitlines() if line.startswith("remotectl: error:")]
        assert lines == [f"remotectl: error: the password is {size} bytes long; the system's password "
                         "hashing (crypt) takes at most 511"]
        assert password not in up.stderr + up.stdout
        assert etc.path("shadow").read_bytes() == before and not state_dir.exists()
    finally:
        if up.returncode == 0:
            etc.run([*CLI, "down", "--state-dir", str(state_dir)], env=os.environ.copy())
