"""SIGKILL at random moments of `up`: nothing is left that `status` misses or `down`/`up` cannot stop.

Each round starts a real `up` (ngrok stand-in, real sshd, probe login) and SIGKILLs one
process at a random moment spread over the time a full start takes, measured first:

    foreground      the `remotectl up` process (it owns sshd and the agent)
    kernel          a Python process that called `remote.up()` (the notebook API)
    supervisor      the detached supervisor, while `up --detach` waits for it
    detach-parent   the `up --detach` process itself (its supervisor must not serve unknown)
    password        the supervisor of a password server, inside a private /etc (see below)

Then: `status` must call whatever still runs "broken" (exit 1) and name it, or say "not
running" (exit 3) when nothing does; then either `down` or the next `up` (rounds alternate)
must leave no process naming the state dir, no records, no token file, the port free, and
(password rounds) the served user's shadow line exactly as before.

REMOTECTL_KILL_ROUNDS=N sets the rounds per kind (default 3); REMOTECTL_KILL_REPORT=FILE
appends one JSON line per kill (kind, delay, where in `up` it landed, how it was cleaned).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import pytest
from helpers import private_etc
from helpers.ngrok_standin import GOOD_TOKEN
from helpers.serverkit import assert_nothing_left, our_processes, status, wait_gone
from helpers.sshkit import CLI, client_key, pid_alive

pytestmark = pytest.mark.timeout(900)

ROUNDS = int(os.environ.get("REMOTECTL_KILL_ROUNDS", "3"))
KERNEL = ("import sys, time, remote\n"
          "remote.up('ngrok', state_dir=sys.argv[1], quiet=True)\n"
          "print('ready', flush=True)\n"
          "time.sleep(3600)\n")
PASSWORD = "kill-test-" + os.urandom(8).hex()


class Runner:
    """Runs commands on the host, or inside a private /etc (password rounds)."""

    def __init__(self, etc: Optional[private_etc.PrivateEtc] = None) -> None:
        self.etc = etc

    def argv(self, command):
        return self.etc.argv(command) if self.etc else list(command)

    def run(self, command, env, timeout=180) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command), capture_output=True, text=True, env=env,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, command, env) -> subprocess.Popen:
        return subprocess.Popen(self.argv(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, text=True)


def _launch(kind: str, state_dir: Path, runner: Runner, env: Dict[str, str]) -> subprocess.Popen:
    if kind == "kernel":
        return runner.popen([sys.executable, "-c", KERNEL, str(state_dir)], env)
    args = [*CLI, "up", "--state-dir", str(state_dir), "--timeout", "60"]
    if kind in ("supervisor", "detach-parent", "password"):
        args.append("--detach")
    return runner.popen(args, env)


def _supervisor_pid(state_dir: Path) -> Optional[int]:
    for pid in our_processes(state_dir):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"remote.server.supervisor" in handle.read():
                    return pid
        except OSError:
            pass
    return None


def _wait_connections_gone(state_dir: Path, timeout: float = 15) -> None:
    """sshd re-executes itself per connection (`sshd ... -f CFG -R`); the probe's ends with its client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_cmdline(p).rstrip().endswith(" -R")
                                              for p in our_processes(state_dir)):
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def _measure(kind: str, state_dir: Path, runner: Runner, env: Dict[str, str]) -> float:
    """Seconds from launch to ready for one undisturbed start (then stopped again)."""
    began = time.monotonic()
    proc = _launch(kind, state_dir, runner, env)
    deadline = began + 90
    while not (state_dir / "state.json").exists() and time.monotonic() < deadline:
        assert proc.poll() is None or kind in ("supervisor", "detach-parent", "password"), proc.stderr.read()
        time.sleep(0.01)
    took = time.monotonic() - began
    assert (state_dir / "state.json").exists(), "up never got ready"
    down = runner.run([*CLI, "down", "--state-dir", str(state_dir)], env)
    assert down.returncode == 0, down.stderr
    proc.kill()
    proc.wait(30)
    assert_nothing_left(state_dir)
    return took


def _where(state_dir: Path) -> str:
    """Which step of `up` the kill landed in, from what had been recorded by then."""
    if (state_dir / "state.json").exists():
        return "ready (card printed or printing)"
    try:
        record = json.loads((state_dir / "children.json").read_text())
    except (OSError, ValueError):
        return "before anything was recorded (checks, lock, clean-up)"
    kids = record.get("children") or {}
    if "agent" in kids:
        return "agent spawning" if kids["agent"].get("pid") is None else "agent started: tunnel or probe"
    if "sshd" in kids:
        return "sshd spawning" if kids["sshd"].get("pid") is None else "sshd started, waiting for its banner"
    return "owner recorded, password or files (no child yet)"


