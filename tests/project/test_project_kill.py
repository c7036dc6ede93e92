"""SIGKILL during checkpoint writes, then `--resume auto`, as after a Colab runtime reset."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
from _template_run import REPO, env_for_runs, load_checkpoint, train_cmd

# a checkpoint every epoch (~0.05 s each); a save (write + fsync + rename) is a few ms of it
EPOCHS = 60
KILLABLE = ["--set", "trainer.keep_last=2", "--set", f"trainer.epochs={EPOCHS}", "--set", "lr_scheduler=null",
       "--set", "trainer.early_stop=null"]


def start(save_dir):
    cmd = train_cmd(save_dir, *KILLABLE, "--resume", "auto", run_id="killed")
    return subprocess.Popen(cmd, cwd=REPO, env=env_for_runs(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def final_files(run_dir):
    return [p for p in run_dir.iterdir() if p.suffix == ".pth" and not p.name.startswith(".tmp-")]


def wait_for(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            return None
        time.sleep(0.0005)
    return None


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigkill_during_saves_leaves_only_complete_checkpoints_and_resume_auto_continues(save_dir):
    run_dir = save_dir / "models" / "Digits_MLP" / "killed"
    rng = random.Random(7)
    mid_save_kills = 0
    newest_before = 0
    procs = []
    try:
        for attempt in range(10):
            if attempt >= 3 and mid_save_kills >= 2:
                break
            proc = start(save_dir)
            procs.append(proc)
            # let this attempt write at least one checkpoint of its own
            target = newest_before + 1
            assert wait_for(lambda t=target: (run_dir / f"checkpoint-epoch{t}.pth").exists(), 180, proc), \
                proc.stderr.read() if proc.poll() is not None else "no checkpoint appeared"
            if attempt % 2 == 0:
                # kill the moment a temp file shows up: the process is inside a save
                temp = wait_for(lambda: [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")], 60, proc)
                kill(proc)
                if temp and any(p.exists() for p in temp):
                    mid_save_kills += 1
            else:
                time.sleep(rng.uniform(0.0, 0.5))
                kill(proc)
            # every file under its final name loads completely
            for path in final_files(run_dir):
                state = load_checkpoint(path)
                assert {"epoch", "state_dict", "optimizer", "config", "rng"} <= set(state), path
            epochs = [int(p.stem.split("epoch")[1]) for p in run_dir.glob("checkpoint-epoch*.pth")]
            assert epochs, "a kill removed every checkpoint"
            assert max(epochs) >= newest_before
            newest_before = max(epochs)
        print(f"{len(procs)} kills, {mid_save_kills} of them inside a save")
        assert mid_save_kills >= 2, "kills did not land inside saves"

        # the same command once more: it resumes from the newest good checkpoint and finishes
        proc = subprocess.run(train_cmd(save_dir, *KILLABLE, "--resume", "auto", run_id="killed"), cwd=REPO,
                              env=env_for_runs(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"resumed from {run_dir / f'checkpoint-epoch{newest_before}.pth'}" in proc.stdout
        assert f"continuing at epoch {newest_before + 1}" in proc.stdout
        assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
        assert load_checkpoint(run_dir / f"checkpoint-epoch{EPOCHS}.pth")["epoch"] == EPOCHS
        log_dir = save_dir / "log" / "Digits_MLP" / "killed"
        epochs_logged = [int(line.split('"epoch": ')[1].split(",")[0])
                         for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
        assert epochs_logged == list(range(1, EPOCHS + 1))  # each epoch once, despite the kills
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill(proc)


@pytest.mark.slow
def test_resume_auto_starts_fresh_then_continues_the_latest_run_and_never_overwrites(train):
    run = train("--set", "trainer.epochs=1", "--resume", "auto", run_id="fresh")
    assert run.returncode == 0, run.stderr
    assert "resumed from" not in run.stdout
    assert (run.run_dir / "checkpoint-epoch1.pth").exists()
    # latest run of this name, no --run-id given
    again = train("--set", "trainer.epochs=2", "--resume", "auto", run_id=None)
    assert again.returncode == 0, again.stderr
    assert f"resumed from {run.run_dir / 'checkpoint-epoch1.pth'}" in again.stdout
    assert (run.run_dir / "checkpoint-epoch2.pth").exists()
    # an explicit --run-id that already has checkpoints is not overwritten
    clash = train("--set", "trainer.epochs=1", run_id="fresh")
    assert clash.returncode == 2
    assert "run 'fresh' already has checkpoints" in clash.stderr and "--resume auto" in clash.stderr
    assert os.path.exists(run.run_dir / "checkpoint-epoch1.pth")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_mid_run_is_one_line_and_every_epoch_it_checkpointed_is_on_disk(save_dir):
    """SIGINT (Ctrl-C, Colab's stop button) at random points: exit 130 with one line, every epoch the
    loop checkpointed before the signal is a whole file, and --resume auto continues from the newest."""
    run_dir = save_dir / "models" / "Digits_MLP" / "stopped"
    log_dir = save_dir / "log" / "Digits_MLP" / "stopped"
    args = ["--set", "trainer.keep_last=null", "--set", f"trainer.epochs={EPOCHS}", "--set", "lr_scheduler=null",
            "--set", "trainer.early_stop=null", "--resume", "auto"]
    rng = random.Random(11)
    for _ in range(3):
        proc = subprocess.Popen(train_cmd(save_dir, *args, run_id="stopped"), cwd=REPO, env=env_for_runs(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = len(list(run_dir.glob("checkpoint-epoch*.pth"))) if run_dir.exists() else 0
        assert wait_for(lambda d=done: len(list(run_dir.glob("checkpoint-epoch*.pth"))) > d, 180, proc)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # it finished first
            break
        assert proc.returncode == 130, err
        assert err.splitlines()[-1] == "train.py: interrupted; continue with --resume auto", err
        assert "Traceback" not in err
        logged = [int(line.split('"epoch": ')[1].split(",")[0]) for line in
                  (log_dir / "metrics.jsonl").read_text().splitlines()]
        saved = sorted(int(p.stem.split("epoch")[1]) for p in run_dir.glob("checkpoint-epoch*.pth"))
        assert saved == list(range(1, saved[-1] + 1))  # no hole: each handed-over save reached the disk
        assert saved[-1] >= logged[-1] - 1  # at most the epoch the signal interrupted is missing
        assert load_checkpoint(run_dir / f"checkpoint-epoch{saved[-1]}.pth")["epoch"] == saved[-1]
        assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
        if saved[-1] == EPOCHS:  # the signal came after the last epoch (while the run ended): done
            break


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_while_torch_loads_is_one_line(save_dir):
    """Ctrl-C in the seconds train.py spends importing torch: no import traceback, exit 130."""
    for delay in (0.5, 1.0):  # inside `import torch` here; past it on a fast machine: the same one line
        proc = subprocess.Popen(train_cmd(save_dir, run_id="early"), cwd=REPO, env=env_for_runs(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("train.py: interrupted"), err


# stands for torch's or W&B's exit hooks (W&B's uploads a run's files): slow while Python shuts down
SLOW_EXIT_HOOK = """import atexit, os, pathlib, time
def _slow_exit_hook():
    pathlib.Path(os.environ["EXIT_HOOK_MARK"]).touch()
    time.sleep(30)
atexit.register(_slow_exit_hook)
"""


@pytest.mark.timeout(180)
def test_ctrl_c_while_python_shuts_down_leaves_at_once_without_a_traceback(tmp_path, save_dir):
    """The run has finished and written everything; Ctrl-C lands in an exit hook (a second Ctrl-C
    after an interrupted run lands there too): train.py leaves at once with the run's exit code,
    not with 'Exception ignored in atexit callback' and a traceback after its last line."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_EXIT_HOOK)
    mark = tmp_path / "exiting"
    env = {**env_for_runs(), "EXIT_HOOK_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(train_cmd(save_dir, "--set", "trainer.epochs=1", run_id="leaving"), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mark.exists(), proc.communicate()[1][-3000:]
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - asked < 10  # not the hook's 30 s
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert (save_dir / "log" / "Digits_MLP" / "leaving" / "summary.json").exists()
