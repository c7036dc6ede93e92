"""The hosts remotectl manages: ~/.ssh/remotectl/hosts.json, the source of the managed config.

Format (version 1)::

    {"version": 1,
     "user_config_created": false,          # we created ~/.ssh/config (delete it when empty)
     "hosts": {"colab": {"host": "0.tcp.ngrok.io", "port": 12345, "user": "root",
                         "session": "a1b2c3", "tunnel": "ngrok",
                         "host_key": "ssh-ed25519 AAAA...",   # null: trust on first use
                         "identity": "/home/me/.ssh/remotectl_ed25519",
                         "forwards": ["6006:6006"], "path": "/content",
                         "strict": "yes", "proxy_command": null,
                         "created": "2024-...Z", "updated": "2024-...Z",
                         "last_check": {"at": "...Z", "ok": true, "rtt_ms": 12.5,
                                        "summary": "...", "error": null}}}}

Unknown keys are kept as they are, so a newer remotectl's fields survive an older one's write.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from remote.client.known_hosts import key_alias, legacy_alias
from remote.client.layout import SshLayout
from remote.client.sshconfig import HostEntry, parse_forward, render_entry
from remote.errors import RemotectlError
from remote.files import atomic_write

VERSION = 1


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class HostRecord:
    name: str
    host: str
    port: int
    user: str
    session: str
    identity: str
    tunnel: str = "direct"
    host_key: Optional[str] = None
    forwards: List[str] = field(default_factory=list)
    path: str = "/content"
    strict: str = "yes"
    proxy_command: Optional[str] = None
    follow: Optional[Dict[str, Any]] = None  # connect --follow: {"source": folder or "ngrok", "fdpass": bool}
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    last_check: Optional[Dict[str, Any]] = None
    other: Dict[str, Any] = field(default_factory=dict)  # fields this version does not know

    @property
    def alias(self) -> str:
        """The HostKeyAlias its key is pinned under: from the laptop's host alias, never the card."""
        return key_alias(self.name)

    @property
    def legacy_alias(self) -> str:
        """Where remotectl before pins-by-alias filed this host's key (migrated on connect)."""
        return legacy_alias(self.session)

    @property
    def endpoint(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def entry(self, layout: SshLayout) -> HostEntry:
        """The ssh_config block this record becomes."""
        return HostEntry(name=self.name, hostname=self.host, port=self.port, user=self.user,
                         identity_file=self.identity, host_key_alias=self.alias,
                         known_hosts_file=str(layout.known_hosts),
                         strict_host_key_checking=self.strict,
                         forwards=tuple(parse_forward(f) for f in self.forwards),
                         proxy_command=self.proxy_command, extra=self._extra(layout))

    def _extra(self, layout: SshLayout) -> tuple:
        """Colab's route allows one SSH connection per runtime: its entry shares one. A followed
        host's proxy hands ssh the connected socket (ProxyUseFdpass)."""
        if (self.follow or {}).get("fdpass"):
            return (("ProxyUseFdpass", "yes"),)
        if self.tunnel != "colab":
            return ()
        from remote.client.colab_route import control_options

        return control_options(layout.managed_dir, self.name)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data.pop("name")
        other = data.pop("other")
        return {**other, **data}

    @classmethod
    def from_dict(cls, name: str, data: Dict[str, Any]) -> HostRecord:
        known = {f.name for f in fields(cls)} - {"name", "other"}
        return cls(name=name, **{k: v for k, v in data.items() if k in known},
                   other={k: v for k, v in data.items() if k not in known})


@dataclass
class Registry:
    hosts: Dict[str, HostRecord] = field(default_factory=dict)
    user_config_created: bool = False

    def find(self, name: str) -> Optional[HostRecord]:
        """The host called `name`, ignoring case: `Colab` and `colab` would share a pin (host
        names in known_hosts have no case) and read as one name to people, so they are one host."""
        record = self.hosts.get(name)
        if record is not None:
            return record
        wanted = name.lower()
        return next((r for n, r in self.hosts.items() if n.lower() == wanted), None)

    def to_json(self) -> str:
        data = {"version": VERSION, "user_config_created": self.user_config_created,
                "hosts": {n: r.to_dict() for n, r in sorted(self.hosts.items())}}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def load(layout: SshLayout) -> Registry:
    try:
        data = json.loads(layout.registry.read_text())
    except FileNotFoundError:
        return Registry()
    except (OSError, ValueError) as exc:
        raise RemotectlError(f"cannot read {layout.registry}: {exc}",
                             "Move it aside and run `remotectl connect` again.") from None
    version = data.get("version", 0) if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise RemotectlError(f"{layout.registry} was written by a newer remotectl",
                             "Upgrade: pip install -U remotectl")
    try:
        if not isinstance(version, int) or not isinstance(data.get("hosts", {}), dict):
            raise TypeError("not the registry's shape")
        hosts = {n: HostRecord.from_dict(n, d) for n, d in data.get("hosts", {}).items()}
        for record in hosts.values():  # every record one an ssh entry can be written from
            if not isinstance(record.port, int) or isinstance(record.port, bool):
                raise TypeError(f"host {record.name!r} has the port {record.port!r}")
            render_entry(record.entry(layout))
    except (TypeError, ValueError, AttributeError, RemotectlError) as exc:
        why = exc.message if isinstance(exc, RemotectlError) else str(exc)
        raise RemotectlError(f"cannot read {layout.registry}: {why}",
                             "It was edited or damaged: move it aside and run `remotectl connect` again.") from None
    return Registry(hosts, bool(data.get("user_config_created", False)))


def save(layout: SshLayout, registry: Registry) -> bool:
    """Write the registry if it changed; return whether it did."""
    text = registry.to_json()
    try:
        if layout.registry.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write(layout.registry, text, mode=0o600)
    return True
