"""Checkpoint writes under faults: a save_dir that fills up mid-run (a full Colab disk, a Drive over
quota) or turns read-only is one line and exit 1, and every checkpoint already on disk stays whole;
a disk slower than the epochs holds at most the memory budget of checkpoints waiting for it; Ctrl-C
waits for what was handed over; the writer thread ends with its run.
"""
from __future__ import annotations

import dis
import errno
import functools
import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref

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


def _interrupted_at_line(target: int, call) -> int:
    """call() with KeyboardInterrupt raised at the target-th line it runs in the hand-off's files,
    as a Ctrl-C raises at whatever line the training thread is on; returns how many lines it ran."""
    seen = 0

    def interrupt(frame, event, arg):
        nonlocal seen
        if event == "line" and frame.f_code.co_filename.endswith(HAND_OFF):
            seen += 1
            if seen == target:
                raise KeyboardInterrupt
        return interrupt

    sys.settrace(interrupt)
    try:
        call()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    return seen


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
        lines_run = _interrupted_at_line(line, functools.partial(writer_.save, state, 2, best=True))
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
        if lines_run < line:  # save() ran fewer lines than this: every one has been tried
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
        lines_run = _interrupted_at_line(line, writer.close)
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
        if lines_run < line:
            break
    assert line > 5, line  # close() and Thread.join() ran that many lines


def _wait_for_disk(folder, name: str) -> None:
    deadline = time.monotonic() + 10
    while not (folder / name).exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.005)  # the writer is back waiting for work


def test_a_save_interrupted_before_its_wake_up_does_not_leave_the_next_save_waiting_forever(tmp_path):
    """Ctrl-C between save()'s append and its wake-up leaves a job the idle writer has not seen;
    the next save() over the memory budget waits for it to reach the disk: it must wake the writer
    (it waited forever; close() wakes it itself)."""
    writer = ckpt.CheckpointWriter(tmp_path, keep_last=None, memory_budget=1)  # every save waits for the disk
    state = {"weights": torch.arange(1000.0)}
    writer.save(state, 1, best=False)
    _wait_for_disk(tmp_path, "checkpoint-epoch1.pth")

    def interrupt(frame, event, arg):
        if frame.f_code is not ckpt.CheckpointWriter.save.__code__:
            return None
        if event == "line" and "self._wake.put" in LINES[frame.f_lineno - 1]:
            raise KeyboardInterrupt
        return interrupt

    LINES = open(ckpt.__file__).read().splitlines()
    sys.settrace(interrupt)
    with pytest.raises(KeyboardInterrupt):
        writer.save(state, 2, best=True)
    sys.settrace(None)
    signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        writer.save(state, 3, best=False)
    except TimeoutError:
        writer._wake.put(None)
        pytest.fail("save() waited forever for a job the writer was never woken for")
    finally:
        signal.alarm(0)
        writer.close()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [f"checkpoint-epoch{e}.pth" for e in (1, 2, 3)]


def _signal_reachable(code) -> set:
    """Where a real SIGINT can raise in CPython 3.11: after a call returns (CALL's eval-breaker
    check), at a function's RESUME, at a backward jump's target; the offsets of those instructions."""
    instructions = list(dis.get_instructions(code))
    where = {i.offset for i in instructions if i.opname == "RESUME"}
    where |= {cur.offset for prev, cur in zip(instructions, instructions[1:])
              if prev.opname in ("CALL", "CALL_FUNCTION_EX")}
    return where | {i.argval for i in instructions if i.opname.startswith("JUMP_BACKWARD")}


@pytest.mark.parametrize("caller", ["save", "close"])
def test_a_write_error_reaches_the_caller_once_whatever_instruction_a_ctrl_c_lands_on(tmp_path, caller):
    """A write error waits for the training thread; Ctrl-C lands on each instruction of
    checkpoint.py where a signal can raise, while save() or close() reports it; close() again (the
    Ctrl-C path): the error reaches the caller exactly once. (It was lost when the Ctrl-C came after
    _check() had taken it and before its raise: the RuntimeError's construction is a call.)"""
    state = {"weights": torch.arange(10.0)}
    position = 0
    while True:
        position += 1
        folder = tmp_path / f"at{position}"
        folder.mkdir()
        (folder / "checkpoint-epoch1.pth").mkdir()  # os.replace onto a folder fails
        writer = ckpt.CheckpointWriter(folder, keep_last=None)
        writer.save(state, 1, best=False)
        deadline = time.monotonic() + 10
        while writer._jobs and time.monotonic() < deadline:
            time.sleep(0.001)
        seen, reported = [0], 0

        def interrupt(frame, event, arg, seen=seen, target=position):
            if frame.f_code.co_filename != ckpt.__file__:
                return None
            frame.f_trace_opcodes, frame.f_trace_lines = True, False
            if event == "opcode" and frame.f_lasti in _signal_reachable(frame.f_code):
                seen[0] += 1
                if seen[0] == target:
                    raise KeyboardInterrupt
            return interrupt

        sys.settrace(interrupt)
        try:
            writer.save(state, 2, best=False) if caller == "save" else writer.close()
        except KeyboardInterrupt:
            pass
        except RuntimeError:
            reported += 1
        finally:
            sys.settrace(None)
        try:
            writer.close()
        except RuntimeError:
            reported += 1
        assert reported == 1, f"the write error reached the caller {reported} times (Ctrl-C at position {position})"
        if seen[0] < position:
            break
    assert position > 5, position


