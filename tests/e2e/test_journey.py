"""The whole journey with real parts: bootstrap cell -> connect -> train over ssh -> pull -> test.

The remote end is the bootstrap notebook's code cell, run as a script outside Colab with
the ngrok stand-in (the only stand-in: ngrok's cloud) and `REMOTECTL_DETACH=1`, serving a
copy of the template in its own folder (so the remote side has its own `saved/`). The
user's end has its own HOME and ssh folder; it pastes the cell's last line into
`remotectl connect`, then uses the real OpenSSH client with the written config, exactly
as VS Code's Remote-SSH would. Each seam is asserted: card parsed, entry written, probe
report, training over ssh, checkpoint pulled and evaluated with the accuracy the remote
run logged, resume after a kill, and nothing left running after `remotectl down`.

The notebook's PATH starts with another Python (a fresh venv without torch), as when a
user's `~/.bashrc` runs `conda init` or `pyenv init`: `connect` must name the mismatch and the
interpreter the server ran under, and the journey then runs that one by its full path, as the
report tells a user to. (On a machine whose `~/.bashrc` puts pyenv first, ssh gets that one
instead: the same mismatch, the same fix.)

Set REMOTECTL_E2E_TRANSCRIPT=<file> to keep a transcript of the run (commands and the
lines a user would see).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import nbformat
import pytest
from helpers.ngrok_standin import GOOD_TOKEN, write_agent
from helpers.sshkit import CLI, pid_alive

from remote import card as cards
from remote.server.processes import port_is_free

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "scripts" / "colab_bootstrap.ipynb"
RUN_NAME = "Digits_MLP"  # project/config.json's "name"
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # the whole journey: run by `make test`


class Transcript:
    """What a user would have seen, command by command (written only when asked for)."""

    def __init__(self, tmp: Path) -> None:
        self.lines: List[str] = []
        self.tmp = str(tmp)

    def _short(self, text: str) -> str:
        return text.replace(self.tmp, "$TMP")

    def command(self, where: str, argv: str) -> None:
        self.lines.append(self._short(f"{where}$ {argv}"))

    def output(self, text: str, keep: Optional[str] = None, last: Optional[int] = None) -> None:
        rows = [r for r in text.rstrip().splitlines() if r.strip()]
        if keep is not None:
            rows = [r for r in rows if re.search(keep, r)]
        if last is not None:
            rows = rows[-last:]
        self.lines.extend(self._short(f"    {r}") for r in rows)

    def save(self, title: str) -> None:
        target = os.environ.get("REMOTECTL_E2E_TRANSCRIPT")
        if not target:
            return
        with open(target, "a") as handle:
            handle.write(f"## {title}\n" + "\n".join(self.lines) + "\n\n")


class Journey:
    """One user's two machines: the remote folder with its server, the user's HOME and ssh dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # As on Colab (/content/remotectl); not a folder named `remote`, which would shadow the package
        self.remote_dir = root / "content" / "remotectl"
        self.state_dir = root / "remote-state"
        self.home = root / "home"
        self.ssh_dir = self.home / ".ssh"
        self.local_dir = root / "local"
        self.transcript = Transcript(root)
        self.info: Dict = {}
        self.card_line = ""
        self.connect_output = ""
        self.python = ""  # the interpreter the server ran under, as the card names it
        self._copy_project()
        self.home.mkdir(mode=0o700)
        self.local_dir.mkdir()

    def _copy_project(self) -> None:
        ignore = shutil.ignore_patterns("__pycache__", ".ruff_cache", ".pytest_cache", "*.pyc")
        self.remote_dir.mkdir(mode=0o700, parents=True)
        shutil.copytree(REPO / "project", self.remote_dir / "project", ignore=ignore)
        (self.remote_dir / "saved").mkdir()

    # -- the user's side ----------------------------------------------------------------------
    def user_env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REMOTECTL_", "NGROK_", "PYNGROK_", "FAKE_"))}
        env.update(HOME=str(self.home), REMOTECTL_SSH_DIR=str(self.ssh_dir))
        return env

    def remotectl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        self.transcript.command("laptop", "remotectl " + " ".join(shlex.quote(a) for a in args))
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=self.user_env(),
                              timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.local_dir)

    def ssh(self, command: str, name: str = "colab", timeout: float = 240) -> subprocess.CompletedProcess:
        """The real OpenSSH client with only the config remotectl wrote; a prompt fails (BatchMode)."""
        self.transcript.command("laptop", f"ssh {name} {shlex.quote(command)}")
        return subprocess.run(["ssh", "-F", str(self.ssh_dir / "config"), "-o", "BatchMode=yes", name, command],
                              capture_output=True, text=True, timeout=timeout, env=self.user_env(),
                              stdin=subprocess.DEVNULL)

    def in_remote(self, command: str) -> str:
        return f"cd {shlex.quote(str(self.remote_dir))} && {command}"

    # -- the remote side: the bootstrap cell ----------------------------------------------------
    def run_bootstrap_cell(self, public_key: str) -> subprocess.CompletedProcess:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        (cell,) = [c.source for c in nb.cells if c.cell_type == "code"]
        script = self.root / "bootstrap_cell.py"
        script.write_text(cell)
        agent = write_agent(self.root / "ngrok-agent")
        other = self.root / "other-python"  # a real Python without torch, first on the notebook's PATH
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True, timeout=120)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REMOTECTL_", "NGROK_", "PYNGROK_", "FAKE_"))}
        env.update(REMOTECTL_TUNNEL="ngrok", REMOTECTL_DETACH="1", REMOTECTL_STATE_DIR=str(self.state_dir),
                   REMOTECTL_PROJECT_DIR=str(self.remote_dir), PYNGROK_NGROK_PATH=str(agent),
                   NGROK_AUTHTOKEN=GOOD_TOKEN, REMOTECTL_AUTHORIZED_KEY=public_key,
                   REMOTECTL_REPO_URL="file:///never-cloned-the-folder-exists",
                   PATH=os.pathsep.join([str(other / "bin"), env.get("PATH", "")]))
        self.transcript.command("colab", "<run the bootstrap cell>")
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                                timeout=180, cwd=self.root, stdin=subprocess.DEVNULL)
        state_file = self.state_dir / "state.json"
        if state_file.exists():
            self.info = json.loads(state_file.read_text())
        return result

    def down(self) -> subprocess.CompletedProcess:
        self.transcript.command("colab", f"remotectl down --state-dir {self.state_dir}")
        return subprocess.run([*CLI, "down", "--state-dir", str(self.state_dir)], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    def leftovers(self) -> List[str]:
        """Recorded processes still alive, and the sshd port if still taken."""
        left = [f"{name} (pid {pid})" for name, pid in (self.info.get("pids") or {}).items()
                if pid and pid != os.getpid() and pid_alive(pid)]
        port = self.info.get("local_port")
        if port and not port_is_free("127.0.0.1", int(port)):
            left.append(f"port {port}")
        return left


def _wait_gone(journey: Journey, timeout: float = 20.0) -> List[str]:
    deadline = time.monotonic() + timeout
    while journey.leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    return journey.leftovers()


@pytest.fixture
def journey(tmp_path):
    """Keygen, bootstrap cell (detached ngrok up), `remotectl connect` from the printed line."""
    j = Journey(tmp_path)
    try:
        keygen = j.remotectl("keygen", "--json")
        assert keygen.returncode == 0, keygen.stderr
        public = json.loads(keygen.stdout)["public_key"]
        j.transcript.output(public)

        cell = j.run_bootstrap_cell(public)
        assert cell.returncode == 0, f"bootstrap cell failed:\n{cell.stdout}\n{cell.stderr}"
        j.transcript.output(cell.stdout, last=8)
        j.card_line = cell.stdout.strip().splitlines()[-1]
        assert j.card_line.startswith("remotectl connect rc1."), cell.stdout
        card = cards.decode(j.card_line)  # seam: the card the server printed is one the client reads
        assert (card.tunnel, card.session, card.host_key) == ("ngrok", j.info["session"], j.info["host_key"])
        assert card.port != j.info["local_port"], "the card must name the tunnel's port, not sshd's"

        # The user pastes the line exactly as printed.
        words = shlex.split(j.card_line)
        assert words[:2] == ["remotectl", "connect"]
        connected = j.remotectl(*words[1:])
        j.transcript.output(connected.stdout + connected.stderr)
        assert connected.returncode == 0, connected.stderr
        j.connect_output = connected.stdout + connected.stderr
        j.python = card.python or ""
        assert j.python == sys.executable, "the card names the interpreter the cell ran under"
        yield j
    finally:
        if (j.state_dir / "state.json").exists():
            j.down()
        _wait_gone(j)
        j.transcript.save(os.environ.get("PYTEST_CURRENT_TEST", "e2e").split(" ")[0])


def _final_summary(output: str) -> Dict:
    """train.py's `final: {...}` line: the run's summary as the trainer logged it."""
    found = re.findall(r"^final: (\{.*\})\s*$", output, re.M)
    assert found, f"no final summary in the training output:\n{output[-3000:]}"
    return json.loads(found[-1])


def _assert_entry_written(j: Journey) -> None:
    config = (j.ssh_dir / "config").read_text()
    assert "Include " in config and str(j.ssh_dir / "remotectl" / "config") in config
    managed = (j.ssh_dir / "remotectl" / "config").read_text()
    card = cards.decode(j.card_line)
    assert re.search(r"^Host colab$", managed, re.M)
    assert f"Port {card.port}" in managed and "HostKeyAlias remotectl.colab" in managed
    assert "StrictHostKeyChecking yes" in managed
    pinned = (j.ssh_dir / "remotectl" / "known_hosts").read_text()
    assert f"remotectl.colab {card.host_key}" in pinned
    assert not (j.ssh_dir / "known_hosts").exists(), "the user's own known_hosts must stay untouched"


def test_bootstrap_connect_train_pull_test_down(journey):
    j = journey
    card = cards.decode(j.card_line)

    # connect: the entry, the pinned key, the probe report (python, torch, GPU line)
    _assert_entry_written(j)
    assert re.search(r"colab: ok in [0-9.]+ s", j.connect_output), j.connect_output
    assert re.search(r"\| Python 3\.\d+\.\d+ \| torch \d+\.\d+", j.connect_output), j.connect_output
    # ssh's `python3` is another one: connect says so, names the likely cause and the full path that works
    warning = j.connect_output[j.connect_output.index("remotectl: warning: over ssh, `python3`"):]
    assert f"not the Python the server ran under, {sys.executable} (" in warning, warning
    assert "Likely cause:" in warning and "~/.bashrc" in warning, warning
    assert f"Fix: run the full path, e.g. `{shlex.quote(sys.executable)} project/train.py" in warning, warning
    assert "nvidia-smi" in j.connect_output or "GPU" in j.connect_output
    # seam: the printed VS Code command opens the folder the cell put the project in
    assert card.path == str(j.remote_dir)
    assert f"code --remote ssh-remote+colab {j.remote_dir}" in j.connect_output, j.connect_output
    check = j.remotectl("check", "colab", "--json")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)["check"]
    assert report["ok"] and report["python"] and report["torch"] and report["cuda_checked"]
    assert isinstance(report["cuda"], bool) and "gpus" in report
    found = report["interpreter"]
    assert found["up"]["executable"] == sys.executable and found["up"]["torch"] == report["torch"]
    assert not found["ok"] and "python3" in found["differ"] and found["ssh"]["python3"]["torch"] is None
    assert "not the Python the server ran under" in check.stderr
    j.transcript.output(check.stderr, keep=r"ok in|\|")

    # the remote session sees the notebook's environment and the project folder
    # ... and the interpreter the server ran under, by the name the report gives for ssh sessions
    env = j.ssh(j.in_remote("\"$REMOTECTL_PYTHON\" -c 'import sys, torch; print(sys.executable)' "
                            "&& ls project/train.py"))
    assert env.returncode == 0 and "project/train.py" in env.stdout, env.stderr
    assert env.stdout.splitlines()[0] == sys.executable, env.stdout

    # train on the remote machine, through the real ssh client and the written config
    train = j.ssh(j.in_remote(f"{shlex.quote(j.python)} project/train.py -c project/config.json "
                              "--set trainer.epochs=2 --run-id e2e"))
    j.transcript.output(train.stdout + train.stderr, keep=r"^(epoch \d+/\d+|final:|checkpoints:)")
    assert train.returncode == 0, train.stderr[-3000:]
    summary = _final_summary(train.stdout + train.stderr)
    assert summary["epochs_run"] == 2 and summary["run_id"] == "e2e"
    remote_accuracy = summary["best"]["val_accuracy"]
    remote_run = j.remote_dir / "saved" / "models" / RUN_NAME / "e2e"
    assert (remote_run / "model_best.pth").exists()

    # bring the run home
    pull = j.remotectl("pull", "colab", str(remote_run), str(j.local_dir), "--quiet")
    j.transcript.output(pull.stdout + pull.stderr)
    assert pull.returncode == 0, pull.stderr
    local_run = j.local_dir / "e2e"
    for name in ("model_best.pth", "checkpoint-epoch1.pth", "checkpoint-epoch2.pth", "config.json"):
        assert (local_run / name).read_bytes() == (remote_run / name).read_bytes(), name

    # evaluate it locally with this repository's test.py: the accuracy the remote run logged
    best = local_run / "model_best.pth"
    j.transcript.command("laptop", f"python project/test.py -r {best} --split val")
    val = subprocess.run([sys.executable, str(REPO / "project" / "test.py"), "-r", str(best),
                          "--split", "val", "--json"], capture_output=True, text=True, timeout=180,
                         cwd=j.local_dir, stdin=subprocess.DEVNULL)
    assert val.returncode == 0, val.stderr
    local_val = json.loads(val.stdout)
    j.transcript.output(f"val accuracy {local_val['accuracy']:.6f} (remote run logged {remote_accuracy:.6f})")
    assert local_val["epoch"] == summary["best_epoch"]
    assert local_val["accuracy"] == pytest.approx(remote_accuracy, abs=1e-6)

    # and the held-out test split gives what the same script reports on the remote machine
    j.transcript.command("laptop", f"python project/test.py -r {best}")
    local_test = subprocess.run([sys.executable, str(REPO / "project" / "test.py"), "-r", str(best)],
                                capture_output=True, text=True, timeout=180, cwd=j.local_dir,
                                stdin=subprocess.DEVNULL)
    assert local_test.returncode == 0, local_test.stderr
    j.transcript.output(local_test.stdout)
    remote_test = j.ssh(j.in_remote(f"{shlex.quote(j.python)} project/test.py -r {shlex.quote(str(remote_run / 'model_best.pth'))}"))
    assert remote_test.returncode == 0, remote_test.stderr

    def accuracy(out: str) -> float:
        return float(re.search(r"^\s*accuracy\s*:\s*([0-9.]+)", out, re.M).group(1))

    assert accuracy(local_test.stdout) == accuracy(remote_test.stdout)

    # down: nothing left running, the port free
    down = j.down()
    j.transcript.output(down.stdout + down.stderr)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout + down.stderr
    assert not _wait_gone(j), f"left running: {j.leftovers()}"
    assert not (j.state_dir / "state.json").exists()
    gone = j.ssh("true", timeout=60)
    assert gone.returncode != 0
    assert card.port  # the card's endpoint is gone with the tunnel


