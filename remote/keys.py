"""Ed25519 key pairs, fingerprints and authorized_keys lines, shared by both ends.

`cryptography` makes the keys (paramiko cannot generate Ed25519); it is imported
inside the functions that need it so `remotectl --help` stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import List, Tuple

from remote.errors import BadInput
from remote.files import atomic_write

KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)


def generate_ed25519(comment: str = "") -> Tuple[bytes, str]:
    """A new key pair: (private key in OpenSSH PEM format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return private, f"{public} {comment}".strip()


def write_keypair(path: os.PathLike, comment: str = "", force: bool = False) -> str:
    """Write `path` (0600) and `path.pub` (0644); return the public line. Never overwrites unasked."""
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    if not force and (private_path.exists() or public_path.exists()):
        raise BadInput(f"{private_path} already exists", "Use --force to replace it (the old key stops working).")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private, public = generate_ed25519(comment)
    atomic_write(private_path, private, mode=0o600)
    atomic_write(public_path, public + "\n", mode=0o644)
    return public


def public_from_private(path: os.PathLike) -> str:
    """The public line of an OpenSSH private key file (e.g. a host key)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def parse_public_key(line: str) -> Tuple[str, str, str]:
    """(type, base64 blob, comment) of one public key line; BadInput if it is not one."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise BadInput(f"not an OpenSSH public key: {line.strip()[:40]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise BadInput(f"not an OpenSSH public key (bad base64): {line.strip()[:40]!r}") from exc
    # The blob starts with its own type name: a mismatch means a pasted mix-up.
    name_len = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4:4 + name_len].decode(errors="replace") != parts[0]:
        raise BadInput(f"public key's type and content disagree: {line.strip()[:40]!r}")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def fingerprint(line: str) -> str:
    """SHA256 fingerprint exactly as `ssh-keygen -l` prints it (`SHA256:...`, no padding)."""
    _, blob, _ = parse_public_key(line)
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def authorized_keys(text: str) -> List[str]:
    """The valid key lines in `text` (one or more keys; blank lines and comments dropped)."""
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        key_type, blob, comment = parse_public_key(raw)
        lines.append(" ".join(p for p in (key_type, blob, comment) if p))
    return lines


def bare(line: str) -> str:
    """`type base64` without the comment: the form cards and known_hosts compare."""
    key_type, blob, _ = parse_public_key(line)
    return f"{key_type} {blob}"
