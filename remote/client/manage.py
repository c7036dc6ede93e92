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
from remote.client.known_hosts import PinStore
from remote.client.layout import SshLayout
from remote.client.lock import locked
from remote.client.registry import HostRecord, Registry
from remote.client.target import Target, parse_target
from remote.client.untrusted import clean_line
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
    follow: Optional[dict] = None  # --follow: {"source": ..., "fdpass": ...} (remote/client/follow.py)
    notes: List[str] = field(default_factory=list)  # said before writing (e.g. a record not synced yet)


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
                    cloudflared: Optional[str] = None, follow: Optional[str] = None) -> ConnectRequest:
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
    if path is not None and clean_line(path, limit=None) != path:
        raise BadInput(f"--path {clean_line(path)!r} holds a control character")
    for value in (target.host, target.user):
        sshconfig.ssh_quote(value)  # refuses values ssh_config cannot hold
    # Paths with quotes, spaces, '%', globs or non-ASCII: proven with this computer's own ssh
    # (in a scratch folder) before anything is written, or refused with the reason.
    sshconfig.preflight_paths(layout.managed_config, ident, layout.known_hosts)
    sshconfig.check_user_config(layout.user_config)
    proxy = cloudflared_proxy(cloudflared) if target.tunnel == "cloudflared" else None
    folder = path or target.path or DEFAULT_PATH  # --path, else the card's project folder
    spec, notes = None, []
    if follow is not None:  # the entry's ProxyCommand becomes `remotectl proxy NAME`
        from remote.client import follow as following

        spec, proxy, notes = following.prepare(layout, follow, target.host_key, name, target.session,
                                               cloudflared=cloudflared)
    return ConnectRequest(target, name, ident, specs, folder, proxy_command=proxy, follow=spec, notes=notes)


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
                     strict="yes" if t.host_key or t.tunnel == "colab" else "accept-new",
                     proxy_command=req.proxy_command, follow=req.follow)
    if old is not None:
        new.created, new.updated, new.last_check, new.other = old.created, old.updated, old.last_check, old.other
        if old.host_key and old.host_key == new.host_key:
            # The same machine at a new address (a runtime restarted with `up --persist`): the
            # session it reported first stays, so the entry says where it came from.
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


def _migrate_pins(layout: SshLayout, reg: Registry) -> List[str]:
    """File every host's key under its host alias (older remotectl used the card's session).

    Returns the old aliases to drop once the managed config no longer names them. The key
    moved is the one in known_hosts (what ssh has been checking), not the registry's copy.
    """
    pins = PinStore(layout.known_hosts)
    stale = []
    for record in reg.hosts.values():
        old = known_hosts.lookup(layout.known_hosts, record.legacy_alias)
        if not old:
            continue
        if pins.lookup(record.name) is None:
            pins.pin(record.name, old[0])
        stale.append(record.legacy_alias)
    return stale


def apply_connect(layout: SshLayout, req: ConnectRequest) -> Applied:
    """Pin the key, write the entry and the Include; a repeated identical call writes nothing.

    The pin is filed under the host alias (`--name`), so a card can only ever replace the
    key of the host it is connected as; `Colab` and `colab` are the same host.
    """
    layout.ensure_managed_dir()
    pins = PinStore(layout.known_hosts)
    with locked(layout.lock_file):
        reg = registry.load(layout)
        stale = _migrate_pins(layout, reg)
        old = reg.find(req.name)
        record = _record(req, old)
        change = describe_change(old, record)
        if record.host_key:
            pins.pin(record.name, record.host_key)
        else:  # trust on first use: the key an earlier machine had under this name must not stay
            pins.unpin(record.name)
        if old is not None:
            del reg.hosts[old.name]  # same host, perhaps spelled with other capitals
        reg.hosts[record.name] = record
        include = _sync(layout, reg)
        for alias in stale:
            known_hosts.unpin(layout.known_hosts, alias)
    warnings = [include.warning] if include and include.warning else []
    return Applied(record, change, include, warnings)


def disconnect(layout: SshLayout, name: Optional[str]) -> Applied:
    """Remove the entry and its pinned key; the last one out also removes the Include block."""
    if not layout.managed_dir.is_dir():
        resolve_name(Registry(), name)  # raises: nothing is managed here
    sshconfig.check_user_config(layout.user_config)
    with locked(layout.lock_file):
        reg = registry.load(layout)
        name = resolve_name(reg, name)
        record = reg.hosts.pop(name)
        PinStore(layout.known_hosts).unpin(record.name)
        if record.follow:
            from remote.client import follow

            follow.forget(layout, record.name)
        if all(r.legacy_alias != record.legacy_alias for r in reg.hosts.values()):
            known_hosts.unpin(layout.known_hosts, record.legacy_alias)
        include = _sync(layout, reg)
    warnings = [include.warning] if include and include.warning else []
    return Applied(record, "removed", include, warnings)


