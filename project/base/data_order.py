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
    `len_epoch` batches, continuing across passes. The state is (pass, samples done in it),
    so a resume continues at the next sample, even with another batch size. A loader
    without a ResumableSampler (one written for the classic template) is iterated as it is:
    resumes then start at the next pass.
    """

    def __init__(self, loader, len_epoch: int | None = None) -> None:
        self.loader = loader
        self.len_epoch = len_epoch
        self.resumable = isinstance(getattr(loader, "sampler", None), ResumableSampler)
        self.pass_index = 0
        self.samples = 0  # of the current pass already consumed
        self._batches = None  # a foreign loader's iterator, kept across epochs in iteration mode

    @property
    def pass_size(self) -> int:
        return self.loader.sampler.num_samples

    def _roll(self) -> None:
        if self.resumable and self.samples >= self.pass_size:
            self.pass_index, self.samples = self.pass_index + 1, 0

    def batches_in_epoch(self) -> int:
        self._roll()
        if self.len_epoch:
            return self.len_epoch
        return math.ceil((self.pass_size - self.samples) / self.loader.batch_size) if self.resumable \
            else len(self.loader)

    def epoch(self) -> Iterator:
        remaining = self.batches_in_epoch()
        while remaining > 0:
            for batch in self._pass():
                self.samples += len(batch[-1]) if isinstance(batch, (list, tuple)) else self.loader.batch_size
                remaining -= 1
                yield batch
                if remaining == 0:
                    return
            self.pass_index, self.samples, self._batches = self.pass_index + 1, 0, None

    def _pass(self) -> Iterator:
        if self.resumable:
            self._roll()
            self.loader.sampler.set_epoch(self.pass_index)
            self.loader.sampler.set_start(self.samples)
            return iter(self.loader)
        if self._batches is None:
            self._batches = iter(self.loader)
        return self._batches

    def state_dict(self) -> dict:
        self._roll()
        return {"pass": self.pass_index, "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        self.pass_index, self.samples = int(state["pass"]), int(state["samples"]) if self.resumable else 0
