"""The bootstrap cell with Drive mounted: persistence is on by default, each runtime publishes its
address on Drive, and a laptop that connected once with `--follow` needs no paste afterwards.

The cell runs as a script with the google.colab stand-in (the only Colab part we fake; its
`drive.mount` makes <mount>/MyDrive); the server is real (`--tunnel direct`, detached, a new
port per runtime); the laptop's "Google Drive for desktop" copy is the same folder here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from _followkit import clean_env, remotectl, ssh
from helpers.serverkit import assert_nothing_left

from remote import card as cards
from remote import endpoint_record as records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]
FAKE_COLAB = REPO / "tests" / "helpers" / "fake_colab"


def _cell() -> str:
    nb = nbformat.read(REPO / "scripts" / "colab_bootstrap.ipynb", as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"][0].source


def test_a_mounted_drive_means_the_next_runtime_needs_only_the_cell(tmp_path, laptop, request):
    mount = tmp_path / "drive"
    (mount / "MyDrive").mkdir(parents=True)  # mounted from the Files panel before the cell runs
    secrets = tmp_path / "colab-secrets.json"
    secrets.write_text(json.dumps({"REMOTECTL_AUTHORIZED_KEY": laptop.public}))
    script = tmp_path / "bootstrap.py"
    script.write_text(_cell())
    identity = mount / "MyDrive" / "remotectl" / "identity"
    states = []
    request.addfinalizer(lambda: [remotectl("down", "--state-dir", str(s)) for s in states])

    def runtime(n: int) -> cards.Card:
        project = tmp_path / f"runtime-{n}" / "project"
        (project / "saved").mkdir(parents=True)
        state_dir = tmp_path / f"state-{n}"
        states.append(state_dir)
        env = clean_env(REMOTECTL_TUNNEL="direct", REMOTECTL_STATE_DIR=str(state_dir), REMOTECTL_DETACH="1",
                        REMOTECTL_PROJECT_DIR=str(project), REMOTECTL_DRIVE_MOUNT=str(mount),
                        REMOTECTL_REPO_URL="file:///nonexistent", FAKE_COLAB_SECRETS=str(secrets),
                        PYTHONPATH=os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])))
        env.pop("REMOTECTL_USE_DRIVE", None)  # the default decides
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "--follow" in done.stdout  # the cell says how to follow it
        return cards.decode(done.stdout.strip().splitlines()[-1])

    first = runtime(1)
    record = records.verify((identity / records.FILE_NAME).read_text(), first.host_key)
    assert (record.host, record.port) == (first.host, first.port)
    assert laptop.connect(first.encode(), str(identity)).returncode == 0
    assert remotectl("down", "--state-dir", str(states[0])).returncode == 0
    assert_nothing_left(states[0])

    second = runtime(2)
    assert second.port != first.port and second.host_key == first.host_key
    out = ssh(laptop.ssh_dir, "colab", "pwd")  # no remotectl command on the laptop since the first
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
