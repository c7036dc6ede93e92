"""Crash-safe file writes shared by both ends (ssh config, known_hosts, state files, keys)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, data: Union[bytes, str], mode: Optional[int] = 0o600) -> Path:
    """Write `data` so that `path` holds either the old or the new content, never a mix.

    A temp file in the same folder is written, fsynced and renamed over `path`; the
    folder is fsynced too. `mode` is applied before the rename, so a secret is never
    readable by others, not even for an instant. `mode=None` keeps the old file's mode.
    """
    target = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if mode is None:
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)
    return target


def fsync_dir(folder: PathLike) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def private_dir(path: PathLike) -> Path:
    """Create `path` (and parents) and make it 0700: it will hold keys or state."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder
