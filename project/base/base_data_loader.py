"""BaseDataLoader: a DataLoader with a seeded train/validation split and a resumable order."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.dataloader import default_collate

from utils.util import seed_worker

from .data_order import ResumableSampler, ShardSampler


def split_indices(n: int, part: float | int, seed: int) -> tuple[list[int], list[int]]:
    """(rest, part) index lists, seeded without touching the global RNGs (so a split cannot
    shift a run): `part` is a fraction in [0, 1) or a sample count."""
    if isinstance(part, bool) or not isinstance(part, (int, float)):
        raise ValueError(f"validation_split must be a fraction or a count, got {part!r}")
    if part == 0:
        return list(range(n)), []
    if not isinstance(part, int) and not 0 < part < 1:
        raise ValueError(f"validation_split must be in [0, 1) or a whole count, got {part!r}")
    size = part if isinstance(part, int) else int(round(n * part))
    if not 0 < size < n:
        raise ValueError(f"validation_split={part!r} leaves no samples for training (dataset has {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[size:]), sorted(order[:size])


class BaseDataLoader(DataLoader):
    """Classic template interface: `BaseDataLoader(dataset, batch_size, shuffle,
    validation_split, num_workers)` and `split_validation()`.

    train.py adds the run-time keywords (`seed`, `rank`, `world_size`, `pin_memory`) when
    the loader takes them; they are not config keys. `device_resident: true` (a config key)
    makes train.py keep both splits on the device (data_loader/device_loader.py) with this
    loader's order, when the dataset is plain tensors.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        validation_split: float | int,
        num_workers: int,
        collate_fn=default_collate,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        device_resident: bool = False,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.validation_split = validation_split
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.device_resident = bool(device_resident)
        train_idx, valid_idx = split_indices(len(dataset), validation_split, seed)
        train_set = Subset(dataset, train_idx) if valid_idx else dataset
        self.valid_set = Subset(dataset, valid_idx) if valid_idx else None
        self.n_samples = len(train_set)
        self.init_kwargs = {
            "batch_size": batch_size,
            "collate_fn": collate_fn,
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "worker_init_fn": seed_worker if num_workers > 0 else None,
            "persistent_workers": num_workers > 0,
        }
        sampler = ResumableSampler(train_set, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        super().__init__(train_set, sampler=sampler, **self.init_kwargs)

    def split_validation(self) -> DataLoader | None:
        """The validation part, sharded across ranks without padding (None when split is 0)."""
        if self.valid_set is None:
            return None
        sampler = ShardSampler(self.valid_set, num_replicas=self.world_size, rank=self.rank)
        return DataLoader(self.valid_set, sampler=sampler, **self.init_kwargs)
