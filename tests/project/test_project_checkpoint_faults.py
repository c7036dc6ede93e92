"""Checkpoint writes under faults: a save_dir that fills up mid-run (a full Colab disk, a Drive over
quota) or turns read-only is one line and exit 1, and every checkpoint already on disk stays whole;
a disk slower than the epochs holds at most the memory budget of checkpoints waiting for it; Ctrl-C
waits for what was handed over; the writer thread ends with its run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from _template_run import REPO, env_for_runs, load_checkpoint, train_cmd
from _template_run import train as train_in_process
from utils import checkpoint as ckpt

needs_mount = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                 reason="needs root and unshare for a private tmpfs")

# in the namespace: mount the small disk over the save_dir, train, then copy out what the run left
SMALL_DISK = """dir=$1; size=$2; shift 2
mount -t tmpfs -o size="$size" tmpfs "$dir" || exit 99
"$@"; status=$?
run="$dir/models/Digits_MLP/full"
echo "--- left:"; ls -A "$run"
cp "$run"/*.pth "$dir.out"/
exit $status"""


def train_on_small_disk(save_dir, size: str, *args: str) -> subprocess.CompletedProcess:
    save_dir.mkdir(parents=True)
    (save_dir.parent / f"{save_dir.name}.out").mkdir()
    cmd = train_cmd(save_dir, "--set", "trainer.epochs=12", "--set", "trainer.early_stop=null", *args, run_id="full")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SMALL_DISK, "sh",
                           str(save_dir), size, *cmd], cwd=REPO, env=env_for_runs(), capture_output=True,
                          text=True, timeout=300)


@needs_mount
@pytest.mark.timeout(320)
def test_a_save_dir_that_fills_up_stops_with_one_line_and_keeps_the_checkpoints_it_wrote(tmp_path):
    save_dir = tmp_path / "saved"
    # a checkpoint of the default config is ~140 KB: 600 KiB holds the logs and a few of them
    result = train_on_small_disk(save_dir, "600k", "--set", "trainer.keep_last=null")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors and errors[0].startswith(f"train.py: error: could not write a checkpoint in {save_dir}"), \
        result.stderr
    assert "No space left on device" in errors[0]
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    left = result.stdout.split("--- left:")[-1].split()
    assert not [name for name in left if name.startswith(".tmp-")], left  # no half-written file stays
    kept = sorted((tmp_path / "saved.out").iterdir())
    epochs = [p for p in kept if p.name.startswith("checkpoint-epoch")]
    assert 1 <= len(epochs) < 12, left
    for path in kept:  # each file that has its final name is whole
        state = load_checkpoint(path)
        assert state["epoch"] >= 1 and state["state_dict"]


@needs_mount
@pytest.mark.timeout(320)
def test_a_disk_too_full_for_the_logs_is_one_line_too(tmp_path):
    result = train_on_small_disk(tmp_path / "saved", "8k")  # room for config.json, not the first epoch's logs
    run_output = result.stderr.split("ls: ")[0]  # what the listing says of a run that wrote nothing is not ours
    assert result.returncode == 1, result.stderr
    logs = tmp_path / "saved" / "log" / "Digits_MLP" / "full"
    # the first log point's row is the first written (steps.jsonl), the epoch's row next
    assert run_output.splitlines()[-1] in [f"train.py: error: [Errno 28] No space left on device: '{logs / name}'"
                                           for name in ("steps.jsonl", "metrics.jsonl")], result.stderr
    assert "Traceback" not in run_output


# in the namespace: train on a roomy tmpfs, and once epoch 3 is saved make the run's folder read-only
READ_ONLY_MID_RUN = """dir=$1; shift
mount -t tmpfs -o size=64m tmpfs "$dir" || exit 99
run="$dir/models/Digits_MLP/ro"
timeout 120 "$@" & pid=$!
while [ ! -e "$run/checkpoint-epoch3.pth" ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done
mount --bind "$run" "$run" && mount -o remount,bind,ro "$run" || exit 98
wait $pid"""


@needs_mount
@pytest.mark.timeout(200)
def test_a_run_folder_that_turns_read_only_mid_run_is_one_line_not_a_hang(tmp_path):
    """A Drive that goes away or a folder remounted read-only fails even the cleanup of a temp
    file: that must not kill the writer thread silently and leave the loop waiting forever."""
    save_dir = tmp_path / "saved"
    save_dir.mkdir()
    cmd = train_cmd(save_dir, "--set", "trainer.epochs=3000", "--set", "trainer.early_stop=null",
                    "--set", "lr_scheduler=null", run_id="ro")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", READ_ONLY_MID_RUN,
                             "sh", str(save_dir), *cmd], cwd=REPO, env=env_for_runs(), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])  # 124: it hung
    run_dir = save_dir / "models" / "Digits_MLP" / "ro"
    assert result.stderr.splitlines()[-1].startswith(
        f"train.py: error: could not write a checkpoint in {run_dir}: [Errno 30] Read-only file system"), \
        result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr


def _second_save_waits(folder, budget: int) -> bool:
    """Block the writer on its first temp file (a FIFO nobody reads yet), then save again: does
    the second save() wait for the first to leave memory? (The FIFO then fails the first write at
    its fsync: that error must still reach the training thread, from save() or close().)"""
    writer = ckpt.CheckpointWriter(folder, keep_last=None, memory_budget=budget)
    os.mkfifo(ckpt.temp_path(folder / "checkpoint-epoch1.pth"))
    state = {"weights": torch.zeros(1000)}
    writer.save(state, 1, best=False)
    errors = []

    def second_save():
        try:
            writer.save(state, 2, best=False)
        except RuntimeError as err:
            errors.append(err)

    second = threading.Thread(target=second_save)
    second.start()
    second.join(timeout=1.0)
    waited = second.is_alive()
    with ckpt.temp_path(folder / "checkpoint-epoch1.pth").open("rb") as fifo:  # the "disk" catches up
        while fifo.read(65536):
            pass
    second.join(timeout=30)
    assert not second.is_alive()
    if not errors:
        with pytest.raises(RuntimeError) as raised:
            writer.close()
        errors.append(raised.value)
    assert "could not write a checkpoint" in str(errors[0])
    return waited


def test_checkpoints_over_the_memory_budget_wait_for_the_disk_and_small_ones_do_not(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    assert _second_save_waits(tmp_path / "big", budget=1)  # each checkpoint is over it: one in memory at a time
    assert not _second_save_waits(tmp_path / "small", budget=256 << 20)  # queued behind the slow one


def _writer_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "checkpoint-writer"]


def test_each_run_ends_its_writer_thread(save_dir):
    """In a notebook one process trains again and again: no writer thread may stay behind."""
    before = len(_writer_threads())
    for run_id in ("a", "b"):
        run = train_in_process(save_dir, "--set", "trainer.epochs=2", run_id=run_id)
        assert run.returncode == 0, run.stderr
        assert len(_writer_threads()) == before


@pytest.mark.timeout(120)
def test_a_crash_mid_run_still_waits_for_the_checkpoints_handed_over_and_ends_the_writer(save_dir, monkeypatch):
    """CUDA out of memory in epoch 4, with a disk slower than the epochs (fsync 0.2 s, as on Drive)
    and epochs 1-3 handed to the writer: when the crash leaves train(), all three are whole on disk
    (a process exits right after, killing the daemon writer mid-write) and no writer thread stays.
    (Only a Ctrl-C used to wait: the crash found no checkpoint on disk yet, and train.py discarded
    the run's folders as unused, with its three epochs' logs.)"""
    real_fsync, real_save, real_backward = os.fsync, torch.save, torch.Tensor.backward
    saves = [0]

    def slow_fsync(fd):
        time.sleep(0.2)
        real_fsync(fd)

    def counting_save(*args, **kwargs):
        saves[0] += 1
        return real_save(*args, **kwargs)

    def backward(tensor, *args, **kwargs):
        if saves[0] >= 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_backward(tensor, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(torch, "save", counting_save)
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    threads_before = len(_writer_threads())
    with pytest.raises(torch.OutOfMemoryError):
        train_in_process(save_dir, "--set", "trainer.epochs=10", "--set", "trainer.keep_last=null", run_id="oom")
    run_dir = save_dir / "models" / "Digits_MLP" / "oom"
    on_disk = sorted(p.name for p in run_dir.iterdir())
    assert on_disk == [*(f"checkpoint-epoch{e}.pth" for e in (1, 2, 3)), "config.json", "model_best.pth"], on_disk
    for epoch in (1, 2, 3):
        assert load_checkpoint(run_dir / f"checkpoint-epoch{epoch}.pth")["epoch"] == epoch
    assert len(_writer_threads()) == threads_before


@pytest.mark.timeout(120)
def test_ctrl_c_after_the_last_epoch_still_waits_for_the_checkpoints_on_a_slow_disk(save_dir, monkeypatch):
    """A disk slower than the epochs (fsync 0.2 s, as on Drive) keeps the writer ~1 s behind a loop
    of 3 fast epochs, whose saves all fit in its queue; SIGINT 0.1 s after the last epoch is logged
    lands in the final wait: the checkpoints handed over must all be on disk when train.py returns."""
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.2)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    epochs = 3
    metrics = save_dir / "log" / "Digits_MLP" / "slow" / "metrics.jsonl"
    main = threading.main_thread().ident

    def interrupt_after_the_last_epoch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if metrics.exists() and f'"epoch": {epochs},' in metrics.read_text():
                time.sleep(0.1)  # past the last save's serialisation
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=interrupt_after_the_last_epoch)
    watcher.start()
    run = train_in_process(save_dir, "--set", f"trainer.epochs={epochs}", "--set", "trainer.keep_last=null",
                           run_id="slow")
    watcher.join()
    assert run.returncode == 130, run.stderr
    on_disk = sorted(p.name for p in (save_dir / "models" / "Digits_MLP" / "slow").iterdir())
    assert on_disk == [*(f"checkpoint-epoch{e}.pth" for e in range(1, epochs + 1)), "config.json", "model_best.pth"]


HAND_OFF = ("checkpoint.py", "queue.py", "threading.py")  # where save() hands its bytes to the writer


def hung(signum, frame):
    raise TimeoutError


@pytest.mark.parametrize("writer", ["idle", "busy"])
def test_ctrl_c_at_any_line_of_the_hand_off_leaves_close_able_to_finish(tmp_path, writer):
    """Ctrl-C raises KeyboardInterrupt at whatever line the training thread is on. Raised at each
    line save() runs in turn (its own, the queue's and the threading module's), then close() as the
    Ctrl-C path calls it: close() returns, and what reached the disk is whole. The writer is either
    idle or still inside the previous checkpoint (its temp file a FIFO the test drains after the
    interrupt, which then fails that write at its fsync). (Seen: a KeyboardInterrupt inside
    queue.Queue.put's notify left a stale waiter that ate close()'s wake-up; one at the exit of
    threading.Semaphore.acquire's `with` left the semaphore's lock held, and a busy writer then
    blocked releasing its slot, so close() waited forever: CI hit that one at random.)"""
    state = {"weights": torch.arange(1000.0)}
    line = 0
    while True:
        line += 1
        folder = tmp_path / f"line{line}"
        folder.mkdir()
        writer_ = ckpt.CheckpointWriter(folder, keep_last=None)
        first_temp = ckpt.temp_path(folder / "checkpoint-epoch1.pth")
        if writer == "busy":
            os.mkfifo(first_temp)  # the writer blocks opening it until the test reads it
        writer_.save(state, 1, best=False)
        if writer == "idle":
            deadline = time.monotonic() + 10
            while not (folder / "checkpoint-epoch1.pth").exists() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.005)  # the writer is back waiting for work
        seen = [0]

        def interrupt(frame, event, arg, seen=seen, target=line):
            if event == "line" and frame.f_code.co_filename.endswith(HAND_OFF):
                seen[0] += 1
                if seen[0] == target:
                    raise KeyboardInterrupt
            return interrupt

        sys.settrace(interrupt)
        try:
            writer_.save(state, 2, best=True)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        signal.signal(signal.SIGALRM, hung)  # close() in this (the main) thread, as the Ctrl-C path calls it
        signal.alarm(20)
        try:
            if writer == "busy":
                with first_temp.open("rb") as fifo:  # the "disk" catches up; the FIFO's fsync fails
                    while fifo.read(65536):
                        pass
                with pytest.raises(RuntimeError, match="could not write a checkpoint"):
                    writer_.close()
            else:
                writer_.close()
        except TimeoutError:
            pytest.fail(f"close() hung after a Ctrl-C at hand-off line {line} of save(), the writer {writer}")
        finally:
            signal.alarm(0)
        for path in folder.glob("checkpoint-epoch*.pth"):
            assert torch.equal(load_checkpoint(path)["weights"], state["weights"]), path
        if seen[0] < line:  # save() ran fewer lines than this: every one has been tried
            break
    assert line > 10, line


def test_ctrl_c_at_any_line_of_close_then_close_again_finishes(tmp_path):
    """A Ctrl-C inside the final close() sends the run down the Ctrl-C path, which closes again:
    interrupted at each line close() runs in turn (its own and the threading module's), the second
    close() returns and the checkpoint handed over is whole on disk."""
    state = {"weights": torch.arange(1000.0)}
    threads_before = len(_writer_threads())
    line = 0
    while True:
        line += 1
        folder = tmp_path / f"line{line}"
        folder.mkdir()
        writer = ckpt.CheckpointWriter(folder, keep_last=None)
        writer.save(state, 1, best=True)
        seen = [0]

        def interrupt(frame, event, arg, seen=seen, target=line):
            if event == "line" and frame.f_code.co_filename.endswith(HAND_OFF):
                seen[0] += 1
                if seen[0] == target:
                    raise KeyboardInterrupt
            return interrupt

        sys.settrace(interrupt)
        try:
            writer.close()
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        signal.signal(signal.SIGALRM, hung)
        signal.alarm(20)
        try:
            writer.close()
        except TimeoutError:
            pytest.fail(f"the second close() hung after a Ctrl-C at line {line} of the first")
        finally:
            signal.alarm(0)
        assert len(_writer_threads()) == threads_before
        assert torch.equal(load_checkpoint(folder / "checkpoint-epoch1.pth")["weights"], state["weights"])
        if seen[0] < line:
            break
    assert line > 5, line  # close() and Thread.join() ran that many lines
