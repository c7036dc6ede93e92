"""Datasets as tensors: the bundled UCI digits, and MNIST through torchvision."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from utils.util import TemplateError

DIGITS_FILE = "digits.csv.gz"


def load_digits(data_dir: str | Path) -> TensorDataset:
    """1,797 8x8 digits as (N, 1, 8, 8) floats in [0, 1] and int64 labels."""
    path = Path(data_dir) / DIGITS_FILE
    if not path.is_file():
        raise TemplateError(f"the bundled digits are missing: no {path} (restore it with git checkout)")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :64] / 16.0).reshape(-1, 1, 8, 8).contiguous()
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    return TensorDataset(images, labels)


def load_mnist(data_dir: str | Path, train: bool, download: bool) -> TensorDataset:
    """MNIST (60,000 train / 10,000 test), normalised like the classic template, as tensors."""
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
