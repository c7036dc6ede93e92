"""Run folders: where a run writes, which checkpoint a resume continues, and branching.

A run is `<save_dir>/models/<name>/<run_id>/` (checkpoints, config.json) plus
`<save_dir>/log/<name>/<run_id>/` (info.log, metrics.jsonl, TensorBoard, curves.png).
`-r` on the run's newest checkpoint continues that run in place; `-r` on an older one
starts a new run `<run_id>-from-e<epoch>` whose history is the original's up to that epoch,
so the original run stays as it was, byte for byte. `plan()` only looks; `create()` writes.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import ConfigError, differences, lookup
from .schema import validate
from .util import repo_path


def new_run_id() -> str:
    """A timestamp with the year and microseconds: sorts by time, no clash within a second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")


@dataclass
class RunDirs:
    run_id: str
    save_dir: Path  # checkpoints and config.json
    log_dir: Path
    resume: Path | None = None  # the checkpoint this run continues from
    resume_epoch: int | None = None
    branch_of: Path | None = None  # the run folder a branch was taken from
    pick_new_id: bool = False  # a timestamp id may be replaced if another run took it first
    fresh: bool = False  # create() made both folders (so a failed start may remove them)


def checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])


def newest_epoch(folder: Path) -> int | None:
    """The newest epoch this run folder holds a complete checkpoint of (model_best included)."""
    found = [epoch for epoch, _ in ckpt.epoch_checkpoints(folder)]
    if (folder / ckpt.BEST_NAME).exists():
        found.append(checkpoint_epoch(folder / ckpt.BEST_NAME))
    return max(found, default=None)


def plan(config: dict, resume: Path | None = None, run_id: str | None = None) -> RunDirs:
    """Where this run will write; looks at the disk, writes nothing."""
    root, name = repo_path(config["trainer"]["save_dir"]), config["name"]
    if resume is None:
        pick_new = run_id is None
        run_id = run_id or new_run_id()
        save_dir = root / "models" / name / run_id
        if not pick_new and (ckpt.epoch_checkpoints(save_dir) or (save_dir / ckpt.BEST_NAME).exists()):
            raise ConfigError("", f"run '{run_id}' already has checkpoints in {save_dir}; continue it with "
                              "--resume auto, or choose another --run-id", source="--run-id")
        return RunDirs(run_id, save_dir, root / "log" / name / run_id, pick_new_id=pick_new)
    folder = resume.resolve().parent
    epoch = checkpoint_epoch(resume)
    if epoch >= (newest_epoch(folder) or 0):  # the run's newest: continue it in place
        return RunDirs(folder.name, folder, root / "log" / name / folder.name, resume, epoch)
    run_id = f"{folder.name}-from-e{epoch}"
    for n in range(2, 1000):
        if not (folder.parent / run_id).exists() and not (root / "log" / name / run_id).exists():
            break
        run_id = f"{folder.name}-from-e{epoch}-{n}"
    return RunDirs(run_id, folder.parent / run_id, root / "log" / name / run_id, resume, epoch, branch_of=folder)


def create(dirs: RunDirs, config: dict, source_log: Path | None = None) -> None:
    """Make the run's folders and write its config.json; a branch starts with the original's
    history up to the branch point (metrics rows, its best model when that is older)."""
    dirs.fresh = not dirs.save_dir.exists() and not dirs.log_dir.exists()
    while True:
        try:
            dirs.save_dir.mkdir(parents=True, exist_ok=not dirs.pick_new_id)
            break
        except FileExistsError:  # two runs started in the same microsecond
            dirs.run_id = new_run_id()
            dirs.save_dir = dirs.save_dir.parent / dirs.run_id
            dirs.log_dir = dirs.log_dir.parent / dirs.run_id
    dirs.log_dir.mkdir(parents=True, exist_ok=True)
    if dirs.branch_of is not None:
        _start_branch(dirs, source_log)
    tmp = dirs.save_dir / f".tmp-config.json.{os.getpid()}"
    tmp.write_text(json.dumps(config, indent=4) + "\n")
    os.replace(tmp, dirs.save_dir / "config.json")


def _start_branch(dirs: RunDirs, source_log: Path | None) -> None:
    best = dirs.branch_of / ckpt.BEST_NAME
    if best.exists() and checkpoint_epoch(best) <= dirs.resume_epoch:
        ckpt.link_or_copy(best, dirs.save_dir / ckpt.BEST_NAME)
    rows = source_log / "metrics.jsonl" if source_log else None
    if rows is not None and rows.exists():
        kept = [line for line in rows.read_text().splitlines() if _epoch_of(line) <= dirs.resume_epoch]
        (dirs.log_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))


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


def find_auto_resume(config: dict, run_id: str | None) -> tuple[Path | None, str | None]:
    """(checkpoint, run id) for --resume auto: the newest valid checkpoint of `run_id`, else of
    this experiment's latest run; (None, run_id) when there is nothing to continue."""
    models = repo_path(config["trainer"]["save_dir"]) / "models" / config["name"]
    if run_id is not None:
        return ckpt.newest_valid(models / run_id), run_id
    found = ckpt.latest_run_checkpoint(models)
    return (found, found.parent.name) if found is not None else (None, None)


def check_same_experiment(config: dict, checkpoint: Path) -> None:
    """--resume auto without --run-id continues the latest run only if it is this experiment."""
    stored = validate(ckpt.load(checkpoint)["config"])
    changed = [k for k in differences(stored, config) if k != "trainer.epochs"]
    if changed:
        shown = "; ".join(f"{k}: {lookup(stored, k)!r} -> {lookup(config, k)!r}" for k in changed[:4])
        raise ConfigError("", f"the latest run '{checkpoint.parent.name}' has another config ({shown}): continue it "
                          f"with --run-id {checkpoint.parent.name}, or drop --resume auto for a new run",
                          source="--resume auto")
