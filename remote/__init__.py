"""remotectl: a private sshd behind a tunnel on the remote end, a pinned ssh_config entry on yours.

The notebook API (`up`, `launch_ssh`) is loaded on first use so that importing
`remote` (and running `remotectl --help`) stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
