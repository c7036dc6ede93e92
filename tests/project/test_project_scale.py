"""Scaling up on CPU: DDP through torchrun (gloo), accumulation, the device-resident loader
(and when it must not be used), torch.compile and mixed precision."""
from __future__ import annotations

import pytest
import torch
from _template_run import load_checkpoint, run_process, torchrun_cmd
from base import BaseDataLoader
from torch.utils.data import Dataset


def torchrun(save_dir, *args, run_id="t", **kwargs):
    return run_process(torchrun_cmd(2, save_dir, *args, run_id=run_id, **kwargs), save_dir, run_id, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ddp_two_processes_train_as_one_run(save_dir):
    run = torchrun(save_dir, run_id="ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.summary
    assert summary["world_size"] == 2
    checksums = summary["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # both ranks hold the same weights
    assert summary["best"]["val_accuracy"] >= 0.95  # as the single-process default run must
    # one run folder, one set of checkpoints, each epoch logged once (rank 0 only)
    assert [p.name for p in (save_dir / "models" / "Digits_MLP").iterdir()] == ["ddp"]
    assert [p.name for p in (save_dir / "log" / "Digits_MLP").iterdir()] == ["ddp"]
    names = sorted(p.name for p in run.run_dir.iterdir())
    assert names == ["checkpoint-epoch18.pth", "checkpoint-epoch19.pth", "checkpoint-epoch20.pth", "config.json",
                     "model_best.pth"]
    assert [row["epoch"] for row in run.metrics()] == list(range(1, 21))
    assert run.stdout.count("epoch 20/20") == 1 and "[rank 1]" not in run.stdout
    # each rank saw half the data: 1222 training samples -> 611 per rank, 10 batches of 64
    state = run.checkpoint(20)
    assert state["global_step"] == 20 * 10
    assert "module." not in next(iter(state["state_dict"]))  # the plain model's weights


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_checkpoints_move_between_single_process_and_ddp(train, save_dir):
    loader = ["--set", "data_loader.args.device_resident=false"]  # the DataLoader + DistributedSampler path
    single = train("--epochs", "1", *loader, run_id="mixed")
    assert single.returncode == 0, single.stderr
    ddp = torchrun(save_dir, "-r", str(single.run_dir / "checkpoint-epoch1.pth"), "--epochs", "2",
                   "--set", "trainer.accumulate=2", run_id=None, config=None)
    ddp.run_id = "mixed"
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "resumed from" in ddp.stdout and ddp.summary["world_size"] == 2
    assert len(set(ddp.summary["param_checksums"])) == 1  # no_sync micro-steps kept the ranks together
    back = train("-r", str(single.run_dir / "checkpoint-epoch2.pth"), "--epochs", "3", run_id=None, config=None)
    back.run_id = "mixed"
    assert back.returncode == 0, back.stderr
    assert "continuing at epoch 3" in back.stdout
    assert [row["epoch"] for row in back.metrics()] == [1, 2, 3]
    assert load_checkpoint(single.run_dir / "checkpoint-epoch3.pth")["epoch"] == 3


@pytest.mark.slow
def test_accumulation_of_k_micro_batches_equals_one_batch_of_k_times_b(train):
    common = ["--epochs", "1", "--set", "optimizer.type=SGD", "--set", "optimizer.args={lr: 0.1}",
              "--set", "lr_scheduler=null", "--set", "arch.args.dropout=0"]
    big = train(*common, "--bs", "64", run_id="big")
    micro = train(*common, "--bs", "32", "--set", "trainer.accumulate=2", run_id="micro")
    assert big.returncode == 0, big.stderr
    assert micro.returncode == 0, micro.stderr
    a, b = big.checkpoint(1), micro.checkpoint(1)
    assert a["global_step"] == b["global_step"] == 20  # 1222 samples: 19 x 64 + 6
    for name, tensor in a["state_dict"].items():
        assert torch.allclose(tensor, b["state_dict"][name], rtol=1e-5, atol=1e-6), name


def test_device_resident_loader_yields_the_dataloader_batches():
    from data_loader.data_loaders import DigitsDataLoader
    from data_loader.device_loader import device_resident

    def batches(loader):
        return [tuple(t.clone() for t in batch) for batch in loader]

    checked = 0
    for world, rank in ((1, 0), (2, 1)):
        dl = DigitsDataLoader(batch_size=48, seed=7, rank=rank, world_size=world)
        valid = dl.split_validation()
        dev, dev_valid = device_resident(dl, valid, torch.device("cpu"))
        assert dev.sampler is dl.sampler
        for epoch, start in ((0, 0), (1, 0), (5, 96), (5, 0)):
            dl.sampler.set_epoch(epoch)
            dl.sampler.set_start(start)
            a, b = batches(dl), batches(dev)
            assert len(a) == len(b) == len(dl) == len(dev) and len(a) > 5
            for (x1, y1), (x2, y2) in zip(a, b):
                assert x1.dtype == x2.dtype and y1.dtype == y2.dtype
                assert torch.equal(x1, x2) and torch.equal(y1, y2)
            checked += len(a)
        first = batches(dl)
        dl.sampler.set_epoch(6)
        assert not torch.equal(batches(dl)[0][1], first[0][1]), "each pass has its own order"
        va, vb = batches(valid), batches(dev_valid)
        assert len(va) == len(vb) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(va, vb))
    assert checked > 50


class RandomFlips(Dataset):
    """The digits with a random horizontal flip each time a sample is read (augmentation)."""

    def __init__(self, base):
        self.base, self.reads = base, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.reads += 1
        image, label = self.base[index]
        return (image.flip(-1) if torch.rand(()) < 0.5 else image), label


class AugmentedDigitsLoader(BaseDataLoader):
    def __init__(self, batch_size=64, validation_split=0.15, device_resident=True, **kwargs):
        from data_loader.data_loaders import load_digits
        from utils import project_path

        self.augmented = RandomFlips(load_digits(project_path("data/")))
        super().__init__(self.augmented, batch_size, True, validation_split, 0, device_resident=device_resident,
                         **kwargs)


def test_device_resident_is_only_for_plain_tensors(train, monkeypatch):
    import data_loader.data_loaders as module_data

    made = []
    monkeypatch.setattr(module_data, "AugmentedDigitsLoader",
                        lambda **kw: made.append(AugmentedDigitsLoader(**kw)) or made[-1], raising=False)
    run = train("--epochs", "2", "--set", "data_loader={type: AugmentedDigitsLoader, args: {device_resident: true}}")
    assert run.returncode == 0, run.stderr
    assert ("data_loader.args.device_resident: RandomFlips is not a plain TensorDataset (its __getitem__ may "
            "transform samples, e.g. random augmentation); using the DataLoader") in run.stdout
    # every epoch read (and so re-augmented) every sample: nothing was frozen on the device
    assert made[0].augmented.reads == 2 * len(made[0].augmented)


@pytest.mark.slow
def test_compile_fp16_and_clipping_train_and_resume(train):
    options = ["--set", "trainer.compile={backend: eager}", "--set", "trainer.amp=fp16",
               "--set", "trainer.clip_grad_norm=1.0"]
    first = train("--epochs", "1", *options, run_id="opts")
    assert first.returncode == 0, first.stderr
    state = first.checkpoint(1)
    assert not any(key.startswith("_orig_mod") for key in state["state_dict"])  # the plain model's names
    assert state["scaler"]["scale"] > 0  # fp16 scaling state travels with the checkpoint
    resumed = train("-r", str(first.run_dir / "checkpoint-epoch1.pth"), "--epochs", "2", run_id=None, config=None)
    resumed.run_id = "opts"
    assert resumed.returncode == 0, resumed.stderr
    final = first.checkpoint(2)
    assert final["scaler"]["_growth_tracker"] > state["scaler"]["_growth_tracker"]  # restored, then advanced
    assert resumed.summary["last"]["val_accuracy"] > 0.5
