"""Schedulers that do what the config says: the plateau scheduler follows trainer.monitor,
`auto` lengths come from the loader, epochs and accumulation, and a resume keeps them right."""
from __future__ import annotations

import json

import pytest


def test_reduce_on_plateau_follows_the_monitor_and_never_cuts_while_it_improves(train):
    run = train("--epochs", "8", "--set", "lr_scheduler={type: ReduceLROnPlateau, args: {factor: 0.5, patience: 0}}",
                "--set", "trainer.monitor=max val_accuracy", "--set", "optimizer.args.lr=0.02")
    assert run.returncode == 0, run.stderr
    assert json.loads((run.run_dir / "config.json").read_text())["lr_scheduler"]["args"]["mode"] == "max"
    rows = run.metrics()
    best = -1.0
    for row, following in zip(rows, rows[1:]):
        improved = row["val_accuracy"] > best
        best = max(best, row["val_accuracy"])
        # the lr of the next epoch is cut only after an epoch that did not improve the accuracy
        assert (following["lr"] < row["lr"]) == (not improved), (row, following)
    assert rows[1]["lr"] == rows[0]["lr"]  # the first epoch always improves


@pytest.mark.parametrize("accumulate", [1, 3])
def test_one_cycle_with_auto_length_runs_to_its_end_and_resumes_longer(train, accumulate):
    args = ["--set", "lr_scheduler={type: OneCycleLR, args: {max_lr: 0.01, total_steps: auto}}",
            "--set", f"trainer.accumulate={accumulate}", "--set", "trainer.keep_last=null"]
    run = train("--epochs", "3", *args)
    assert run.returncode == 0, run.stderr
    state = run.checkpoint(3)
    steps = 3 * -(-20 // accumulate)  # 20 batches an epoch, one optimizer step per group
    assert state["global_step"] == steps
    assert state["lr_scheduler"]["total_steps"] == steps and state["lr_scheduler"]["last_epoch"] == steps
    lrs = [row["lr"] for row in run.metrics()]  # the rate each epoch started with: up, then down
    assert lrs[0] == pytest.approx(0.01 / 25) and lrs[1] > max(lrs[0], lrs[2])
    longer = train("-r", str(run.run_dir / "checkpoint-epoch3.pth"), "--epochs", "5", config=None, run_id=None)
    longer.run_id = "t"
    assert longer.returncode == 0, longer.stderr  # OneCycleLR would raise past its old total_steps
    assert f"lr_scheduler total_steps: {steps} -> {5 * steps // 3}, applied" in longer.stdout
    assert longer.checkpoint(5)["lr_scheduler"]["total_steps"] == 5 * steps // 3


def test_cosine_t_max_auto_counts_epochs_or_steps(train):
    run = train("--epochs", "2", "--set", "lr_scheduler={type: CosineAnnealingLR, args: {T_max: auto}}")
    assert run.returncode == 0, run.stderr
    assert run.checkpoint(2)["lr_scheduler"]["T_max"] == 2
    per_step = train("--epochs", "2", "--set",
                     "lr_scheduler={type: CosineAnnealingLR, args: {T_max: auto, eta_min: 1e-5}, interval: step}",
                     run_id="steps")
    assert per_step.returncode == 0, per_step.stderr
    state = per_step.checkpoint(2)
    assert state["lr_scheduler"]["T_max"] == 40 and state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
