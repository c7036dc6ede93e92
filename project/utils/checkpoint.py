"""Checkpoint files: atomic writes, best-model links, pruning, and telling what a file is.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(path, weights_only=True)` opens it on any machine. A Colab runtime can vanish
mid-save: every file appears under its final name only once it is complete (temp file in
the same folder, fsync, rename, fsync the folder).
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import queue
import re
import shutil
import threading
import traceback
from collections import OrderedDict, deque
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from .config import ConfigError

CHECKPOINT_RE = re.compile(r"^checkpoint-epoch(\d+)\.pth$")
BEST_NAME = "model_best.pth"
TEMP_PREFIX = ".tmp-"
REQUIRED_KEYS = ("arch", "epoch", "state_dict", "optimizer", "monitor_best", "config")
CLASSIC = "written by the classic pytorch-template (it pickles its ConfigParser)"


class NotOurCheckpoint(Exception):
    """A file -r cannot continue from; `kind` is classic, weights, incomplete or unreadable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def temp_path(final: Path) -> Path:
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows opens no folders
        return
    try:
        os.fsync(fd)
    except OSError:  # some FUSE mounts (Drive) refuse to fsync a folder
        pass
    finally:
        os.close(fd)


def discard(path: Path) -> None:
    """Remove a temp file if it can be removed: on a folder that went read-only (or a Drive gone
    away) even a missing name fails, and cleaning up must not hide the error that led here."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def link_or_copy(source: Path, dest: Path) -> None:
    """Make `dest` the same bytes as the complete file `source`, atomically: a hard link (free,
    survives pruning of `source`), or a copy where the file system has no hard links."""
    tmp = temp_path(dest)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        discard(tmp)
        raise
    fsync_dir(dest.parent)


def detached_copy(obj):
    """`obj` with every tensor copied to the CPU: a state that later steps cannot change, to wait
    in memory for its write. Containers are rebuilt (a state_dict keeps its `_metadata`); plain
    numbers and strings are taken as they are, without a call each (a digits run holds a best
    most epochs, and this walk was a third of the cost)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(_CPU, copy=True)
    kind = type(obj)
    if kind is dict or kind is OrderedDict:
        copy = kind()
        for key, value in obj.items():
            copy[key] = value if type(value) in _ATOMS else detached_copy(value)
        if hasattr(obj, "_metadata"):
            copy._metadata = obj._metadata
        return copy
    if kind is list or kind is tuple:
        return kind(value if type(value) in _ATOMS else detached_copy(value) for value in obj)
    return obj


_CPU = torch.device("cpu")
_ATOMS = (int, float, str, bool, type(None))


def epoch_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every `checkpoint-epochN.pth` in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), entry) for entry in folder.iterdir() if (m := CHECKPOINT_RE.match(entry.name)))


def load(path: str | Path) -> dict:
    """A checkpoint, loaded safely (weights_only) onto the CPU."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def open_checkpoint(path: str | Path) -> dict:
    """This template's checkpoint at `path`, or NotOurCheckpoint saying what the file is."""
    try:
        state = load(path)
    except pickle.UnpicklingError as err:
        if "ConfigParser" in str(err):
            raise NotOurCheckpoint("classic", f"{path} was {CLASSIC}") from None
        raise NotOurCheckpoint("unreadable", f"{path} holds objects other than tensors") from None
    except Exception as err:  # a damaged or foreign file
        raise NotOurCheckpoint("unreadable", f"{path} is not a loadable checkpoint ({type(err).__name__})") from None
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotOurCheckpoint("weights", f"{path} holds only weights (a state_dict), no training state")
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED_KEYS):
        raise NotOurCheckpoint("incomplete", f"{path} is not a complete checkpoint of this template")
    return state


