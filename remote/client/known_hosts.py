"""Pinned host keys in ~/.ssh/remotectl/known_hosts, one line per host alias.

A key is filed under `HostKeyAlias remotectl.<name>`, where NAME is the host alias the
laptop chose (`--name`, default `colab`), never under anything a card says: a card is
untrusted text, and a crafted one naming another host's session must not reach that
host's pin. Not host:port either: ngrok hands the same address to different machines.
The user's own known_hosts is never read or written.

Use :class:`PinStore` (keyed by host alias); the module functions work on raw
HostKeyAlias names and exist for the store and for migrating older pins
(`remotectl-<session>`, written before pins were keyed by alias).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

# keys, files, hmac and base64 are imported where they are used: `remotectl proxy` reads a pin on
# every ssh connection and needs none of them.

ALIAS_PREFIX = "remotectl."
LEGACY_PREFIX = "remotectl-"  # before pins were keyed by host alias: remotectl-<card session>


def key_alias(name: str) -> str:
    """The HostKeyAlias for host alias NAME (lower case: ssh matches host names without case)."""
    return f"{ALIAS_PREFIX}{name.lower()}"


def legacy_alias(session: str) -> str:
    """The HostKeyAlias older remotectl wrote, from the card's session id (migrated on connect)."""
    return f"{LEGACY_PREFIX}{session}"


def alias_for(session: str) -> str:  # kept for callers of the old name
    return legacy_alias(session)


def line_for(alias: str, host_key: str) -> str:
    """`remotectl-<session> <type> <base64>`: the line ssh matches under HostKeyAlias."""
    from remote import keys

    return f"{alias} {keys.bare(host_key)}"


def _names_match(field: str, alias: str) -> bool:
    """Whether the host field of a known_hosts line names `alias` (plain list or `|1|` hashed)."""
    for name in field.split(","):
        if name.startswith("|1|"):
            import base64
            import hashlib
            import hmac

            try:
                _, _, salt, digest = name.split("|")
                mac = hmac.new(base64.b64decode(salt), alias.encode(), hashlib.sha1).digest()
            except (ValueError, TypeError):
                continue
            if base64.b64encode(mac).decode() == digest:
                return True
        elif name == alias:
            return True
    return False


def _lines(path: Path) -> List[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def lookup(path: os.PathLike, alias: str) -> List[str]:
    """The pinned keys (`type base64`) for `alias`, in file order (ssh may have added one)."""
    found = []
    for raw in _lines(Path(path)):
        parts = raw.split()
        if len(parts) >= 3 and not raw.lstrip().startswith(("#", "@")) and _names_match(parts[0], alias):
            found.append(f"{parts[1]} {parts[2]}")
    return found


def aliases(path: os.PathLike) -> List[str]:
    """Every plain alias with a pinned key (for `doctor`: keys left without an entry)."""
    return [raw.split()[0] for raw in _lines(Path(path)) if raw.strip() and not raw.startswith("#")]


def pin(path: os.PathLike, alias: str, host_key: str) -> bool:
    """Make `host_key` the only key for `alias` (in place); return whether the file changed."""
    target = Path(path)
    old = _lines(target)
    wanted = line_for(alias, host_key)
    new: List[str] = []
    for raw in old:
        if raw.split() and _names_match(raw.split()[0], alias):
            if wanted not in new:
                new.append(wanted)
        else:
            new.append(raw)
    if wanted not in new:
        new.append(wanted)
    if new == old:
        return False
    from remote.files import atomic_write

    atomic_write(target, "".join(f"{raw}\n" for raw in new), mode=0o600)
    return True


def unpin(path: os.PathLike, alias: str) -> bool:
    """Drop every key for `alias`; delete the file when nothing is left. Return whether it changed."""
    target = Path(path)
    old = _lines(target)
    kept = [raw for raw in old if not (raw.split() and _names_match(raw.split()[0], alias))]
    if kept == old:
        return False
    if any(raw.strip() for raw in kept):
        from remote.files import atomic_write

        atomic_write(target, "".join(f"{raw}\n" for raw in kept), mode=0o600)
    else:
        target.unlink()
    return True


class PinStore:
    """Pinned host keys by host alias: one key per alias, replaced in place.

    ``PinStore(path).pin("colab", "ssh-ed25519 AAAA...")`` files the key under
    ``key_alias("colab")`` in `path`; ``lookup("colab")`` reads it back (hashed lines too);
    ``unpin("colab")`` drops it. Every write is atomic and keeps the other lines byte for byte.
    """

    def __init__(self, path: os.PathLike) -> None:
        self.path = Path(path)

    def pin(self, alias: str, host_key: str) -> bool:
        """Make `host_key` the only key for host `alias`; return whether the file changed."""
        return pin(self.path, key_alias(alias), host_key)

    def lookup(self, alias: str) -> Optional[str]:
        """The key pinned for host `alias` (`type base64`), or None."""
        found = lookup(self.path, key_alias(alias))
        return found[0] if found else None

    def unpin(self, alias: str) -> bool:
        """Drop host `alias`'s key; return whether the file changed."""
        return unpin(self.path, key_alias(alias))

    def aliases(self) -> List[str]:
        """The host aliases with a pin (lower case), in file order."""
        return [a[len(ALIAS_PREFIX):] for a in aliases(self.path) if a.startswith(ALIAS_PREFIX)]
