"""What survives a runtime reset: the host's identity (`up --persist DIR`) and `saved/` on Drive.

Every new Colab runtime is a new machine with an empty state dir, so without help it has a
new host key (a new pin on the user's computer) and no checkpoints. A persist folder (a
Drive folder in Colab) keeps the host key and the authorized keys; `up` copies them into
the state dir, where sshd reads them with the modes StrictModes wants (Drive's FUSE mount
reports its own modes), and the card carries the same key again.

Layout of DIR (folder 0700, files 0600):

    ssh_host_ed25519_key       the host's private key (the source of truth)
    ssh_host_ed25519_key.pub   its public line (0644)
    authorized_keys            the keys the last `up` was given
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path
from typing import List, Optional

from remote import keys
from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write, private_dir

HOST_KEY = "ssh_host_ed25519_key"
AUTHORIZED_KEYS = "authorized_keys"


def check_dir(path: str) -> Path:
    """The persist folder as an absolute path; BadInput if it is a file (nothing is created)."""
    folder = Path(os.path.abspath(os.path.expanduser(path)))
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--persist {folder} is a file, not a folder",
                       "Give a folder (in Colab, one on Drive such as /content/drive/MyDrive/remotectl).")
    return folder


def saved_authorized_keys(folder: Path) -> List[str]:
    """The authorized keys a previous `up` kept in `folder` ([] when none)."""
    try:
        text = (folder / AUTHORIZED_KEYS).read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RemotectlError(f"cannot read {folder / AUTHORIZED_KEYS}: {exc.strerror or exc}") from None
    return keys.authorized_keys(text)


def keep_authorized_keys(folder: Path, lines: List[str]) -> None:
    """The keys given this time become the kept ones (a key dropped from the secret is dropped here)."""
    if not lines:
        return
    text = "".join(line + "\n" for line in lines)
    path = folder / AUTHORIZED_KEYS
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    atomic_write(path, text, mode=0o600)


def restore_host_key(folder: Path, state_dir: Path) -> None:
    """Make the state dir's host key the kept one; keep the state dir's (or a new) one if none is kept.

    Called before sshd's files are written, so `ensure_host_key` then finds it in place.
    """
    private_dir(folder)
    kept = folder / HOST_KEY
    local = state_dir / HOST_KEY
    if kept.exists():
        try:
            data = kept.read_bytes()
            line = keys.public_from_private(kept)
        except (OSError, ValueError) as exc:
            raise RemotectlError(f"the host key kept in {folder} is unreadable: {exc}",
                                 f"Move {kept} aside to start a new identity (clients then pin a "
                                 "new key), or point --persist at the right folder.") from None
        if not local.exists() or local.read_bytes() != data:
            atomic_write(local, data, mode=0o600)
        atomic_write(state_dir / (HOST_KEY + ".pub"), line + "\n", mode=0o644)
        return
    if not local.exists():
        private_pem, line = keys.generate_ed25519("remotectl-host")
        atomic_write(local, private_pem, mode=0o600)
        atomic_write(state_dir / (HOST_KEY + ".pub"), line + "\n", mode=0o644)
    atomic_write(kept, local.read_bytes(), mode=0o600)
    atomic_write(folder / (HOST_KEY + ".pub"), keys.public_from_private(local) + "\n", mode=0o644)


# -- saved/ on Drive ------------------------------------------------------------------------------
def link_saved(local: os.PathLike, target: os.PathLike) -> str:
    """Make `local` (a project's saved/) a symlink to `target` (a Drive folder); never lose a file.

    What `local` already holds is merged into `target` first (folders merge; a file that is
    on both sides with the same bytes is dropped locally). If both sides hold different
    files under one name, nothing is changed and BadInput names them. Returns what was
    done, in words.
    """
    local, target = Path(local), Path(os.path.abspath(target))
    if local.is_symlink():
        if Path(os.path.realpath(local)) == Path(os.path.realpath(target)):
            return f"{local} already links to {target}"
        raise BadInput(f"{local} is already a link to {os.readlink(local)}, not to {target}",
                       f"Remove that link yourself (rm {local}) if {target} should hold the checkpoints.")
    if local.exists() and not local.is_dir():
        raise BadInput(f"{local} is a file, not a folder; it was left as it is")
    if target.exists() and not target.is_dir():
        raise BadInput(f"{target} is a file, not a folder; nothing was linked")
    moved = 0
    if local.is_dir():
        clashes = _clashes(local, target)
        if clashes:
            raise BadInput(f"both {local} and {target} hold different {', '.join(clashes[:5])}"
                           + (" ..." if len(clashes) > 5 else "") + "; nothing was moved",
                           "Move or merge them by hand, then link again (or use another Drive folder).")
        target.mkdir(parents=True, exist_ok=True)
        moved = _merge(local, target)
    target.mkdir(parents=True, exist_ok=True)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.symlink_to(target, target_is_directory=True)
    return f"{local} -> {target}" + (f" (moved {moved} item{'s' if moved != 1 else ''} in)" if moved else "")


def _clashes(local: Path, target: Path, prefix: str = "") -> List[str]:
    """Names under both folders that cannot be merged: different files, or a file against a folder."""
    found: List[str] = []
    for entry in sorted(local.iterdir()):
        there = target / entry.name
        name = prefix + entry.name
        if not there.exists() and not there.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink() and there.is_dir() and not there.is_symlink():
            found += _clashes(entry, there, name + "/")
        elif not _same_file(entry, there):
            found.append(name)
    return found


def _merge(local: Path, target: Path) -> int:
    """Move everything from `local` into `target` (checked by _clashes first); remove `local`."""
    moved = 0
    for entry in sorted(local.iterdir()):
        there = target / entry.name
        if there.is_dir() and entry.is_dir() and not entry.is_symlink():
            moved += _merge(entry, there)
        elif there.exists():  # the same bytes are already there
            entry.unlink()
        else:
            shutil.move(str(entry), str(there))
            moved += 1
    local.rmdir()
    return moved


def _same_file(a: Path, b: Path) -> bool:
    return (a.is_file() and not a.is_symlink() and b.is_file() and not b.is_symlink()
            and filecmp.cmp(a, b, shallow=False))


def default_drive_dir(mydrive: Optional[os.PathLike] = None) -> Path:
    """Where the bootstrap cell keeps remotectl's things on Drive."""
    return Path(mydrive or "/content/drive/MyDrive") / "remotectl"
