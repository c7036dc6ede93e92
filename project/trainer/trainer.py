"""Trainer: one training step (AMP, accumulation, clipping, DDP) and evaluation.

Read `_train_epoch` top to bottom: fetch a batch, forward under autocast, scale the loss by
the accumulation group, backward (without the DDP all-reduce on all but the last
micro-batch of a group), then clip, step, update the scaler and the scheduler. Without AMP
the autocast is a null context (a disabled torch.autocast still cost 2% of a digits step:
scripts/bench_overhead.py) and the GradScaler is disabled (its calls then return at once). Metrics stay on the device; the host syncs once per log point
(the loss since the last one) and once per epoch. The training loss counts every batch;
training metrics (accuracy...) are measured on the batches at log points unless
`trainer.train_metrics` is "all" (each costs a few kernels per step) or "off".
"""
from __future__ import annotations

import contextlib
import logging
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from base import BaseTrainer, BatchStream
from utils import MetricTracker
from utils.metric_tracker import metric_name

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NO_CONTEXT = contextlib.nullcontext()


class Trainer(BaseTrainer):
    def __init__(self, model, criterion, metric_ftns, optimizer, config, device, data_loader,
                 valid_data_loader=None, lr_scheduler=None) -> None:
        super().__init__(model, criterion, metric_ftns, optimizer, config, lr_scheduler)
        cfg = config["trainer"]
        self.device = device
        self.data_loader = data_loader
        self.valid_data_loader = valid_data_loader
        self.stream = BatchStream(data_loader, cfg["len_epoch"])
        self.accumulate = cfg["accumulate"]
        self.clip_grad_norm = cfg["clip_grad_norm"]
        self.log_step = cfg["log_step"]
        self.train_metrics_mode = cfg["train_metrics"]

        amp = self._amp_mode(cfg["amp"], device)
        self.autocast = torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp != "off" else NO_CONTEXT
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")  # fp16 needs loss scaling

        # self.model: plain module (checkpoints); self.net: maybe compiled (evaluation);
        # self.train_net: maybe wrapped in DDP (training).
        self.net = model
        if cfg["compile"]:
            self.net = torch.compile(model, **(cfg["compile"] if isinstance(cfg["compile"], dict) else {}))
        self.train_net = self.net
        if config.dist.enabled:
            self.train_net = DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None)

        self.scheduler_per_step = (config["lr_scheduler"] or {}).get("interval") == "step"
        names = ["loss"] + [metric_name(m) for m in metric_ftns]
        self.train_metrics = MetricTracker(*(names if self.train_metrics_mode != "off" else ["loss"]), device=device)
        self.valid_metrics = MetricTracker(*names, device=device)
        show = sys.stderr.isatty() if cfg["progress"] == "auto" else cfg["progress"]
        self.show_progress = bool(show) and self.is_main
        self.progress_file = sys.stderr

    def _amp_mode(self, amp: str, device: torch.device) -> str:
        """bf16 where the GPU computes it natively (Ampere and newer); on older GPUs (Colab's
        T4) bf16 is emulated and slow, so fall back to fp16 with a GradScaler."""
        if amp == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
            self.logger.warning(f"{torch.cuda.get_device_name(device)} has no native bf16: using fp16 + GradScaler")
            return "fp16"
        if amp != "off" and device.type == "cpu":
            self.logger.info(f"mixed precision {amp} on CPU: slower than fp32 on most CPUs")
        return amp

    # ------------------------------------------------------------------ training
    def _train_epoch(self, epoch: int) -> dict:
        self.train_net.train()
        self.train_metrics.reset()
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch starts with
        n_batches = self.stream.batches_in_epoch()
        log_step = self.log_step or max(8, n_batches // 10)  # about 10 log points an epoch, 8+ steps apart
        every_batch, sampled = self.train_metrics_mode == "all", self.train_metrics_mode == "sampled"
        ddp = isinstance(self.train_net, DistributedDataParallel)
        bar = self._progress_bar(epoch, n_batches)
        self._last_point = (0.0, 0)  # loss sum and count at the last log point
        k = self.accumulate
        for i, (data, target) in enumerate(self.stream.epoch()):
            data = data.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            if i % k == 0:
                # drop the old gradients just before the group's first backward (freeing them
                # right after step() made the next forward ~15% slower on CPU: allocator churn)
                self.optimizer.zero_grad(set_to_none=True)
                group = min(k, n_batches - i)  # micro-batches in this accumulation group
            last_micro = (i + 1) % k == 0 or i + 1 == n_batches
            with self.train_net.no_sync() if ddp and not last_micro else NO_CONTEXT:  # all-reduce once a group
                with self.autocast:
                    output = self.train_net(data)
                    loss = self.criterion(output, target)
                self.scaler.scale(loss / group if group > 1 else loss).backward()
            if last_micro:
                self._optimizer_step()

            self.train_metrics.update("loss", loss, target.shape[0])  # one op on the device
            log_point = (i + 1) % log_step == 0 or i + 1 == n_batches
            if every_batch or (log_point and sampled):
                for met in self.metric_ftns:
                    self.train_metrics.update(metric_name(met), met(output.detach(), target), target.shape[0])
            if log_point and self.is_main:
                self._log_point(bar, epoch, i + 1, n_batches)
        if bar is not None:
            bar.close()

        log = self.train_metrics.result(reduce=True)
        if self.valid_data_loader is not None:
            log.update({f"val_{k}": v for k, v in self._valid_epoch().items()})
        if self.lr_scheduler is not None and not self.scheduler_per_step:
            if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                watched = self.mnt_metric if self.mnt_metric in log else "val_loss" if "val_loss" in log else "loss"
                self.lr_scheduler.step(log[watched])
            else:
                self.lr_scheduler.step()
        log["lr"] = lr
        return log

    def _optimizer_step(self) -> None:
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)  # a no-op unless fp16
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)  # optimizer.step() unless fp16 found inf/nan gradients
        self.scaler.update()
        if self.lr_scheduler is not None and self.scheduler_per_step:
            self.lr_scheduler.step()
        self.global_step += 1

    def _progress_bar(self, epoch: int, total: int):
        if not self.show_progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch}/{self.epochs}", leave=False, dynamic_ncols=True,
                    file=self.progress_file)

    def _log_point(self, bar, epoch: int, done: int, total: int) -> None:
        """The one host sync of a log point: the mean loss since the last one, for the step
        curves (steps.jsonl and the loggers), the bar or a log line."""
        loss_sum, count = self.train_metrics.total("loss")
        loss = (loss_sum - self._last_point[0]) / max(count - self._last_point[1], 1)
        self._last_point = (loss_sum, count)
        self._log_step({"step": self.global_step, "epoch": round(epoch - 1 + done / total, 4), "loss": loss,
                        "lr": self.optimizer.param_groups[0]["lr"]})
        if bar is not None:
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(f"epoch {epoch} [{done}/{total} ({100.0 * done / total:.0f}%)] loss {loss:.6f}")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _valid_epoch(self) -> dict:
        self.net.eval()
        self.valid_metrics.reset()
        for data, target in self.valid_data_loader:
            data = data.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            with self.autocast:
                output = self.net(data)
                loss = self.criterion(output, target)
            self.valid_metrics.update_batch(loss, output, target, self.metric_ftns)
        return self.valid_metrics.result(reduce=True)

    # ------------------------------------------------------------------ checkpoint extras
    def _extra_state(self) -> dict:
        return {
            "global_step": self.global_step,
            "data_state": self.stream.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }

    def _load_extra_state(self, state: dict) -> None:
        self.global_step = state["global_step"]
        self.stream.load_state_dict(state["data_state"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
