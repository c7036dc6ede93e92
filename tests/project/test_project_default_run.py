"""The default config, run as a user runs it: accuracy, files, checkpoints, output, test.py."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from _template_run import (
    CONFIG,
    REPO,
    env_for_runs,
    load_checkpoint,
    run_process,
    run_test_py,
    train_cmd,
)
from _template_run import train as train_in_process


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default config exactly as shipped (tensorboard and all), 20 epochs."""
    save_dir = tmp_path_factory.mktemp("default") / "saved"
    started = time.monotonic()
    run = train_in_process(save_dir, run_id="default", fast=False)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    return run, elapsed


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


def test_without_a_terminal_the_output_is_one_line_per_epoch(default_run):
    run, _ = default_run
    lines = run.stdout.splitlines()
    epoch_lines = [line for line in lines if re.match(r"^epoch \d+/20  loss ", line)]
    assert len(epoch_lines) == 20
    assert not [line for line in lines if re.match(r"^epoch \d+ \[", line)]  # no step lines at verbosity 1
    assert "\r" not in run.stdout + run.stderr and "it/s" not in run.stderr  # no progress bar
    assert len(lines) < 40, lines


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
    info = (run.log_dir / "info.log").read_text()
    assert "final: " in info and "Trainable parameters" in info


def test_checkpoint_contents_and_pruning(default_run):
    run, _ = default_run
    summary = run.summary
    epochs = sorted(int(p.stem.split("epoch")[1]) for p in run.run_dir.glob("checkpoint-epoch*.pth"))
    # 20 ms epochs share writes (save_min_interval 1 s): epoch 1, the last, and any a slow machine
    # reached a second after the previous write; keep_last 3 prunes the rest
    assert epochs[-1] == 20 and len(epochs) <= 3 and (len(epochs) == 3 or epochs[0] == 1), epochs
    assert all(run.checkpoint(epoch)["epoch"] == epoch for epoch in epochs)
    assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".tmp-")]
    state = run.checkpoint(20)
    for key in ("arch", "epoch", "state_dict", "optimizer", "lr_scheduler", "monitor_best", "config", "rng",
                "not_improved_count", "data_state", "global_step", "best"):
        assert key in state, key
    assert state["arch"] == "DigitsModel" and state["epoch"] == 20
    assert state["config"] == json.loads((run.run_dir / "config.json").read_text())
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["monitor_best"] == summary["best"]["val_accuracy"] == state["best"]["val_accuracy"]
    assert state["data_state"] == {"pass": 20, "samples": 0}  # 20 passes done, the next starts fresh
    assert state["lr_scheduler"]["last_epoch"] == 20
    best = load_checkpoint(run.run_dir / "model_best.pth")
    assert best["epoch"] == summary["best_epoch"]
    assert best["metrics"]["val_accuracy"] == summary["best"]["val_accuracy"]


def test_test_py_matches_the_trainer(default_run, monkeypatch):
    run, _ = default_run
    best = run.run_dir / "model_best.pth"
    # the validation split the trainer used: the same figures it logged for that epoch
    code, out, err = run_test_py("-r", str(best), "--split", "val", "--json")
    assert code == 0, err
    val_result = json.loads(out)
    assert val_result["accuracy"] == pytest.approx(run.summary["best"]["val_accuracy"], abs=1e-9)
    assert val_result["loss"] == pytest.approx(run.summary["best"]["val_loss"], rel=1e-5)
    # the held-out test split, run from inside project/: close to validation (the splits differ)
    monkeypatch.chdir(REPO / "project")
    code, out, err = run_test_py("-r", str(best))
    assert code == 0, err
    assert "split: test  samples: 359" in out and f"(epoch {run.summary['best_epoch']})" in out
    accuracy = float(re.search(r"^\s+accuracy\s+: ([0-9.]+)$", out, re.M).group(1))
    assert accuracy >= 0.93
    assert abs(accuracy - val_result["accuracy"]) < 0.05


def test_test_py_bad_checkpoint_is_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    for target in (junk, tmp_path / "missing.pth"):
        code, _, err = run_test_py("-r", str(target))
        assert code == 2
        assert err.count("\n") == 1 and "Traceback" not in err
        assert str(target) in err


@pytest.mark.slow
def test_the_default_run_as_a_process_from_the_command_line(tmp_path):
    """`python project/train.py -c project/config.json` in its own process (2 epochs)."""
    run = run_process(train_cmd(tmp_path / "saved", "--epochs", "2", run_id="cli"), tmp_path / "saved", "cli")
    assert run.returncode == 0, run.stderr
    assert re.search(r"^epoch 2/2  loss ", run.stdout, re.M) and run.stderr == ""
    assert run.summary["epochs_run"] == 2


def test_a_reader_that_goes_away_does_not_stop_the_run_or_fill_stderr(tmp_path):
    """`train.py | head -1`: the console goes quiet, the run finishes, info.log has every line."""
    save_dir = tmp_path / "saved"
    proc = subprocess.Popen(train_cmd(save_dir, "--epochs", "3", run_id="piped"), cwd=REPO, env=env_for_runs(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline()  # the first line, then the reader is gone
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "Logging error" not in err and "Exception ignored" not in err, err
    info = (save_dir / "log" / "Digits_MLP" / "piped" / "info.log").read_text()
    assert "epoch 3/3" in info and "final: " in info
