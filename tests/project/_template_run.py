"""Helpers for the training template's tests: run project/train.py and test.py for real.

Most runs call the template in this process (`train.cli(argv)`, project/ on sys.path, as
train.py sees it); DDP (torchrun), SIGKILL and exit-status tests start real processes.
Every run writes under the test's own tmp folder (`--set trainer.save_dir=...`), except
the test that checks a relative save_dir lands in the repository's saved/.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "project"
CONFIG = PROJECT / "config.json"
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402
import train as template_train  # noqa: E402
from logger import close_logging  # noqa: E402

_spec = importlib.util.spec_from_file_location("template_test_py", PROJECT / "test.py")
template_test = importlib.util.module_from_spec(_spec)  # project/test.py, not the stdlib's `test`
_spec.loader.exec_module(template_test)

# quiet, fast runs unless a test asks otherwise; a checkpoint every epoch (the digits' 20 ms epochs
# would otherwise share writes): most tests resume from, kill at or prune a given epoch's file
FAST = ["--set", "trainer.tensorboard=false", "--set", "trainer.save_min_interval=0"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    save_dir: Path
    name: str
    run_id: str | None
    argv: list = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.save_dir / "models" / self.name / self.run_id

    @property
    def log_dir(self) -> Path:
        return self.save_dir / "log" / self.name / self.run_id

    @property
    def summary(self) -> dict:
        return json.loads((self.log_dir / "summary.json").read_text())

    def metrics(self) -> list[dict]:
        return [json.loads(line) for line in (self.log_dir / "metrics.jsonl").read_text().splitlines()]

    def checkpoint(self, epoch: int | str) -> dict:
        name = epoch if isinstance(epoch, str) else f"checkpoint-epoch{epoch}.pth"
        return load_checkpoint(self.run_dir / name)


def train_argv(save_dir: Path, *args: str, run_id: str | None = "t", config: Path | None = CONFIG,
               fast: bool = True) -> list[str]:
    argv = ["-c", str(config)] if config is not None else []
    argv += ["--set", f"trainer.save_dir={save_dir}", *(FAST if fast else [])]
    if run_id is not None:
        argv += ["--run-id", run_id]
    return argv + list(args)


def run_in_process(func, argv: list[str]) -> tuple[int, str, str]:
    """func(argv) -> exit code, with this process's stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = func(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        finally:
            close_logging()
    return code, out.getvalue(), err.getvalue()


def train(save_dir: Path, *args: str, run_id: str | None = "t", config: Path | None = CONFIG, fast: bool = True,
          name: str = "Digits_MLP") -> Run:
    argv = train_argv(save_dir, *args, run_id=run_id, config=config, fast=fast)
    code, out, err = run_in_process(template_train.cli, argv)
    return Run(code, out, err, save_dir, name, run_id, argv)


def run_test_py(*args: str) -> tuple[int, str, str]:
    return run_in_process(template_test.main, list(args))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def tree_bytes(*folders: Path) -> dict:
    """{path: bytes} of every file under the folders (to prove a run was left untouched)."""
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- real processes
def env_for_runs() -> dict:
    env = dict(os.environ)
    env.pop("TEMPLATE_DEBUG", None)
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def train_cmd(save_dir: Path, *args: str, **kwargs) -> list[str]:
    return [sys.executable, str(PROJECT / "train.py"), *train_argv(save_dir, *args, **kwargs)]


def torchrun_cmd(nproc: int, save_dir: Path, *args: str, **kwargs) -> list[str]:
    """`torchrun --standalone --nproc_per_node=N project/train.py ...` (as `python -m
    torch.distributed.run`, the module the torchrun script runs, so PATH does not matter)."""
    train = train_cmd(save_dir, *args, **kwargs)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *train[1:]]


def run_process(cmd: list[str], save_dir: Path, run_id: str | None, timeout: float = 300,
                name: str = "Digits_MLP") -> Run:
    proc = subprocess.run(cmd, cwd=REPO, env=env_for_runs(), capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, save_dir, name, run_id, cmd)
