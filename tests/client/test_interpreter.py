"""The probe's interpreter comparison, run for real: the shell snippet in bash with a PATH we choose.

Over ssh the same snippet runs in the login shell; here bash gets a clean environment, so
which `python3` comes first is ours to set: a real venv without torch, or the test's own
interpreter (which has torch). The remote side is untrusted, so hostile output is fed too.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from remote.client import interpreter

HERE = str(Path(sys.executable).parent)


def _run(tmp_path: Path, path: str, up: str = sys.executable) -> str:
    env = {"PATH": path, "HOME": str(tmp_path)}
    if up:
        env["REMOTECTL_PYTHON"] = up
    return subprocess.run(["/bin/bash", "-c", interpreter.shell_snippet()], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path).stdout


@pytest.fixture(scope="module")
def other_python(tmp_path_factory) -> Path:
    """Another real Python, without torch: what `conda init` or `pyenv init` would put first."""
    folder = tmp_path_factory.mktemp("other") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder


def test_another_python_first_on_path_is_named_with_the_cause_and_the_fix(tmp_path, other_python):
    out = _run(tmp_path, f"{other_python / 'bin'}:/usr/bin:/bin")
    report = interpreter.report(out)
    assert report is not None and not report["ok"]
    assert report["up"]["executable"] == sys.executable and report["up"]["torch"]
    assert report["differ"] == ["python3", "python"]
    assert report["ssh"]["python3"]["prefix"] == str(other_python) and report["ssh"]["python3"]["torch"] is None
    advice = report["advice"]
    first, cause, fix = advice.splitlines()
    assert f"`python3` and `python` are {other_python / 'bin' / 'python3'}" in first
    assert "no torch" in first and f"the server ran under, {sys.executable} (Python" in first
    assert "~/.bashrc" in cause and "PATH" in cause
    assert f"`{shlex.quote(sys.executable)} project/train.py -c project/config.json`" in fix
    assert "$REMOTECTL_PYTHON" in fix and f"export PATH={shlex.quote(HERE)}:$PATH" in fix


def test_the_servers_own_python_first_on_path_is_no_warning(tmp_path):
    shims = tmp_path / "shims"  # as pyenv's: scripts that exec the real interpreter
    shims.mkdir()
    for name in ("python3", "python"):
        (shims / name).write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
        (shims / name).chmod(0o755)
    report = interpreter.report(_run(tmp_path, f"{shims}:/usr/bin:/bin"))
    assert report is not None and report["ok"] and report["differ"] == [] and report["advice"] is None
    assert report["ssh"]["python3"]["path"] == str(shims / "python3")
    assert report["ssh"]["python3"]["prefix"] == sys.prefix


def test_no_python_on_path_and_an_older_server(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = interpreter.report(_run(tmp_path, str(empty)))
    assert report["ssh"] == {} and report["differ"] == ["python3", "python"]
    assert "neither `python3` nor `python` is on PATH" in report["advice"]
    # a server that does not say which Python it runs: nothing to compare, nothing claimed
    assert interpreter.report(_run(tmp_path, f"{HERE}:/usr/bin:/bin", up="")) is None


def test_a_server_python_that_no_longer_runs(tmp_path):
    gone = tmp_path / "gone" / "bin" / "python"
    report = interpreter.report(_run(tmp_path, f"{HERE}:/usr/bin:/bin", up=str(gone)))
    assert not report["ok"] and report["up"]["executable"] is None
    assert f"{gone}, does not run over ssh" in report["advice"]


def test_hostile_remote_output_is_contained():
    evil = "/usr/bin/\x1b]0;owned\x07python\x1b[2J"
    lines = [
        "@@interp " + json.dumps({"label": "up", "path": "/srv/py", "executable": "/srv/py", "prefix": "/srv",
                                  "real": "/srv/py", "version": "3.11.0", "torch": "2.3.0"}),
        "@@interp " + json.dumps({"label": "python3", "path": evil, "executable": evil, "prefix": "/usr",
                                  "real": evil, "version": "3.11\x1b[31m", "torch": None}),
        "@@interp " + json.dumps({"label": "rm -rf /", "executable": "/x"}),  # not a label we asked for
        "@@interp " + json.dumps({"label": "python", "executable": ["not", "text"], "prefix": 7}),
        "@@interp {not json",
        "@@interp " + json.dumps({"label": "python3", "executable": "/second/answer/ignored"}),
        "@@interp " + json.dumps({"label": "up", "executable": "/x" * 100000}),
    ]
    report = interpreter.report("\n".join(lines))
    assert set(report["ssh"]) == {"python3", "python"} and report["up"]["executable"] == "/srv/py"
    assert report["ssh"]["python"]["executable"] is None  # wrong types are dropped, not trusted
    advice = report["advice"]
    assert "\x1b" not in advice and "\x07" not in advice
    assert "/usr/bin/?]0;owned?python?[2J" in advice and "/second/answer" not in advice
