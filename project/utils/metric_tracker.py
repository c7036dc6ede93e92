"""MetricTracker: running means that stay on the device until someone asks for them.

The classic template kept a pandas DataFrame and called `.item()` on every value of every
step, which costs a host sync (and ~1 ms) per step. Here an update is one in-place tensor
op on the device; `result()` syncs once (and all-reduces once under DDP).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist


class MetricTracker:
    def __init__(self, *keys: str, device: torch.device | str = "cpu") -> None:
        self.keys = list(keys)
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self._sums = torch.zeros(len(self.keys), device=self.device)
        self._rows = dict(zip(self.keys, self._sums))  # views: one in-place add each
        self.counts = dict.fromkeys(self.keys, 0)

    def update(self, key: str, value: torch.Tensor | float, n: int = 1) -> None:
        """Add a batch mean `value` over `n` samples (classic signature; no host sync)."""
        self._rows[key].add_(value.detach() if isinstance(value, torch.Tensor) else value, alpha=n)
        self.counts[key] += n

    def update_batch(self, loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor,
                     metric_ftns: Sequence[Callable]) -> None:
        """The loss and every metric of one batch."""
        self.update("loss", loss, target.shape[0])
        for met in metric_ftns:
            self.update(metric_name(met), met(output, target), target.shape[0])

    def total(self, key: str) -> tuple[float, int]:
        """(sum, count) of one key: one host sync."""
        return float(self._rows[key]), self.counts[key]

    def result(self, reduce: bool = False) -> dict:
        """Every mean that has samples, as floats, in one host sync; with `reduce`, summed over
        all DDP ranks first (one all_reduce of sums and counts)."""
        packed = torch.cat([self._sums, torch.tensor([float(self.counts[k]) for k in self.keys], device=self.device)])
        if reduce and dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed)
        values = packed.tolist()
        sums, counts = values[:len(self.keys)], values[len(self.keys):]
        return {key: s / c for key, s, c in zip(self.keys, sums, counts) if c > 0}


def metric_name(met: Callable) -> str:
    return getattr(met, "__name__", None) or getattr(getattr(met, "func", None), "__name__", type(met).__name__)
