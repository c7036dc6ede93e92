"""Red-team checks of the batched log writes (BaseTrainer._write_logs): a Ctrl-C or an error that
lands while rows are being written, the CSV logger across a kill and `--resume auto`, and
TensorBoard's reading order of one process's event files. Real processes and real files; W&B is a
stand-in module on PYTHONPATH (it records each run.log and can misbehave on request)."""
from __future__ import annotations

import csv
import itertools
import subprocess
import time

import pytest
from _template_run import REPO, env_for_runs, train_cmd
from test_project_kill import kill, wait_for
from test_project_log_cadence import newest_checkpoint, rows

# a stand-in `wandb`: each run.log goes to $STUB_WANDB_LOG as {"id", "step"}; the first call made
# $STUB_WANDB_SIGINT_AFTER seconds after init sends this process two Ctrl-Cs (the second one stops
# at once, as a user's double Ctrl-C does); any call made $STUB_WANDB_RAISE_AFTER seconds after init
# raises (a logger that fails: network, quota)
STUB_WANDB = '''
import json, os, signal, time

class _Run:
    def __init__(self, run_id):
        self.id, self.t0, self.fired = run_id, time.monotonic(), False

    def log(self, data, step=None):
        with open(os.environ["STUB_WANDB_LOG"], "a") as f:
            f.write(json.dumps({"id": self.id, "step": step}) + "\\n")
        age = time.monotonic() - self.t0
        if "STUB_WANDB_SIGINT_AFTER" in os.environ and not self.fired and age > float(os.environ["STUB_WANDB_SIGINT_AFTER"]):
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        if "STUB_WANDB_RAISE_AFTER" in os.environ and age > float(os.environ["STUB_WANDB_RAISE_AFTER"]):
            raise RuntimeError("stand-in wandb: the network went away")

    def finish(self):
        pass

def init(id=None, **kwargs):
    return _Run(id or "stub-run")
'''

LONG = ["--set", "trainer.epochs=300", "--set", "lr_scheduler=null", "--set", "trainer.early_stop=null",
        "--set", "trainer.keep_last=null", "--set", "trainer.tensorboard=false"]


def stub_env(tmp_path, **settings) -> dict:
    folder = tmp_path / "stub"
    (folder / "wandb").mkdir(parents=True, exist_ok=True)
    (folder / "wandb" / "__init__.py").write_text(STUB_WANDB)
    env = env_for_runs()
    env.update({"PYTHONPATH": str(folder), "STUB_WANDB_LOG": str(tmp_path / "wandb-calls.jsonl"),
                "WANDB_MODE": "offline"})
    env.update({key: str(value) for key, value in settings.items()})
    return env


