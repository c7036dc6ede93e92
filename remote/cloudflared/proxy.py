"""The ssh_config `ProxyCommand` that reaches a quick tunnel through `cloudflared access ssh`.

ssh keeps the rest of a ProxyCommand line verbatim, expands `%` tokens in it, then hands it
to the user's shell on POSIX (`$SHELL -c "exec ..."`) or to CreateProcess on Windows. So
the path is quoted for that consumer, and a literal `%` in it is doubled, else ssh would
read it as a token. colab-ssh users broke exactly here with Windows paths.
"""

from __future__ import annotations

import ntpath
import os
import platform
import posixpath
import re
import shlex
from typing import List, Optional, Union

from remote.errors import BadInput

PathLike = Union[str, "os.PathLike[str]"]
ACCESS_ARGS = "access ssh --hostname %h"


def _posix_quote(text: str) -> str:
    """Single quotes always (no `$`, backtick or backslash is special inside them)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _is_windows(system: Optional[str]) -> bool:
    return (system or platform.system()).strip().lower() == "windows"


def proxy_command(path: PathLike, system: Optional[str] = None) -> str:
    """`"<abs path>" access ssh --hostname %h`, quoted for ssh on `system` (default: this OS)."""
    text = os.fspath(path)
    windows = _is_windows(system)
    if any(ch in text for ch in "\r\n\0"):
        raise BadInput(f"cannot use a cloudflared path with a line break in a ProxyCommand: {text!r}")
    if windows:
        if '"' in text:
            raise BadInput(f"a Windows path cannot contain a double quote: {text!r}")
        if not ntpath.isabs(text):
            raise BadInput(f"the cloudflared path must be absolute (C:\\...): {text}")
        quoted = f'"{ntpath.normpath(text)}"'
    else:
        if not posixpath.isabs(text):
            text = os.path.abspath(text)
        quoted = _posix_quote(posixpath.normpath(text))
    return f"{quoted.replace('%', '%%')} {ACCESS_ARGS}"


def proxy_argv(path: PathLike, hostname: str) -> List[str]:
    """The argv ssh ends up running for `hostname` (what paramiko needs: no shell, no tokens)."""
    return [os.fspath(path), "access", "ssh", "--hostname", hostname]


def argv_from_proxy_command(value: str, hostname: str, port: int = 22,
                            system: Optional[str] = None) -> List[str]:
    """Read a ProxyCommand written by proxy_command() back into argv, as ssh would run it.

    paramiko.ProxyCommand shlex-splits its string, which mangles Windows paths and knows
    no `%` tokens; pass it `shlex.join(argv_from_proxy_command(...))` instead.
    """
    tokens = {"%": "%", "h": hostname, "p": str(port)}
    expanded = re.sub(r"%(.)", lambda m: tokens.get(m.group(1), m.group(0)), value)
    if not _is_windows(system):
        return shlex.split(expanded)
    match = re.match(r'^\s*"([^"]*)"\s*(.*)$', expanded)
    if match:
        return [match.group(1), *match.group(2).split()]
    return expanded.split()
