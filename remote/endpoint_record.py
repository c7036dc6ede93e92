"""The signed endpoint record: where a runtime started with `up --persist` can be reached now.

The server signs it with its host key (remote/server/publish.py) and writes it to
`<persist>/endpoint.json`; with ngrok, the endpoint's metadata carries one too. The laptop
(remote/client/follow.py) reads it from a folder that mirrors the persist folder, or from
the ngrok API, and believes it only if it verifies against the host key it pinned: the
channel (a synced folder anyone with the link may write, ngrok's API) needs no trust of its
own. Both ends use this module; it imports neither of them.

The file is one JSON object of at most MAX_BYTES::

    {"remotectl_endpoint": 1, "payload": "<base64url of P>", "sig": "<base64url Ed25519 signature>"}

P is canonical JSON (sorted keys, no spaces, ASCII only) of::

    {"v": 1, "fp": "SHA256:... of the signing key", "kind": "ngrok", "host": "...", "port": N,
     "seq": N, "at": unix seconds, "session": "..."}

and the signature covers CONTEXT + P exactly, so no re-serialisation can change what was
signed, and a non-canonical P is refused. A record *without* host and port is "unbound": an
ngrok endpoint's metadata, signed before ngrok hands out the address; its address is then
the endpoint's own, as the ngrok API reports it (the pinned key still decides the login).

`seq` only grows: the server takes max(previous + 1, the time in milliseconds), so a lost
folder does not restart it, and the laptop refuses a record older than the newest it saw.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

from remote.errors import RemotectlError

try:  # CPython's built-in SHA-256: `remotectl proxy` hashes on every connection, and hashlib loads OpenSSL
    from _sha2 import sha256 as _sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # Python 3.9 - 3.11
    except ImportError:
        from hashlib import sha256 as _sha256

FILE_NAME = "endpoint.json"
FORMAT = 1
MAX_BYTES = 4096  # a real record is ~450 bytes; ngrok caps endpoint metadata at 4096
CONTEXT = b"remotectl endpoint record v1\n"  # the signature is over this and P: never over an SSH message
_FP = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
MAX_SEQ = 2 ** 62


class RecordError(RemotectlError):
    """A record that cannot be believed; `why` is damaged | unsigned | forged | newer | invalid."""

    def __init__(self, why: str, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.why = why


class EndpointRecord(NamedTuple):
    """A verified record: where the host whose key signed it said it could be reached.

    (A NamedTuple, not a dataclass: `remotectl proxy` imports this on every ssh connection.)
    """

    fingerprint: str
    kind: str
    seq: int
    at: int  # unix seconds, the server's clock
    session: str
    host: Optional[str] = None  # None: unbound (the ngrok endpoint carrying it is the address)
    port: Optional[int] = None

    @property
    def bound(self) -> bool:
        return self.host is not None

    def age_seconds(self, now: Optional[float] = None) -> int:
        return max(0, int((time.time() if now is None else now) - self.at))

    def payload(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"v": FORMAT, "fp": self.fingerprint, "kind": self.kind,
                                  "seq": self.seq, "at": self.at, "session": self.session}
        if self.host is not None:
            fields.update(host=self.host, port=self.port)
        return fields


def canonical(fields: Dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(data: Union[str, bytes]) -> str:
    """The SHA-256 of a record's exact bytes (what a verifier may remember instead of re-checking)."""
    return _sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# -- signing (the server) -------------------------------------------------------------------------
