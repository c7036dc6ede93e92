"""The user's ~/.ssh/config survives `connect`/`disconnect` byte for byte, and ssh resolves our entry.

Every case runs the real CLI (`python -m remote.cli`) and the real `ssh -G`; no sshd is needed
because `--no-check` skips the probe.
"""

from __future__ import annotations

import os
import stat

import pytest
from _cli import remotectl, snapshot, ssh_g

from remote import keys
from remote.card import Card
from remote.client import sshconfig

HOST_KEY = keys.bare(keys.generate_ed25519()[1])
CARD = Card(user="root", host="7.tcp.ngrok.io", port=14321, host_key=HOST_KEY, session="s3ss10n",
            tunnel="ngrok")

CORPUS = {
    "host_star_overrides": b"Host *\n    User alice\n    Port 2222\n    HostName example.org\n"
                           b"    IdentityFile ~/.ssh/id_rsa\n    ProxyJump bastion.example\n"
                           b"    ForwardAgent yes\n    HostKeyAlias other\n    StrictHostKeyChecking no\n",
    "global_lines_and_own_colab": b"User bob\nPort 23\nForwardAgent yes\n\nHost colab\n"
                                  b"    HostName wrong.example\n    User mallory\n",
    "match_blocks": b"Match host *.example exec true\n  User x\nMatch all\n  Port 2200\n  User matched\n",
    "existing_include": b"Include ~/.ssh/config.d/*\nInclude /nonexistent/other\n\nHost *\n  User y\n",
    "crlf": b"# my laptop\r\nHost *\r\n\tUser crlf\r\n\tServerAliveInterval 60\r\n",
    "tabs": b"Host *\n\tUser\ttabby\n\tPort\t2201\n",
    "key_value": b"Host=*\nUser=kv\nPort = 2202\nHostName=kv.example\n",
    "comments": b"# my config\n\n   # indented comment\nHost devbox\n  HostName 10.0.0.1 # not a comment to us\n",
    "no_final_newline": b"Host *\n  User nn\n  Port 2203",
    "empty": b"",
    "absent": None,
}


def connect(ssh_dir, identity, *extra):
    return remotectl("connect", CARD.encode(), "--no-check", "--ssh-dir", str(ssh_dir),
                     "--identity", str(identity), *extra)


def assert_resolves(config, identity):
    got = ssh_g(config, "colab")
    assert got["hostname"] == ["7.tcp.ngrok.io"]
    assert got["port"] == ["14321"]
    assert got["user"] == ["root"]
    assert got["hostkeyalias"] == ["remotectl.colab"]  # the laptop's alias, not the card's session
    assert got["identityfile"][0] == str(identity)
    assert got["identitiesonly"] == ["yes"]
    assert got["stricthostkeychecking"] == ["true"]
    assert got["forwardagent"] == ["no"]
    assert "proxyjump" not in got  # a user's `Host *` ProxyJump must not carry our traffic elsewhere
    assert got["userknownhostsfile"] == [str(config.parent / "remotectl" / "known_hosts")]
    assert got["localforward"] == ["6006 [localhost]:6006"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_connect_keeps_user_bytes_and_ssh_resolves_our_entry(case, ssh_dir, client_key):
    original = CORPUS[case]
    ssh_dir.mkdir(mode=0o700)
    config = ssh_dir / "config"
    if original is not None:
        config.write_bytes(original)
        os.chmod(config, 0o600)

    first = connect(ssh_dir, client_key, "--forward", "6006")
    assert first.returncode == 0, first.stderr
    written = config.read_bytes()
    newline = "\r\n" if case == "crlf" else "\n"
    block = sshconfig.include_block(ssh_dir / "remotectl" / "config", newline)
    assert written == block + (original or b"")  # our block on top, every user byte after it
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert_resolves(config, client_key)

    files = snapshot(ssh_dir)
    again = connect(ssh_dir, client_key, "--forward", "6006")
    assert again.returncode == 0, again.stderr
    assert snapshot(ssh_dir) == files  # nothing rewritten, not even the registry
    assert "Unchanged" in again.stdout

    gone = remotectl("disconnect", "--ssh-dir", str(ssh_dir))
    assert gone.returncode == 0, gone.stderr
    if original is None:
        assert not config.exists()
    else:
        assert config.read_bytes() == original
    assert not (ssh_dir / "remotectl" / "config").exists()
    assert not (ssh_dir / "remotectl" / "known_hosts").exists()


@pytest.mark.timeout(120)
def test_symlinked_config_is_written_at_its_target(ssh_dir, client_key, tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "ssh_config"
    target.write_bytes(CORPUS["host_star_overrides"])
    os.chmod(target, 0o664)  # group-writable: ssh would refuse it, so the write drops that bit
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").symlink_to(os.path.relpath(target, ssh_dir))

    result = connect(ssh_dir, client_key, "--forward", "6006")
    assert result.returncode == 0, result.stderr
    assert (ssh_dir / "config").is_symlink()
    assert sshconfig.without_include(target.read_bytes()) == CORPUS["host_star_overrides"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert (dotfiles / "ssh_config.remotectl.bak").read_bytes() == CORPUS["host_star_overrides"]
    assert_resolves(ssh_dir / "config", client_key)

    assert remotectl("disconnect", "--ssh-dir", str(ssh_dir)).returncode == 0
    assert (ssh_dir / "config").is_symlink()
    assert target.read_bytes() == CORPUS["host_star_overrides"]


@pytest.mark.timeout(120)
def test_read_only_config_is_left_alone_with_the_line_to_add(ssh_dir, client_key):
    ssh_dir.mkdir(mode=0o700)
    config = ssh_dir / "config"
    config.write_bytes(CORPUS["tabs"])
    os.chmod(config, 0o444)

    result = connect(ssh_dir, client_key)
    assert result.returncode == 0, result.stderr
    line = sshconfig.include_line(ssh_dir / "remotectl" / "config")
    assert "read-only" in result.stderr and line in result.stderr
    assert config.read_bytes() == CORPUS["tabs"]
    assert not (ssh_dir / "config.remotectl.bak").exists()
    # The managed file itself is complete: adding the printed line is all that is left to do.
    got = ssh_g(ssh_dir / "remotectl" / "config", "colab")
    assert got["hostname"] == ["7.tcp.ngrok.io"] and got["port"] == ["14321"]


@pytest.mark.timeout(120)
def test_block_moved_below_host_star_is_reported(ssh_dir, client_key):
    ssh_dir.mkdir(mode=0o700)
    config = ssh_dir / "config"
    assert connect(ssh_dir, client_key).returncode == 0
    block = config.read_bytes()
    config.write_bytes(b"Host *\n  User z\n" + block)
    result = connect(ssh_dir, client_key)
    assert result.returncode == 0
    assert "below a Host/Match line" in result.stderr


def test_include_block_helpers_round_trip():
    managed = "/home/me/.ssh/remotectl/config"
    for original in (b"", b"Host *\r\n  User a\r\n", b"\xef\xbb\xbfHost x", b"Port 1"):
        added = sshconfig.with_include(original, managed)
        assert sshconfig.find_block(added) is not None
        assert sshconfig.with_include(added, managed) == added
        assert sshconfig.without_include(added) == original
    assert sshconfig.first_section_offset(b"# c\nUser a\n  match all\n") == 11
    assert sshconfig.ssh_quote("/a b/c") == '"/a b/c"'
    assert sshconfig.ssh_quote('a"b') == '"a\\"b"'
    with pytest.raises(Exception, match="newline"):
        sshconfig.ssh_quote("a\nb")
