"""BaseTrainer: the epoch loop, monitoring, early stop, checkpoints and resume.

Subclasses implement `_train_epoch(epoch) -> dict of floats` and may add their own
state to checkpoints through `_extra_state()` / `_load_extra_state()`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from abc import abstractmethod
from pathlib import Path

import torch

from logger import MetricsLog, TensorboardWriter, plot_curves
from utils import checkpoint as ckpt
from utils import dist
from utils.config_check import monitor_parts
from utils.util import TemplateError, rng_state, set_rng_state


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
        self.save_period = cfg["save_period"]
        self.keep_last = cfg["keep_last"]
        self.mnt_mode, self.mnt_metric = monitor_parts(cfg["monitor"])
        self.mnt_best = 0.0 if self.mnt_mode == "off" else (math.inf if self.mnt_mode == "min" else -math.inf)
        self.early_stop = cfg["early_stop"] or math.inf
        self.not_improved_count = 0
        self.start_epoch = 1
        self.best_epoch: int | None = None
        self.best_log: dict | None = None
        self.resumed_log: dict | None = None

        self.is_main = config.dist.is_main
        self.checkpoint_dir = Path(config.save_dir)
        self.log_dir = Path(config.log_dir)
        self.writer = None
        self.metrics_log = None
        self.checkpoints = ckpt.CheckpointWriter(self.checkpoint_dir, self.keep_last)
        self._plain_config: dict | None = None  # the config as plain JSON types, built once

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
        resume_epoch = None
        if self.config.resume is not None:
            resume_epoch = self._resume_checkpoint(self.config.resume)
        if self.is_main:
            ckpt.remove_stale_temps(self.checkpoint_dir)
            self.metrics_log = MetricsLog(self.log_dir / "metrics.jsonl", resume_epoch)
            self.writer = TensorboardWriter(self.log_dir, self.logger, self.config["trainer"]["tensorboard"],
                                            purge_step=resume_epoch + 1 if resume_epoch else None)
        last_log: dict = dict(self.resumed_log or {})
        stopped_early = False
        epochs = range(self.start_epoch, self.epochs + 1)
        if self.not_improved_count >= self.early_stop:  # a resumed run that had already stopped early
            self.logger.info(f"this run stopped early at epoch {self.start_epoch - 1}: nothing to continue")
            epochs, stopped_early = range(0), True
        elif self.start_epoch > self.epochs:
            self.logger.info(f"nothing left to train: the checkpoint is at epoch {self.start_epoch - 1} and "
                             f"trainer.epochs is {self.epochs} (raise it with --epochs N to train longer)")
        for epoch in epochs:
            started = time.perf_counter()
            log = {"epoch": epoch, **self._train_epoch(epoch)}
            improved = self._update_monitor(log)
            log["time"] = round(time.perf_counter() - started, 4)
            self._log_epoch(log, improved)
            stopped_early = self.not_improved_count >= self.early_stop
            last = epoch == self.epochs or stopped_early
            periodic = epoch % self.save_period == 0 or last
            if periodic or improved:
                self._save_checkpoint(epoch, log, periodic=periodic, save_best=improved)
            last_log = log
            if stopped_early:
                self.logger.info(f"validation performance didn't improve for {self.early_stop} epochs: stopping")
                break
        return self._finish(last_log, stopped_early)

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
            self.mnt_best = value
            self.not_improved_count = 0
            self.best_epoch, self.best_log = log["epoch"], dict(log)
        else:
            self.not_improved_count += 1
        return improved

    def _log_epoch(self, log: dict, improved: bool) -> None:
        if not self.is_main:
            return
        parts = [f"epoch {log['epoch']}/{self.epochs}"]
        parts += [f"{k} {v:.6g}" for k, v in log.items() if k not in ("epoch", "time")]
        parts.append(f"({log['time']:.2f}s)")
        self.logger.info("  ".join(parts) + ("  *best" if improved else ""))
        self.metrics_log.append(log)
        self.writer.add_scalars({k: v for k, v in log.items() if k not in ("epoch", "time")}, log["epoch"])

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
            "metrics": {k: float(v) for k, v in log.items() if k != "epoch"},
            "config": self._checkpoint_config(),
            "rng": rng_state(),
            "torch_version": str(torch.__version__),
            **self._extra_state(),
        }

    def _checkpoint_config(self) -> dict:
        """The config as plain dicts/lists (weights_only loads it); the same every epoch, so
        converted once (torch.save only reads it)."""
        if self._plain_config is None:
            self._plain_config = json.loads(json.dumps(self.config.config))
        return self._plain_config

    def _save_checkpoint(self, epoch: int, log: dict, periodic: bool, save_best: bool) -> None:
        """Epoch checkpoint (atomic), model_best as a link to it, then prune old ones; the
        disk work runs in the background while the next epoch trains."""
        if not self.is_main:
            return
        try:
            self.checkpoints.save(self._state(epoch, log), epoch, periodic=periodic, save_best=save_best)
        except RuntimeError as err:
            raise TemplateError(str(err)) from None
        if save_best:
            self.logger.debug(f"new best {self.mnt_metric} {self.mnt_best:.6g}: model_best.pth <- epoch {epoch}")

    def _resume_checkpoint(self, path: str | Path) -> int:
        path = Path(path)
        state = ckpt.load(path, map_location="cpu")
        if state["config"].get("arch") != self.config["arch"]:
            self.logger.warning("the config's arch differs from the checkpoint's; loading the weights anyway")
        try:
            self.model.load_state_dict(state["state_dict"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise TemplateError(f"{path} does not fit this model: {detail}") from None
        if state["config"].get("optimizer", {}).get("type") != self.config["optimizer"]["type"]:
            self.logger.warning("optimizer type differs from the checkpoint's: its state is not restored")
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.start_epoch = state["epoch"] + 1
        if state.get("monitor") == f"{self.mnt_mode} {self.mnt_metric}".strip():
            self.mnt_best = state["monitor_best"]
            self.not_improved_count = state.get("not_improved_count", 0)
            self.best_epoch = state.get("best_epoch")
            if self.best_epoch is not None:
                best = self.checkpoint_dir / ckpt.BEST_NAME
                if best.exists():
                    self.best_log = {"epoch": self.best_epoch, **ckpt.load(best)["metrics"]}
        self.resumed_log = {"epoch": state["epoch"], **state.get("metrics", {})}
        set_rng_state(state["rng"])
        self._load_extra_state(state)
        self.logger.info(f"resumed from {path} (epoch {state['epoch']}); continuing at epoch {self.start_epoch} "
                         f"in {self.checkpoint_dir}")
        return state["epoch"]

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
        try:
            self.checkpoints.wait()
        except RuntimeError as err:
            raise TemplateError(str(err)) from None
        self.writer.close()
        self.metrics_log.close()
        png = plot_curves(self.metrics_log.rows(), self.log_dir / "curves.png", self.logger)
        summary["curves"] = str(png) if png else None
        tmp = self.log_dir / f".tmp-summary.json.{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, self.log_dir / "summary.json")
        self.logger.info("final: " + json.dumps({
            "run_id": summary["run_id"],
            "epochs_run": summary["epochs_run"],
            "best_epoch": self.best_epoch,
            "best": _val_part(self.best_log),
            "last": _val_part(last_log),
        }))
        self.logger.info(f"checkpoints: {self.checkpoint_dir}   logs: {self.log_dir}")
        return summary


def _val_part(log: dict | None) -> dict | None:
    return {k: v for k, v in log.items() if k.startswith("val_")} if log else None


def param_checksum(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer, in order (bitwise identity check)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
