"""Logging set-up: console (stdout) and `info.log` in the run's log folder.

Under torchrun only rank 0 writes the file and INFO lines; other ranks print warnings only.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

_CONSOLE_FORMAT = "%(message)s"
_FILE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def setup_logging(log_dir: str | Path | None, rank: int = 0) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_template", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.WARNING)  # third-party libraries: warnings only; ours set their own level
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_CONSOLE_FORMAT if rank == 0 else f"[rank {rank}] {_CONSOLE_FORMAT}"))
    if rank != 0:
        console.setLevel(logging.WARNING)  # other ranks: only what goes wrong
    console._template = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_dir is not None:
        log_file = logging.FileHandler(Path(log_dir) / "info.log", mode="a", encoding="utf-8")
        log_file.setFormatter(logging.Formatter(_FILE_FORMAT))
        log_file._template = True  # type: ignore[attr-defined]
        root.addHandler(log_file)
