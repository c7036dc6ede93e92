"""Plain-address parsing and the pinned-key file, checked against ssh-keygen's own reading."""

from __future__ import annotations

import subprocess

import pytest

from remote import keys
from remote.client import known_hosts
from remote.client.target import parse_target
from remote.errors import BadInput

KEY = keys.bare(keys.generate_ed25519()[1])


@pytest.mark.parametrize("words, user, host, port", [
    (["0.tcp.ngrok.io:12345"], "root", "0.tcp.ngrok.io", 12345),
    (["tcp://0.tcp.ngrok.io:12345"], "root", "0.tcp.ngrok.io", 12345),
    (["root@2.tcp.ngrok.io", "-p", "19999"], "root", "2.tcp.ngrok.io", 19999),
    (["ssh", "root@2.tcp.ngrok.io", "-p", "19999"], "root", "2.tcp.ngrok.io", 19999),
    (["ssh root@2.tcp.ngrok.io -p19999"], "root", "2.tcp.ngrok.io", 19999),
    (["me@[::1]:2200"], "me", "::1", 2200),
    (["example.org"], "root", "example.org", 22),
])
def test_plain_forms(words, user, host, port):
    target = parse_target(words)
    assert (target.user, target.host, target.port, target.host_key, target.from_card) == \
        (user, host, port, None, False)
    assert parse_target(words).session != target.session  # no key: a fresh alias every time
    pinned = parse_target(words, host_key=KEY)
    assert pinned.host_key == KEY and pinned.session == parse_target(words, host_key=KEY).session


@pytest.mark.parametrize("words", [["h:0"], ["h:65536"], ["root@h", "-p", "x"], ["a", "b"],
                                   ["ssh", "-o", "ProxyCommand=evil", "h"], ["h;rm:22"], [""],
                                   ["garbage"]])
def test_plain_forms_refused(words):
    with pytest.raises(BadInput):
        parse_target(words)


def test_pin_replace_unpin_and_ssh_keygen_agrees(tmp_path):
    path = tmp_path / "known_hosts"
    other = keys.bare(keys.generate_ed25519()[1])
    assert known_hosts.pin(path, "remotectl-a", KEY)
    assert known_hosts.pin(path, "remotectl-b", other)
    assert not known_hosts.pin(path, "remotectl-a", KEY)  # same pin: file untouched
    found = subprocess.run(["ssh-keygen", "-F", "remotectl-a", "-f", str(path)], capture_output=True,
                           text=True, check=True).stdout
    assert KEY in found and other not in found
    assert known_hosts.pin(path, "remotectl-a", other)  # replaced, not added
    assert known_hosts.lookup(path, "remotectl-a") == [other]
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], capture_output=True, check=True)
    assert known_hosts.lookup(path, "remotectl-b") == [other]  # hashed lines are read too
    assert known_hosts.unpin(path, "remotectl-a") and known_hosts.unpin(path, "remotectl-b")
    assert not path.exists()