def test_a_failed_write_does_not_keep_its_checkpoint_in_memory(tmp_path, monkeypatch):
    """The error of a failed write waits for the training thread, and then travels in the error it
    raises (a notebook keeps the last one): its traceback must not hold the job's serialised bytes
    (4 GB on Colab, uncounted by the memory budget)."""
    buffers = []
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buffers.append(weakref.ref(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    (tmp_path / "checkpoint-epoch1.pth").mkdir()
    writer = ckpt.CheckpointWriter(tmp_path, keep_last=None)
    writer.save({"weights": torch.zeros(1000)}, 1, best=False)
    with pytest.raises(RuntimeError, match="could not write a checkpoint") as raised:
        writer.close()
    gc.collect()
    assert buffers[0]() is None, "the failed job's bytes are still in memory"
    assert "os.replace" in "".join(traceback.format_exception(raised.value.__cause__))


def test_save_after_a_close_interrupted_anywhere_is_refused_not_dropped(tmp_path):
    """close() interrupted after it queued its end of work: a save() after it must be refused, not
    queued behind that end, where the second close() returned without writing it."""
    writer = ckpt.CheckpointWriter(tmp_path, keep_last=None)
    lines = open(ckpt.__file__).read().splitlines()

    def interrupt(frame, event, arg):
        if frame.f_code is not ckpt.CheckpointWriter.close.__code__:
            return None
        if event == "line" and "self._jobs.append(None)" in lines[frame.f_lineno - 2]:
            raise KeyboardInterrupt
        return interrupt

    sys.settrace(interrupt)
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    sys.settrace(None)
    with pytest.raises(RuntimeError, match="is closed"):
        writer.save({"weights": torch.zeros(3)}, 1, best=False)
    writer.close()


@pytest.mark.timeout(120)
def test_a_crash_after_a_write_error_still_writes_the_waiting_best_and_says_so(save_dir, monkeypatch):
    """Epoch 1's write fails once (a Drive hiccup); epochs 2-3 are short, their best waits in memory;
    epoch 4 crashes (CUDA out of memory). save() of the waiting best raised epoch 1's error before
    taking the state, and the crash path dropped both: no checkpoint on disk, so train.py discarded
    the run's folders, logs and all, and the write error was never shown."""
    import trainer as trainer_pkg

    real_replace, failed = os.replace, []

    def flaky_replace(src, dst, *args, **kwargs):
        if str(dst).endswith("checkpoint-epoch1.pth") and not failed:
            failed.append(dst)
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    real_epoch = trainer_pkg.Trainer._train_epoch

    def train_epoch(self, epoch):
        if epoch == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_epoch(self, epoch)

    monkeypatch.setattr(os, "replace", flaky_replace)
    monkeypatch.setattr(trainer_pkg.Trainer, "_train_epoch", train_epoch)
    with pytest.raises(torch.OutOfMemoryError):
        train_in_process(save_dir, "--set", "trainer.epochs=10", "--set", "trainer.early_stop=null",
                         "--set", "trainer.save_min_interval=1000", "--set", "trainer.keep_last=null", run_id="oom")
    assert failed
    run_dir, log_dir = save_dir / "models" / "Digits_MLP" / "oom", save_dir / "log" / "Digits_MLP" / "oom"
    assert run_dir.is_dir() and log_dir.is_dir(), "the run's folders were discarded"
    best = load_checkpoint(run_dir / "model_best.pth")
    assert best["epoch"] in (2, 3) and (run_dir / f"checkpoint-epoch{best['epoch']}.pth").exists()
    assert "could not write a checkpoint" in (log_dir / "info.log").read_text()
