"""A card with a field that could subvert what connect writes or runs: one line, exit 2,
every file as it was (the real CLI, before any write)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from _cli import remotectl, snapshot

from remote import keys

KEY = keys.bare(keys.generate_ed25519()[1])


def raw_card(**over) -> str:
    fields = {"v": 1, "u": "root", "h": "127.0.0.1", "p": 2222, "k": KEY, "s": "abc", "t": "direct", **over}
    payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    head = f"rc1.{payload}"
    return f"{head}.{hashlib.sha256(head.encode()).hexdigest()[:8]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("over", [{"s": "abc\n"}, {"s": "../../x"}, {"d": "/content/a&calc.exe"},
                                  {"d": "/content/$(touch pwned)"}, {"d": "/content/%PATH%"},
                                  {"d": "/content/a\x1b]52;c;eA==\x07"}, {"d": "/content/\"quoted\""},
                                  {"h": "-oProxyCommand=touch pwned"}, {"u": "root\nHost *"}])
def test_bad_card_field_is_one_line_exit_2_and_changes_nothing(over, ssh_dir, client_key):
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_bytes(b"Host work\n  HostName work.example\n")
    assert remotectl("connect", raw_card(), "--no-check", "--ssh-dir", str(ssh_dir), "--identity",
                     str(client_key), "--name", "good").returncode == 0
    before = snapshot(ssh_dir)
    result = remotectl("connect", raw_card(**over), "--ssh-dir", str(ssh_dir), "--identity", str(client_key),
                       "--name", "bad", console=True)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 3 and lines[0].startswith("remotectl: error: the card")
    assert "\x1b" not in result.stderr and "Traceback" not in result.stderr and result.stdout == ""
    assert snapshot(ssh_dir) == before
