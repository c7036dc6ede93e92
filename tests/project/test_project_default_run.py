"""The default config, run as a user runs it: accuracy, files, checkpoints, test.py."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from _template_run import CONFIG, REPO, Run, env_for_runs, load_checkpoint, run_test_py, train_cmd


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Run, float]:
    """The default config exactly as shipped (tensorboard and all), 20 epochs."""
    save_dir = tmp_path_factory.mktemp("default") / "saved"
    cmd = train_cmd(save_dir, run_id="default", fast=False)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    return Run(proc, save_dir, "Digits_MLP", "default"), elapsed


@pytest.mark.timeout(300)
def test_default_config_reaches_095_quickly(default_run):
    run, elapsed = default_run
    summary = run.summary
    assert summary["epochs_run"] == 20
    assert summary["best"]["val_accuracy"] >= 0.95
    assert summary["last"]["val_accuracy"] >= 0.95
    assert elapsed < 60, f"the default run took {elapsed:.1f}s"
    # the one line a remote caller can parse
    final = [line for line in run.stdout.splitlines() if line.startswith("final: ")]
    assert len(final) == 1
    assert json.loads(final[0][len("final: "):])["best"]["val_accuracy"] == summary["best"]["val_accuracy"]


def test_run_folders_and_logs(default_run):
    run, _ = default_run
    effective = json.loads((run.run_dir / "config.json").read_text())
    assert effective["trainer"]["save_dir"] == str(run.save_dir)
    assert effective["arch"] == json.loads(CONFIG.read_text())["arch"]
    rows = run.metrics()
    assert [row["epoch"] for row in rows] == list(range(1, 21))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(rows[0])
    assert (run.log_dir / "curves.png").stat().st_size > 1000
    assert any(p.name.startswith("events.out.tfevents") for p in run.log_dir.iterdir())
    assert "final: " in (run.log_dir / "info.log").read_text()


def test_checkpoint_contents_and_pruning(default_run):
    run, _ = default_run
    summary = run.summary
    epochs = sorted(int(p.stem.split("epoch")[1]) for p in run.run_dir.glob("checkpoint-epoch*.pth"))
    assert epochs == [18, 19, 20]  # keep_last: 3
    assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".tmp-")]
    state = load_checkpoint(run.run_dir / "checkpoint-epoch20.pth")
    for key in ("arch", "epoch", "state_dict", "optimizer", "lr_scheduler", "monitor_best", "config", "rng",
                "not_improved_count", "data_state", "global_step"):
        assert key in state, key
    assert state["arch"] == "DigitsModel" and state["epoch"] == 20
    assert state["config"] == json.loads((run.run_dir / "config.json").read_text())
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["monitor_best"] == summary["best"]["val_accuracy"]
    assert state["data_state"] == {"pass": 20, "offset": 0}  # 20 passes done, the next starts fresh
    assert state["lr_scheduler"]["last_epoch"] == 20
    best = load_checkpoint(run.run_dir / "model_best.pth")
    assert best["epoch"] == summary["best_epoch"]
    assert best["metrics"]["val_accuracy"] == summary["best"]["val_accuracy"]


@pytest.mark.slow
def test_test_py_matches_the_trainer(default_run):
    run, _ = default_run
    best = run.run_dir / "model_best.pth"
    # the validation split the trainer used: the same figures it logged for that epoch
    val = run_test_py("-r", str(best), "--split", "val", "--json")
    assert val.returncode == 0, val.stderr
    val_result = json.loads(val.stdout)
    assert val_result["accuracy"] == pytest.approx(run.summary["best"]["val_accuracy"], abs=1e-9)
    assert val_result["loss"] == pytest.approx(run.summary["best"]["val_loss"], rel=1e-5)
    # the held-out test split, run from inside project/: close to validation (the splits differ)
    test = run_test_py("-r", str(best), cwd=REPO / "project")
    assert test.returncode == 0, test.stderr
    assert "split: test  samples: 359" in test.stdout and f"(epoch {run.summary['best_epoch']})" in test.stdout
    accuracy = float(re.search(r"^\s+accuracy\s+: ([0-9.]+)$", test.stdout, re.M).group(1))
    assert accuracy >= 0.93
    assert abs(accuracy - val_result["accuracy"]) < 0.05


@pytest.mark.slow
def test_test_py_bad_checkpoint_is_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    for target in (junk, tmp_path / "missing.pth"):
        proc = run_test_py("-r", str(target))
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert str(target) in proc.stderr
