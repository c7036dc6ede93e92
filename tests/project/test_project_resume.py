"""Resume: bitwise-equal continuation, branching from an older checkpoint, keep_last, the
config checks of --resume auto, and config changes applied to the restored state."""
from __future__ import annotations

import json
import os

import pytest
import torch
from _template_run import tree_bytes

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


def assert_same_training_state(a: dict, b: dict) -> None:
    for key in ("state_dict", "optimizer", "lr_scheduler", "rng", "data_state", "global_step",
                "monitor_best", "not_improved_count"):
        assert_same_tree(a[key], b[key], key)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["epochs", "iterations"])
def test_resumed_run_equals_uninterrupted_run(train, mode):
    extra = EXACT + (["--set", "trainer.len_epoch=13"] if mode == "iterations" else [])
    straight = train("--set", "trainer.epochs=4", *extra, run_id="straight")
    first = train("--set", "trainer.epochs=2", *extra, run_id="split")
    assert straight.returncode == 0, straight.stderr
    assert first.returncode == 0, first.stderr
    resumed = train("-r", str(first.run_dir / "checkpoint-epoch2.pth"), "--set", "trainer.epochs=4",
                    config=None, run_id=None)
    resumed.run_id = "split"
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "a new run" not in resumed.stdout

    assert_same_training_state(straight.checkpoint(4), first.checkpoint(4))  # the same folder continued
    lrs = [row["lr"] for row in straight.metrics()]
    assert lrs[1] != lrs[2]  # the scheduler changed the LR inside the resumed part
    assert [row["epoch"] for row in resumed.metrics()] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in resumed.metrics()] == [r["val_loss"] for r in straight.metrics()]
    # model_best is a hard link to the epoch file it came from (keep_last is off here)
    best_epoch = straight.summary["best_epoch"]
    assert os.path.samefile(straight.run_dir / "model_best.pth", straight.run_dir / f"checkpoint-epoch{best_epoch}.pth")
    a = straight.checkpoint(4)
    if mode == "iterations":
        assert a["global_step"] == 4 * 13
        assert a["data_state"] == {"pass": 52 // 20, "samples": (52 % 20) * 64}  # 20 batches of 64 per pass
    else:
        assert a["data_state"] == {"pass": 4, "samples": 0}


def test_resume_from_an_older_checkpoint_branches_and_leaves_the_run_untouched(train):
    first = train("--set", "trainer.epochs=5", "--set", "trainer.keep_last=3", run_id="orig")
    assert first.returncode == 0, first.stderr
    before = tree_bytes(first.run_dir, first.log_dir)
    assert sorted(p.name for p in first.run_dir.glob("checkpoint-*")) == [
        "checkpoint-epoch3.pth", "checkpoint-epoch4.pth", "checkpoint-epoch5.pth"]

    branch = train("-r", str(first.run_dir / "checkpoint-epoch3.pth"), "--set", "trainer.epochs=7",
                   "--set", "trainer.keep_last=2", config=None, run_id=None)
    branch.run_id = "orig-from-e3"
    assert branch.returncode == 0, branch.stderr
    assert "a new run: orig has newer checkpoints and stays as it is" in branch.stdout
    assert tree_bytes(first.run_dir, first.log_dir) == before  # byte for byte
    # the branch: its own folder, keep_last over its own history, the original's rows up to epoch 3
    assert sorted(p.name for p in branch.run_dir.glob("checkpoint-*")) == [
        "checkpoint-epoch6.pth", "checkpoint-epoch7.pth"]
    assert [row["epoch"] for row in branch.metrics()] == [1, 2, 3, 4, 5, 6, 7]
    assert branch.metrics()[:3] == first.metrics()[:3]
    assert branch.summary["run_id"] == "orig-from-e3"
    # the same -r again branches once more, under a new name
    again = train("-r", str(first.run_dir / "checkpoint-epoch3.pth"), "--epochs", "4", config=None, run_id=None)
    again.run_id = "orig-from-e3-2"
    assert again.returncode == 0, again.stderr
    assert (again.run_dir / "checkpoint-epoch4.pth").exists() and tree_bytes(first.run_dir, first.log_dir) == before


def test_resume_auto_without_run_id_continues_only_the_same_experiment(train):
    first = train("--set", "trainer.epochs=1", run_id="exp")
    assert first.returncode == 0, first.stderr
    before = tree_bytes(first.run_dir, first.log_dir)
    other = train("--set", "trainer.epochs=2", "--set", "optimizer.args.lr=1e-3", "--resume", "auto", run_id=None)
    assert other.returncode == 2
    assert other.stderr.strip() == (
        "train.py: error: config error in --resume auto: the latest run 'exp' has another config "
        "(optimizer.args.lr: 0.003 -> 0.001): continue it with --run-id exp, or drop --resume auto for a new run")
    assert tree_bytes(first.run_dir, first.log_dir) == before
    assert [p.name for p in first.run_dir.parent.iterdir()] == ["exp"]
    same = train("--set", "trainer.epochs=2", "--resume", "auto", run_id=None)  # only epochs differ
    assert same.returncode == 0, same.stderr
    assert f"resumed from {first.run_dir / 'checkpoint-epoch1.pth'}" in same.stdout
    assert (first.run_dir / "checkpoint-epoch2.pth").exists()


def test_a_set_that_restored_state_would_override_is_applied_or_refused(train):
    first = train("--set", "trainer.epochs=1", "--set", "lr_scheduler.args.step_size=1", run_id="lr")
    assert first.returncode == 0, first.stderr
    ckpt1 = str(first.run_dir / "checkpoint-epoch1.pth")
    saved_lr = first.checkpoint(1)["optimizer"]["param_groups"][0]["lr"]  # 0.003 after one StepLR step: 0.0015
    assert saved_lr == pytest.approx(0.0015)
    config_before = (first.run_dir / "config.json").read_bytes()

    # a new seed: refused (the restored random state would silently win), nothing written
    seed = train("-r", ckpt1, "--epochs", "2", "--set", "seed=7", config=None, run_id=None)
    assert seed.returncode == 2 and "seed: is 7 but the run was started with 1" in seed.stderr, seed.stderr
    # weights that do not fit: refused before anything is written, config.json untouched
    bigger = train("-r", ckpt1, "--epochs", "2", "--set", "arch.args.hidden=64", config=None, run_id=None)
    assert bigger.returncode == 1 and "does not fit this model" in bigger.stderr, bigger.stderr
    assert (first.run_dir / "config.json").read_bytes() == config_before
    assert not (first.run_dir / "checkpoint-epoch2.pth").exists()

    # a new learning rate: the restored optimizer takes it (the schedule keeps its shape)
    lr = train("-r", ckpt1, "--epochs", "2", "--lr", "0.03", "--set", "optimizer.args.weight_decay=1e-4",
               config=None, run_id=None)
    lr.run_id = "lr"
    assert lr.returncode == 0, lr.stderr
    assert "optimizer.args.lr: 0.003 -> 0.03, applied to the restored optimizer" in lr.stdout
    assert lr.metrics()[1]["lr"] == pytest.approx(0.015)  # 0.03 x 0.5, the StepLR factor already applied
    group = lr.checkpoint(2)["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 1e-4 and group["initial_lr"] == 0.03
    assert group["lr"] == pytest.approx(0.0075)
    assert json.loads((lr.run_dir / "config.json").read_text())["optimizer"]["args"]["lr"] == 0.03


def test_early_stop_is_exact(train):
    # lr 0: the validation loss never improves after epoch 1, so early_stop=2 ends at epoch 3
    args = ["--set", "trainer.epochs=10", "--set", "trainer.early_stop=2", "--set", "optimizer.args.lr=0",
            "--set", "trainer.monitor=min val_loss", "--set", "lr_scheduler=null"]
    run = train(*args)
    assert run.returncode == 0, run.stderr
    assert run.summary["epochs_run"] == 3 and run.summary["stopped_early"] is True
    assert run.summary["best_epoch"] == 1
    assert sorted(p.name for p in run.run_dir.glob("checkpoint-*.pth"))[-1] == "checkpoint-epoch3.pth"
    # the same command with --resume auto (a notebook cell run again) does not train past the stop
    again = train(*args, "--resume", "auto")
    assert again.returncode == 0, again.stderr
    assert "stopped early at epoch 3: nothing to continue" in again.stdout
    assert not (run.run_dir / "checkpoint-epoch4.pth").exists()
    assert again.summary["last"]["epoch"] == 3 and again.summary["stopped_early"] is True
    assert again.summary["best"]["epoch"] == 1
