"""A loader that keeps a whole (small) dataset on the device.

For data that fits in device memory (the digits, MNIST: 188 MB as float32) a DataLoader
spends its time collating samples one by one in Python and copying each batch to the
GPU. Here the tensors are moved once; each batch is one `index_select` on the device.
The order comes from the same ResumableSampler the DataLoader uses (seeded permutation
per pass, DDP shard, resume offset), so both paths yield exactly the same batches. Only
plain tensors qualify: a dataset that transforms its samples keeps its DataLoader.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from base.data_order import ResumableSampler


def dataset_tensors(dataset: Dataset) -> list[torch.Tensor] | str:
    """The samples of a plain-tensor dataset (a TensorDataset, or Subsets of one) as stacked
    tensors; for any other dataset, the reason it cannot be kept on the device as it is (its
    __getitem__ may transform each sample, e.g. random augmentation, every time it is read)."""
    indices = None
    while type(dataset) is Subset:
        chosen = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        indices = chosen if indices is None else chosen[indices]
        dataset = dataset.dataset
    if type(dataset).__getitem__ is not TensorDataset.__getitem__:
        return (f"{type(dataset).__name__} is not a plain TensorDataset (its __getitem__ may transform samples, "
                "e.g. random augmentation)")
    return [t if indices is None else t[indices] for t in dataset.tensors]


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
    """The same two loaders (same samplers, batch sizes) with their data on `device`, or a
    string saying why the DataLoaders must stay."""
    if not isinstance(getattr(train_loader, "sampler", None), ResumableSampler):
        return f"{type(train_loader).__name__} does not draw its order from a ResumableSampler"
    loaders = []
    for loader in (train_loader, valid_loader):
        tensors = dataset_tensors(loader.dataset) if loader is not None else None
        if isinstance(tensors, str):
            return tensors
        loaders.append(tensors and DeviceLoader(tensors, loader.sampler, loader.batch_size, device))
    return tuple(loaders)
