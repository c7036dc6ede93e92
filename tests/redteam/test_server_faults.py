"""The remote end tried as a fault would leave it: records in the state dir that name a process
that is not ours (a pid without its start time, a recycled pid with the right start time but
someone else's arguments, fields of the wrong type), and state dirs whose paths sshd_config
reads differently (a space, a quote, `#`, `%h`). `down` and `status` never signal a process
they cannot prove is ours; `up` either serves from such a folder or refuses it up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.serverkit import assert_nothing_left
from helpers.sshkit import client_key, pinned_ssh_config, remotectl, ssh, up_detached

from remote.server.processes import start_time

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def bystander():
    """An unrelated process of this machine's (started with arguments that name nothing of ours)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _state_dir(tmp_path, record) -> os.PathLike:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "children.json").write_text(json.dumps(record))
    return folder


def _records(pid: int, start: int):
    marker = ["-f", "/elsewhere/state/sshd_config"]
    return {
        "owner without a start time": {"owner": {"pid": pid, "start": None, "mode": "supervisor"}},
        "child without a start time": {"owner": {"pid": 2 ** 22 + 7, "start": 1, "mode": "kernel"},
                                       "children": {"sshd": {"marker": [], "expected_at": 0, "pid": pid,
                                                             "start": None}}},
        "recycled pid, foreign arguments": {"owner": {"pid": 2 ** 22 + 7, "start": 1, "mode": "kernel"},
                                            "children": {"sshd": {"marker": marker, "expected_at": 0,
                                                                  "pid": pid, "start": start}}},
    }


@pytest.mark.parametrize("case", list(_records(0, 0)))
def test_down_and_status_never_signal_a_process_they_cannot_prove_is_theirs(case, bystander, tmp_path):
    state_dir = _state_dir(tmp_path, _records(bystander.pid, start_time(bystander.pid))[case])
    status = remotectl("status", "--json", "--state-dir", str(state_dir))
    assert status.returncode == 3, status.stdout  # nothing of ours runs
    assert json.loads(status.stdout)["live"] == {}
    down = remotectl("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped nothing" in down.stdout
    assert bystander.poll() is None, "down signalled a process it did not start"
    assert not (state_dir / "children.json").exists()


@pytest.mark.parametrize("record", [
    {"owner": {"pid": "1", "start": None, "mode": "supervisor"}},
    {"owner": {"pid": 12345, "start": 1, "mode": "supervisor"},
     "children": {"sshd": {"marker": [], "expected_at": "soon"}}},
    {"owner": {"pid": 12345, "start": 1, "mode": "supervisor"}, "children": {"sshd": {"marker": "-f x",
                                                                                     "expected_at": 0}}},
], ids=["pid-as-text", "expected-at-as-text", "marker-as-text"])
def test_a_damaged_record_is_one_line_with_the_fix_and_signals_nothing(record, bystander, tmp_path):
    state_dir = _state_dir(tmp_path, record)
    for command in ("status", "down"):
        result = remotectl(command, "--state-dir", str(state_dir))
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("remotectl: error:")]
        assert lines == [f"remotectl: error: cannot read {state_dir}/children.json: "
                         + lines[0].split("children.json: ", 1)[1]], result.stderr
        assert "If no server runs from" in result.stderr and "report it" not in result.stderr
    assert bystander.poll() is None


@pytest.mark.parametrize("name", ["with space", "it's", "hash#tag", "pct%hpct"])
def test_a_state_dir_whose_path_sshd_config_reads_differently_still_serves(name, tmp_path):
    key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public)
    state_dir = tmp_path / name / "state"
    info = up_detached(state_dir, "--tunnel", "direct", env=env)
    try:
        result = ssh(pinned_ssh_config(tmp_path / "ssh", info, key), "echo served")
        assert result.stdout.strip() == "served", result.stderr
    finally:
        down = remotectl("down", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert_nothing_left(state_dir, info)


@pytest.mark.parametrize("name", ['dq"x', "back\\slash", "new\nline"])
def test_a_state_dir_sshd_config_cannot_name_is_refused_up_front(name, tmp_path):
    _key, public = client_key(tmp_path / "client")
    state_dir = tmp_path / name / "state"
    result = remotectl("up", "--tunnel", "direct", "--state-dir", str(state_dir),
                       env=dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"remotectl: error: --state-dir {str(state_dir)!r} holds ")
    assert "Traceback" not in result.stderr and not (tmp_path / name).exists()
