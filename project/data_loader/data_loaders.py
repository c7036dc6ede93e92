"""The data loaders a config can name in `data_loader.type`."""
from __future__ import annotations

from torch.utils.data import Subset

from base import BaseDataLoader, split_indices
from utils.util import project_path

from .datasets import load_digits, load_mnist

DIGITS_TEST_SEED = 20250101  # fixed: the test split is part of the dataset, not of a run


class DigitsDataLoader(BaseDataLoader):
    """The bundled UCI handwritten digits (8x8). `test_split` of the samples (seeded by a
    fixed constant) form the test set that test.py uses; the rest is split into train and
    validation by `validation_split` with the config's seed; `classes: N` keeps the digits 0..N-1."""

    def __init__(self, data_dir="data/", batch_size=64, shuffle=True, validation_split=0.15, num_workers=0,
                 training=True, test_split=0.2, classes=None, **kwargs):
        self.data_dir = project_path(data_dir)
        full = load_digits(self.data_dir)
        rest, test = split_indices(len(full), test_split, DIGITS_TEST_SEED)
        self.sample_ids = rest if training else test  # rows of digits.csv.gz in this part
        if classes is not None:  # only the digits 0..classes-1 (e.g. a 5-class fine-tuning task)
            labels = full.tensors[1]
            self.sample_ids = [i for i in self.sample_ids if labels[i] < classes]
        super().__init__(Subset(full, self.sample_ids), batch_size, shuffle, validation_split, num_workers, **kwargs)


class MnistDataLoader(BaseDataLoader):
    """MNIST through torchvision (downloaded into data_dir on first use, e.g. on Colab)."""

    def __init__(self, data_dir="data/", batch_size=128, shuffle=True, validation_split=0.1, num_workers=2,
                 training=True, download=True, **kwargs):
        self.data_dir = project_path(data_dir)
        dataset = load_mnist(self.data_dir, train=training, download=download)
        super().__init__(dataset, batch_size, shuffle, validation_split, num_workers, **kwargs)
