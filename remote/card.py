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
import unicodedata
from dataclasses import asdict, dataclass
from typing import Optional

from remote.errors import BadInput
from remote.hostnames import TUNNEL_KINDS, valid_host  # noqa: F401 - both are part of the card's API

PREFIX = "rc"
VERSION = 1
_SHAPE = re.compile(r"rc(\d{1,9})\.([A-Za-z0-9_-]+)\.([0-9a-f]{8})")  # always fullmatch: `$` accepts "\n"
# A card's shape with any version number: read as a (perhaps damaged) card, never as a host name.
_LOOKS_LIKE = re.compile(r"rc\d+\.[A-Za-z0-9_-]+\.[0-9a-f]{8}")
_SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_CARD = 8192  # a real card is ~250 characters; anything this long is not one
# Characters a shell, cmd.exe or PowerShell would act on, refused in the card's folder (which
# reaches `code`, the terminal and ssh_config): no quoting is then ever needed to keep it inert.
FOLDER_FORBIDDEN = frozenset("&|<>^%!\"'$`\\;*?")


class CardError(BadInput):
    """A card that is damaged, foreign or from a newer remotectl."""


@dataclass(frozen=True)
class Card:
    """Everything the client needs to reach and pin one remote sshd."""

    user: str
    host: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA..." (no comment)
    session: str  # short id of the runtime (informational: pins are keyed by the laptop's host alias)
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
    if len(token) > MAX_CARD:
        raise CardError("this is not a remotectl card (far too long)")
    match = _SHAPE.fullmatch(token)
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
    except (binascii.Error, ValueError, RecursionError) as exc:
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
    """Refuse any field that could break or subvert what the client writes or runs with it.

    A card may come from anyone, so every field is checked whole (``fullmatch``: a trailing
    newline is not "the end") before the client writes anything: names are plain host and
    user names, the key a real OpenSSH public key, the folder an absolute path that no shell,
    ``cmd.exe`` or terminal would act on.
    """
    if not isinstance(card.port, int) or isinstance(card.port, bool) or not 1 <= card.port <= 65535:
        raise CardError(f"port {card.port!r} is out of range (1-65535)")
    if not isinstance(card.user, str) or not _USER.fullmatch(card.user):
        raise CardError(f"the card's user {_shown(card.user)} is not a valid user name")
    if not valid_host(card.host):
        raise CardError(f"the card's host {_shown(card.host)} is not a valid host name")
    if not isinstance(card.session, str) or not _SESSION.fullmatch(card.session):
        raise CardError(f"the card's session id {_shown(card.session)} is not valid")
    if card.tunnel not in TUNNEL_KINDS:
        raise CardError(f"unknown tunnel kind {_shown(card.tunnel)} (known: {', '.join(TUNNEL_KINDS)})",
                        "Upgrade the client: pip install -U remotectl")
    if card.path is not None:
        why = folder_problem(card.path)
        if why:
            raise CardError(f"the card's folder {_shown(card.path)} is not usable: {why}")
    if card.python is not None:
        why = folder_problem(card.python)
        if why:
            raise CardError(f"the card's interpreter {_shown(card.python)} is not usable: {why}")
    _check_host_key(card.host_key)


def folder_problem(path: object) -> Optional[str]:
    """Why `path` cannot be the remote folder a card names (None when it can).

    Spaces and non-ASCII letters are fine (`/content/drive/MyDrive/Colab Notebooks`); what a
    shell or `cmd.exe` would interpret, control and invisible formatting characters are not.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return "not an absolute remote path"
    if len(path) > 1024:
        return "longer than 1024 characters"
    for ch in path:
        if ch in FOLDER_FORBIDDEN:
            return f"it contains {ch!r}, which a shell or cmd.exe would interpret"
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            return f"it contains the control character U+{ord(ch):04X}"
    if any(part in (".", "..") for part in path.split("/")):
        return "it contains a '.' or '..' component"
    return None


def _check_host_key(host_key: object) -> None:
    from remote.keys import parse_public_key

    if not isinstance(host_key, str) or not host_key.startswith(("ssh-", "ecdsa-", "sk-")) \
            or len(host_key.split()) != 2:
        raise CardError("the card's host key is not an OpenSSH public key")
    try:
        parse_public_key(host_key)
    except BadInput:
        raise CardError("the card's host key is not an OpenSSH public key") from None


def _shown(value: object) -> str:
    """A card's value quoted for an error line: repr escapes every control character."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def plain_remote_path(value: object) -> bool:
    """An absolute path a card, an ssh_config line or a shell hint can carry (see folder_problem)."""
    return folder_problem(value) is None


def connect_line(card: Card) -> str:
    """The line the server prints last, for the user to paste on their computer."""
    return f"remotectl connect {card.encode()}"


def _check(head: str) -> str:
    return hashlib.sha256(head.encode()).hexdigest()[:8]


def new_session_id(nbytes: int = 6) -> str:
    """A short random id naming one runtime in cards, logs and `hosts`."""
    import secrets

    return secrets.token_hex(nbytes)


def maybe_card(text: str) -> Optional[Card]:
    """The card in `text` if it looks like one, else None (for the client's plain forms)."""
    token = text.strip().split()[-1] if text.strip() else ""
    looks = _LOOKS_LIKE.fullmatch(token) or token.startswith(f"{PREFIX}{VERSION}.")
    return decode(token) if looks else None
