"""MetricTracker: running means that stay on the device until someone asks for them.

The classic template kept a pandas DataFrame and called `.item()` on every value of every
step, which costs a host sync (and ~1 ms) per step. Here an update is one in-place tensor
op on the device; `result()` syncs once, at log points (and all-reduces once under DDP).
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
        self._sums = {key: torch.zeros((), dtype=torch.float32, device=self.device) for key in self.keys}
        self._counts = dict.fromkeys(self.keys, 0)

    def update(self, key: str, value: torch.Tensor | float, n: int = 1) -> None:
        """Add a batch mean `value` over `n` samples (classic signature; no host sync)."""
        if isinstance(value, torch.Tensor):
            value = value.detach()
        self._sums[key].add_(value, alpha=n)
        self._counts[key] += n

    def update_batch(self, loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor,
                     metric_ftns: Sequence[Callable]) -> None:
        """The loss and every metric of one batch."""
        n = target.shape[0]
        self.update("loss", loss, n)
        for met in metric_ftns:
            self.update(metric_name(met), met(output, target), n)

    def total(self, key: str) -> tuple[float, int]:
        """(sum, count) of one key, one host sync."""
        return float(self._sums[key]), self._counts[key]

    def avg(self, key: str) -> float:
        """One mean, one host sync (for progress bars)."""
        return float(self._sums[key]) / max(self._counts[key], 1)

    def result(self, reduce: bool = False) -> dict:
        """Every mean that has samples, as floats; with `reduce`, summed over all DDP ranks
        first (a single all_reduce of sums and counts)."""
        sums = torch.stack([self._sums[key] for key in self.keys])
        counts = torch.tensor([float(self._counts[key]) for key in self.keys], device=self.device)
        if reduce and dist.is_available() and dist.is_initialized():
            packed = torch.cat([sums, counts])
            dist.all_reduce(packed)
            sums, counts = packed[: len(self.keys)], packed[len(self.keys):]
        values = torch.cat([sums, counts]).tolist()
        sums_host, counts_host = values[: len(self.keys)], values[len(self.keys):]
        return {key: s / c for key, s, c in zip(self.keys, sums_host, counts_host) if c > 0}

    @property
    def count(self) -> int:
        return self._counts[self.keys[0]] if self.keys else 0


def metric_name(met: Callable) -> str:
    return getattr(met, "__name__", None) or getattr(getattr(met, "func", None), "__name__", type(met).__name__)
