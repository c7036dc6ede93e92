"""A save_dir that fills up mid-run (a full Colab disk, a Drive over quota): one line, exit 1,
and every checkpoint already on disk stays complete and loadable.

The small disk is real: a tmpfs of a few hundred KiB mounted over the save_dir inside a private
mount namespace (`unshare --mount`, needs root as the rest of the suite does), so nothing
outside the test's folder sees it.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from _template_run import REPO, env_for_runs, load_checkpoint, train_cmd

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
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


@pytest.mark.timeout(320)
def test_a_disk_too_full_for_the_logs_is_one_line_too(tmp_path):
    result = train_on_small_disk(tmp_path / "saved", "8k")  # room for config.json, not the first epoch's logs
    run_output = result.stderr.split("ls: ")[0]  # what the listing says of a run that wrote nothing is not ours
    assert result.returncode == 1, result.stderr
    assert run_output.splitlines()[-1] == "train.py: error: No space left on device", result.stderr
    assert "Traceback" not in run_output
