"""One writer at a time for the files under ~/.ssh/remotectl (concurrent `connect`s all land)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from remote.errors import RemotectlError


@contextmanager
def locked(lock_file: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (flock on POSIX, msvcrt on Windows)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, lock_file, timeout_s)
        try:
            yield
        finally:
            _release(fd)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.name == "nt":
                import msvcrt

                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RemotectlError(f"another remotectl holds {path} for over {timeout_s:.0f} s",
                                     "Wait for it to finish, or end it and run again.") from None
            time.sleep(0.02)


def _release(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
