"""Ctrl-C against trainer.save_min_interval: the cases a red-team pass broke (real runs,
real signals, real files)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from _template_run import PROJECT, REPO, env_for_runs, load_checkpoint, train_argv, train_cmd
from test_project_checkpoint_cadence import ARGS, start_held_run
from test_project_kill import wait_for

HELD = [*ARGS, "--set", "lr_scheduler=null", "--set", "trainer.save_min_interval=3600"]


def epoch_files(run_dir) -> list[int]:
    return sorted(int(p.stem.split("epoch")[1]) for p in run_dir.glob("checkpoint-epoch*.pth"))


def rows(metrics) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_auto_after_two_ctrl_c_continues_the_run_in_place(save_dir):
    """Two Ctrl-C a few ms apart stop at once with a best waiting in memory. It was written as
    model_best.pth only, newer than every epoch file, so `--resume auto` (what the message says to
    run) resumed from epoch 1 and, seeing a newer model_best, forked a new run `held-from-e1`."""
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / "held" for kind in ("models", "log"))
    metrics = log_dir / "metrics.jsonl"
    proc = start_held_run(save_dir)
    assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 12, 180, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.002)  # usually a second signal (stops at once); two close together may arrive as one
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] == "train.py: interrupted; continue with --resume auto", err
    best = load_checkpoint(run_dir / "model_best.pth")["epoch"]
    newest = epoch_files(run_dir)[-1]
    assert newest >= best, (epoch_files(run_dir), best)  # the waiting best is its epoch's file too
    resumed = subprocess.run(train_cmd(save_dir, *HELD, "--set", f"trainer.epochs={newest + 2}", "--resume", "auto",
                                       run_id="held"),
                             cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["held"]  # no branch
    assert f"continuing at epoch {newest + 1} in {run_dir}" in resumed.stdout + resumed.stderr


# a real SIGINT at a precise point: as the epoch's checkpoint step starts (`final` already read)
SIGINT_IN_CHECKPOINT = """
import os, signal, sys
sys.path.insert(0, {project!r})
import train
from base.base_trainer import BaseTrainer
checkpoint = BaseTrainer._checkpoint
def _checkpoint(self, epoch, log, improved, final):
    if epoch == {epoch} and not final:
        os.kill(os.getpid(), signal.SIGINT)  # its Python handler runs here, before the call below
    checkpoint(self, epoch, log, improved, final)
BaseTrainer._checkpoint = _checkpoint
sys.exit(train.cli({argv!r}))
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("epoch", [6, 7])
def test_ctrl_c_during_the_checkpoint_step_still_writes_that_epoch(save_dir, epoch):
    """`final` reads ctrl_c.requested before _checkpoint: a Ctrl-C during the not-due checkpoint
    step was seen only by the `raise` after it, so that epoch was never written as a file (epoch 7
    improves: held, then written as model_best only; epoch 6 does not: lost)."""
    argv = train_argv(save_dir, *HELD, "--set", "trainer.epochs=40", run_id="race")
    code = SIGINT_IN_CHECKPOINT.format(project=str(PROJECT), epoch=epoch, argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env_for_runs(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines()[-1] == "train.py: interrupted; continue with --resume auto"
    assert "Traceback" not in proc.stderr
    run_dir = save_dir / "models" / "Digits_MLP" / "race"
    assert epoch_files(run_dir)[-1] == epoch
    last = load_checkpoint(run_dir / f"checkpoint-epoch{epoch}.pth")
    assert load_checkpoint(run_dir / "model_best.pth")["epoch"] == last["best_epoch"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_with_a_long_save_period_ctrl_c_then_resume_auto_continues_from_the_best_in_place(save_dir):
    """save_period 1000: the only files are the bests. Each is its epoch's file (it was a standalone
    model_best.pth, which --resume auto could not continue in place), so the run goes on from it."""
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / "held" for kind in ("models", "log"))
    proc = start_held_run(save_dir, "--set", "trainer.save_period=1000", "--set", "trainer.save_min_interval=0")
    assert wait_for(lambda: (log_dir / "metrics.jsonl").exists()
                    and len((log_dir / "metrics.jsonl").read_text().splitlines()) >= 12, 180, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    best = load_checkpoint(run_dir / "model_best.pth")["epoch"]
    assert epoch_files(run_dir)[-1] == best > 1
    resumed = subprocess.run(train_cmd(save_dir, *HELD, "--set", "trainer.save_period=1000", "--set",
                                       "trainer.save_min_interval=0", "--set", f"trainer.epochs={best + 2}",
                                       "--resume", "auto", run_id="held"),
                             cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["held"]  # no branch
    assert f"continuing at epoch {best + 1} in {run_dir}" in resumed.stdout + resumed.stderr
