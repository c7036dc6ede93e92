"""A loader that keeps a whole (small) dataset on the device.

For data that fits in device memory (the digits, MNIST: 188 MB as float32) a DataLoader
spends its time collating samples one by one in Python and copying each batch to the
GPU. Here the tensors are moved once; each batch is one `index_select` on the device.
The order comes from the same ResumableSampler the DataLoader uses (seeded permutation
per pass, DDP shard, resume offset), so both paths yield exactly the same batches.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from utils.util import TemplateError


def dataset_tensors(dataset: Dataset) -> list[torch.Tensor]:
    """The dataset's samples as stacked tensors (TensorDataset and Subsets of it are sliced
    directly; any other map-style dataset is collated once)."""
    indices = None
    while isinstance(dataset, Subset):
        chosen = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        indices = chosen if indices is None else chosen[indices]
        dataset = dataset.dataset
    if isinstance(dataset, TensorDataset):
        return [t if indices is None else t[indices] for t in dataset.tensors]
    subset = dataset if indices is None else Subset(dataset, indices.tolist())
    try:
        batches = list(DataLoader(subset, batch_size=4096, shuffle=False))
    except Exception as err:
        raise TemplateError(f"device_resident needs samples that collate into tensors: {err}") from None
    if not batches or not isinstance(batches[0], (list, tuple)):
        raise TemplateError("device_resident needs a dataset of (input, target) tensor tuples")
    return [torch.cat(parts) for parts in zip(*batches)]


class DeviceLoader:
    """Iterates batches of tensors that live on `device`, in the order of `sampler`."""

    def __init__(self, tensors: Sequence[torch.Tensor], sampler, batch_size: int, device: torch.device) -> None:
        self.tensors = [t.to(device) for t in tensors]
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = device
        self.dataset = TensorDataset(*self.tensors)  # for len(loader.dataset), like a DataLoader

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long).to(self.device, non_blocking=True)
        for start in range(0, order.numel(), self.batch_size):
            rows = order[start:start + self.batch_size]
            yield tuple(t.index_select(0, rows) for t in self.tensors)


def device_resident(train_loader, valid_loader, device: torch.device):
    """The same two loaders (same samplers, batch sizes) with their data on `device`."""
    train = DeviceLoader(dataset_tensors(train_loader.dataset), train_loader.sampler, train_loader.batch_size, device)
    valid = None
    if valid_loader is not None:
        valid = DeviceLoader(dataset_tensors(valid_loader.dataset), valid_loader.sampler, valid_loader.batch_size,
                             device)
    return train, valid
