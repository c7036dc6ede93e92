"""VS Code: the `code --remote ssh-remote+NAME PATH` command and how to get `code` on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Optional

from remote.errors import RemotectlError

_MAC_APP = "/Applications/Visual Studio Code.app/Contents/Resources/app/bin/code"


def command(name: str, path: str, code: str = "code") -> List[str]:
    """The argv that opens folder `path` on host alias `name` with Remote-SSH."""
    return [code, "--remote", f"ssh-remote+{name}", path]


def shell_line(name: str, path: str) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in command(name, path))


def find_code() -> Optional[str]:
    """`code` on PATH, or the macOS app's copy when the shell command was never installed."""
    found = shutil.which("code")
    if found:
        return found
    return _MAC_APP if sys.platform == "darwin" and os.path.exists(_MAC_APP) else None


def install_hint() -> str:
    if sys.platform == "darwin":
        return ("In VS Code: Command Palette (Cmd+Shift+P) > 'Shell Command: Install 'code' command in PATH'.")
    if os.name == "nt":
        return ("Re-run the VS Code installer with 'Add to PATH' ticked, then open a new terminal.")
    return ("Install VS Code from https://code.visualstudio.com/ (its .deb/.rpm/snap puts `code` on PATH), "
            "then open a new terminal.")


def open_remote(name: str, path: str) -> List[str]:
    """Start VS Code on the remote folder; RemotectlError with the fix when `code` is missing."""
    code = find_code()
    if code is None:
        raise RemotectlError("the `code` command is not on PATH", install_hint() +
                             f"\nThen run: {shell_line(name, path)}")
    argv = command(name, path, code)
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise RemotectlError(f"cannot start {code}: {exc}") from None
    return argv