def read_weights(path: Path, trust: bool, logger: logging.Logger) -> dict:
    """The state_dict in one of our checkpoints, a plain state_dict file, or (only with `trust`:
    unpickling runs code) a classic template's checkpoint; DDP and compile prefixes dropped."""
    if not path.is_file():
        raise ConfigError("", f"no checkpoint file at {path}", source="--init-from")
    try:
        state = load(path)
    except pickle.UnpicklingError:
        if not trust:
            raise ConfigError("", f"{path} holds pickled objects (a classic pytorch-template checkpoint pickles its "
                              "ConfigParser): loading it runs code from the file; if you trust it, add "
                              "--trust-checkpoint", source="--init-from") from None
        logger.warning(f"--trust-checkpoint: unpickling {path} with weights_only=False (this runs code from the file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # a class the pickle names is missing here, a damaged file
            raise ConfigError("", f"{path} cannot be unpickled here: {err}", source="--init-from") from None
    except Exception as err:
        raise ConfigError("", f"{path} is not a loadable checkpoint ({type(err).__name__})",
                          source="--init-from") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("", f"{path} holds no state_dict of tensors", source="--init-from")
    return {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}


def init_from(model: torch.nn.Module, path: str | Path, skip: list[str], trust: bool, logger: logging.Logger) -> None:
    """Fine-tuning: load what fits of the weights at `path` into `model` (strict=False semantics;
    a shape mismatch is refused unless the layer is in `skip`, which starts fresh)."""
    weights, own = read_weights(Path(path), trust, logger), model.state_dict()

    def under(key: str, layer: str) -> bool:
        return key == layer or key.startswith(layer + ".")

    unknown = [s for s in skip if not any(under(k, s) for k in [*weights, *own])]
    if unknown:
        layers = ", ".join(sorted({k.rsplit(".", 1)[0] for k in own})[:12])
        raise ConfigError("", f"no layer named {', '.join(unknown)} (layers: {layers})", source="--init-skip")
    skipped = [k for k in weights if any(under(k, s) for s in skip)]
    wrong = [f"{k} {tuple(weights[k].shape)} -> {tuple(own[k].shape)}" for k in weights
             if k in own and k not in skipped and weights[k].shape != own[k].shape]
    if wrong:
        raise ConfigError("", f"shapes differ: {'; '.join(wrong)}: list the layer in --init-skip to start it fresh",
                          source="--init-from")
    kept = {k: v for k, v in weights.items() if k not in skipped}
    result = model.load_state_dict(kept, strict=False)
    logger.info(f"initialised from {path}: {len(kept) - len(result.unexpected_keys)} tensors loaded"
                + (f", skipped {', '.join(skipped)}" if skipped else ""))
    if result.missing_keys:
        logger.info(f"missing keys (left as initialised): {', '.join(result.missing_keys)}")
    if result.unexpected_keys:
        logger.info(f"unexpected keys (ignored): {', '.join(result.unexpected_keys)}")


class CheckpointWriter:
    """Checkpoints whose disk work runs on one background thread, so the loop does not wait for a
    slow disk (Drive). The training thread only serialises the state into memory (a consistent
    copy; pickling beside the loop would fight it for the GIL); the thread writes the temp file,
    fsyncs, renames, links model_best, fsyncs the folder and prunes: system calls, which release
    the GIL. (Writing the temp file on the training thread cost it about 0.3 ms an epoch, more
    while the thread's fsync held the file system's journal.) The loop waits if two saves are
    pending, or, before serialising, until what is still in memory is on disk when it and the new
    one would pass `memory_budget` (a 4 GB checkpoint on a slow Drive must not be held four times
    over in Colab's 12 GB). `close()` returns once all is on disk, re-raises an error and ends the
    thread (a notebook that trains again makes a new writer). A crash loses at most temp files.

    Ctrl-C raises KeyboardInterrupt in the training thread at any line, so that thread holds no
    lock the writer needs: it appends to a deque and puts to SimpleQueues (single C calls) and
    waits in SimpleQueue.get; the writer, which no signal interrupts, pops a job only once it is
    on disk. threading's Semaphore, Condition and Queue are Python code around a lock, and each
    failed here: an interrupt inside Queue.put's notify() left a stale waiter that ate close()'s
    wake-up, and one at the exit of Semaphore.acquire's `with` left the semaphore's lock held, so
    a busy writer blocked for good releasing its slot."""

    MAX_IN_MEMORY = 3  # handed over, not yet on disk: the one being written and two more

    def __init__(self, folder: Path, keep_last: int | None, memory_budget: int = 256 << 20) -> None:
        self.folder, self.keep_last, self.memory_budget = folder, keep_last, memory_budget
        self.last_size = 0  # bytes of the newest serialised checkpoint
        self._jobs: deque[_Job | None] = deque()  # None: close()'s end of work
        self._wake: queue.SimpleQueue = queue.SimpleQueue()  # to the writer: look at _jobs
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # from the writer: a job left _jobs, or it ended
        self._end_sent = self._end_queued = self._ended = False
        self._error: BaseException | None = None
        for entry in folder.glob(f"{TEMP_PREFIX}*"):  # what a killed process left: never valid
            entry.unlink(missing_ok=True)
        # Started here, not in the first save(): Thread.start() waits on an Event, and an interrupt
        # at that wait's exit would leave the new thread stuck before it runs (here it only fails
        # the constructor, and no one waits for this writer).
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def save(self, state: dict, epoch: int, best: bool) -> None:
        """`checkpoint-epoch{epoch}.pth`, and model_best linked to it when `best`."""
        if self._end_sent:
            raise RuntimeError(f"the checkpoint writer of {self.folder} is closed")
        if self._in_memory() + self.last_size > self.memory_budget:
            self._wait_until(lambda: not self._jobs)
        self._check()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        size = self.last_size = buffer.getbuffer().nbytes
        self._wait_until(lambda: len(self._jobs) < self.MAX_IN_MEMORY)
        self._jobs.append(_Job(buffer, size, self.folder / f"checkpoint-epoch{epoch}.pth", best, epoch))
        self._wake.put(None)  # an interrupt before this line: the next save's or close()'s wake-up finds the job

    def _in_memory(self) -> int:
        return sum(job.size for job in list(self._jobs) if job is not None)  # list(): one C call, a snapshot

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not self._done.empty():  # wake-ups for changes ready() is about to see: only this thread reads them
            self._done.get_nowait()
        while not ready():
            self._wake.put(None)  # a save() interrupted before its wake-up left a job the idle writer has not seen
            self._done.get()

    def _run(self) -> None:
        while True:
            self._wake.get()
            while self._jobs:
                job = self._jobs[0]
                if job is None:  # close(): everything before it is on disk
                    self._ended = True
                    self._done.put(None)
                    return
                error = self._write(job)
                if error is not None:  # handed to the training thread by save() or close(); the first one stands
                    traceback.clear_frames(error.__traceback__)  # _write's frame held the job's bytes
                    if self._error is None:
                        self._error = error
                self._jobs.popleft()
                del job
                self._done.put(None)

    def _write(self, job: _Job) -> BaseException | None:
        tmp = temp_path(job.final)
        try:
            with tmp.open("wb") as handle:
                handle.write(job.buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, job.final)
            if job.best:
                link_or_copy(job.final, self.folder / BEST_NAME)  # fsyncs the folder for both names
            else:
                fsync_dir(self.folder)
            if self.keep_last:  # older checkpoints of this run's history may go
                for _, path in [c for c in epoch_checkpoints(self.folder) if c[0] <= job.epoch][:-self.keep_last]:
                    path.unlink(missing_ok=True)
        except BaseException as err:
            discard(tmp)
            return err
        return None

    def _check(self) -> None:
        err = self._error
        if err is not None:
            error = RuntimeError(f"could not write a checkpoint in {self.folder}: {err}")
            self._error = None  # no call from here to the raise: a Ctrl-C cannot land between them and lose it
            raise error from err

    def close(self) -> None:
        """Return once every checkpoint is on disk, re-raising a write error, and end the thread.
        Safe to call again after an interrupt anywhere in it (the Ctrl-C path does)."""
        self._end_sent = True  # save() refuses from here
        if not self._end_queued:
            self._jobs.append(None)  # after the jobs already handed over
            self._end_queued = True  # interrupted before this line, a second close() adds a None no one reads
        self._wait_until(lambda: self._ended)  # not Thread.join alone: interrupted, it marks a live thread ended
        self._thread.join()
        self._check()


class _Job(NamedTuple):
    buffer: io.BytesIO
    size: int
    final: Path
    best: bool
    epoch: int
