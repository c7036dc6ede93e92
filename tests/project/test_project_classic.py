"""Coming from the classic pytorch-template (victoresque): its config, its data loaders and
its checkpoints meet a clear answer, not a traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _template_run import CONFIG, PROJECT
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate
from torch.utils.data.sampler import SubsetRandomSampler


class ClassicBaseDataLoader(DataLoader):
    """The classic template's BaseDataLoader, as users have it in their projects."""

    def __init__(self, dataset, batch_size, shuffle, validation_split, num_workers, collate_fn=default_collate):
        self.validation_split, self.shuffle, self.n_samples = validation_split, shuffle, len(dataset)
        idx_full = np.arange(self.n_samples)
        np.random.seed(0)
        np.random.shuffle(idx_full)
        len_valid = int(self.n_samples * validation_split)
        self.sampler, self.valid_sampler = SubsetRandomSampler(idx_full[len_valid:]), SubsetRandomSampler(
            idx_full[:len_valid])
        self.shuffle = False
        self.n_samples = len(idx_full) - len_valid
        self.init_kwargs = {"dataset": dataset, "batch_size": batch_size, "shuffle": self.shuffle,
                            "collate_fn": collate_fn, "num_workers": num_workers}
        super().__init__(sampler=self.sampler, **self.init_kwargs)

    def split_validation(self):
        return DataLoader(sampler=self.valid_sampler, **self.init_kwargs)


class ClassicDigitsLoader(ClassicBaseDataLoader):
    """A classic-style loader: its own signature, none of train.py's run-time keywords."""

    def __init__(self, data_dir, batch_size, shuffle=True, validation_split=0.0, num_workers=1, training=True):
        from data_loader.data_loaders import load_digits

        self.dataset = load_digits(PROJECT / data_dir)
        super().__init__(self.dataset, batch_size, shuffle, validation_split, num_workers)


CLASSIC_CONFIG = {  # the classic template's config.json, with its MNIST parts swapped for the digits
    "name": "Mnist_LeNet", "n_gpu": 1,
    "arch": {"type": "DigitsModel", "args": {}},
    "data_loader": {"type": "ClassicDigitsLoader",
                    "args": {"data_dir": "data/", "batch_size": 128, "shuffle": True, "validation_split": 0.1,
                             "num_workers": 0}},
    "optimizer": {"type": "Adam", "args": {"lr": 0.001, "weight_decay": 0, "amsgrad": True}},
    "loss": "nll_loss", "metrics": ["accuracy", "top_k_acc"],
    "lr_scheduler": {"type": "StepLR", "args": {"step_size": 50, "gamma": 0.1}},
    "trainer": {"epochs": 100, "save_dir": "saved/", "save_period": 1, "verbosity": 2,
                "monitor": "min val_loss", "early_stop": 10, "tensorboard": True},
}


@pytest.mark.slow
def test_a_classic_config_and_loader_train_and_resume(train, tmp_path, monkeypatch):
    import data_loader.data_loaders as module_data

    monkeypatch.setattr(module_data, "ClassicDigitsLoader", ClassicDigitsLoader, raising=False)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CLASSIC_CONFIG))
    first = train("--epochs", "2", config=path, name="Mnist_LeNet", run_id="classic")
    assert first.returncode == 0, first.stderr
    warnings = [line for line in first.stdout.splitlines() if "n_gpu" in line]
    assert warnings == ["n_gpu is the classic template's key and is ignored here: choose the device with -d "
                        "(cuda, cuda:1, cpu) and train on N GPUs with torchrun --nproc_per_node=N "
                        "project/train.py ..."]
    assert first.summary["epochs_run"] == 2 and first.summary["best"]["val_accuracy"] > 0.5
    resumed = train("--epochs", "3", "--resume", "auto", config=path, name="Mnist_LeNet", run_id="classic")
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing at epoch 3" in resumed.stdout
    assert [row["epoch"] for row in resumed.metrics()] == [1, 2, 3]


def test_a_classic_checkpoint_gets_one_line_on_how_to_use_its_weights(train, tmp_path):
    import parse_config

    classic_config = object.__new__(parse_config.ConfigParser)  # pickled by reference, as the classic one is
    classic_config.__dict__["config"] = {"name": "Mnist_LeNet"}
    weights = torch.nn.Linear(64, 10).state_dict()
    path = tmp_path / "checkpoint-epoch3.pth"
    torch.save({"arch": "MnistModel", "epoch": 3, "state_dict": weights, "optimizer": {}, "monitor_best": 0.1,
                "config": classic_config}, path)
    run = train("-r", str(path), config=CONFIG, run_id=None)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert f"{path} was written by the classic pytorch-template (it pickles its ConfigParser): it cannot be " \
           "resumed here; start a new run from its weights with -c CONFIG --init-from CKPT --trust-checkpoint " \
           "(only if you trust the file)" in run.stderr