def epochs_printed(stdout: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in stdout.splitlines() if line.startswith("epoch ")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_ctrl_c_that_lands_inside_a_log_write_keeps_every_epochs_row(save_dir, tmp_path):
    """Two Ctrl-Cs while _write_logs hands rows to W&B (default cadence: short epochs share
    checkpoint writes, a best waits in memory). Every epoch that ran must be in metrics.jsonl, and
    no checkpoint may be newer than its rows (the waiting best is written on the way out)."""
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / "cc" for kind in ("models", "log"))
    cmd = train_cmd(save_dir, *LONG, "--set", "trainer.loggers=[wandb]", run_id="cc", fast=False)
    proc = subprocess.run(cmd, cwd=REPO, env=stub_env(tmp_path, STUB_WANDB_SIGINT_AFTER=0.5), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines()[-1] == "train.py: interrupted; continue with --resume auto", proc.stderr
    ran = epochs_printed(proc.stdout)
    logged = [row["epoch"] for row in rows(log_dir / "metrics.jsonl")]
    newest = newest_checkpoint(run_dir)
    assert logged[:newest] == list(range(1, newest + 1)), (newest, logged)  # guarantee 1
    assert logged == ran, (ran[-1], logged)  # guarantee 2: the rows of every epoch that ran

    resumed = subprocess.run(train_cmd(save_dir, *LONG, "--set", f"trainer.epochs={newest + 2}", "--set",
                                       "trainer.loggers=[wandb]", "--resume", "auto", run_id="cc", fast=False),
                             cwd=REPO, env=stub_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in rows(log_dir / "metrics.jsonl")] == list(range(1, newest + 3))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_logger_that_raises_does_not_cost_metrics_jsonl_the_epochs_that_ran(save_dir, tmp_path):
    """A logger's error ends the run; the rows waiting for the write are still the epochs that ran
    ('on any exception out of the epoch loop' the rows are written): metrics.jsonl is the run's own
    record and must not depend on a third-party logger."""
    log_dir = save_dir / "log" / "Digits_MLP" / "raise"
    cmd = train_cmd(save_dir, *LONG, "--set", "trainer.loggers=[wandb]", run_id="raise", fast=False)
    proc = subprocess.run(cmd, cwd=REPO, env=stub_env(tmp_path, STUB_WANDB_RAISE_AFTER=0.5), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode != 0 and "the network went away" in proc.stderr, proc.stderr
    ran = epochs_printed(proc.stdout)
    assert len(ran) > 2, proc.stdout[-2000:]
    assert [row["epoch"] for row in rows(log_dir / "metrics.jsonl")] == ran


def kill_with_rows_past_the_checkpoint(save_dir, tmp_path, loggers: str, run_id: str) -> int:
    """Checkpoints every 30 s (so only epoch 1's, the first, is on disk), rows every second: kill once
    a few epochs past the checkpoint have reached the files. Returns the checkpoint's epoch."""
    run_dir, log_dir = (save_dir / kind / "Digits_MLP" / run_id for kind in ("models", "log"))
    args = [*LONG, "--set", "trainer.save_min_interval=30", "--set", f"trainer.loggers={loggers}"]
    proc = subprocess.Popen(train_cmd(save_dir, *args, "--resume", "auto", run_id=run_id), cwd=REPO,
                            env=stub_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(rows(log_dir / "metrics.jsonl")) >= 5, 120, proc), proc.stderr.read()
        time.sleep(0.3)  # the loggers get the rows of the same write after the jsonl files; the next is 1 s off
    finally:
        kill(proc)
    newest = newest_checkpoint(run_dir)
    assert 1 <= newest < len(rows(log_dir / "metrics.jsonl"))
    resumed = subprocess.run(train_cmd(save_dir, *args, "--set", f"trainer.epochs={newest + 8}", "--resume", "auto",
                                       run_id=run_id), cwd=REPO, env=stub_env(tmp_path), capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in rows(log_dir / "metrics.jsonl")] == list(range(1, newest + 9))  # holds
    return newest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_csv_after_a_kill_and_resume_auto_has_each_epoch_and_step_once(save_dir, tmp_path):
    """metrics.jsonl and steps.jsonl drop the rows a killed run wrote past its checkpoint; metrics.csv
    and steps.csv must too, or a resumed run's CSV repeats those epochs."""
    newest = kill_with_rows_past_the_checkpoint(save_dir, tmp_path, "[csv]", "csv")
    log_dir = save_dir / "log" / "Digits_MLP" / "csv"
    with (log_dir / "metrics.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in table] == list(range(1, newest + 9))
    with (log_dir / "steps.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(set(steps))


def test_tensorboard_reads_one_processs_event_files_in_the_order_they_were_written(tmp_path, monkeypatch):
    """A notebook trains and resumes in one process, maybe within one second: the event files then
    differ only in their counter, and TensorBoard reads a folder's files in name order (past 9 too)."""
    import logger.visualization as visualization
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setattr(visualization, "_FILE_IDS", itertools.count(8))  # this process's ninth and later files
    for attempt in range(20):  # two writers in one second: microseconds apart, unless a second ends between
        folder = tmp_path / f"run{attempt}"
        started = int(time.time())
        writers = [visualization.TensorboardWriter(folder) for _ in range(2)]
        if int(time.time()) == started:
            break
        for writer in writers:
            writer.close()
    for step, writer in enumerate(writers, start=1):  # the run wrote epoch 1, its resume epoch 2
        writer.log_epoch({"epoch": step, "loss": 1.0 / step}, step, time.time())
        writer.close()
    events = EventAccumulator(str(folder))
    events.Reload()
    assert [event.step for event in events.Scalars("loss/train")] == [1, 2]
