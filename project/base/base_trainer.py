"""BaseTrainer: the epoch loop, monitoring, early stop, checkpoints and resume.

Subclasses implement `_train_epoch(epoch) -> dict of floats` and may add their own state
to checkpoints through `_extra_state()` / `_load_extra_state()`. `train()` first restores a
checkpoint (every check happens there), then opens the run folder, then trains.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import time
from abc import abstractmethod
from pathlib import Path

import torch

from logger import Loggers, MetricsLog, plot_curves
from utils import checkpoint as ckpt
from utils import dist
from utils.config import ConfigError, differences
from utils.interrupt import StopAtEpochEnd
from utils.schema import monitor_parts
from utils.util import TemplateError, rng_state, set_rng_state

HOLD_BYTES = 64 << 20  # larger checkpoints do not share writes: a best is never held in memory
LOG_INTERVAL = 1.0  # seconds: rows reach metrics.jsonl, steps.jsonl and the loggers at most this often, and before
# every checkpoint (each write touches code a 20 ms epoch has pushed out of the caches: 3% of a digits run)
# what a scheduler's state holds about its progress; the rest comes from the config
SCHEDULER_PROGRESS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial",
                      "best", "num_bad_epochs", "cooldown_counter")


class BaseTrainer:
    def __init__(self, model, criterion, metric_ftns, optimizer, config, lr_scheduler=None) -> None:
        self.config = config
        cfg = config["trainer"]
        self.logger = config.get_logger("trainer", cfg["verbosity"])
        self.model = model  # the plain module: its state_dict is what checkpoints hold
        self.criterion = criterion
        self.metric_ftns = metric_ftns
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

        self.epochs = cfg["epochs"]
        self.save_period, self.save_min_interval = cfg["save_period"], cfg["save_min_interval"]
        self.mnt_mode, self.mnt_metric = monitor_parts(cfg["monitor"])
        self.mnt_best = 0.0 if self.mnt_mode == "off" else (math.inf if self.mnt_mode == "min" else -math.inf)
        self.early_stop = cfg["early_stop"] or math.inf
        self.not_improved_count = 0
        self.start_epoch = 1
        self.global_step = 0  # optimizer steps (the subclass counts them)
        self.best_epoch: int | None = None
        self.best_log: dict | None = None
        self.resumed_log: dict | None = None
        self.logger_ids: dict = {}  # W&B / MLflow run ids of this run (a resume continues them)
        self.is_main = config.dist.is_main
        self._plain_config = json.loads(json.dumps(config.config))  # plain JSON types: weights_only loads it
        self._held_best: dict | None = None  # a best epoch's state waiting in memory for its write
        self._last_write = self._last_log_write = 0.0
        self._rows: list[tuple] = []  # ("epoch" | "step", row, step, wall time) waiting for _write_logs
        self._rows_in_files = self._rows_in_loggers = 0  # how many of them _write_logs has written

    @abstractmethod
    def _train_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        """Run epochs start_epoch..epochs (or until early stop); returns the run summary."""
        resumed = self._resume_checkpoint(self.config.resume) if self.config.resume is not None else None
        self.config.open_run()  # every check has passed: now the run folder may be written
        self.checkpoint_dir, self.log_dir = self.config.save_dir, self.config.log_dir
        if self.is_main:
            self.checkpoints = ckpt.CheckpointWriter(self.checkpoint_dir, self.config["trainer"]["keep_last"])
            resume_step = self.global_step if resumed is not None else None
            self.metrics_log = MetricsLog(self.log_dir / "metrics.jsonl", resumed)
            self.steps_log = MetricsLog(self.log_dir / "steps.jsonl", resume_step, key="step")
            self.loggers = Loggers(self.config["trainer"]["loggers"], self._plain_config, self.config.run_id,
                                   self.log_dir, self.logger_ids, resumed, resume_step, self.logger)
            self.logger_ids = self.loggers.ids()
        last_log: dict = dict(self.resumed_log or {})
        stopped_early = self.not_improved_count >= self.early_stop
        if stopped_early:  # a resumed run that had already stopped early
            self.logger.info(f"this run stopped early at epoch {self.start_epoch - 1}: nothing to continue")
        elif self.start_epoch > self.epochs:
            self.logger.info(f"nothing left to train: the checkpoint is at epoch {self.start_epoch - 1} and "
                             f"trainer.epochs is {self.epochs} (raise it with --epochs N to train longer)")
        self._last_write = time.monotonic()
        ctrl_c = StopAtEpochEnd(enabled=not self.config.dist.enabled)
        # What exists now (torch's modules, the model, the loaders) lives for the whole run: frozen, a
        # full collection skips it (it took 170 ms here, a tenth of a digits run, whenever one came
        # due), and forked DataLoader workers do not copy the pages its GC headers sit in.
        gc.freeze()
        try:
            with ctrl_c:
                for epoch in range(self.start_epoch, self.epochs + 1) if not stopped_early else ():
                    started = time.perf_counter()
                    log = {"epoch": epoch, **self._train_epoch(epoch)}
                    improved = self._update_monitor(log)
                    log["time"] = round(time.perf_counter() - started, 4)
                    stopped_early = self.not_improved_count >= self.early_stop
                    if self.is_main:
                        self._log_epoch(log, improved)
                        final = epoch == self.epochs or stopped_early or ctrl_c.requested
                        self._checkpoint(epoch, log, improved, final=final)
                        if ctrl_c.requested and not final:  # the Ctrl-C came during the checkpoint step
                            self._checkpoint(epoch, log, improved, final=True)
                    last_log = log
                    if ctrl_c.requested:
                        raise KeyboardInterrupt
                    ctrl_c.epoch_is_short = log["time"] < self.save_min_interval
                    if stopped_early:
                        self.logger.info(f"validation performance didn't improve for {self.early_stop} epochs: "
                                         "stopping")
                        break
            return self._finish(last_log, stopped_early)
        except BaseException as exc:
            if self.is_main:
                self._keep_what_ran(exc)
            raise
        finally:
            gc.unfreeze()

    def _update_monitor(self, log: dict) -> bool:
        if self.mnt_mode == "off":
            return False
        if self.mnt_metric not in log:
            self.logger.warning(f"monitored metric '{self.mnt_metric}' is not logged (no validation split?): "
                                "monitoring and early stop are off")
            self.mnt_mode = "off"
            return False
        value = log[self.mnt_metric]
        improved = value < self.mnt_best if self.mnt_mode == "min" else value > self.mnt_best
        if improved:
            self.mnt_best, self.not_improved_count = value, 0
            self.best_epoch, self.best_log = log["epoch"], dict(log)
        else:
            self.not_improved_count += 1
        return improved

    def _log_epoch(self, log: dict, improved: bool) -> None:
        """The epoch's line now; its metrics.jsonl row and the loggers' with the next _write_logs."""
        parts = [f"epoch {log['epoch']}/{self.epochs}", *(f"{k} {v:.6g}" for k, v in log.items()
                                                          if k not in ("epoch", "time"))]
        self.logger.info("  ".join(parts) + f"  ({log['time']:.2f}s)" + ("  *best" if improved else ""))
        self._queue_row("epoch", log, self.global_step)

    def _log_step(self, row: dict) -> None:
        """Step-level loss and lr (rank 0), at log points only; a long epoch's reach the files as they come."""
        self._queue_row("step", row, row["step"])

    def _queue_row(self, kind: str, row: dict, step: int) -> None:
        self._rows.append((kind, row, step, time.time()))
        if time.monotonic() - self._last_log_write >= LOG_INTERVAL:
            self._write_logs()

    def _write_logs(self) -> None:
        """The waiting rows, in the order they came (W&B wants steps in order), then a flush: the run's
        own files first, then the loggers. A row stays queued until every one has it, so a Ctrl-C or a
        logger's error in the middle costs no row: train()'s retry on the way out writes the rest."""
        rows = self._rows
        while self._rows_in_files < len(rows):
            kind, row = rows[self._rows_in_files][:2]
            (self.metrics_log if kind == "epoch" else self.steps_log).append(row)
            self._rows_in_files += 1
        self.metrics_log.flush()
        self.steps_log.flush()
        while self._rows_in_loggers < len(rows):
            kind, row, step, wall_time = rows[self._rows_in_loggers]
            (self.loggers.log_epoch if kind == "epoch" else self.loggers.log_step)(row, step, wall_time)
            self._rows_in_loggers += 1
        self.loggers.flush()
        self._rows, self._rows_in_files, self._rows_in_loggers = [], 0, 0
        self._last_log_write = time.monotonic()

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int, log: dict) -> dict:
        return {
            "arch": type(self.model).__name__,
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "monitor": f"{self.mnt_mode} {self.mnt_metric}".strip(),
            "monitor_best": float(self.mnt_best),
            "not_improved_count": self.not_improved_count,
            "best_epoch": self.best_epoch,
            "best": self.best_log,
            "metrics": {k: float(v) for k, v in log.items() if k != "epoch"},
            "config": self._plain_config,
            "rng": rng_state(),
            "torch_version": str(torch.__version__),  # a str subclass: weights_only refuses it
            "logger_ids": self.logger_ids,
            **self._extra_state(),
        }

    def _checkpoint(self, epoch: int, log: dict, improved: bool, final: bool) -> None:
        """Save what this epoch asks for: every save_period epochs, the best, the last. Epochs
        shorter than trainer.save_min_interval share writes (serialising a checkpoint costs what a
        20 ms epoch's training does, and Drive takes a file a second at best): until the interval
        has passed nothing is written, except that a best epoch's state waits in memory as a CPU
        copy (a checkpoint under HOLD_BYTES only) and is written, as its epoch's file, before any
        later epoch's, so model_best is always the best epoch. The first checkpoint (its size),
        the last epoch, an early stop and a Ctrl-C (utils/interrupt.py) are always written."""
        periodic = epoch % self.save_period == 0 or final
        due = (final or time.monotonic() - self._last_write >= self.save_min_interval
               or not 0 < self.checkpoints.last_size <= HOLD_BYTES)
        if not due:
            if improved:  # the config is the run's own and never changes: not copied
                state = self._state(epoch, log)
                self._held_best = {**ckpt.detached_copy({k: v for k, v in state.items() if k != "config"}),
                                   "config": state["config"]}
            return
        if improved:
            self._held_best = None  # this epoch is the best now
        if not (periodic or improved or self._held_best):
            return
        self._write_logs()  # a killed run's metrics.jsonl then reaches its newest checkpoint
        self._write_held_best()
        if periodic or improved:
            self._save(self._state(epoch, log), epoch, best=improved)
        self._last_write = time.monotonic()

    def _write_held_best(self) -> None:
        if self._held_best is not None:
            self._save(self._held_best, self._held_best["epoch"], best=True)
            self._held_best = None

    def _save(self, state: dict, epoch: int, best: bool) -> None:
        """Serialise into memory; the writer thread does the disk work while the next epoch trains.
        A best is its epoch's file too (model_best a link to it), whatever save_period says: a
        model_best newer than every epoch file would make --resume auto branch from an older one."""
        try:
            self.checkpoints.save(state, epoch, best=best)
        except RuntimeError as err:
            raise TemplateError(str(err)) from None

    def _keep_what_ran(self, exc: BaseException) -> None:
        """Ctrl-C (Colab's stop button) or a crash (CUDA out of memory, a bad batch): the rows of the
        epochs that ran, a waiting best and every checkpoint handed over reach the disk before the
        process exits (the writer is a daemon thread: the exit would cut a Drive write short). The
        error that ended the run stands; a write error here is a warning, unless the run ended with a
        write error of its own (one line about a full disk is enough). save() reports an earlier
        checkpoint's write error before it takes the state: the waiting best then gets a second try."""
        with contextlib.suppress(Exception):
            self._write_logs()
        for keep in (self._write_held_best, self._write_held_best, self.checkpoints.close):
            try:
                keep()
            except Exception as err:  # a second Ctrl-C still leaves at once
                if not isinstance(exc, (TemplateError, OSError)):
                    self.logger.warning(str(err))

    def _resume_checkpoint(self, path: Path) -> int:
        """Load everything a checkpoint holds. A config change that the restored state would
        override is applied to it (optimizer and scheduler settings) or refused (the seed)."""
        state = ckpt.load(path)
        saved = state["config"]
        if saved.get("seed") != self.config["seed"]:
            raise ConfigError("seed", f"is {self.config['seed']} but the run was started with {saved.get('seed')}: "
                              "a resumed run continues its own random state (start a new run for another seed)",
                              source=self.config.source_of("seed"))
        try:
            self.model.load_state_dict(state["state_dict"])
        except RuntimeError as err:
            lines = str(err).strip().splitlines()
            raise TemplateError(f"{path} does not fit this model: {(lines[1:] or lines)[0].strip()}") from None
        self._restore_optimizer(state["optimizer"], saved["optimizer"])
        self._restore_scheduler(state.get("lr_scheduler"), (saved.get("lr_scheduler") or {}).get("type"))
        self.start_epoch = state["epoch"] + 1
        if state.get("monitor") == f"{self.mnt_mode} {self.mnt_metric}".strip():
            self.mnt_best, self.not_improved_count = state["monitor_best"], state["not_improved_count"]
            self.best_epoch, self.best_log = state["best_epoch"], state["best"]
        else:
            self.logger.info(f"trainer.monitor changed from {state.get('monitor')!r}: the best model restarts")
        self.resumed_log = {"epoch": state["epoch"], **state["metrics"]}
        set_rng_state(state["rng"])
        self._load_extra_state(state)
        branch = self.config.dirs.branch_of
        self.logger_ids = {} if branch else dict(state.get("logger_ids") or {})  # a branch is a new run
        self.logger.info(f"resumed from {path} (epoch {state['epoch']}); continuing at epoch {self.start_epoch} "
                         f"in {self.config.save_dir}" + (f" (a new run: {branch.name} has newer checkpoints and "
                                                         "stays as it is)" if branch else ""))
        return state["epoch"]

    def _restore_optimizer(self, saved_state: dict, saved_cfg: dict) -> None:
        new = self.config["optimizer"]
        if saved_cfg["type"] != new["type"]:
            self.logger.warning(f"optimizer.type changed from {saved_cfg['type']} to {new['type']}: "
                                "it starts with fresh state")
            return
        groups = self.optimizer.param_groups
        owned = [k for k in groups[0] if k != "params" and k not in self.optimizer.defaults]  # the scheduler's
        fresh = [{k: g[k] for k in owned} for g in groups]
        self.optimizer.load_state_dict(saved_state)  # new param_group dicts
        groups = self.optimizer.param_groups
        for group, values in zip(groups, fresh):
            group.update(values)
        old_args = saved_cfg.get("args") or {}
        for key in {k.split(".")[0] for k in differences(old_args, new["args"])}:
            old, value = old_args.get(key), new["args"].get(key)
            if key not in groups[0]:
                raise ConfigError(f"optimizer.args.{key}", "changed, but the restored optimizer has no such setting",
                                  source=self.config.source_of(f"optimizer.args.{key}"))
            for group in groups:  # lr: the schedule keeps its shape, scaled to the new rate
                group[key] = group[key] * value / old if key == "lr" and old else value
            self.logger.info(f"optimizer.args.{key}: {old!r} -> {value!r}, applied to the restored optimizer")

    def _restore_scheduler(self, saved: dict | None, saved_type: str | None) -> None:
        scheduler, new_type = self.lr_scheduler, (self.config["lr_scheduler"] or {}).get("type")
        if scheduler is None or saved is None or saved_type != new_type:
            if saved_type != new_type:
                self.logger.warning(f"lr_scheduler changed from {saved_type} to {new_type}: "
                                    "the new schedule starts from its beginning")
            return
        fresh = scheduler.state_dict()
        if "_schedulers" in fresh:  # SequentialLR, ChainedScheduler: restored as saved
            scheduler.load_state_dict(saved)
            return
        changed = [k for k in fresh if k not in SCHEDULER_PROGRESS and k in saved and fresh[k] != saved[k]]
        scheduler.load_state_dict({**fresh, **{k: saved[k] for k in SCHEDULER_PROGRESS if k in saved}})
        for key in changed:
            self.logger.info(f"lr_scheduler {key}: {saved[key]!r} -> {fresh[key]!r}, applied; the schedule "
                             f"continues at step {saved.get('last_epoch')}")

    # ------------------------------------------------------------------ the end
    def _finish(self, last_log: dict, stopped_early: bool) -> dict:
        summary = {
            "name": self.config["name"],
            "run_id": self.config.run_id,
            "checkpoint_dir": str(self.checkpoint_dir),
            "log_dir": str(self.log_dir),
            "epochs_run": last_log.get("epoch", self.start_epoch - 1),
            "stopped_early": stopped_early,
            "monitor": f"{self.mnt_mode} {self.mnt_metric}".strip(),
            "best_epoch": self.best_epoch,
            "best": self.best_log,
            "last": last_log or None,
            "model_best": str(self.checkpoint_dir / ckpt.BEST_NAME) if self.best_epoch else None,
            "world_size": self.config.dist.world_size,
            # one fingerprint of the final weights per rank: under DDP they must all agree
            "param_checksums": dist.gather_strings(param_checksum(self.model), self.config.dist),
        }
        if not self.is_main:
            return summary
        self._write_logs()
        try:
            self.checkpoints.close()
        except RuntimeError as err:
            raise TemplateError(str(err)) from None
        self.loggers.close()
        self.metrics_log.close()
        self.steps_log.close()
        png = plot_curves(self.metrics_log.rows(), self.log_dir / "curves.png", self.logger, self.steps_log.rows())
        summary["curves"] = str(png) if png else None
        tmp = self.log_dir / f".tmp-summary.json.{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, self.log_dir / "summary.json")
        val = {k: v for k, v in (self.best_log or {}).items() if k.startswith("val_")} or None
        last = {k: v for k, v in (last_log or {}).items() if k.startswith("val_")} or None
        self.logger.info("final: " + json.dumps({"run_id": summary["run_id"], "epochs_run": summary["epochs_run"],
                                                 "best_epoch": self.best_epoch, "best": val, "last": last}))
        self.logger.info(f"checkpoints: {self.checkpoint_dir}   logs: {self.log_dir}")
        return summary


def param_checksum(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer, in order (bitwise identity check)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
