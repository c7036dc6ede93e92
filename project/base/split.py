"""Seeded index splits that never touch the global RNGs (so they cannot shift a run)."""
from __future__ import annotations

import torch


def split_indices(n: int, part: float | int, seed: int) -> tuple[list[int], list[int]]:
    """(rest, part) index lists: `part` is a fraction in [0, 1) or a sample count."""
    if isinstance(part, bool) or not isinstance(part, (int, float)):
        raise ValueError(f"validation_split must be a fraction or a count, got {part!r}")
    if part == 0:
        return list(range(n)), []
    if isinstance(part, int):
        size = part
    elif 0 < part < 1:
        size = int(round(n * part))
    else:
        raise ValueError(f"validation_split must be in [0, 1) or a whole count, got {part!r}")
    if not 0 < size < n:
        raise ValueError(f"validation_split={part!r} leaves no samples for training (dataset has {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[size:]), sorted(order[:size])
