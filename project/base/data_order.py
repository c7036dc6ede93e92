"""Which sample comes next, as a small state that a checkpoint can hold.

The order of pass p is a permutation seeded with (seed + p) by torch's own
DistributedSampler, so it does not depend on how many processes ran before, on the
global RNG, or on where a run was interrupted: the state is just (pass, batches done).
"""
from __future__ import annotations

import math
from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per pass, one shard per rank; world size 1 when
    not distributed) that can start part-way through a pass."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first `start` samples of this rank's share of the current pass."""
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler):
    """Evaluation order: every sample exactly once across ranks (no padding, no shuffle)."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(len(dataset)))[rank::num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BatchStream:
    """Batches of a loader, one epoch at a time, remembering where it stands.

    Epoch mode (`len_epoch` None): an epoch is one pass. Iteration mode: an epoch is
    `len_epoch` batches, continuing across passes. Works with any loader that exposes a
    ResumableSampler as `.sampler` and a `.batch_size` (the DataLoader and the
    device-resident loader both do).
    """

    def __init__(self, loader, len_epoch: int | None = None) -> None:
        self.loader = loader
        self.len_epoch = len_epoch
        self.pass_index = 0
        self.offset = 0  # batches of the current pass already consumed

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(self.loader.sampler.num_samples / self.loader.batch_size)

    def _roll(self) -> None:
        if self.offset >= self.batches_per_pass:
            self.pass_index += 1
            self.offset = 0

    def batches_in_epoch(self) -> int:
        self._roll()
        return self.len_epoch or (self.batches_per_pass - self.offset)

    def epoch(self) -> Iterator:
        remaining = self.batches_in_epoch()
        sampler = self.loader.sampler
        while remaining > 0:
            self._roll()
            sampler.set_epoch(self.pass_index)
            sampler.set_start(self.offset * self.loader.batch_size)
            for batch in self.loader:
                self.offset += 1
                remaining -= 1
                yield batch
                if remaining == 0:
                    return

    def state_dict(self) -> dict:
        self._roll()
        return {"pass": self.pass_index, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.pass_index, self.offset = int(state["pass"]), int(state["offset"])
