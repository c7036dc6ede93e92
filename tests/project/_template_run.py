"""Helpers for the training template's tests: run project/train.py and test.py for real.

Every run writes under the test's own tmp folder (`--set trainer.save_dir=...`), except
the test that checks a relative save_dir lands in the repository's saved/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "project"
CONFIG = PROJECT / "config.json"

# quiet, fast runs unless a test asks otherwise
FAST = ["--set", "trainer.tensorboard=false", "--set", "trainer.verbosity=1"]


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    save_dir: Path
    name: str
    run_id: str | None

    @property
    def returncode(self) -> int:
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return self.proc.stdout

    @property
    def stderr(self) -> str:
        return self.proc.stderr

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


def env_for_runs() -> dict:
    env = dict(os.environ)
    env.pop("TEMPLATE_DEBUG", None)
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def python_cmd(script: str, *args: str) -> list[str]:
    return [sys.executable, str(PROJECT / script), *args]


def train_cmd(save_dir: Path, *args: str, run_id: str | None = "t", config: Path | None = CONFIG,
              fast: bool = True) -> list[str]:
    cmd = python_cmd("train.py")
    if config is not None:
        cmd += ["-c", str(config)]
    cmd += ["--set", f"trainer.save_dir={save_dir}"]
    if fast:
        cmd += FAST
    if run_id is not None:
        cmd += ["--run-id", run_id]
    return cmd + list(args)


def run_test_py(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(python_cmd("test.py", *args), cwd=cwd, env=env_for_runs(), capture_output=True,
                          text=True, timeout=timeout)


def run_snippet(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Python with project/ on sys.path, the way train.py sees it, in its own process
    (the template's top-level names - model, utils, base - stay out of pytest's process)."""
    prelude = f"import sys; sys.path.insert(0, {str(PROJECT)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, env=env_for_runs(),
                          capture_output=True, text=True, timeout=timeout)


def load_checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def torchrun_cmd(nproc: int, save_dir: Path, *args: str, run_id: str | None = "t", config: Path | None = CONFIG,
                 fast: bool = True) -> list[str]:
    """`torchrun --standalone --nproc_per_node=N project/train.py ...` (as `python -m
    torch.distributed.run`, the module the torchrun script runs, so PATH does not matter)."""
    train = train_cmd(save_dir, *args, run_id=run_id, config=config, fast=fast)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *train[1:]]