def sign(record: EndpointRecord, private_key_pem: bytes) -> str:
    """The file text of `record`, signed with an OpenSSH-format Ed25519 private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_ssh_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RemotectlError("the host key is not an Ed25519 key, so it cannot sign an endpoint record")
    check_fields(record.payload())  # never sign what a verifier would refuse
    payload = canonical(record.payload())
    signature = key.sign(CONTEXT + payload)
    # The outer "fp" is only a label to find it by (in ngrok's endpoint list); the signed one counts.
    return json.dumps({"remotectl_endpoint": FORMAT, "fp": record.fingerprint, "payload": _b64(payload),
                       "sig": _b64(signature)}, sort_keys=True) + "\n"


# -- verifying (the laptop, and the server reading its previous record) ---------------------------
def ed25519_raw(public_line: str) -> bytes:
    """The 32-byte Ed25519 key inside an OpenSSH `ssh-ed25519 AAAA...` line; ValueError otherwise."""
    parts = public_line.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise ValueError("not an ssh-ed25519 key")
    blob = base64.b64decode(parts[1], validate=True)
    name_len = int.from_bytes(blob[:4], "big")
    name, rest = blob[4:4 + name_len], blob[4 + name_len:]
    key_len = int.from_bytes(rest[:4], "big")
    if name != b"ssh-ed25519" or key_len != 32 or len(rest) != 36:
        raise ValueError("not an ssh-ed25519 key")
    return rest[4:]


def fingerprint_of(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1], validate=True)
    return "SHA256:" + base64.b64encode(_sha256(blob).digest()).decode().rstrip("=")


def parse(data: Union[str, bytes]) -> Tuple[bytes, bytes]:
    """(payload bytes, signature bytes) of a record's text; RecordError when it is not one."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_BYTES:
        raise RecordError("damaged", f"it is {len(data)} bytes, far larger than a record")
    try:
        outer = json.loads(data)
    except (ValueError, RecursionError):
        raise RecordError("damaged", "it is not JSON") from None
    if not isinstance(outer, dict) or "payload" not in outer:
        raise RecordError("damaged", "it is not an endpoint record")
    version = outer.get("remotectl_endpoint")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
        raise RecordError("newer", f"it has format {version}, newer than this remotectl reads ({FORMAT})",
                          "Upgrade remotectl on this computer: pip install -U remotectl")
    if version != FORMAT:
        raise RecordError("damaged", "it is not an endpoint record")
    if not outer.get("sig"):
        raise RecordError("unsigned", "it carries no signature")
    try:
        return _unb64(outer["payload"]), _unb64(outer["sig"])
    except (ValueError, binascii.Error, TypeError):
        raise RecordError("damaged", "its payload or signature is not base64url") from None


def verify(data: Union[str, bytes], pinned_key: str) -> EndpointRecord:
    """The record in `data` if the pinned host key signed it; RecordError saying why not.

    Signature first, then every field (validated as a card's are), so nothing a forger wrote
    is looked at beyond its size.
    """
    payload, signature = parse(data)
    try:
        raw = ed25519_raw(pinned_key)
    except (ValueError, binascii.Error):
        raise RecordError("invalid", "the pinned host key is not an Ed25519 key, which records need") from None
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, CONTEXT + payload)
    except (InvalidSignature, ValueError):
        claimed = _claimed_fingerprint(payload)
        mine = fingerprint_of(pinned_key)
        if claimed and claimed != mine:
            raise RecordError("forged", f"it is signed by another key ({claimed}), not the pinned {mine}") from None
        raise RecordError("forged", f"its signature does not verify against the pinned key {mine}") from None
    fields = json.loads(payload)
    if canonical(fields) != payload:
        raise RecordError("invalid", "its payload is not in canonical form")
    record = check_fields(fields)
    if record.fingerprint != fingerprint_of(pinned_key):
        raise RecordError("forged", "it names another key than the one that signed it")
    return record


def _claimed_fingerprint(payload: bytes) -> Optional[str]:
    try:
        value = json.loads(payload).get("fp")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) and _FP.fullmatch(value) else None


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_fields(fields: Any) -> EndpointRecord:
    """Every field of a payload, checked whole; RecordError("invalid") for the first bad one."""
    from remote.hostnames import TUNNEL_KINDS, valid_host

    if not isinstance(fields, dict):
        raise RecordError("invalid", "its payload is not an object")
    if _int(fields.get("v"), FORMAT + 1, 10 ** 6):
        raise RecordError("newer", f"its payload has version {fields['v']}, newer than this remotectl reads",
                          "Upgrade remotectl on this computer: pip install -U remotectl")
    problems = []
    if fields.get("v") != FORMAT:
        problems.append("version")
    if not isinstance(fields.get("fp"), str) or not _FP.fullmatch(fields["fp"]):
        problems.append("fingerprint")
    if fields.get("kind") not in TUNNEL_KINDS:
        problems.append("tunnel kind")
    if not _int(fields.get("seq"), 1, MAX_SEQ):
        problems.append("sequence number")
    if not _int(fields.get("at"), 0, 2 ** 40):
        problems.append("time")
    if not isinstance(fields.get("session"), str) or not _SESSION.fullmatch(fields["session"]):
        problems.append("session")
    host, port = fields.get("host"), fields.get("port")
    if host is not None or port is not None:
        if not valid_host(host) or len(host) > 253 or host.startswith("-"):
            problems.append("host")
        if not _int(port, 1, 65535):
            problems.append("port")
    if problems:
        raise RecordError("invalid", f"its {', '.join(problems)} {'is' if len(problems) == 1 else 'are'} not valid")
    return EndpointRecord(fingerprint=fields["fp"], kind=fields["kind"], seq=fields["seq"], at=fields["at"],
                          session=fields["session"], host=host, port=port)


def next_seq(previous: Optional[int], now: Optional[float] = None) -> int:
    """A sequence number above `previous` and above every earlier server's (milliseconds)."""
    stamp = int((time.time() if now is None else now) * 1000)
    return min(MAX_SEQ, max((previous or 0) + 1, stamp))
