"""ServerInfo: the one description of a running server, written to state.json once it is proven.

The same object is what `up --json` prints, what `status` reports (with live facts added),
what the notebook's `Session` exposes and what the human report is made from, so a field
means the same thing everywhere. It holds no secret: the card, addresses, pids, paths.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional

from remote.errors import RemotectlError

STATE_VERSION = 2


@dataclass
class ServerInfo:
    card: str  # the card token (what `remotectl connect` takes)
    connect_line: str  # `remotectl connect <card>`, the line to paste
    host: str  # the public endpoint the card names
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..." (no comment)
    fingerprint: str  # SHA256:..., as ssh-keygen prints it
    session: str  # this run's id (the laptop's HostKeyAlias is remotectl-<session>)
    tunnel: str  # "ngrok" | "cloudflared" | "direct"
    public_url: str  # tcp://host:port or ssh://hostname
    local_host: str  # where sshd listens
    local_port: int
    state_dir: str
    password_login: bool
    authorized_keys: int  # how many keys may log in
    mode: str  # who owns the server: "foreground" | "supervisor" | "kernel"
    pid: int  # the owner's pid
    pids: Dict[str, int] = field(default_factory=dict)  # {"owner", "sshd", "agent"}: pid
    starts: Dict[str, Optional[int]] = field(default_factory=dict)  # the same, kernel start times
    tunnel_info: Dict[str, Any] = field(default_factory=dict)  # the provider's own facts
    started_at: str = ""  # ISO 8601, UTC
    ready_seconds: float = 0.0  # from the call of `up` to the proven login
    proof_seconds: float = 0.0  # the one-use probe key's login through public_url (part of ready_seconds)
    persist: Optional[str] = None  # the --persist folder, if any
    python: str = field(default_factory=lambda: sys.executable)  # the interpreter `up` ran under
    tunnel_restarts: int = 0  # how often the owner brought a dead tunnel agent back (a new address each time)
    published: Optional[Dict[str, Any]] = None  # with --persist: the last endpoint record (path, seq, at, host, port)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> ServerInfo:
        """Read state.json's object; fields this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            missing = sorted(f.name for f in fields(cls) if f.name not in data)
            raise RemotectlError(f"state.json lacks {', '.join(missing[:4])}: it was written by another "
                                 "version of remotectl",
                                 "Run `remotectl down` for this state dir (it stops what was recorded), "
                                 "then `remotectl up` again.") from None
