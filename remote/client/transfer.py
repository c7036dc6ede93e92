"""SFTP pull/push over the pinned connection: files or folders, resumable, with progress.

Resuming is by size: a destination file of the source's size is skipped; otherwise bytes
go to `<name>.part`, which a later run continues from its length, and the finished file is
renamed into place, so a half-copied checkpoint never sits under its real name.
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Tuple

from remote.errors import BadInput, RemotectlError

CHUNK = 256 * 1024


@dataclass
class TransferStats:
    files: int = 0
    skipped: int = 0
    resumed: int = 0
    bytes: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Progress:
    """tqdm when installed, else a line on stderr at most twice a second."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.done, self.enabled = total, label, 0, enabled
        self._bar = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last > 0.5:
            self._last = time.monotonic()
            print(f"\r{self.label}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB", end="", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            print(f"\r{self.label}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB", file=sys.stderr)


def remote_path(sftp, path: str) -> str:
    """`~/x` and `x` are relative to the login folder (SFTP's own start folder)."""
    if path in ("~", ""):
        return sftp.normalize(".")
    return path[2:] if path.startswith("~/") else path


def _remote_stat(sftp, path: str):
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RemotectlError(f"cannot read remote {path}: {exc}") from None


def _plan_pull(sftp, src: str, dst: Path) -> List[Tuple[str, Path, int]]:
    attrs = _remote_stat(sftp, src)
    if attrs is None:
        raise BadInput(f"remote path {src} does not exist")
    if not stat.S_ISDIR(attrs.st_mode):
        return [(src, dst, attrs.st_size)]
    plan = []
    for entry in sorted(sftp.listdir_attr(src), key=lambda a: a.filename):
        child = posixpath.join(src, entry.filename)
        if stat.S_ISDIR(entry.st_mode):
            plan += _plan_pull(sftp, child, dst / entry.filename)
        elif stat.S_ISREG(entry.st_mode):
            plan.append((child, dst / entry.filename, entry.st_size))
    if not plan:
        dst.mkdir(parents=True, exist_ok=True)
    return plan


def pull(sftp, remote: str, local: str = ".", progress: bool = True) -> TransferStats:
    """Copy REMOTE (file or folder) to LOCAL; into LOCAL/<name> when LOCAL is a folder."""
    src = remote_path(sftp, remote).rstrip("/") or "/"
    dst = Path(local)
    if dst.is_dir():
        dst = dst / posixpath.basename(src)
    plan = _plan_pull(sftp, src, dst)
    return _copy(plan, lambda s, d, size, stats, bar: _get(sftp, s, d, size, stats, bar),
                 f"pull {posixpath.basename(src)}", progress)


def push(sftp, local: str, remote: str = ".", progress: bool = True) -> TransferStats:
    """Copy LOCAL (file or folder) to REMOTE; into REMOTE/<name> when REMOTE is a folder."""
    src = Path(local)
    if not src.exists():
        raise BadInput(f"local path {src} does not exist")
    dst = remote_path(sftp, remote).rstrip("/") or "/"
    attrs = _remote_stat(sftp, dst)
    if attrs is not None and stat.S_ISDIR(attrs.st_mode):
        dst = posixpath.join(dst, src.name)
    if src.is_dir():
        plan = []
        for path in sorted(src.rglob("*")):
            if path.is_file():
                plan.append((path, posixpath.join(dst, *path.relative_to(src).parts), path.stat().st_size))
        _remote_makedirs(sftp, dst)
    else:
        plan = [(src, dst, src.stat().st_size)]
    return _copy(plan, lambda s, d, size, stats, bar: _put(sftp, s, d, size, stats, bar),
                 f"push {src.name}", progress)


def _copy(plan, one: Callable, label: str, progress: bool) -> TransferStats:
    stats = TransferStats()
    bar = _Progress(sum(size for _, _, size in plan), label, progress)
    try:
        for src, dst, size in plan:
            one(src, dst, size, stats, bar)
    finally:
        bar.close()
    return stats


def _get(sftp, src: str, dst: Path, size: int, stats: TransferStats, bar: _Progress) -> None:
    if dst.is_file() and dst.stat().st_size == size:
        stats.skipped += 1
        bar.update(size)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        offset = 0
    if offset:
        stats.resumed += 1
    bar.update(offset)
    with sftp.open(src, "rb") as rf, open(part, "ab" if offset else "wb") as lf:
        rf.seek(offset)
        rf.prefetch(size)
        _pump(rf, lf, stats, bar)
        lf.flush()
        os.fsync(lf.fileno())
    os.replace(part, dst)
    stats.files += 1


def _pump(source, sink, stats: TransferStats, bar: _Progress) -> None:
    """Copy the rest of `source` to `sink` in CHUNKs, counting bytes and moving the bar."""
    while True:
        data = source.read(CHUNK)
        if not data:
            break
        sink.write(data)
        stats.bytes += len(data)
        bar.update(len(data))


def _remote_makedirs(sftp, path: str) -> None:
    if _remote_stat(sftp, path) is not None:
        return
    parent = posixpath.dirname(path)
    if parent and parent != path:
        _remote_makedirs(sftp, parent)
    sftp.mkdir(path)


def _put(sftp, src: Path, dst: str, size: int, stats: TransferStats, bar: _Progress) -> None:
    existing = _remote_stat(sftp, dst)
    if existing is not None and existing.st_size == size and not stat.S_ISDIR(existing.st_mode):
        stats.skipped += 1
        bar.update(size)
        return
    _remote_makedirs(sftp, posixpath.dirname(dst) or ".")
    part = dst + ".part"
    part_attrs = _remote_stat(sftp, part)
    offset = part_attrs.st_size if part_attrs is not None and part_attrs.st_size <= size else 0
    if offset:
        stats.resumed += 1
    bar.update(offset)
    with open(src, "rb") as lf, sftp.open(part, "r+b" if offset else "wb") as rf:
        lf.seek(offset)
        rf.seek(offset)
        rf.set_pipelined(True)
        _pump(lf, rf, stats, bar)
    sftp.posix_rename(part, dst)
    stats.files += 1
