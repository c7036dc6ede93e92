import pytest

from remote import card as cardmod
from remote.card import Card, CardError, decode
from remote.keys import generate_ed25519


@pytest.fixture(scope="module")
def host_key():
    return generate_ed25519()[1]


def test_round_trip_is_shell_safe(host_key):
    c = Card(user="root", host="0.tcp.ngrok.io", port=12345, host_key=host_key,
             session="abc123", tunnel="ngrok")
    token = c.encode()
    assert all(ch.isalnum() or ch in "._-" for ch in token)
    assert decode(token) == c
    assert decode(cardmod.connect_line(c)) == c


def test_damaged_card_is_refused(host_key):
    token = Card("root", "h", 22, host_key, "s1").encode()
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    with pytest.raises(CardError, match="damaged"):
        decode(flipped)
    with pytest.raises(CardError, match="damaged"):
        decode(token[:-3])


def test_newer_version_says_upgrade(host_key):
    token = Card("root", "h", 22, host_key, "s1").encode()
    head, payload, _ = token.split(".")
    newer = f"rc2.{payload}"
    newer = f"{newer}.{cardmod._check(newer)}"
    with pytest.raises(CardError, match="newer") as info:
        decode(newer)
    assert "pip install -U" in info.value.hint


def test_foreign_text_and_bad_port(host_key):
    with pytest.raises(CardError, match="not a remotectl card"):
        decode("ssh root@host -p 22")
    with pytest.raises(CardError, match="out of range"):
        Card("root", "h", 70000, host_key, "s1")
    with pytest.raises(CardError, match="not valid"):
        Card("root", "h", 22, host_key, "bad id; rm -rf")


def test_optional_folder_travels_and_is_validated(host_key):
    bare = Card("root", "h", 22, host_key, "s1")
    with_dir = Card("root", "h", 22, host_key, "s1", path="/content/my project")
    assert decode(with_dir.encode()).path == "/content/my project"
    assert decode(bare.encode()).path is None
    assert len(bare.encode()) < len(with_dir.encode())  # left out when empty
    for bad in ("relative/dir", "/a\nb", '/a"b'):
        with pytest.raises(CardError, match="the card's folder"):
            Card("root", "h", 22, host_key, "s1", path=bad)
