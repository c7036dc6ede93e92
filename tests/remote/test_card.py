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


def _raw(fields: dict) -> str:
    import base64
    import hashlib
    import json

    payload = base64.urlsafe_b64encode(json.dumps({"v": 1, **fields}).encode()).rstrip(b"=").decode()
    head = f"rc1.{payload}"
    return f"{head}.{hashlib.sha256(head.encode()).hexdigest()[:8]}"


def _fields(host_key, **over):
    base = {"u": "root", "h": "0.tcp.ngrok.io", "p": 12345, "k": host_key.split()[0] + " " + host_key.split()[1],
            "s": "abc123", "t": "ngrok"}
    return {**base, **over}


@pytest.mark.parametrize("field, value", [
    ("s", "abc\n"), ("s", "abc\r"), ("s", "a b"), ("s", ""), ("s", 5),
    ("u", "root\n"), ("u", "-oProxyCommand=x"), ("u", "ro ot"),
    ("h", "host\n"), ("h", "-oProxyCommand=x"), ("h", "a b"), ("h", "h%d"), ("h", "x@y"), ("h", ""),
    ("k", "ssh-ed25519 AAAA"), ("k", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n"), ("k", "garbage"),
    ("t", "ngrok\n"), ("p", "22"), ("p", True),
])
def test_every_field_is_checked_whole(host_key, field, value):
    with pytest.raises(CardError):
        decode(_raw(_fields(host_key, **{field: value})))


@pytest.mark.parametrize("char", list("&|<>^%!\"'$`\\;*?") + ["\x00", "\x1b", "\x07", "\r", "\n", "\t",
                                                               "\u202e", "\u200b", "\x85"])
def test_folder_with_what_a_shell_or_cmd_would_read_is_refused(host_key, char):
    with pytest.raises(CardError, match="the card's folder"):
        decode(_raw(_fields(host_key, d=f"/content/pro{char}ject")))


def test_real_folders_are_accepted(host_key):
    for folder in ("/content/my project", "/content/drive/MyDrive/Colab Notebooks/실험", "/kaggle/working",
                   "/root/proj-1.2_x+y,z@=:~#[]{}()"):
        assert decode(_raw(_fields(host_key, d=folder))).path == folder
    assert decode(_raw(_fields(host_key, h="[::1]"))).host == "[::1]"


def test_trailing_newline_after_the_card_is_not_part_of_it(host_key):
    token = Card("root", "h", 22, host_key, "s1").encode()
    assert decode(token + "\n").session == "s1"  # pasted with its line end: stripped, fine
    with pytest.raises(CardError):
        decode(token + "\nextra")
