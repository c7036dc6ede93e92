"""Fixtures for the training template's tests (helpers live in _template_run.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _template_run import CONFIG, Run
from _template_run import train as train_in_process

torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for the runs in their own processes


@pytest.fixture
def save_dir(tmp_path: Path) -> Path:
    return tmp_path / "saved"


@pytest.fixture
def train(save_dir: Path):
    """train(*args, run_id=..., config=CONFIG, fast=True) -> Run, in this process."""

    def run(*args: str, run_id: str | None = "t", config: Path | None = CONFIG, fast: bool = True,
            name: str = "Digits_MLP") -> Run:
        return train_in_process(save_dir, *args, run_id=run_id, config=config, fast=fast, name=name)

    return run