def test_training_killed_after_epoch_one_resumes_over_ssh(journey):
    """kill -9 as a runtime reset would, once epoch 1's checkpoint is on the remote disk; --resume
    auto over ssh continues from the newest checkpoint. The killed run is long (60 epochs): a
    3-epoch run finished inside the kill's latency on a loaded machine (its epoch 1 file appears
    only after the writer's fsync, an epoch or two later)."""
    j = journey
    args = "-c project/config.json --bs 8 --run-id e2e-resume"
    run_dir = j.remote_dir / "saved" / "models" / RUN_NAME / "e2e-resume"
    first = run_dir / "checkpoint-epoch1.pth"

    # `cd ... || exit;` not `cd ... &&`: with `&&` the `&` would background a subshell, not python
    started = j.ssh(f"cd {shlex.quote(str(j.remote_dir))} || exit 1; nohup {shlex.quote(j.python)} project/train.py {args} "
                    "--epochs 60 > train-killed.log 2>&1 < /dev/null & echo $!")
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split()[-1])

    # watch for epoch 1's checkpoint on the remote side, then kill the run as a runtime reset would
    # (stops waiting as soon as the run has died: a run that cannot start fails here, not in minutes)
    killed = j.ssh(f"for i in $(seq 3000); do [ -f {shlex.quote(str(first))} ] && break; "
                   f"kill -0 {pid} 2>/dev/null || break; sleep 0.05; done; "
                   f"[ -f {shlex.quote(str(first))} ] && kill -9 {pid} && echo killed {pid}")
    assert killed.returncode == 0 and f"killed {pid}" in killed.stdout, \
        (killed.stderr, (j.remote_dir / "train-killed.log").read_text()[-3000:])
    j.transcript.output(killed.stdout)
    alive = j.ssh(f"for i in $(seq 200); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.05; done; exit 1")
    assert alive.returncode == 0, f"training pid {pid} still alive after kill -9"
    left = sorted(int(p.name[len("checkpoint-epoch"):-len(".pth")]) for p in run_dir.glob("checkpoint-epoch*.pth"))
    assert left and left[0] == 1 and left[-1] < 60, left
    newest, until = left[-1], left[-1] + 2

    resumed = j.ssh(j.in_remote(f"{shlex.quote(j.python)} project/train.py {args} --epochs {until} --resume auto"))
    out = resumed.stdout + resumed.stderr
    j.transcript.output(out, keep=r"^(resumed from|epoch \d+/\d+|final:)")
    assert resumed.returncode == 0, out[-3000:]
    assert re.search(rf"resumed from \S*checkpoint-epoch{newest}\.pth \(epoch {newest}\); continuing at epoch "
                     rf"{newest + 1}", out), out[-3000:]
    epochs = [int(n) for n in re.findall(rf"^epoch (\d+)/{until} ", out, re.M)]
    assert epochs == [newest + 1, until], epochs
    summary = _final_summary(out)
    assert summary["epochs_run"] == until and summary["run_id"] == "e2e-resume"
    assert (run_dir / f"checkpoint-epoch{until}.pth").exists()
