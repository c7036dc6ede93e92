"""Errors the CLI turns into `remotectl: error: <one line>` plus a short hint.

Library code raises these instead of printing, so the Python API (notebooks) gets
exceptions and the CLI gets exit codes: 1 a runtime failure, 2 bad input.
"""

from __future__ import annotations

from typing import Optional


class RemotectlError(Exception):
    """A failure explained in one line, with an optional paragraph on what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class BadInput(RemotectlError):
    """The user gave something we cannot use (a damaged card, a bad port, a missing file)."""

    exit_code = 2
