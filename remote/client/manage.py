"""The client's flows: connect, disconnect, check, in the order the design fixes.

card -> known_hosts -> sshconfig -> probe. Every input is validated before the first
write, so a bad card, port or identity file leaves every file as it was. All writes happen
under one lock and are small; the slow probe runs outside it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence

from remote import keys
from remote.client import known_hosts, registry, sshconfig
from remote.client.layout import SshLayout
from remote.client.lock import locked
from remote.client.registry import HostRecord, Registry
from remote.client.target import Target, parse_target
from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write

DEFAULT_NAME = "colab"
DEFAULT_PATH = "/content"


@dataclass
class ConnectRequest:
    """A validated `connect`: nothing in it can fail to be written."""

    target: Target
    name: str
    identity: Path
    forwards: List[str]
    path: str
    proxy_command: Optional[str] = None


@dataclass
class Applied:
    """What a write did: the record as written, how it differs, the user config's fate."""

    record: HostRecord
    change: str  # new | unchanged | address-updated | key-replaced | updated | removed
    include: Optional[sshconfig.UserConfigChange] = None
    warnings: List[str] = field(default_factory=list)


def check_identity(path: Path) -> Path:
    """A private key file ssh will use: readable, not a .pub, not open to others."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except FileNotFoundError:
        raise BadInput(f"identity file {path} does not exist",
                       "Create one with `remotectl keygen`, or pass --identity PATH.") from None
    except OSError as exc:
        raise BadInput(f"identity file {path} is unreadable: {exc.strerror or exc}") from None
    if not head.startswith(b"-----BEGIN"):
        raise BadInput(f"identity file {path} is not a private key"
                       + (" (that is the public half)" if head.startswith((b"ssh-", b"ecdsa-")) else ""))
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise BadInput(f"identity file {path} is readable by others; ssh would ignore it",
                       f"Fix: chmod 600 {path}")
    return path


def prepare_connect(layout: SshLayout, words: Sequence[str], name: str = DEFAULT_NAME,
                    identity: Optional[str] = None, forwards: Sequence[str] = (),
                    path: Optional[str] = None, host_key: Optional[str] = None,
                    port: Optional[int] = None, user: Optional[str] = None,
                    cloudflared: Optional[str] = None) -> ConnectRequest:
    """Validate everything `connect` was given (BadInput, exit 2); write nothing.

    A cloudflared card also needs cloudflared on this computer (RemotectlError, exit 1,
    with the install route for this OS when it is missing).
    """
    sshconfig.check_name(name)
    if host_key is not None:
        host_key = keys.bare(host_key)
    target = parse_target(words, host_key=host_key, port=port, user=user)
    specs = [sshconfig.parse_forward(f).spec() for f in forwards]
    ident = check_identity(Path(identity) if identity else layout.default_identity)
    if path is not None and not path.strip():
        raise BadInput("--path must not be empty")
    for value in (str(ident), str(layout.known_hosts), target.host, target.user):
        sshconfig.ssh_quote(value)  # refuses values ssh_config cannot hold
    proxy = cloudflared_proxy(cloudflared) if target.tunnel == "cloudflared" else None
    folder = path or target.path or DEFAULT_PATH  # --path, else the card's project folder
    return ConnectRequest(target, name, ident, specs, folder, proxy_command=proxy)


CLOUDFLARED_VAR = "REMOTECTL_CLOUDFLARED"


def cloudflared_proxy(explicit: Optional[str] = None) -> str:
    """The ProxyCommand for a quick tunnel: `--cloudflared`, else $REMOTECTL_CLOUDFLARED, else
    cloudflared on PATH or in remotectl's install folder."""
    from remote import cloudflared

    named = explicit or os.environ.get(CLOUDFLARED_VAR)
    if named:
        found = Path(os.path.abspath(os.path.expanduser(named)))
        if not (found.is_file() and os.access(found, os.X_OK)):
            source = "--cloudflared" if explicit else CLOUDFLARED_VAR
            raise BadInput(f"{source} names {found}, which is not an executable file")
    else:
        found = cloudflared.find_cloudflared([cloudflared.default_install_dir()])
    if found is None:
        raise RemotectlError(
            "this card uses a Cloudflare quick tunnel, and cloudflared is not installed on this "
            "computer; nothing was written",
            cloudflared.install_hint() + "\nThen run the same `remotectl connect` line again.")
    return cloudflared.proxy_command(found)


def _record(req: ConnectRequest, old: Optional[HostRecord]) -> HostRecord:
    t = req.target
    new = HostRecord(name=req.name, host=t.host, port=t.port, user=t.user, session=t.session,
                     identity=str(req.identity), tunnel=t.tunnel, host_key=t.host_key,
                     forwards=list(req.forwards), path=req.path,
                     strict="yes" if t.host_key else "accept-new", proxy_command=req.proxy_command)
    if old is not None:
        new.created, new.updated, new.last_check, new.other = old.created, old.updated, old.last_check, old.other
        if old.host_key and old.host_key == new.host_key:
            # The same machine at a new address (a runtime restarted with `up --persist`): keep
            # its pin's name, so known_hosts stays byte-for-byte as it is.
            new.session = old.session
        if not _same(old, new):
            new.updated = registry.now()
            if old.host_key != new.host_key or old.endpoint != new.endpoint:
                new.last_check = None
    return new


