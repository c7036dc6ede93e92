"""Paths people really have: an ssh folder or key path with quotes, spaces, `%`, `[`, `*` or
non-ASCII. Written so that the real OpenSSH reads them back exactly (a real login proves
IdentityFile, UserKnownHostsFile and the Include line), or refused before any write."""

from __future__ import annotations

import shutil

import pytest
from _cli import remotectl, snapshot, ssh, ssh_g

from remote import keys
from remote.card import Card

pytestmark = pytest.mark.timeout(180)

ODD = "we ird's \"q\" 100% [a]*b é"


def odd_key(folder, client_key):
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = folder / f"key {ODD}"
    shutil.copyfile(client_key, key)
    key.chmod(0o600)
    return key


def test_odd_ssh_folder_and_key_path_log_in_and_break_no_other_host(sshd, tmp_path, client_key):
    ssh_dir = tmp_path / ODD / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    (ssh_dir / "config").write_text("Host work\n    HostName work.example\n    User me\n")
    (ssh_dir / "config").chmod(0o600)
    key = odd_key(tmp_path / f"keys {ODD}", client_key)
    result = remotectl("connect", sshd.card().encode(), "--ssh-dir", str(ssh_dir), "--identity", str(key))
    assert result.returncode == 0, result.stderr
    config = ssh_dir / "config"
    assert ssh(config, "colab", "true").returncode == 0  # the key, the pin and the Include all read back
    got = ssh_g(config, "colab")
    assert got["userknownhostsfile"] == [str(ssh_dir / "remotectl" / "known_hosts")]
    assert ssh_g(config, "work")["hostname"] == ["work.example"]  # the user's other hosts still work
    assert ssh_g(config, "unrelated.example")["hostname"] == ["unrelated.example"]
    assert "Next: ssh -F " in result.stdout and "remote.SSH.configFile" in result.stdout


@pytest.mark.parametrize("bad", ["with${HOME}var", "new\nline"])
def test_a_path_ssh_cannot_read_back_is_refused_before_any_write(bad, tmp_path, client_key):
    ssh_dir = tmp_path / "plain" / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    (ssh_dir / "config").write_text("Host work\n    HostName work.example\n")
    key = odd_key(tmp_path / bad, client_key)
    before = snapshot(ssh_dir)
    card = Card(user="root", host="127.0.0.1", port=2222, host_key=keys.bare(keys.generate_ed25519()[1]),
                session="s").encode()
    result = remotectl("connect", card, "--no-check", "--ssh-dir", str(ssh_dir), "--identity", str(key))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("remotectl: error: cannot write")
    assert snapshot(ssh_dir) == before
