"""The connection card: what the server prints and the client pastes.

A card is one shell-safe token, ``rc1.<payload>.<check>``:

- ``rc1``: the format and its version (a newer remotectl may print ``rc2``);
- ``payload``: base64url (no padding) of compact JSON with the fields of :class:`Card`
  (optional fields, such as the folder to open, are left out when empty, so an older
  client still reads a card without them);
- ``check``: the first 8 hex digits of SHA-256 over ``rc1.<payload>``, so a card
  cut short or mistyped while copying is refused instead of half-trusted.

Only ``[A-Za-z0-9_.-]`` appears, so the card survives shells, chat apps and
Windows terminals without quoting. Secrets never go in a card: it holds the
host's *public* key, which the client pins.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Optional

from remote.errors import BadInput

PREFIX = "rc"
VERSION = 1
TUNNEL_KINDS = ("direct", "ngrok", "cloudflared")
_SHAPE = re.compile(r"^rc(\d+)\.([A-Za-z0-9_-]+)\.([0-9a-f]{8})$")
_SESSION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CardError(BadInput):
    """A card that is damaged, foreign or from a newer remotectl."""


@dataclass(frozen=True)
class Card:
    """Everything the client needs to reach and pin one remote sshd."""

    user: str
    host: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA..." (no comment)
    session: str  # short id: names the HostKeyAlias `remotectl-<session>`
    tunnel: str = "direct"  # one of TUNNEL_KINDS
    path: Optional[str] = None  # the remote folder to open (where `up` ran: the project)
    python: Optional[str] = None  # the interpreter `up` ran under (its sys.executable)

    def __post_init__(self) -> None:
        validate(self)

    def encode(self) -> str:
        """The one-line token."""
        fields = {"v": VERSION, "u": self.user, "h": self.host, "p": self.port,
                  "k": self.host_key, "s": self.session, "t": self.tunnel}
        if self.path:
            fields["d"] = self.path
        if self.python:
            fields["x"] = self.python
        raw = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
        payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        head = f"{PREFIX}{VERSION}.{payload}"
        return f"{head}.{_check(head)}"

    def as_dict(self) -> dict:
        return asdict(self)


def decode(text: str) -> Card:
    """Read a card pasted by the user; raise :class:`CardError` with what went wrong."""
    token = text.strip()
    if token.startswith("remotectl connect "):
        token = token[len("remotectl connect "):].strip()
    match = _SHAPE.match(token)
    if not match:
        if token.startswith(PREFIX) and "." in token:
            raise CardError("the card is damaged: copy the whole `remotectl connect ...` line again")
        raise CardError("this is not a remotectl card (it should start with `rc1.`)")
    version, payload, check = int(match.group(1)), match.group(2), match.group(3)
    if version > VERSION:
        raise CardError(
            f"card format version {version} is newer than this remotectl understands "
            f"(version {VERSION})",
            "Upgrade the client: pip install -U remotectl",
        )
    if version < 1:
        raise CardError(f"unknown card format version {version}")
    if _check(f"{PREFIX}{version}.{payload}") != check:
        raise CardError("the card is damaged (checksum mismatch): copy the whole line again")
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise CardError("the card is damaged: its payload does not decode") from exc
    if not isinstance(fields, dict) or fields.get("v") != version:
        raise CardError("the card is damaged: its payload does not match its version")
    try:
        return Card(user=fields["u"], host=fields["h"], port=fields["p"], host_key=fields["k"],
                    session=fields["s"], tunnel=fields.get("t", "direct"), path=fields.get("d"),
                    python=fields.get("x"))
    except KeyError as exc:
        raise CardError(f"the card lacks the field {exc.args[0]!r}") from exc


def validate(card: Card) -> None:
    """Refuse values that would break or subvert an ssh_config entry."""
    if not isinstance(card.port, int) or isinstance(card.port, bool) or not 1 <= card.port <= 65535:
        raise CardError(f"port {card.port!r} is out of range (1-65535)")
    for name in ("user", "host"):
        value = getattr(card, name)
        if not isinstance(value, str) or not value or not re.fullmatch(r"[A-Za-z0-9_.@:%\[\]-]+", value):
            raise CardError(f"the card's {name} {value!r} is not a valid {name} name")
    if not isinstance(card.session, str) or not _SESSION.match(card.session):
        raise CardError(f"the card's session id {card.session!r} is not valid")
    if card.tunnel not in TUNNEL_KINDS:
        raise CardError(f"unknown tunnel kind {card.tunnel!r} (known: {', '.join(TUNNEL_KINDS)})",
                        "Upgrade the client: pip install -U remotectl")
    if card.path is not None and (not isinstance(card.path, str) or not card.path.startswith("/")
                                  or len(card.path) > 1024
                                  or any(ord(ch) < 32 or ch in '"\\' for ch in card.path)):
        raise CardError(f"the card's folder {card.path!r} is not an absolute remote path")
    if card.python is not None and not plain_remote_path(card.python):
        raise CardError(f"the card's interpreter {card.python!r} is not an absolute remote path")
    parts = card.host_key.split() if isinstance(card.host_key, str) else []
    if len(parts) != 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise CardError("the card's host key is not an OpenSSH public key")


def plain_remote_path(value: object) -> bool:
    """An absolute path an ssh_config line or a shell hint can carry (no control chars, quotes)."""
    return (isinstance(value, str) and value.startswith("/") and len(value) <= 1024
            and not any(ord(ch) < 32 or ch in '"\\' for ch in value))


def connect_line(card: Card) -> str:
    """The line the server prints last, for the user to paste on their computer."""
    return f"remotectl connect {card.encode()}"


def _check(head: str) -> str:
    return hashlib.sha256(head.encode()).hexdigest()[:8]


def new_session_id(nbytes: int = 6) -> str:
    """A short random id; distinct runtimes get distinct HostKeyAliases."""
    import secrets

    return secrets.token_hex(nbytes)


def maybe_card(text: str) -> Optional[Card]:
    """The card in `text` if it looks like one, else None (for the client's plain forms)."""
    token = text.strip().split()[-1] if text.strip() else ""
    return decode(token) if _SHAPE.match(token) or token.startswith(f"{PREFIX}{VERSION}.") else None
