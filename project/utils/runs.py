"""Run folders: which config and checkpoint a command line means, where a run writes, and branching.

A run is `<save_dir>/models/<name>/<run_id>/` (checkpoints, config.json) plus
`<save_dir>/log/<name>/<run_id>/` (info.log, metrics.jsonl, TensorBoard, curves.png).
`-r` on the run's newest checkpoint continues that run in place; `-r` on an older one
starts a new run `<run_id>-from-e<epoch>` whose history is the original's up to that epoch,
so the original run stays as it was, byte for byte. `locate()` and `plan()` only look; `create()` writes.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import torch

from . import checkpoint as ckpt
from .config import ConfigError, differences, lookup, read_config
from .schema import effective_config, validate
from .util import repo_path

RESUME_ADVICE = {
    "classic": ": it cannot be resumed here; start a new run from its weights with -c CONFIG --init-from CKPT "
               "--trust-checkpoint (only if you trust the file)",
    "weights": "; start a new run from these weights with -c CONFIG --init-from CKPT",
}


def new_run_id() -> str:
    """A timestamp with the year and microseconds: sorts by time, no clash within a second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")


@dataclass
class RunDirs:
    run_id: str
    save_dir: Path  # checkpoints and config.json
    log_dir: Path
    resume_epoch: int | None = None  # the epoch of the checkpoint this run continues from
    branch_of: Path | None = None  # the run folder a branch was taken from
    pick_new_id: bool = False  # a timestamp id may be replaced if another run took it first
    fresh: bool = False  # create() made both folders (so a failed start may remove them)


# ---------------------------------------------------------------------------- which checkpoint
def locate(config_file: str | None, resume: str | None, run_id: str | None,
           changes: Sequence) -> tuple[dict, str, Path | None, str | None]:
    """(config, where it came from, checkpoint to resume, run id) for -c, -r PATH, -r auto, --run-id."""
    if resume == "auto":
        if not config_file:
            raise ConfigError("", "--resume auto needs -c CONFIG to know which experiment to continue",
                              source="command line")
        config = read_config(config_file)
        probe = effective_config(config, changes, config_file)[0]
        models = repo_path(probe["trainer"]["save_dir"]) / "models" / probe["name"]
        found = newest_valid(models / run_id) if run_id else latest_run_checkpoint(models)
        if found is not None and run_id is None:
            check_same_experiment(probe, found)
            run_id = found.parent.name
        return config, config_file, found, run_id
    if resume:
        path = Path(resume)
        if not path.is_file():
            raise ConfigError("", f"no checkpoint file at {path}", source="--resume")
        try:
            stored = ckpt.open_checkpoint(path)["config"]
        except ckpt.NotOurCheckpoint as err:
            raise ConfigError("", f"{err}{RESUME_ADVICE.get(err.kind, '')}", source="--resume") from None
        if config_file:
            return read_config(config_file), config_file, path, run_id
        return stored, f"{path} (its stored config)", path, run_id
    if not config_file:
        raise ConfigError("", "give a config file with -c, or a checkpoint with -r", source="command line")
    return read_config(config_file), config_file, None, run_id


def newest_valid(folder: Path) -> Path | None:
    """The highest-epoch checkpoint in `folder` that loads completely."""
    for _, path in reversed(ckpt.epoch_checkpoints(folder)):
        try:
            ckpt.open_checkpoint(path)
            return path
        except ckpt.NotOurCheckpoint:
            continue
    return None


def latest_run_checkpoint(models_dir: Path) -> Path | None:
    """Across the runs of one experiment, the newest valid checkpoint of the run touched last."""
    runs = []
    for run in models_dir.iterdir() if models_dir.is_dir() else ():
        found = ckpt.epoch_checkpoints(run)
        if found:
            runs.append((max(p.stat().st_mtime for _, p in found), run))
    for _, run in sorted(runs, reverse=True):
        found = newest_valid(run)
        if found is not None:
            return found
    return None


