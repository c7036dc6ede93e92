"""Small helpers the red-team tests share: the CLI as a user runs it, and file snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[2]


def remotectl(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
              cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`python -m remote.cli ARGS` in its own process, without REMOTECTL_DEBUG."""
    full = dict(os.environ, **(env or {}))
    full.pop("REMOTECTL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "remote.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=cwd or REPO, stdin=subprocess.DEVNULL)


def snapshot(folder: Path) -> Dict[str, bytes]:
    """Every entry under `folder` (links by their target, not followed), for 'nothing changed' checks."""
    if not os.path.lexists(folder):
        return {}
    found: Dict[str, bytes] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = b"-> " + os.readlink(path).encode()
            elif path.is_dir():
                found[rel] = b"<dir>"
            else:
                try:
                    found[rel] = path.read_bytes()
                except OSError as exc:
                    found[rel] = f"<{exc.strerror}>".encode()
    return found


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The `remotectl: error:` line, asserting there is exactly one and no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("remotectl: error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "report it" not in result.stderr, result.stderr
    return errors[0]
