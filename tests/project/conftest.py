"""Fixtures for the training template's tests (helpers live in _template_run.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _template_run import CONFIG, REPO, Run, env_for_runs, train_cmd


@pytest.fixture
def save_dir(tmp_path: Path) -> Path:
    return tmp_path / "saved"


@pytest.fixture
def train(save_dir: Path):
    """train(*args, run_id=..., config=CONFIG, cwd=REPO, timeout=...) -> Run."""

    def run(*args: str, run_id: str | None = "t", config: Path | None = CONFIG, cwd: Path = REPO,
            timeout: float = 240, fast: bool = True, name: str = "Digits_MLP") -> Run:
        cmd = train_cmd(save_dir, *args, run_id=run_id, config=config, fast=fast)
        proc = subprocess.run(cmd, cwd=cwd, env=env_for_runs(), capture_output=True, text=True, timeout=timeout)
        return Run(proc, save_dir, name, run_id)

    return run


