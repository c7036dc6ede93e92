"""The card's optional interpreter field: the Python `up` ran under, for the laptop's advice."""

from __future__ import annotations

import base64
import json

import pytest

from remote import card as cardmod
from remote.card import Card, CardError, decode
from remote.keys import generate_ed25519


@pytest.fixture(scope="module")
def host_key():
    return generate_ed25519()[1]


def _forge(fields: dict) -> str:
    """A card with these payload fields and a valid checksum (what a hostile server could print)."""
    payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    head = f"rc1.{payload}"
    return f"{head}.{cardmod._check(head)}"


def test_interpreter_travels_and_old_cards_still_read(host_key):
    with_python = Card("root", "h", 22, host_key, "s1", path="/content/copy", python="/usr/bin/python3")
    assert decode(with_python.encode()).python == "/usr/bin/python3"
    old = Card("root", "h", 22, host_key, "s1", path="/content/copy")  # as an older server prints it
    assert decode(old.encode()).python is None
    assert len(old.encode()) < len(with_python.encode())  # absent, not an empty field


@pytest.mark.parametrize("python", ["python3", "/usr/bin/python\x1b[2J", '/a"b', "/a\\b", "/" + "x" * 1100, 3])
def test_a_hostile_interpreter_path_is_refused(host_key, python):
    fields = {"v": 1, "u": "root", "h": "h", "p": 22, "k": host_key, "s": "s1", "t": "direct", "x": python}
    with pytest.raises(CardError, match="interpreter"):
        decode(_forge(fields))