def resolve_name(reg: Registry, name: Optional[str]) -> str:
    """NAME as given (any capitals), else `colab`, else the only managed host; BadInput otherwise."""
    if name:
        found = reg.find(name)
        if found is None:
            known = ", ".join(sorted(reg.hosts)) or "none yet"
            raise BadInput(f"no host named {name!r} is managed by remotectl (managed: {known})")
        return found.name
    found = reg.find(DEFAULT_NAME)
    if found is not None:
        return found.name
    if len(reg.hosts) == 1:
        return next(iter(reg.hosts))
    if not reg.hosts:
        raise BadInput("no hosts yet: run `remotectl connect <card>` first")
    raise BadInput(f"several hosts are managed ({', '.join(sorted(reg.hosts))}): name one")


def get_record(layout: SshLayout, name: Optional[str]) -> HostRecord:
    reg = registry.load(layout)
    return reg.hosts[resolve_name(reg, name)]


def split_transfer_args(layout: SshLayout, args: Sequence[str], verb: str):
    """`[NAME] SOURCE [DEST]` -> (record, source, dest or None).

    With two words the first is NAME only if it is a managed host (any capitals): `pull colab
    saved` and `pull saved models` both read as people mean them.
    """
    if not 1 <= len(args) <= 3:
        raise BadInput(f"usage: remotectl {verb} [NAME] SOURCE [DEST]")
    reg = registry.load(layout)
    if len(args) == 3 or (len(args) == 2 and reg.find(args[0]) is not None):
        name, rest = args[0], list(args[1:])
    else:
        name, rest = None, list(args)
    record = reg.hosts[resolve_name(reg, name)]
    return record, rest[0], rest[1] if len(rest) > 1 else None


class NotPinned(RemotectlError):
    """A host whose entry demands a pinned key, with no key in known_hosts."""


def pinned_key(layout: SshLayout, record: HostRecord) -> Optional[str]:
    """The key ssh checks this host against: known_hosts under its alias (or its older alias).

    The registry's copy is not trusted for this: known_hosts is what `ssh NAME` verifies, so
    `check` verifies the same thing.
    """
    key = PinStore(layout.known_hosts).lookup(record.name)
    if key is None:
        legacy = known_hosts.lookup(layout.known_hosts, record.legacy_alias)
        key = legacy[0] if legacy else None
    return key


def endpoint_for(layout: SshLayout, record: HostRecord):
    """The probe's endpoint: the key pinned in known_hosts, or none yet under accept-new."""
    from remote.client.probe import Endpoint

    key = pinned_key(layout, record)
    if key is None and record.strict == "yes":
        raise NotPinned(f"no host key is pinned for {record.name} in {layout.known_hosts}, so ssh "
                        "refuses it and so does remotectl",
                        f"Run the `remotectl connect <card> --name {record.name}` line again.")
    if record.follow:  # where the signed record says it is now, as `remotectl proxy` finds it
        from remote.client import follow

        return follow.probe_endpoint(layout, record, key)
    return Endpoint(record.host, record.port, record.user, record.identity, key, record.proxy_command)


@dataclass
class CheckOutcome:
    """What `check` found: the record as stored afterwards, the probe report or the error."""

    record: HostRecord
    report: object = None  # probe.ProbeReport
    error: Optional[RemotectlError] = None
    relearned: Optional[str] = None  # Colab's route: the key a recreated runtime replaced


def check(layout: SshLayout, name: Optional[str], timeout: float = 15.0, deep: bool = False) -> CheckOutcome:
    """Log in with the pin, run the probe, store the outcome (a key learned on first use is pinned)."""
    from remote.client import probe

    record = get_record(layout, name)
    if record.tunnel == "colab":  # learned (and re-learned) through Google's route only
        from remote.client import colab_connect

        return colab_connect.check(layout, record, timeout=timeout, deep=deep)
    try:
        report = probe.probe(endpoint_for(layout, record), timeout=timeout, deep=deep)
    except RemotectlError as exc:
        stored = record_check(layout, record.name, error=exc.message)
        return CheckOutcome(stored or record, error=exc)
    stored = record_check(layout, record.name, report=report)
    return CheckOutcome(stored or record, report=report)


def record_check(layout: SshLayout, name: str, report=None, error: Optional[str] = None) -> Optional[HostRecord]:
    """Store the check's outcome; a key learned on first use becomes a strict pin."""
    with locked(layout.lock_file):
        reg = registry.load(layout)
        record = reg.hosts.get(name)
        if record is None:  # disconnected meanwhile
            return None
        entry = {"at": registry.now(), "ok": error is None, "error": clean_line(error) if error else None,
                 "rtt_ms": report.rtt_ms if report else None,
                 "total_ms": report.total_ms if report else None,
                 "summary": report.summary() if report else None}
        record.last_check = entry
        if report is not None and report.learned:
            PinStore(layout.known_hosts).pin(record.name, report.host_key)
            reg.hosts[name] = replace(record, host_key=keys.bare(report.host_key), strict="yes")
        _sync(layout, reg)
        return reg.hosts[name]