def _same(a: HostRecord, b: HostRecord) -> bool:
    skip = {"created", "updated", "last_check", "other"}
    return {k: v for k, v in a.to_dict().items() if k not in skip} == \
        {k: v for k, v in b.to_dict().items() if k not in skip}


def describe_change(old: Optional[HostRecord], new: HostRecord) -> str:
    """How a connect changed a host: the words `connect` reports (and issue 7's in-place update)."""
    if old is None:
        return "new"
    if _same(old, new):
        return "unchanged"
    if old.host_key and old.host_key == new.host_key and old.endpoint != new.endpoint:
        return "address-updated"
    if old.host_key != new.host_key:
        return "key-replaced"
    return "updated"


def _sync(layout: SshLayout, reg: Registry) -> Optional[sshconfig.UserConfigChange]:
    """Write registry, managed config and the Include block to match `reg` (only what changed)."""
    layout.ensure_managed_dir()
    if not reg.hosts:
        for path in (layout.managed_config, layout.registry):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        change = sshconfig.drop_include(layout.user_config, layout.managed_config,
                                        delete_if_empty=reg.user_config_created)
        return change
    text = sshconfig.render_managed(r.entry(layout) for r in reg.hosts.values())
    try:
        current = layout.managed_config.read_text()
    except FileNotFoundError:
        current = None
    if current != text:
        atomic_write(layout.managed_config, text, mode=0o600)
    change = sshconfig.ensure_include(layout.user_config, layout.managed_config)
    if change.created:
        reg.user_config_created = True
    registry.save(layout, reg)
    return change


def _unpin_if_unused(layout: SshLayout, reg: Registry, alias: str) -> None:
    if all(r.alias != alias for r in reg.hosts.values()):
        known_hosts.unpin(layout.known_hosts, alias)


def apply_connect(layout: SshLayout, req: ConnectRequest) -> Applied:
    """Pin the key, write the entry and the Include; a repeated identical call writes nothing."""
    layout.ensure_managed_dir()
    with locked(layout.lock_file):
        reg = registry.load(layout)
        old = reg.hosts.get(req.name)
        record = _record(req, old)
        change = describe_change(old, record)
        if record.host_key:
            known_hosts.pin(layout.known_hosts, record.alias, record.host_key)
        reg.hosts[req.name] = record
        if old is not None and old.alias != record.alias:
            _unpin_if_unused(layout, reg, old.alias)
        include = _sync(layout, reg)
    warnings = [include.warning] if include and include.warning else []
    return Applied(record, change, include, warnings)


def disconnect(layout: SshLayout, name: Optional[str]) -> Applied:
    """Remove the entry and its pinned key; the last one out also removes the Include block."""
    if not layout.managed_dir.is_dir():
        resolve_name(Registry(), name)  # raises: nothing is managed here
    with locked(layout.lock_file):
        reg = registry.load(layout)
        name = resolve_name(reg, name)
        record = reg.hosts.pop(name)
        _unpin_if_unused(layout, reg, record.alias)
        include = _sync(layout, reg)
    warnings = [include.warning] if include and include.warning else []
    return Applied(record, "removed", include, warnings)


def resolve_name(reg: Registry, name: Optional[str]) -> str:
    """NAME as given, else `colab`, else the only managed host; BadInput otherwise."""
    if name:
        if name not in reg.hosts:
            known = ", ".join(sorted(reg.hosts)) or "none yet"
            raise BadInput(f"no host named {name!r} is managed by remotectl (managed: {known})")
        return name
    if DEFAULT_NAME in reg.hosts:
        return DEFAULT_NAME
    if len(reg.hosts) == 1:
        return next(iter(reg.hosts))
    if not reg.hosts:
        raise BadInput("no hosts yet: run `remotectl connect <card>` first")
    raise BadInput(f"several hosts are managed ({', '.join(sorted(reg.hosts))}): name one")


def get_record(layout: SshLayout, name: Optional[str]) -> HostRecord:
    reg = registry.load(layout)
    return reg.hosts[resolve_name(reg, name)]


def endpoint_for(layout: SshLayout, record: HostRecord):
    """The probe's endpoint: the pinned key, or one ssh recorded under accept-new, or none yet."""
    from remote.client.probe import Endpoint

    key = record.host_key
    if not key:
        recorded = known_hosts.lookup(layout.known_hosts, record.alias)
        key = recorded[0] if recorded else None
    return Endpoint(record.host, record.port, record.user, record.identity, key, record.proxy_command)


def record_check(layout: SshLayout, name: str, report=None, error: Optional[str] = None) -> Optional[HostRecord]:
    """Store the check's outcome; a key learned on first use becomes a strict pin."""
    with locked(layout.lock_file):
        reg = registry.load(layout)
        record = reg.hosts.get(name)
        if record is None:  # disconnected meanwhile
            return None
        entry = {"at": registry.now(), "ok": error is None, "error": error,
                 "rtt_ms": report.rtt_ms if report else None,
                 "total_ms": report.total_ms if report else None,
                 "summary": report.summary() if report else None}
        record.last_check = entry
        if report is not None and not record.host_key:
            known_hosts.pin(layout.known_hosts, record.alias, report.host_key)
            reg.hosts[name] = replace(record, host_key=keys.bare(report.host_key), strict="yes")
        _sync(layout, reg)
        return reg.hosts[name]
