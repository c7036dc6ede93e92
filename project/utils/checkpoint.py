"""Checkpoint files: atomic writes, best-model links, pruning, and finding one to resume.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(path, weights_only=True, map_location=...)` opens it on any machine.
A Colab runtime can vanish mid-save: every file appears under its final name only
once it is complete (temp file in the same folder, fsync, rename, fsync the folder).
"""
from __future__ import annotations

import io
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_RE = re.compile(r"^checkpoint-epoch(\d+)\.pth$")
BEST_NAME = "model_best.pth"
TEMP_PREFIX = ".tmp-"
REQUIRED_KEYS = ("arch", "epoch", "state_dict", "optimizer", "monitor_best", "config")


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint-epoch{epoch}.pth"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some FUSE mounts refuse
        pass
    finally:
        os.close(fd)


def _temp_path(final: Path) -> Path:
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{os.getpid()}")


def atomic_save(state: dict, path: str | Path) -> Path:
    """torch.save to a temp file beside `path`, fsync, then rename over `path`."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(buffer.getbuffer(), path)


def atomic_write_bytes(data, path: str | Path) -> Path:
    """Write `data` to a temp file beside `path`, fsync, rename over `path`, fsync the folder."""
    final = Path(path)
    tmp = _temp_path(final)
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
    return final


def link_or_copy(source: str | Path, dest: str | Path) -> Path:
    """Make `dest` the same bytes as the complete file `source`, atomically.

    A hard link costs nothing and survives pruning of `source`; where the file system has
    no hard links (some network or FUSE mounts) a copy is written the same atomic way.
    """
    source, dest = Path(source), Path(dest)
    tmp = _temp_path(dest)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            with source.open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return dest


def epoch_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every `checkpoint-epochN.pth` in `folder`, oldest first."""
    found = []
    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            match = CHECKPOINT_RE.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
    return sorted(found)


def prune(folder: str | Path, keep_last: int | None) -> list[Path]:
    """Delete all but the newest `keep_last` epoch checkpoints (model_best is never touched)."""
    if not keep_last:
        return []
    removed = []
    for _, path in epoch_checkpoints(folder)[:-keep_last]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def remove_stale_temps(folder: str | Path) -> None:
    """Temp files a killed process left behind are never valid; clear them at start-up."""
    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                entry.unlink(missing_ok=True)


def load(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (weights_only) onto `map_location`."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def is_valid(path: str | Path) -> bool:
    try:
        state = load(path)
    except Exception:
        return False
    return isinstance(state, dict) and all(key in state for key in REQUIRED_KEYS)


def newest_valid(folder: str | Path) -> Path | None:
    """The highest-epoch checkpoint in `folder` that loads completely."""
    for _, path in reversed(epoch_checkpoints(folder)):
        if is_valid(path):
            return path
    return None


def latest_run_checkpoint(models_dir: str | Path) -> Path | None:
    """Across every run of one experiment name, the newest valid checkpoint of the run
    touched last (by the modification time of its newest checkpoint)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return None
    runs = []
    for run in models_dir.iterdir():
        checkpoints = epoch_checkpoints(run) if run.is_dir() else []
        if checkpoints:
            runs.append((max(p.stat().st_mtime for _, p in checkpoints), run))
    for _, run in sorted(runs, reverse=True):
        found = newest_valid(run)
        if found is not None:
            return found
    return None


class CheckpointWriter:
    """Writes checkpoints on one background thread, so the loop does not wait for the disk.

    The state is serialised in the caller's thread (torch.save into memory: a consistent
    copy of the live tensors, GPU ones included); the thread only writes those bytes to a
    temp file, fsyncs, renames, links model_best and prunes old files - system calls that
    release the GIL, so the training thread keeps running. One write at a time, in order;
    `wait()` returns when the last one is on disk and re-raises its error. The thread is
    not a daemon: a process that ends normally finishes its last write.
    """

    def __init__(self, folder: str | Path, keep_last: int | None, background: bool = True) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict, epoch: int, periodic: bool, save_best: bool) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.wait()
        job = (buffer.getbuffer(), epoch, periodic, save_best)
        if not self.background:
            self._write(*job)
            return
        self._thread = threading.Thread(target=self._run, args=job, name="checkpoint-writer")
        self._thread.start()

    def _run(self, *job) -> None:
        try:
            self._write(*job)
        except BaseException as err:  # handed to the training thread by wait()
            self._error = err

    def _write(self, data, epoch: int, periodic: bool, save_best: bool) -> None:
        best = self.folder / BEST_NAME
        if periodic:
            path = atomic_write_bytes(data, self.folder / checkpoint_name(epoch))
            if save_best:
                link_or_copy(path, best)
            prune(self.folder, self.keep_last)
        elif save_best:
            atomic_write_bytes(data, best)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"could not write a checkpoint in {self.folder}: {err}") from err
