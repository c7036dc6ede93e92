"""A save_dir that fills up mid-run (a full Colab disk, a Drive over quota): one line, exit 1,
and every checkpoint already on disk stays complete and loadable. And a disk slower than the
epochs: the writer holds at most its memory budget of checkpoints waiting for it.

The small disk is real: a tmpfs of a few hundred KiB mounted over the save_dir inside a private
mount namespace (`unshare --mount`, needs root as the rest of the suite does), so nothing
outside the test's folder sees it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest
import torch
from _template_run import REPO, env_for_runs, load_checkpoint, train_cmd
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
    assert run_output.splitlines()[-1] == "train.py: error: No space left on device", result.stderr
    assert "Traceback" not in run_output


def _second_save_waits(folder, budget: int) -> bool:
    """Block the writer on its first temp file (a FIFO nobody reads yet), then save again: does
    the second save() wait for the first to leave memory? (The FIFO then fails the first write at
    its fsync: that error must still reach the training thread, from save() or wait().)"""
    writer = ckpt.CheckpointWriter(folder, keep_last=None, memory_budget=budget)
    os.mkfifo(ckpt.temp_path(folder / "checkpoint-epoch1.pth"))
    state = {"weights": torch.zeros(1000)}
    writer.save(state, 1, periodic=True, save_best=False)
    errors = []

    def second_save():
        try:
            writer.save(state, 2, periodic=True, save_best=False)
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
            writer.wait()
        errors.append(raised.value)
    assert "could not write a checkpoint" in str(errors[0])
    return waited


def test_checkpoints_over_the_memory_budget_wait_for_the_disk_and_small_ones_do_not(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    assert _second_save_waits(tmp_path / "big", budget=1)  # each checkpoint is over it: one in memory at a time
    assert not _second_save_waits(tmp_path / "small", budget=256 << 20)  # queued behind the slow one
