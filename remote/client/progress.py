"""Progress of a copy on stderr: a live bar on a terminal, whole lines anywhere else.

A log file, CI output or `2>file` gets no carriage returns: each report is one line
ending in a newline (at most every few seconds, and at the end), so the record reads
top to bottom instead of as one overwritten line.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

LINE_EVERY_S = 5.0  # without a terminal
BAR_EVERY_S = 0.2  # on a terminal, without tqdm


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


class Progress:
    """`update(n)` as bytes arrive, `close()` at the end; silent when not `enabled`."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: Optional[TextIO] = None) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._start = self._last = time.monotonic()
        if enabled and self.tty:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=self.stream,
                                 leave=True)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= (BAR_EVERY_S if self.tty else LINE_EVERY_S):
            self._last = now
            self._show(final=False)

    def _show(self, final: bool) -> None:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = max(time.monotonic() - self._start, 1e-6)
        text = f"{self.label}: {_mb(self.done)}/{_mb(self.total)} MB{pct}, {self.done / elapsed / 1e6:.1f} MB/s"
        if self.tty:
            self.stream.write(f"\r{text}\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            return
        self._show(final=True)
