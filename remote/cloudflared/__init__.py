"""cloudflared for both ends: the pinned release and its installer, the client's ProxyCommand,
and the server's quick tunnel. Standard library only, so importing it costs nothing.

Server:  find_cloudflared([state/"bin"]) or install(state/"bin"); QuickTunnel.open(path, sshd_port, log)
Client:  find_cloudflared([default_install_dir()]); proxy_command(path) for the ssh_config entry
"""

from __future__ import annotations

from remote.cloudflared.proxy import argv_from_proxy_command, proxy_argv, proxy_command
from remote.cloudflared.quicktunnel import (
    QuickTunnel,
    start_quick_tunnel,
    stop,
    tunnel_argv,
    wait_hostname,
)
from remote.cloudflared.release import (
    BASE_URL_ENV,
    RELEASE,
    VERSION,
    Asset,
    asset_for,
    binary_name,
    default_install_dir,
    find_cloudflared,
    install,
    install_hint,
)

__all__ = [
    "BASE_URL_ENV", "RELEASE", "VERSION", "Asset", "QuickTunnel", "asset_for", "binary_name",
    "default_install_dir", "find_cloudflared", "install", "install_hint", "proxy_command", "proxy_argv", "argv_from_proxy_command",
    "start_quick_tunnel", "stop", "tunnel_argv", "wait_hostname",
]
