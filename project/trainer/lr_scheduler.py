"""The schedulers a config can name in `lr_scheduler.type`: every one of torch.optim.lr_scheduler,
plus warmup-then-cosine and warmup-then-linear, the schedules most fine-tuning recipes use.

Both count optimizer steps (`interval: step`, their default) and take `total_steps: auto`
(filled in from the loader, epochs and accumulation). With t the step, W the warmup steps,
T the total and m = min_lr:
    t < W:  lr = base * t / W
    else:   p = min(1, (t - W) / (T - W)),  cosine: m + (base - m) * (1 + cos(pi p)) / 2,
            linear: m + (base - m) * (1 - p)
`warmup_steps` may be a fraction of the total (0.1 = the first 10% of the steps).
"""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import *  # noqa: F403 - every torch scheduler, by name
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    def __init__(self, optimizer, total_steps: int, warmup_steps: int | float = 0, min_lr: float = 0.0,
                 last_epoch: int = -1) -> None:
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        warmup = round(warmup_steps * total_steps) if isinstance(warmup_steps, float) and warmup_steps < 1 \
            else int(warmup_steps)
        if not 0 <= warmup < total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps), got {warmup_steps!r}")
        self.total_steps, self.warmup_steps, self.min_lr = total_steps, warmup, float(min_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def lr_at(self, step: int, base: float) -> float:
        if step < self.warmup_steps:
            return base * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + (base - self.min_lr) * self.decay(progress)

    @staticmethod
    def decay(progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupLinearLR(WarmupCosineLR):
    @staticmethod
    def decay(progress: float) -> float:
        return 1.0 - progress
