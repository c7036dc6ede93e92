"""Log rows (metrics.jsonl, steps.jsonl, TensorBoard) reach their files at most once a second and
before every checkpoint: a kill never leaves a checkpoint newer than the rows, and the step rows
of a long epoch show while it runs."""
from __future__ import annotations

import json
import random
import subprocess
import time

import pytest
from _template_run import REPO, env_for_runs, load_checkpoint, train_cmd
from test_project_kill import kill, wait_for

# checkpoints every 0.3 s, log writes at most once a second: the two clocks differ on purpose
KILLED = ["--set", "trainer.epochs=400", "--set", "trainer.keep_last=3", "--set", "lr_scheduler=null",
          "--set", "trainer.early_stop=null", "--set", "trainer.save_min_interval=0.3"]


def rows(path) -> list[dict]:
    """The whole lines of a JSON-lines file (a kill may cut the last one)."""
    found = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def newest_checkpoint(run_dir) -> int:
    return max((int(p.stem.split("epoch")[1]) for p in run_dir.glob("checkpoint-epoch*.pth")), default=0)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_kill_never_leaves_a_checkpoint_newer_than_the_rows_and_resume_logs_each_epoch_once(save_dir):
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / "rows" for kind in ("models", "log"))
    rng = random.Random(5)
    newest = 0
    for attempt in range(5):
        proc = subprocess.Popen(train_cmd(save_dir, *KILLED, "--resume", "auto", run_id="rows"), cwd=REPO,
                                env=env_for_runs(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:  # the moment a new checkpoint lands (its rows must be there already), or a while after
            assert wait_for(lambda n=newest: newest_checkpoint(run_dir) > n, 180, proc), \
                proc.stderr.read()
            time.sleep(rng.uniform(0.2, 1.5) if attempt % 2 else 0)
        finally:
            kill(proc)
        newest = newest_checkpoint(run_dir)
        logged = [row["epoch"] for row in rows(log_dir / "metrics.jsonl")]
        assert logged[:newest] == list(range(1, newest + 1)), (newest, logged)
        step = load_checkpoint(run_dir / f"checkpoint-epoch{newest}.pth")["global_step"]
        assert step in [row["step"] for row in rows(log_dir / "steps.jsonl")]  # the epoch's last log point
    resumed = subprocess.run(train_cmd(save_dir, *KILLED, "--set", f"trainer.epochs={newest + 3}", "--resume", "auto",
                                       run_id="rows"), cwd=REPO, env=env_for_runs(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in rows(log_dir / "metrics.jsonl")] == list(range(1, newest + 4))
    steps = [row["step"] for row in rows(log_dir / "steps.jsonl")]
    assert steps == sorted(set(steps))  # each log point once, in order


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_long_epochs_step_rows_reach_the_files_while_it_runs(save_dir):
    """One epoch of 4000 steps (seconds): TensorBoard and steps.jsonl show its loss curve as it grows,
    not when the epoch ends."""
    args = ["--set", "trainer.epochs=1", "--set", "trainer.len_epoch=4000", "--set", "trainer.log_step=100",
            "--set", "trainer.tensorboard=true"]
    log_dir = save_dir / "log" / "Digits_MLP" / "long"
    proc = subprocess.Popen(train_cmd(save_dir, *args, run_id="long"), cwd=REPO, env=env_for_runs(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_rows, seen_sizes = set(), set()  # what the files held while the epoch ran
    try:
        while proc.poll() is None and not rows(log_dir / "metrics.jsonl"):
            seen_rows.add(len(rows(log_dir / "steps.jsonl")))
            seen_sizes.add(sum(p.stat().st_size for p in (log_dir / "steps").glob("events.out.tfevents.*")))
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        kill(proc)
    assert proc.returncode == 0, err
    assert len(rows(log_dir / "steps.jsonl")) == 40
    assert len(seen_rows - {0}) >= 2, seen_rows  # rows came in more than one write during the epoch
    assert len(seen_sizes - {0}) >= 3, seen_sizes  # the event file's header, then two writes of rows
