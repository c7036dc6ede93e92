"""trainer.save_min_interval: epochs shorter than it share checkpoint writes, and what is written
is exactly what a run that saves every epoch writes for that epoch (the state waited in memory as
a copy that later steps could not change)."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest
import torch
from _template_run import REPO, env_for_runs, load_checkpoint, train, train_cmd
from test_project_kill import wait_for

EPOCHS = 16  # the best epoch (13) is not the last: a waiting best must be a copy
ARGS = ["--set", f"trainer.epochs={EPOCHS}", "--set", "trainer.keep_last=null", "--set", "trainer.early_stop=null"]


def epoch_files(run) -> list[int]:
    return sorted(int(p.stem.split("epoch")[1]) for p in run.run_dir.glob("checkpoint-epoch*.pth"))


def same_state(a: dict, b: dict) -> bool:
    """Bitwise the same training state: weights, optimizer moments, RNGs, counters."""
    def equal(x, y):
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(equal, x, y))
        return x == y

    keys = ("epoch", "state_dict", "optimizer", "lr_scheduler", "rng", "data_state", "global_step", "monitor_best",
            "best_epoch", "not_improved_count")
    untimed = [{k: v for k, v in s["metrics"].items() if k != "time"} for s in (a, b)]
    return all(equal(a[k], b[k]) for k in keys) and untimed[0] == untimed[1]


@pytest.fixture(scope="module")
def every_epoch(tmp_path_factory):
    run = train(tmp_path_factory.mktemp("every") / "saved", *ARGS, run_id="every")  # save_min_interval 0
    assert run.returncode == 0, run.stderr
    assert epoch_files(run) == list(range(1, EPOCHS + 1))
    return run


@pytest.mark.parametrize("interval", ["3600", "0.03"])
def test_short_epochs_share_writes_and_each_file_is_the_every_epoch_runs(every_epoch, save_dir, interval):
    run = train(save_dir, *ARGS, "--set", f"trainer.save_min_interval={interval}", run_id="shared")
    assert run.returncode == 0, run.stderr
    written = epoch_files(run)
    if interval == "3600":  # the first (its size), the best (waited in memory) and the last
        assert written == [1, every_epoch.summary["best_epoch"], EPOCHS]
    assert written[-1] == EPOCHS and set(written) <= set(range(1, EPOCHS + 1))
    for epoch in written:
        assert same_state(run.checkpoint(epoch), every_epoch.checkpoint(epoch)), epoch
    best = run.checkpoint("model_best.pth")
    assert best["epoch"] == run.summary["best_epoch"] == every_epoch.summary["best_epoch"]
    assert same_state(best, every_epoch.checkpoint("model_best.pth"))
    assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".tmp-")]


def test_a_resume_from_a_shared_write_ends_where_the_every_epoch_run_ends(every_epoch, save_dir):
    first = train(save_dir, *ARGS, "--set", "trainer.epochs=3", "--set", "trainer.save_min_interval=3600",
                  run_id="short")
    assert first.returncode == 0 and epoch_files(first) == [1, 3], first.stderr
    resumed = train(save_dir, *ARGS, "--set", "trainer.save_min_interval=3600", "--resume", "auto", run_id="short")
    assert resumed.returncode == 0, resumed.stderr
    # a new writer learns the size again at epoch 4; the best waited in memory until the last
    assert epoch_files(resumed) == sorted({1, 3, 4, every_epoch.summary["best_epoch"], EPOCHS})
    assert same_state(resumed.checkpoint(EPOCHS), every_epoch.checkpoint(EPOCHS))


def start_held_run(save_dir, *extra):
    args = [*ARGS, "--set", "trainer.epochs=400", "--set", "lr_scheduler=null", "--set",
            "trainer.save_min_interval=3600", *extra]
    return subprocess.Popen(train_cmd(save_dir, *args, "--resume", "auto", run_id="held"), cwd=REPO,
                            env=env_for_runs(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_after(proc, metrics, epochs: int, signals: int = 1) -> str:
    assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= epochs, 180, proc)
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "train.py: interrupted; continue with --resume auto", err
    assert "Traceback" not in err
    return err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_during_a_short_epoch_stops_at_its_end_and_writes_it_and_the_best(save_dir):
    """Nothing but epoch 1 is on disk when Ctrl-C comes: the loop finishes that epoch (well under a
    second), writes it and the waiting best, exits 130, and --resume auto continues right after it."""
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / "held" for kind in ("models", "log"))
    metrics = log_dir / "metrics.jsonl"
    interrupt_after(start_held_run(save_dir), metrics, epochs=12)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    saved = sorted(int(p.stem.split("epoch")[1]) for p in run_dir.glob("checkpoint-epoch*.pth"))
    best_epoch = max(rows, key=lambda row: (row["val_accuracy"], -row["epoch"]))["epoch"]
    assert saved == sorted({1, best_epoch, rows[-1]["epoch"]})  # the epoch the signal came in, finished
    assert load_checkpoint(run_dir / f"checkpoint-epoch{saved[-1]}.pth")["best_epoch"] == best_epoch
    assert load_checkpoint(run_dir / "model_best.pth")["epoch"] == best_epoch  # the waiting best too
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
    resumed = subprocess.run(train_cmd(save_dir, *ARGS, "--set", "lr_scheduler=null", "--set",
                                       "trainer.save_min_interval=3600", "--set", f"trainer.epochs={saved[-1] + 2}",
                                       "--resume", "auto", run_id="held"),
                             cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"continuing at epoch {saved[-1] + 1}" in resumed.stdout + resumed.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ctrl_c_in_a_row_are_one_line_and_keep_the_waiting_best(save_dir):
    """The second Ctrl-C stops at once if the first was already seen (else the two are one signal)."""
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / "held" for kind in ("models", "log"))
    interrupt_after(start_held_run(save_dir), log_dir / "metrics.jsonl", epochs=12, signals=2)
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    def best_of(upto):
        return max(upto, key=lambda row: (row["val_accuracy"], -row["epoch"]))["epoch"]

    # the last logged epoch may have been cut before its checkpoint step
    assert load_checkpoint(run_dir / "model_best.pth")["epoch"] in (best_of(rows), best_of(rows[:-1]))
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
