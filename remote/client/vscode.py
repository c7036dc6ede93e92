"""VS Code: the `code --remote ssh-remote+NAME PATH` command and how to get `code` on PATH.

On Windows `code` is `code.cmd`, a batch file: starting it means `cmd.exe` parses the whole
command line, where `&`, `|`, `%VAR%` and `^` act. So there remotectl starts `Code.exe`
itself (what code.cmd does: ELECTRON_RUN_AS_NODE=1 with its cli.js) and names the folder
as `--folder-uri vscode-remote://ssh-remote+NAME/<percent-encoded path>`: no card text is
ever parsed by `cmd.exe`. Where Code.exe cannot be found, it prints the command instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from remote.errors import RemotectlError

_MAC_APP = "/Applications/Visual Studio Code.app/Contents/Resources/app/bin/code"


def _windows(system: Optional[str]) -> bool:
    return (system or ("windows" if os.name == "nt" else sys.platform)).lower().startswith("win")


def folder_uri(name: str, path: str) -> str:
    """`vscode-remote://ssh-remote+NAME/path`, every byte outside [A-Za-z0-9/._~-] %-encoded."""
    from urllib.parse import quote

    return f"vscode-remote://ssh-remote+{name}{quote(path if path.startswith('/') else '/' + path, safe='/')}"


def command(name: str, path: str, code: str = "code", system: Optional[str] = None) -> List[str]:
    """The argv that opens folder `path` on host alias `name` with Remote-SSH."""
    if _windows(system):
        return [code, "--folder-uri", folder_uri(name, path)]
    return [code, "--remote", f"ssh-remote+{name}", path]


def shell_line(name: str, path: str, system: Optional[str] = None) -> str:
    import shlex

    if _windows(system):
        return " ".join(command(name, path, system=system))  # the URI needs no quoting anywhere
    return " ".join(shlex.quote(a) for a in command(name, path))


def windows_launch(code: str, name: str, path: str) -> Optional[Tuple[List[str], Dict[str, str]]]:
    """(argv, extra environment) that start VS Code on Windows without `cmd.exe`, or None.

    `code` is what PATH found: `<install>\\bin\\code.cmd` next to `<install>\\Code.exe` and
    `<install>\\resources\\app\\out\\cli.js` (the layout every VS Code build ships).
    """
    if not code.lower().endswith((".cmd", ".bat")):
        return [code, "--folder-uri", folder_uri(name, path)], {}
    install = os.path.dirname(os.path.dirname(os.path.abspath(code)))
    cli_js = os.path.join(install, "resources", "app", "out", "cli.js")
    for exe in ("Code.exe", "Code - Insiders.exe", "VSCodium.exe"):
        candidate = os.path.join(install, exe)
        if os.path.isfile(candidate) and os.path.isfile(cli_js):
            return [candidate, cli_js, "--folder-uri", folder_uri(name, path)], {"ELECTRON_RUN_AS_NODE": "1"}
    return None


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
    env = None
    if os.name == "nt":
        launch = windows_launch(code, name, path)
        if launch is None:
            raise RemotectlError(f"cannot find Code.exe beside {code}, and remotectl does not start "
                                 "VS Code through cmd.exe", f"Run it yourself: {shell_line(name, path)}")
        argv, extra = launch
        env = dict(os.environ, **extra)
    else:
        argv = command(name, path, code)
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    except OSError as exc:
        raise RemotectlError(f"cannot start {code}: {exc}") from None
    return argv
