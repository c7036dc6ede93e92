"""`remotectl install-cloudflared`: the user's end of a cloudflared card needs the binary.

Parsing and printing only; remote.cloudflared owns the release table and the checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from remote.cli.common import emit_json, info, json_option


@click.command("install-cloudflared")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Install into DIR [default: ~/.local/share/remotectl/bin; "
                   "Windows: %LOCALAPPDATA%\\remotectl\\bin].")
@click.option("--force", is_flag=True,
              help="Fetch the pinned release even when a cloudflared is already on PATH.")
@json_option
def install_cloudflared(directory: Optional[str], force: bool, as_json: bool) -> None:
    """Fetch the pinned cloudflared release, SHA-256 verified, for cloudflared cards.

    Only the pinned, verified build is installed; a cached copy is reused. Where remotectl
    has no verified checksum (Linux arm64, Windows) it prints the package-manager command.
    """
    from remote import cloudflared

    on_path = cloudflared.find_cloudflared()
    if on_path is not None and not force and directory is None:
        info(f"cloudflared is already on PATH: {on_path}\n"
             "Nothing downloaded (--force fetches the pinned release anyway).", as_json)
        result = {"path": str(on_path), "source": "PATH", "version": None}
    else:
        folder = Path(directory) if directory else cloudflared.default_install_dir()
        path = cloudflared.install(folder)
        info(f"cloudflared {cloudflared.VERSION} (sha256 verified) is at {path}\n"
             "`remotectl connect` finds it there; nothing else to do.", as_json)
        result = {"path": str(path), "source": "pinned", "version": cloudflared.VERSION}
    if as_json:
        emit_json(result)


COMMANDS = [install_cloudflared]
