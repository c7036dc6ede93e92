"""The user's login key: made once, shown again on request, never silently replaced."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from remote import keys
from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: str  # the public line, as written in `<private>.pub`
    created: bool  # False: it was already there (and is shown again)


def ensure_keypair(path: Path, comment: str, force: bool = False) -> KeyPair:
    """Make an Ed25519 pair at `path`, or give back the one there (its `.pub` line).

    Running `keygen` again is how people find their public line again, so an existing
    pair is not an error. A `.pub` that went missing is derived from the private key again;
    one that does not match the private key is refused rather than shown.
    """
    public_path = path.with_name(path.name + ".pub")
    if force or not path.exists():
        try:
            return KeyPair(path, keys.write_keypair(path, comment, force=True), True)
        except OSError as exc:  # a file where a folder belongs, a read-only or missing place
            raise RemotectlError(f"cannot write the key {path}: {exc.strerror or exc}",
                                 "Give --path (or --ssh-dir) a place in a folder you can write.") from None
    try:
        line = public_path.read_text().strip()
        shown: Optional[str] = keys.bare(line) if line else None
    except (OSError, ValueError, BadInput):
        shown = None
    try:
        derived: Optional[str] = keys.public_from_private(path)
    except (ValueError, TypeError, OSError) as exc:  # encrypted, or not a key at all
        if shown is not None:
            return KeyPair(path, line, False)  # a passphrase key: its .pub is all there is to show
        raise RemotectlError(f"{path} exists but is not a key remotectl can read ({exc})",
                             "Use --force to replace it (the old key stops working), or --path "
                             "for another file.") from None
    if shown is None:
        atomic_write(public_path, f"{derived} {comment}".strip() + "\n", mode=0o644)
        return KeyPair(path, f"{derived} {comment}".strip(), False)
    if shown != keys.bare(derived):
        raise RemotectlError(f"{public_path} does not belong to {path}",
                             f"Remove {public_path} and run keygen again to write the right one.")
    return KeyPair(path, line, False)