def _kill_round(kind: str, state_dir: Path, runner: Runner, env: Dict[str, str], delay: float,
                clean_with_up: bool, original_shadow: Optional[str], etc) -> Dict:
    proc = _launch(kind, state_dir, runner, env)
    began = time.monotonic()
    victim = None
    while time.monotonic() - began < delay:
        if kind in ("supervisor", "password") and victim is None:
            victim = _supervisor_pid(state_dir)
        time.sleep(0.002)
    if kind in ("supervisor", "password"):
        victim = victim or _supervisor_pid(state_dir)
    effective = kind
    if victim is None:  # the parent (nsenter execs in place: same pid inside the namespace)
        victim = proc.pid
        if kind in ("supervisor", "password"):
            effective = "detach-parent"  # no supervisor yet: the parent is all there is to kill
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        pass
    where = _where(state_dir)
    try:
        proc.wait(90)  # a parent whose supervisor died answers by itself
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
    if effective == "detach-parent":
        # its supervisor either finishes and, finding nobody to tell, tears down, or is serving
        # (state.json alone is not enough: it exists for a moment before a failed answer)
        deadline = time.monotonic() + 90
        while _supervisor_pid(state_dir) and time.monotonic() < deadline:
            if (state_dir / "state.json").exists() and status(state_dir, env=env, runner=runner.run)[0] == 0:
                break
            time.sleep(0.05)
    _wait_connections_gone(state_dir)
    code, report = status(state_dir, env=env, runner=runner.run)
    live = our_processes(state_dir)  # scanned after status: nothing can have started since
    if effective != "detach-parent" or not (state_dir / "state.json").exists():
        if live:
            seen = {pid: _cmdline(pid) for pid in live}
            assert (code, report["state"]) == (1, "broken"), (where, report, seen)
            assert set(report["live"].values()) >= set(live), (where, report["live"], seen)
            assert "remotectl down" in report["fix"]
        else:
            assert (code, report["state"]) in ((3, "not running"), (1, "broken")), (where, report)
    serving = report["state"] == "running"  # only a detached server whose card got out lives on
    assert not serving or effective == "detach-parent", (where, report)
    if clean_with_up:
        again = runner.run([*CLI, "up", "--detach", "--json", "--state-dir", str(state_dir)], env)
        if serving:  # a live server is not a leftover: the next up refuses to take its place
            assert again.returncode == 1 and "already runs" in again.stderr, (where, again.stderr)
        else:
            assert again.returncode == 0, (where, again.stderr)
            assert not [p for p in live if pid_alive(p)], (where, "the next up left the old processes", live)
    result = runner.run([*CLI, "down", "--state-dir", str(state_dir)], env)
    assert result.returncode == 0, (where, result.stderr)
    assert not wait_gone(state_dir), where
    assert_nothing_left(state_dir)
    if original_shadow is not None:
        assert etc.shadow_line("root") == original_shadow, where
        assert not etc.path("remotectl/password-restore.json").exists(), where
    killed = "supervisor" if victim != proc.pid else {
        "foreground": "remotectl up", "kernel": "python calling remote.up()"}.get(kind, "remotectl up --detach")
    return {"kind": kind, "killed": killed, "delay_s": round(delay, 3), "where": where, "left_running": len(live),
            "status": report["state"], "cleaned_by": "up" if clean_with_up else "down"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["foreground", "kernel", "supervisor", "detach-parent", "password"])
def test_sigkill_at_random_points_of_up_leaves_nothing_untracked(ngrok_agent, tmp_path, kind):
    _key, public = client_key(tmp_path / "client")
    env = dict(os.environ, REMOTECTL_AUTHORIZED_KEY=public, NGROK_AUTHTOKEN=GOOD_TOKEN)
    etc = None
    original_shadow = None
    if kind == "password":
        etc = private_etc.PrivateEtc(tmp_path / "ns").start()
        original_shadow = etc.shadow_line("root")
        env["REMOTECTL_PASSWORD"] = PASSWORD
    runner = Runner(etc)
    rng = random.Random(os.environ.get("REMOTECTL_KILL_SEED") or None)
    report = Path(os.environ["REMOTECTL_KILL_REPORT"]) if os.environ.get("REMOTECTL_KILL_REPORT") else None
    try:
        full = _measure(kind, tmp_path / "measure", runner, env)
        for i in range(ROUNDS):
            delay = full * 1.1 * (i + rng.random()) / ROUNDS  # spread over the whole start, and past it
            state_dir = tmp_path / f"round-{i}"
            outcome = _kill_round(kind, state_dir, runner, env, delay, clean_with_up=bool(i % 2),
                                  original_shadow=original_shadow, etc=etc)
            if report is not None:
                with open(report, "a") as handle:
                    handle.write(json.dumps(dict(outcome, full_start_s=round(full, 3))) + "\n")
    finally:
        if etc is not None:
            etc.stop()


def test_a_stray_found_by_its_arguments_is_stopped(tmp_path):
    """A child whose pid never reached the record (killed between spawn and write) is still found."""
    from remote.server import children

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    os.chmod(state_dir, 0o700)
    marker = str(state_dir / "sshd_config")
    record = children.Record.create(state_dir, "foreground")
    record.expect("sshd", ["-f", marker])
    # the process the owner spawned; its pid is never written (the owner "died" here)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "-f", marker])
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    try:
        again = children.Record.load(state_dir)
        assert set(again.running()) == {"sshd"} and stray.pid in again.running()["sshd"]
        assert again.stop_children() == {"sshd": stray.pid}
        assert stray.wait(10) is not None
        assert unrelated.poll() is None  # the path alone, without "-f" before it, is not ours
    finally:
        for proc in (stray, unrelated):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

