"""What a host name in a card or an endpoint record may be, and the tunnel kinds there are.

Its own module (standard library `re` only) because `remotectl proxy` checks every record it
follows on each ssh connection and must start fast; remote/card.py re-exports both names.
"""

from __future__ import annotations

import re

TUNNEL_KINDS = ("direct", "ngrok", "cloudflared")
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")
_HOST_V6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")


def valid_host(host: object) -> bool:
    """A DNS name, an IPv4 address, or an IPv6 literal (bare or in brackets); no leading dash."""
    if not isinstance(host, str):
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        return ":" in host and bool(_HOST_V6.fullmatch(host))
    if ":" in host:
        return bool(_HOST_V6.fullmatch(host))
    return bool(_HOST_NAME.fullmatch(host))
