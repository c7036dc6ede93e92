"""Where `up` finds its secrets: the Python API's arguments, then environment variables,
then Colab's Secrets panel. Never a flag's value, never printed.

NGROK_AUTHTOKEN is the name ngrok itself uses; REMOTECTL_AUTHORIZED_KEY holds one or
more public keys (the line `remotectl keygen` prints; public, but kept with the
secrets so the user sets everything in one place); REMOTECTL_PASSWORD is optional.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Mapping, Optional

from remote import keys
from remote.errors import BadInput
from remote.server.colab import colab_secret

TOKEN_VAR = "NGROK_AUTHTOKEN"
KEY_VAR = "REMOTECTL_AUTHORIZED_KEY"
PASSWORD_VAR = "REMOTECTL_PASSWORD"
TUNNEL_TOKEN_VAR = "TUNNEL_TOKEN"  # a Cloudflare named tunnel's token (the name cloudflared itself reads)
SECRET_VARS = (TOKEN_VAR, PASSWORD_VAR, TUNNEL_TOKEN_VAR)


@dataclass
class Credentials:
    """The secrets and keys one `up` uses. repr() never shows the secrets."""

    authorized_keys: List[str] = field(default_factory=list)
    ngrok_token: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    tunnel_token: Optional[str] = field(default=None, repr=False)

    def secrets(self) -> List[str]:
        return [s for s in (self.ngrok_token, self.password, self.tunnel_token) if s]


def _first(given: Optional[str], name: str, environ: Mapping[str, str]) -> Optional[str]:
    for value in (given, environ.get(name)):
        if value is not None and value.strip():
            return value.strip()
    return colab_secret(name)


def gather(ngrok_token: Optional[str] = None, password: Optional[str] = None,
           authorized_keys: Iterable[str] = (), environ: Optional[Mapping[str, str]] = None,
           tunnel_token: Optional[str] = None, want_tunnel_token: bool = False) -> Credentials:
    """Resolve each secret from the first source that has it."""
    environ = os.environ if environ is None else environ
    given_keys = [k for k in authorized_keys if k and k.strip()]
    if given_keys:
        key_lines = [line for value in given_keys for line in read_keys(value)]
    else:
        text = _first(None, KEY_VAR, environ)
        key_lines = read_keys(text) if text else []
    return Credentials(authorized_keys=key_lines,
                       ngrok_token=_first(ngrok_token, TOKEN_VAR, environ),
                       password=_first(password, PASSWORD_VAR, environ),
                       tunnel_token=_first(tunnel_token, TUNNEL_TOKEN_VAR, environ) if want_tunnel_token
                       else tunnel_token)


def read_keys(value: str) -> List[str]:
    """Public key lines from a key line (or several), or from a .pub / authorized_keys file path."""
    text = value.strip()
    if text and "\n" not in text and text.split()[0] not in keys.KEY_TYPES:
        path = Path(os.path.expanduser(text))
        if path.is_file():
            text = path.read_text()
        else:
            raise BadInput(f"--authorized-key {text[:40]!r} is neither a public key line nor a file",
                           "Give the line `remotectl keygen` printed (ssh-ed25519 AAAA... comment) or a .pub file.")
    lines = keys.authorized_keys(text)
    if not lines:
        raise BadInput("no public key found in the authorized key given")
    return lines
