"""Red-team findings on trainer.save_min_interval and Ctrl-C during a short epoch (real runs,
real signals, real files)."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from _template_run import REPO, env_for_runs, load_checkpoint, train_cmd
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
    for _ in range(10):  # two signals close together may arrive as one: then the epoch finishes
        proc = start_held_run(save_dir)
        assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 12, 180, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert err.splitlines()[-1] == "train.py: interrupted; continue with --resume auto", err
        if epoch_files(run_dir)[-1] != rows(metrics)[-1]["epoch"]:
            break  # the second Ctrl-C stopped the epoch at once
        for folder in (run_dir, log_dir):
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    else:
        pytest.skip("the two signals always arrived as one")
    best = load_checkpoint(run_dir / "model_best.pth")["epoch"]
    newest = epoch_files(run_dir)[-1]
    assert newest >= best, (epoch_files(run_dir), best)  # the waiting best is its epoch's file too
    resumed = subprocess.run(train_cmd(save_dir, *HELD, "--set", f"trainer.epochs={newest + 2}", "--resume", "auto",
                                       run_id="held"),
                             cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["held"]  # no branch
    assert f"continuing at epoch {newest + 1} in {run_dir}" in resumed.stdout + resumed.stderr
