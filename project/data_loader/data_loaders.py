"""The data loaders a config can name in `data_loader.type`, and the datasets they read."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

from base import BaseDataLoader, split_indices
from utils.util import TemplateError, project_path

DIGITS_FILE = "digits.csv.gz"
DIGITS_TEST_SEED = 20250101  # fixed: the test split is part of the dataset, not of a run


def load_digits(data_dir: str | Path) -> TensorDataset:
    """The bundled UCI digits: 1,797 8x8 images as (N, 1, 8, 8) floats in [0, 1], int64 labels."""
    path = Path(data_dir) / DIGITS_FILE
    if not path.is_file():
        raise TemplateError(f"the bundled digits are missing: no {path} (restore it with git checkout)")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :64] / 16.0).reshape(-1, 1, 8, 8).contiguous()
    return TensorDataset(images, torch.from_numpy(table[:, 64].astype(np.int64)))


def load_mnist(data_dir: str | Path, train: bool, download: bool) -> TensorDataset:
    """MNIST (60,000 train / 10,000 test) through torchvision, normalised like the classic template."""
    try:
        from torchvision import datasets
    except ImportError:
        raise TemplateError("MnistDataLoader needs torchvision: pip install torchvision "
                            "(Colab has it; the default digits config does not need it)") from None
    try:
        raw = datasets.MNIST(str(data_dir), train=train, download=download)
    except RuntimeError as err:
        raise TemplateError(f"MNIST is not available in {data_dir}: {err}") from None
    images = raw.data.unsqueeze(1).float().div_(255.0).sub_(0.1307).div_(0.3081)
    return TensorDataset(images, raw.targets.long())


class DigitsDataLoader(BaseDataLoader):
    """The bundled digits. `test_split` of the samples (seeded by a fixed constant) form the test
    set that test.py uses; the rest is split into train and validation by `validation_split`
    with the config's seed; `classes: N` keeps the digits 0..N-1."""

    def __init__(self, data_dir="data/", batch_size=64, shuffle=True, validation_split=0.15, num_workers=0,
                 training=True, test_split=0.2, classes=None, **kwargs):
        self.data_dir = project_path(data_dir)
        full = load_digits(self.data_dir)
        rest, test = split_indices(len(full), test_split, DIGITS_TEST_SEED)
        self.sample_ids = rest if training else test  # rows of digits.csv.gz in this part
        if classes is not None:  # only the digits 0..classes-1 (e.g. a 5-class fine-tuning task)
            self.sample_ids = [i for i in self.sample_ids if full.tensors[1][i] < classes]
        super().__init__(Subset(full, self.sample_ids), batch_size, shuffle, validation_split, num_workers, **kwargs)


class MnistDataLoader(BaseDataLoader):
    """MNIST through torchvision (downloaded into data_dir on first use, e.g. on Colab)."""

    def __init__(self, data_dir="data/", batch_size=128, shuffle=True, validation_split=0.1, num_workers=2,
                 training=True, download=True, **kwargs):
        self.data_dir = project_path(data_dir)
        dataset = load_mnist(self.data_dir, train=training, download=download)
        super().__init__(dataset, batch_size, shuffle, validation_split, num_workers, **kwargs)