def check_same_experiment(config: dict, checkpoint: Path) -> None:
    """--resume auto without --run-id continues the latest run only if it is this experiment."""
    stored = validate(ckpt.load(checkpoint)["config"])
    changed = [k for k in differences(stored, config) if k != "trainer.epochs"]
    if changed:
        shown = "; ".join(f"{k}: {lookup(stored, k)!r} -> {lookup(config, k)!r}" for k in changed[:4])
        raise ConfigError("", f"the latest run '{checkpoint.parent.name}' has another config ({shown}): continue it "
                          f"with --run-id {checkpoint.parent.name}, or drop --resume auto for a new run",
                          source="--resume auto")


# ---------------------------------------------------------------------------- where it writes
def checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])


def plan(config: dict, resume: Path | None = None, run_id: str | None = None) -> RunDirs:
    """Where this run will write; looks at the disk, writes nothing."""
    root, name = repo_path(config["trainer"]["save_dir"]), config["name"]
    if resume is None:
        save_dir = root / "models" / name / (run_id or new_run_id())
        if run_id and (ckpt.epoch_checkpoints(save_dir) or (save_dir / ckpt.BEST_NAME).exists()):
            raise ConfigError("", f"run '{run_id}' already has checkpoints in {save_dir}; continue it with "
                              "--resume auto, or choose another --run-id", source="--run-id")
        return RunDirs(save_dir.name, save_dir, root / "log" / name / save_dir.name, pick_new_id=run_id is None)
    folder, epoch = resume.resolve().parent, checkpoint_epoch(resume)
    found = [e for e, _ in ckpt.epoch_checkpoints(folder)]
    if (folder / ckpt.BEST_NAME).exists():
        found.append(checkpoint_epoch(folder / ckpt.BEST_NAME))
    if epoch >= max(found, default=0):  # the run's newest: continue it in place
        return RunDirs(folder.name, folder, root / "log" / name / folder.name, epoch)
    run_id, n = f"{folder.name}-from-e{epoch}", 1
    while (folder.parent / run_id).exists() or (root / "log" / name / run_id).exists():
        n += 1
        run_id = f"{folder.name}-from-e{epoch}-{n}"
    return RunDirs(run_id, folder.parent / run_id, root / "log" / name / run_id, epoch, branch_of=folder)


def create(dirs: RunDirs, config: dict) -> None:
    """Make the run's folders and write its config.json; a branch starts with the original's
    history up to the branch point (metrics rows, its best model when that is older)."""
    dirs.fresh = not dirs.save_dir.exists() and not dirs.log_dir.exists()
    while True:
        try:
            dirs.save_dir.mkdir(parents=True, exist_ok=not dirs.pick_new_id)
            break
        except FileExistsError:  # two runs started in the same microsecond
            dirs.run_id = new_run_id()
            dirs.save_dir, dirs.log_dir = dirs.save_dir.parent / dirs.run_id, dirs.log_dir.parent / dirs.run_id
    dirs.log_dir.mkdir(parents=True, exist_ok=True)
    if dirs.branch_of is not None:
        best = dirs.branch_of / ckpt.BEST_NAME
        if best.exists() and checkpoint_epoch(best) <= dirs.resume_epoch:
            ckpt.link_or_copy(best, dirs.save_dir / ckpt.BEST_NAME)
        rows = dirs.log_dir.parent / dirs.branch_of.name / "metrics.jsonl"
        if rows.exists():
            kept = [line for line in rows.read_text().splitlines() if _epoch_of(line) <= dirs.resume_epoch]
            (dirs.log_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    tmp = dirs.save_dir / f".tmp-config.json.{os.getpid()}"
    tmp.write_text(json.dumps(config, indent=4) + "\n")
    os.replace(tmp, dirs.save_dir / "config.json")


def _epoch_of(line: str) -> float:
    try:
        return json.loads(line).get("epoch", float("inf"))
    except (json.JSONDecodeError, AttributeError):
        return float("inf")


def discard_if_unused(dirs: RunDirs) -> None:
    """After a failure before the first checkpoint, remove the folders create() made."""
    if dirs.fresh and not ckpt.epoch_checkpoints(dirs.save_dir) and not (dirs.save_dir / ckpt.BEST_NAME).exists():
        for folder in (dirs.save_dir, dirs.log_dir):
            shutil.rmtree(folder, ignore_errors=True)
