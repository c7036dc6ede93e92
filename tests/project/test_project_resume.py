"""Resume: bitwise-equal continuation, same run folder, iteration mode, early stop."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from _template_run import load_checkpoint

# dropout makes the RNG state matter; StepLR(step_size=2) changes the LR at epoch 3
EXACT = ["--set", "arch.args.dropout=0.2", "--set", "lr_scheduler.args.step_size=2",
         "--set", "lr_scheduler.args.gamma=0.1", "--set", "trainer.keep_last=null"]


def assert_same_tree(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            assert_same_tree(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["epochs", "iterations"])
def test_resumed_run_equals_uninterrupted_run(train, mode):
    extra = EXACT + (["--set", "trainer.len_epoch=13"] if mode == "iterations" else [])
    with ThreadPoolExecutor(2) as pool:  # two independent runs side by side
        straight_job = pool.submit(train, "--set", "trainer.epochs=4", *extra, run_id="straight")
        first_job = pool.submit(train, "--set", "trainer.epochs=2", *extra, run_id="split")
        straight, first = straight_job.result(), first_job.result()
    assert straight.returncode == 0, straight.stderr
    assert first.returncode == 0, first.stderr
    resumed = train("-r", str(first.run_dir / "checkpoint-epoch2.pth"), "--set", "trainer.epochs=4",
                    config=None, run_id=None, name="Digits_MLP")
    resumed.run_id = "split"
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout

    a = load_checkpoint(straight.run_dir / "checkpoint-epoch4.pth")
    b = load_checkpoint(first.run_dir / "checkpoint-epoch4.pth")  # the same folder continued
    for key in ("state_dict", "optimizer", "lr_scheduler", "rng", "data_state", "global_step",
                "monitor_best", "not_improved_count"):
        assert_same_tree(a[key], b[key], key)
    lrs = [row["lr"] for row in straight.metrics()]
    assert lrs[1] != lrs[2]  # the scheduler changed the LR inside the resumed part
    assert [row["epoch"] for row in resumed.metrics()] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in resumed.metrics()] == [r["val_loss"] for r in straight.metrics()]
    assert not (first.save_dir / "models" / "Digits_MLP").joinpath("split2").exists()
    # model_best is a hard link to the epoch file it came from (keep_last is off here)
    best_epoch = straight.summary["best_epoch"]
    assert os.path.samefile(straight.run_dir / "model_best.pth", straight.run_dir / f"checkpoint-epoch{best_epoch}.pth")
    if mode == "iterations":
        assert a["global_step"] == 4 * 13
        assert a["data_state"] == {"pass": 52 // 20, "offset": 52 % 20}  # 20 batches per pass


@pytest.mark.slow
def test_early_stop_is_exact(train):
    # lr 0: the validation loss never improves after epoch 1, so early_stop=2 ends at epoch 3
    run = train("--set", "trainer.epochs=10", "--set", "trainer.early_stop=2", "--set", "optimizer.args.lr=0",
                "--set", "trainer.monitor=min val_loss", "--set", "lr_scheduler=null")
    assert run.returncode == 0, run.stderr
    assert run.summary["epochs_run"] == 3 and run.summary["stopped_early"] is True
    assert run.summary["best_epoch"] == 1
    assert sorted(p.name for p in run.run_dir.glob("checkpoint-*.pth"))[-1] == "checkpoint-epoch3.pth"
    # the same command with --resume auto (a notebook cell run again) does not train past the stop
    again = train("--set", "trainer.epochs=10", "--set", "trainer.early_stop=2", "--set", "optimizer.args.lr=0",
                  "--set", "trainer.monitor=min val_loss", "--set", "lr_scheduler=null", "--resume", "auto")
    assert again.returncode == 0, again.stderr
    assert "stopped early at epoch 3: nothing to continue" in again.stdout
    assert not (run.run_dir / "checkpoint-epoch4.pth").exists()
    assert again.summary["last"]["epoch"] == 3 and again.summary["stopped_early"] is True
