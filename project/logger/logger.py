"""Logging set-up: the console (stdout) at once, `info.log` once the run folder exists.

Lines logged before the run folder is created (nothing is written before every check has
passed) are held in memory and land at the top of info.log. Under torchrun only rank 0
prints INFO lines and writes the file; other ranks print warnings only.
"""
from __future__ import annotations

import logging
import os
import sys
from logging.handlers import MemoryHandler
from pathlib import Path

_CONSOLE_FORMAT = "%(message)s"
_FILE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


class _Console(logging.StreamHandler):
    """stdout whose reader may go away (`| head`, a closed ssh pipe): the run goes on, info.log keeps
    every line, and the console goes quietly to /dev/null instead of a logging traceback per line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], BrokenPipeError):
            return super().handleError(record)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())  # print() and the exit-time flush too
            os.close(devnull)
        except (OSError, ValueError):
            self.setStream(open(os.devnull, "w"))  # noqa: SIM115


def _ours(handler: logging.Handler) -> logging.Handler:
    handler._template = True  # type: ignore[attr-defined]
    return handler


def close_logging() -> None:
    """Remove (and close) the handlers setup_logging and attach_log_file added."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_template", False)]:
        root.removeHandler(handler)
        handler.close()


def setup_logging(rank: int = 0) -> None:
    """Console now; a buffer that `attach_log_file` later writes out to info.log."""
    close_logging()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)  # third-party libraries: warnings only; ours set their own level
    console = _ours(_Console(sys.stdout))
    console.setFormatter(logging.Formatter(_CONSOLE_FORMAT if rank == 0 else f"[rank {rank}] {_CONSOLE_FORMAT}"))
    if rank != 0:
        console.setLevel(logging.WARNING)  # other ranks: only what goes wrong
    root.addHandler(console)
    if rank == 0:
        root.addHandler(_ours(MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)))


def attach_log_file(log_dir: str | Path) -> None:
    """Start info.log in `log_dir` with the lines held so far."""
    root = logging.getLogger()
    log_file = _ours(logging.FileHandler(Path(log_dir) / "info.log", mode="a", encoding="utf-8"))
    log_file.setFormatter(logging.Formatter(_FILE_FORMAT))
    for handler in [h for h in root.handlers if isinstance(h, MemoryHandler) and getattr(h, "_template", False)]:
        handler.setTarget(log_file)
        handler.flush()
        root.removeHandler(handler)
    root.addHandler(log_file)
