"""remotectl: a private sshd behind a tunnel on the remote end, a pinned ssh_config entry on yours.

The notebook API (`up`, `launch_ssh`, `Session`) is loaded on first use so that
importing `remote` (and running `remotectl --help`) stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "up", "launch_ssh", "Session"]

_LAZY = {"up", "launch_ssh", "Session"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from remote.server import api

        return getattr(api, name)
    raise AttributeError(f"module 'remote' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY))
