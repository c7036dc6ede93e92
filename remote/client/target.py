"""What `connect` was given: a card, or one of the seed's plain forms (`HOST:PORT`, ...).

Plain forms carry no host key. With `--host-key` the key is pinned as from a card; without
it the entry says `StrictHostKeyChecking accept-new` (trust on first use), and each such
`connect` gets a fresh HostKeyAlias so a reused ngrok address never meets an old key.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from remote import keys
from remote.card import Card, CardError, maybe_card, new_session_id
from remote.errors import BadInput

_HOST_RE = re.compile(r"^[A-Za-z0-9_.%-]+$|^\[[0-9A-Fa-f:.%]+\]$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Target:
    """A host to reach and, when known, the key it must present."""

    user: str
    host: str
    port: int
    host_key: Optional[str]  # "type base64"; None: trust on first use
    session: str
    tunnel: str = "direct"
    from_card: bool = False
    path: Optional[str] = None  # the folder the server suggests opening (cards only)


def parse_target(words: Union[str, Sequence[str]], host_key: Optional[str] = None,
                 port: Optional[int] = None, user: Optional[str] = None) -> Target:
    """Read a card or a plain address; BadInput (exit 2) for anything unusable."""
    text = words if isinstance(words, str) else " ".join(words)
    text = text.strip()
    if not text:
        raise BadInput("nothing to connect to: give the card (`rc1....`) or HOST:PORT")
    card = maybe_card(text)
    if card is not None:
        if host_key or port or user:
            raise BadInput("--host-key, --port and --user are for plain addresses; a card carries its own")
        return from_card(card)
    return _parse_plain(text, host_key, port, user)


def from_card(card: Card) -> Target:
    return Target(card.user, card.host, card.port, keys.bare(card.host_key), card.session,
                  card.tunnel, from_card=True, path=card.path)


def _parse_plain(text: str, host_key: Optional[str], port: Optional[int], user: Optional[str]) -> Target:
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise BadInput(f"cannot read {text!r}: {exc}") from None
    if tokens and tokens[0] == "ssh":
        tokens = tokens[1:]
    rest = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("-p", "-l") and i + 1 < len(tokens):
            if tok == "-p":
                port = _port(tokens[i + 1])
            else:
                user = tokens[i + 1]
            i += 2
            continue
        if tok.startswith("-p") and tok[2:].isdigit():
            port = _port(tok[2:])
        elif tok.startswith("-"):
            raise BadInput(f"unsupported ssh option {tok!r} in {text!r}",
                           "Give HOST:PORT, tcp://HOST:PORT or root@HOST -p PORT.")
        else:
            rest.append(tok)
        i += 1
    if len(rest) != 1:
        if text.startswith("rc") and "." in text:
            raise CardError("the card is damaged: copy the whole `remotectl connect ...` line again")
        raise BadInput(f"cannot read {text!r} as a card or an address",
                       "Give the card, HOST:PORT, tcp://HOST:PORT or root@HOST -p PORT.")
    address = re.sub(r"^(tcp|ssh)://", "", rest[0])
    if (port is None and address == rest[0] and not re.search(r"[@:.]", address)
            and address != "localhost"):
        # A lone word with no dot is more likely a half-pasted card than a host on port 22.
        raise BadInput(f"cannot read {text!r} as a card or an address",
                       "Give the card (rc1....), HOST:PORT, tcp://HOST:PORT or root@HOST -p PORT.")
    if "@" in address:
        user, address = address.rsplit("@", 1)
    match = re.match(r"^(\[[^\]]+\]|[^:]+)(?::(\d+))?$", address)
    if not match:
        raise BadInput(f"cannot read the address {rest[0]!r}")
    host = match.group(1)
    if match.group(2):
        port = _port(match.group(2))
    user = user or "root"
    if not _HOST_RE.match(host):
        raise BadInput(f"{host!r} is not a valid host name")
    if not _USER_RE.match(user):
        raise BadInput(f"{user!r} is not a valid user name")
    port = port if port is not None else 22
    if not 1 <= port <= 65535:
        raise BadInput(f"port {port} is out of range (1-65535)")
    pinned = keys.bare(host_key) if host_key else None
    if pinned:  # same address and key: same alias, so a repeated connect changes nothing
        session = "p" + hashlib.sha256(f"{user}@{host}:{port} {pinned}".encode()).hexdigest()[:12]
    else:
        session = new_session_id()
    return Target(user, host.strip("[]"), port, pinned, session)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise BadInput(f"port {value!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise BadInput(f"port {port} is out of range (1-65535)")
    return port
