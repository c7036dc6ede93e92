"""Ctrl-C (Colab's stop button) that lets a short epoch finish.

Short epochs share checkpoint writes (trainer.save_min_interval), so the newest epochs are not on
disk yet. Rather than copying every epoch's state just in case, a Ctrl-C during an epoch shorter
than the interval asks the loop to stop at the end of that epoch (under a second away), where the
epoch is written; a second Ctrl-C, or one during a longer epoch, stops at once as before. Only in
a single process's main thread: under torchrun every rank gets the signal and must stop together.
"""
from __future__ import annotations

import signal
import threading


class StopAtEpochEnd:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self.epoch_is_short = False  # set by the loop after each epoch
        self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self.requested or not self.epoch_is_short:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopAtEpochEnd:
        if self.enabled and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
