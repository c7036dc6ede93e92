"""Running the CLI and the OpenSSH client from the tests (imported by the test modules)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[2]


def remotectl(*args: str, console: bool = False, env: Optional[Dict[str, str]] = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI in its own process: `python -m remote.cli`, or the `remotectl` console script."""
    argv = ["remotectl"] if console else [sys.executable, "-m", "remote.cli"]
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("REMOTECTL_DEBUG", None)
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=REPO)


def ssh(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real OpenSSH client, non-interactive: a prompt would fail instead of hanging."""
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ssh_g(config: Path, name: str) -> Dict[str, list]:
    """`ssh -G NAME`: every resolved option, values in file order."""
    out = subprocess.run(["ssh", "-G", "-F", str(config), name], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    resolved: Dict[str, list] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, []).append(value)
    return resolved


def snapshot(folder: Path) -> Dict[str, bytes]:
    """Every file under `folder` (following nothing), for 'no file changed' checks."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                         else os.readlink(p).encode() if p.is_symlink() else b"<dir>")
            for p in sorted(folder.rglob("*"))}
