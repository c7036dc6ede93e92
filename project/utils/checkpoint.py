"""Checkpoint files: atomic writes, best-model links, pruning, and telling what a file is.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(path, weights_only=True)` opens it on any machine. A Colab runtime can vanish
mid-save: every file appears under its final name only once it is complete (temp file in
the same folder, fsync, rename, fsync the folder).
"""
from __future__ import annotations

import io
import os
import pickle
import queue
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


class NotOurCheckpoint(Exception):
    """A file -r cannot continue from; `kind` is classic, weights, incomplete or unreadable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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


def link_or_copy(source: str | Path, dest: str | Path) -> Path:
    """Make `dest` the same bytes as the complete file `source`, atomically: a hard link (free,
    survives pruning of `source`), or a copy where the file system has no hard links."""
    source, dest = Path(source), Path(dest)
    tmp = _temp_path(dest)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return dest


def epoch_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every `checkpoint-epochN.pth` in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), entry) for entry in folder.iterdir() if (m := CHECKPOINT_RE.match(entry.name))]
    return sorted(found)


def prune(folder: str | Path, keep_last: int | None, epoch: int) -> None:
    """Keep the newest `keep_last` epoch checkpoints up to `epoch` (this run's own history);
    a newer one is never removed, nor model_best."""
    if keep_last:
        for _, path in [c for c in epoch_checkpoints(folder) if c[0] <= epoch][:-keep_last]:
            path.unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path) -> None:
    """Temp files a killed process left behind are never valid; clear them at start-up."""
    for entry in Path(folder).glob(f"{TEMP_PREFIX}*"):
        entry.unlink(missing_ok=True)


def load(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (weights_only) onto `map_location`."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def open_checkpoint(path: str | Path) -> dict:
    """This template's checkpoint at `path`, or NotOurCheckpoint saying what the file is."""
    try:
        state = load(path)
    except pickle.UnpicklingError as err:
        if "ConfigParser" in str(err):  # the classic template pickles its ConfigParser
            raise NotOurCheckpoint("classic", f"{path} was written by the classic pytorch-template") from None
        raise NotOurCheckpoint("unreadable", f"{path} holds objects other than tensors") from None
    except Exception as err:  # a damaged or foreign file
        raise NotOurCheckpoint("unreadable", f"{path} is not a loadable checkpoint ({type(err).__name__})") from None
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotOurCheckpoint("weights", f"{path} holds only weights (a state_dict), no training state")
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED_KEYS):
        raise NotOurCheckpoint("incomplete", f"{path} is not a complete checkpoint of this template")
    return state


def newest_valid(folder: str | Path) -> Path | None:
    """The highest-epoch checkpoint in `folder` that loads completely."""
    for _, path in reversed(epoch_checkpoints(folder)):
        try:
            open_checkpoint(path)
            return path
        except NotOurCheckpoint:
            continue
    return None


def latest_run_checkpoint(models_dir: str | Path) -> Path | None:
    """Across the runs of one experiment, the newest valid checkpoint of the run touched last."""
    runs = []
    for run in Path(models_dir).iterdir() if Path(models_dir).is_dir() else ():
        checkpoints = epoch_checkpoints(run) if run.is_dir() else []
        if checkpoints:
            runs.append((max(p.stat().st_mtime for _, p in checkpoints), run))
    for _, run in sorted(runs, reverse=True):
        found = newest_valid(run)
        if found is not None:
            return found
    return None


class CheckpointWriter:
    """Checkpoints written with the slow part on one background thread, so the loop does not
    wait for a slow disk (Drive). The training thread serialises the state (a consistent copy;
    pickling beside the loop would fight it for the GIL) and hands the bytes to the page cache
    in a temp file; the thread then only fsyncs, renames, links model_best and fsyncs the
    folder, then prunes older files: system calls, so it seldom needs the GIL the loop is
    using. The loop does not wait
    for the previous write (a busy disk can take longer than an epoch to fsync) unless four
    are pending; `wait()` returns once all is on disk and re-raises an error. A crash loses at
    most temp files, never a complete checkpoint."""

    def __init__(self, folder: str | Path, keep_last: int | None) -> None:
        self.folder, self.keep_last = Path(folder), keep_last
        self._jobs: queue.Queue = queue.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict, epoch: int, periodic: bool, save_best: bool) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._check()
        final = self.folder / (checkpoint_name(epoch) if periodic else BEST_NAME)
        tmp = _temp_path(final)
        with tmp.open("wb") as handle:  # into the page cache: fast; fsync is the slow part
            handle.write(buffer.getbuffer())
            fd = os.dup(handle.fileno())
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
            self._thread.start()
        self._jobs.put((fd, tmp, final, periodic and save_best, epoch if periodic else None))

    def _run(self) -> None:
        while True:
            fd, tmp, final, link_best, epoch = self._jobs.get()
            try:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, final)
                if link_best:
                    link_or_copy(final, self.folder / BEST_NAME)  # fsyncs the folder for both names
                else:
                    _fsync_dir(self.folder)
                if epoch is not None:  # a newer checkpoint is complete: older ones may go
                    prune(self.folder, self.keep_last, epoch)
            except BaseException as err:  # handed to the training thread by wait()
                tmp.unlink(missing_ok=True)
                self._error = err
            finally:
                self._jobs.task_done()

    def _check(self) -> None:
        """Re-raise the writer's error."""
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"could not write a checkpoint in {self.folder}: {err}") from err

    def wait(self) -> None:
        self._jobs.join()
        self._check()
