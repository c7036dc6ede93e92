"""Following a runtime that moves: a host's current address, from its signed endpoint record.

`connect CARD --follow SOURCE` makes the entry's ProxyCommand `remotectl proxy NAME`
(remote/client/proxy.py), which asks this module where NAME is now. SOURCE is

- a folder on this computer that mirrors the server's `--persist` folder (Google Drive for
  desktop, Dropbox, a lab's shared disk): its `endpoint.json`; or
- `ngrok`: the ngrok API (`GET /endpoints`, with NGROK_API_KEY from the environment or the
  0600 file `~/.ssh/remotectl/ngrok_api_key`), whose endpoints carry a record in their metadata.

Neither channel is trusted: a record counts only if it verifies against the key pinned for
NAME (remote/endpoint_record.py), and only if its sequence number is not below the highest
this computer has seen for NAME (kept in `~/.ssh/remotectl/followed.json`, so an old record
replayed into the folder or the API is refused). Every refusal is one RemotectlError line and
changes nothing here; OpenSSH then still checks the pinned key under HostKeyAlias.

`followed.json` also remembers the last address followed and the exact record bytes it came
from (by digest), which is what `hosts` shows and what spares the next `remotectl proxy`
the signature check when the record has not changed.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple, Union

from remote import endpoint_record as records
from remote.errors import BadInput, RemotectlError

if TYPE_CHECKING:
    from remote.client.layout import SshLayout

# `remotectl proxy` runs this on every ssh connection, so what it needs loads fast: no
# dataclasses, registry, ssh_config writer or atomic-file helpers (imported where written).

NGROK = "ngrok"
API_URL_VAR = "REMOTECTL_NGROK_API_URL"  # tests point it at the API stand-in
DEFAULT_API_URL = "https://api.ngrok.com"
API_KEY_VAR = "NGROK_API_KEY"
KEY_FILE = "ngrok_api_key"
STATE_FILE = "followed.json"
STATE_LOCK = ".followed.lock"
MAX_API_BYTES = 4 * 1024 * 1024
MAX_API_PAGES = 10


class FollowError(RemotectlError):
    """The followed address cannot be had: a missing source, no record, a refused record."""


class Paths(NamedTuple):
    """The files of an ssh folder this module reads (an SshLayout has the same attributes)."""

    managed_dir: Path
    known_hosts: Path
    registry: Path


Layout = Union["SshLayout", Paths]


def paths(ssh_dir: Optional[str]) -> Paths:
    """Like remote.client.layout.layout(), without its imports: the proxy's view of an ssh folder."""
    managed = Path(os.path.abspath(os.path.expanduser(ssh_dir or "~/.ssh"))) / "remotectl"
    return Paths(managed, managed / "known_hosts", managed / "hosts.json")


class Followed(NamedTuple):
    """What one managed host follows (from hosts.json and known_hosts)."""

    name: str
    source: str  # an absolute folder, or "ngrok"
    pinned_key: str  # "ssh-ed25519 AAAA..."
    fdpass: bool = False
    cloudflared: Optional[str] = None  # the one `connect --cloudflared` named, for hosts behind Cloudflare

    @property
    def key(self) -> str:
        return self.name.lower()


class Resolved(NamedTuple):
    """Where a verified record says the host is."""

    host: str
    port: int
    kind: str
    seq: int
    at: int
    session: str
    digest: str  # of the record's exact bytes


# -- what a host follows ------------------------------------------------------------------------
def load(layout: Layout, name: str) -> Followed:
    """The followed host NAME (FollowError when it is not managed, or does not follow anything).

    hosts.json is read directly (registry.py's format, version 1; names match without case,
    as registry.find matches them) so the proxy need not import the ssh_config writer.
    """
    from remote.client.known_hosts import PinStore

    try:
        data = json.loads(Path(layout.registry).read_text())
        hosts = data.get("hosts") if isinstance(data, dict) else None
    except FileNotFoundError:
        hosts = {}
    except (OSError, ValueError) as exc:
        raise FollowError(f"cannot read {layout.registry}: {exc}") from None
    hosts = hosts if isinstance(hosts, dict) else {}
    found = name if name in hosts else next((n for n in hosts if n.lower() == name.lower()), None)
    if found is None or not isinstance(hosts[found], dict):
        raise FollowError(f"no host named {name!r} is managed in {layout.managed_dir}")
    spec = hosts[found].get("follow")
    if not isinstance(spec, dict) or not isinstance(spec.get("source"), str):
        raise FollowError(f"{found} does not follow a record (it was connected without --follow)")
    pinned = PinStore(layout.known_hosts).lookup(found)
    if not pinned:
        raise FollowError(f"{found}: no host key is pinned in {layout.known_hosts}, so no record can "
                          f"be checked; run `remotectl connect <card> --name {found} --follow ...` again")
    named = spec.get("cloudflared")
    return Followed(found, spec["source"], pinned, bool(spec.get("fdpass")), named if isinstance(named, str) else None)


def source_label(source: str) -> str:
    return "the ngrok API" if source == NGROK else source


# -- the laptop's memory: highest sequence seen, last address -----------------------------------
def _state_path(layout: Layout) -> Path:
    return Path(layout.managed_dir) / STATE_FILE


def load_state(layout: Layout) -> Dict[str, Dict[str, Any]]:
    try:
        data = json.loads(_state_path(layout).read_text())
    except (OSError, ValueError):
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) else None
    return hosts if isinstance(hosts, dict) else {}


def seen(layout: Layout, followed: Followed) -> Optional[Dict[str, Any]]:
    """What this computer remembers for the host: only while it is the same pinned key."""
    entry = load_state(layout).get(followed.key)
    if isinstance(entry, dict) and entry.get("fp") == records.fingerprint_of(followed.pinned_key):
        return entry
    return None


def remember(layout: Layout, followed: Followed, resolved: Resolved) -> None:
    """Keep the highest sequence number and the address followed; written only when they change
    (the usual connection finds them unchanged and takes no lock)."""
    fp = records.fingerprint_of(followed.pinned_key)
    entry = {"fp": fp, "seq": resolved.seq, "digest": resolved.digest, "host": resolved.host,
             "port": resolved.port, "kind": resolved.kind, "at": resolved.at, "session": resolved.session,
             "source": followed.source}
    if load_state(layout).get(followed.key) == entry:
        return
    from remote.client.lock import locked
    from remote.files import atomic_write

    with locked(Path(layout.managed_dir) / STATE_LOCK, timeout_s=10):
        hosts = load_state(layout)
        old = hosts.get(followed.key) if isinstance(hosts.get(followed.key), dict) else {}
        if old.get("fp") == fp and isinstance(old.get("seq"), int) and old["seq"] > resolved.seq:
            return  # another connection followed a newer record meanwhile
        if old == entry:
            return
        hosts[followed.key] = entry
        atomic_write(_state_path(layout), json.dumps({"version": 1, "hosts": hosts}, indent=1, sort_keys=True)
                     + "\n", mode=0o600)


def forget(layout: Layout, name: str) -> None:
    """Drop what was remembered for NAME (its entry is gone)."""
    from remote.files import atomic_write

    hosts = load_state(layout)
    if name.lower() in hosts:
        del hosts[name.lower()]
        if hosts:
            atomic_write(_state_path(layout), json.dumps({"version": 1, "hosts": hosts}, indent=1,
                                                         sort_keys=True) + "\n", mode=0o600)
        else:
            try:
                _state_path(layout).unlink()
            except FileNotFoundError:
                pass


# -- resolving --------------------------------------------------------------------------------
def resolve(layout: Layout, followed: Followed) -> Resolved:
    """The newest record for the host, verified and not older than what was seen; FollowError otherwise."""
    before = seen(layout, followed)
    if followed.source == NGROK:
        found = _from_ngrok(layout, followed)
    else:
        found = _from_folder(followed, before)
    if before is not None and isinstance(before.get("seq"), int) and found.seq < before["seq"]:
        raise FollowError(f"{followed.name}: refused a replayed older record (sequence {found.seq}, but "
                          f"{before['seq']} was already seen) from {source_label(followed.source)}")
    return found


def _read_small(path: Path) -> bytes:
    """A regular file's first MAX_BYTES + 1 bytes; never blocks on a FIFO or reads a device endlessly."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        return os.read(fd, records.MAX_BYTES + 1)
    finally:
        os.close(fd)


def _from_folder(followed: Followed, before: Optional[Dict[str, Any]]) -> Resolved:
    folder = Path(followed.source)
    path = folder / records.FILE_NAME
    try:
        data = _read_small(path)
    except FileNotFoundError:
        if not folder.is_dir():
            raise FollowError(f"{followed.name}: the followed folder {folder} is missing (is it synced: "
                              "Google Drive for desktop running and signed in?)") from None
        raise FollowError(f"{followed.name}: no endpoint record in {folder} yet (the server writes "
                          f"{records.FILE_NAME} there with `up --persist`; has it synced?)") from None
    except OSError as exc:
        raise FollowError(f"{followed.name}: cannot read {path}: {exc.strerror or exc}") from None
    digest = records.digest(data)
    if before is not None and before.get("digest") == digest and isinstance(before.get("host"), str):
        # these very bytes verified before against this very pin: no need to check them again
        return Resolved(before["host"], before["port"], before["kind"], before["seq"], before["at"],
                        before.get("session", "?"), digest)
    try:
        record = records.verify(data, followed.pinned_key)
    except records.RecordError as exc:
        raise FollowError(f"{followed.name}: refused the record in {path}: {exc.message}") from None
    if not record.bound:
        raise FollowError(f"{followed.name}: refused the record in {path}: it names no address")
    return Resolved(record.host, record.port, record.kind, record.seq, record.at, record.session, digest)


# -- the ngrok API ----------------------------------------------------------------------------
def key_file(layout: Layout) -> Path:
    return Path(layout.managed_dir) / KEY_FILE


def _check_key(value: str, where: str) -> str:
    key = value.strip()
    if not key or len(key) > 512 or any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise FollowError(f"the ngrok API key in {where} is not a key (one line of printable characters)")
    return key


def api_key(layout: Layout) -> Tuple[str, str]:
    """(key, where it came from): NGROK_API_KEY, else the 0600 key file. Never printed."""
    value = os.environ.get(API_KEY_VAR)
    if value and value.strip():
        return _check_key(value, API_KEY_VAR), API_KEY_VAR
    path = key_file(layout)
    try:
        info = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        raise FollowError(f"no ngrok API key: set {API_KEY_VAR}, or put it in {path} (mode 0600)") from None
    except OSError as exc:
        raise FollowError(f"cannot read the ngrok API key file {path}: {exc.strerror or exc}") from None
    if os.name == "posix" and stat.S_IMODE(info.st_mode) & 0o077:
        raise FollowError(f"the ngrok API key file {path} is readable by others; fix: chmod 600 {path}")
    return _check_key(text, str(path)), str(path)


def api_base() -> str:
    """The API's base URL: https, or http to this machine only (the key must not cross a network bare)."""
    from urllib.parse import urlsplit

    base = os.environ.get(API_URL_VAR, "").strip() or DEFAULT_API_URL
    parts = urlsplit(base)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise FollowError(f"{API_URL_VAR}={base!r}: the ngrok API key goes only to an https:// URL "
                          "(or http:// on this machine)")
    return base.rstrip("/")


def _get_json(url: str, key: str, timeout: float) -> Dict[str, Any]:
    import urllib.error
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # the key must not follow a redirect elsewhere
            return None

    opener = urllib.request.build_opener(NoRedirects)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}", "Ngrok-Version": "2",
                                                   "Accept": "application/json",
                                                   "User-Agent": "remotectl-follow"})
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_API_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            err = json.loads(exc.read(65536) or b"{}")
            detail = str(err.get("error_code") or "") if isinstance(err, dict) else ""
        except (ValueError, OSError):
            pass
        what = "refused the API key" if exc.code in (401, 403) else f"answered HTTP {exc.code}"
        raise FollowError(f"the ngrok API {what}" + (f" ({detail[:40]})" if detail else "")) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FollowError(f"cannot reach the ngrok API ({api_base()}): {reason}") from None
    if len(body) > MAX_API_BYTES:
        raise FollowError("the ngrok API's answer is too large to be an endpoint list")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise FollowError("the ngrok API's answer is not JSON") from None
    if not isinstance(data, dict):
        raise FollowError("the ngrok API's answer is not an endpoint list")
    return data


def list_endpoints(layout: Layout, timeout: float = 15.0) -> List[Dict[str, Any]]:
    """Every online endpoint of the account (following next_page_uri on the same origin only)."""
    from urllib.parse import urlsplit

    key, _ = api_key(layout)
    base = api_base()
    origin = urlsplit(base)[:2]
    url: Optional[str] = f"{base}/endpoints?limit=100"
    found: List[Dict[str, Any]] = []
    for _ in range(MAX_API_PAGES):
        if url is None:
            break
        data = _get_json(url, key, timeout)
        page = data.get("endpoints")
        if not isinstance(page, list):
            raise FollowError("the ngrok API's answer holds no endpoint list")
        found += [e for e in page if isinstance(e, dict)]
        following = data.get("next_page_uri")
        url = following if isinstance(following, str) and urlsplit(following)[:2] == origin else None
    return found


def _api_address(endpoint: Dict[str, Any]) -> Optional[Tuple[str, int]]:
    from remote.hostnames import valid_host

    url = endpoint.get("public_url") or endpoint.get("url")
    if not isinstance(url, str) or not url.startswith("tcp://"):
        return None
    host, _, port = url[len("tcp://"):].rpartition(":")
    if not valid_host(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


def _from_ngrok(layout: Layout, followed: Followed) -> Resolved:
    """The newest endpoint whose metadata holds a record signed by the pinned key."""
    fp = records.fingerprint_of(followed.pinned_key)
    best: Optional[Resolved] = None
    refused: List[str] = []
    for endpoint in list_endpoints(layout):
        metadata = endpoint.get("metadata")
        if not isinstance(metadata, str) or fp not in metadata:
            continue  # someone else's endpoint (the label is not trusted, only used to skip)
        address = _api_address(endpoint)
        if address is None:
            continue
        try:
            record = records.verify(metadata, followed.pinned_key)
        except records.RecordError as exc:
            refused.append(exc.message)
            continue
        if record.bound and (record.host, record.port) != address:
            refused.append(f"it names {record.host}:{record.port} but sits on {address[0]}:{address[1]}")
            continue
        if best is None or record.seq > best.seq:
            best = Resolved(address[0], address[1], record.kind, record.seq, record.at, record.session,
                            records.digest(metadata))
    if best is None:
        if refused:
            raise FollowError(f"{followed.name}: refused the ngrok endpoint record(s) claiming its key: "
                              f"{refused[0]}")
        raise FollowError(f"{followed.name}: no online ngrok endpoint carries a record of its host key {fp} "
                          "(is the runtime up, with `up --persist`?)")
    return best


# -- for connect and check --------------------------------------------------------------------
def prepare(layout: Layout, source: str, host_key: Optional[str], name: str,
            session: Optional[str] = None, cloudflared: Optional[str] = None) -> Tuple[Dict[str, Any], str, List[str]]:
    """Validate `--follow SOURCE` before anything is written: (the record's `follow`, the
    ProxyCommand, notes). BadInput for a source that cannot work; RemotectlError (exit 1) for a
    folder whose record is not this host's."""
    if not host_key:
        raise BadInput("--follow needs the host's key to check its records: use the card "
                       "(or --host-key with a plain address)")
    try:
        records.ed25519_raw(host_key)
    except ValueError:
        raise BadInput("--follow needs an Ed25519 host key (what `remotectl up` makes); this one is "
                       f"{host_key.split()[0]}") from None
    notes: List[str] = []
    if source.strip().lower() == NGROK:
        source = NGROK
        notes += _keep_api_key(layout)
    else:
        folder = Path(os.path.abspath(os.path.expanduser(source)))
        if not folder.is_dir():
            raise BadInput(f"--follow {folder}: no such folder on this computer; nothing was written",
                           "Give the folder that mirrors the server's --persist folder (e.g. Google Drive for "
                           "desktop's My Drive/remotectl/identity), or `--follow ngrok`.")
        source = str(folder)
        path = folder / records.FILE_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            notes.append(f"no {records.FILE_NAME} in {folder} yet: ssh {name} works once the server's "
                         "record has synced there")
        except OSError as exc:
            raise BadInput(f"--follow {folder}: cannot read {path}: {exc.strerror or exc}") from None
        else:
            try:
                record = records.verify(data, host_key)
            except records.RecordError as exc:
                raise RemotectlError(f"the record in {path} is not this host's: {exc.message}; nothing was written",
                                     "Point --follow at the folder of this runtime's `up --persist`.") from None
            if session and record.session != session:
                notes.append(f"the record in {folder} is from an earlier runtime ({record.session}); "
                             "it has not synced yet, or this runtime was started without --persist there")
    fdpass = os.name == "posix" and hasattr(__import__("socket"), "send_fds")
    spec: Dict[str, Any] = {"source": source, "fdpass": fdpass}
    if cloudflared:
        spec["cloudflared"] = os.path.abspath(os.path.expanduser(cloudflared))
    return spec, proxy_command(layout, name, fdpass), notes


def _keep_api_key(layout: Layout) -> List[str]:
    """ssh (and VS Code, started from a dock) may not see the shell's NGROK_API_KEY: keep it in the
    0600 file the proxy reads, once."""
    value = os.environ.get(API_KEY_VAR, "").strip()
    path = key_file(layout)
    if not value:
        try:
            api_key(layout)
        except FollowError as exc:
            raise BadInput(f"--follow ngrok: {exc.message}; nothing was written",
                           "Create an API key at https://dashboard.ngrok.com/api-keys (not the authtoken), then "
                           f"`export {API_KEY_VAR}=...` and run connect again.") from None
        return []
    _check_key(value, API_KEY_VAR)
    try:
        if path.read_text().strip() == value:
            return []
    except OSError:
        pass
    from remote.files import atomic_write

    layout.ensure_managed_dir()
    atomic_write(path, value + "\n", mode=0o600)
    return [f"kept {API_KEY_VAR} in {path} (0600), where `remotectl proxy` reads it when ssh or VS Code "
            "run without your shell's environment"]


def program() -> List[str]:
    """How ssh starts this remotectl: its console script, else this Python with `-m remote.cli`."""
    exe = "remotectl.exe" if os.name == "nt" else "remotectl"
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == exe and argv0.is_file():
        return [os.path.abspath(argv0)]
    sibling = Path(sys.executable).with_name(exe)
    if sibling.is_file():
        return [str(sibling)]
    return [os.path.abspath(sys.executable), "-m", "remote.cli"]


def proxy_command(layout: Layout, name: str, fdpass: bool) -> str:
    """`"<remotectl>" proxy [--ssh-dir D] [--fdpass] NAME`, quoted for the shell ssh hands it to."""
    argv = program() + ["proxy"]
    if not layout.is_default:
        argv += ["--ssh-dir", str(layout.ssh_dir)]
    if fdpass:
        argv.append("--fdpass")
    argv.append(name)
    if any(ch in arg for arg in argv for ch in "\r\n\0"):
        raise BadInput("cannot put a path with a line break into a ProxyCommand")
    if os.name == "nt":  # ssh hands it to CreateProcess: the program in double quotes
        if any('"' in arg for arg in argv):
            raise BadInput("a Windows path in a ProxyCommand cannot contain a double quote")
        quoted = [f'"{a}"' if (i == 0 or " " in a) else a for i, a in enumerate(argv)]
    else:  # ssh hands it to the user's shell (`exec ...`): single quotes, where nothing is special
        quoted = [_posix_quote(a, always=(i == 0)) for i, a in enumerate(argv)]
    return " ".join(quoted).replace("%", "%%")  # ssh expands %-tokens in a ProxyCommand


def _posix_quote(arg: str, always: bool = False) -> str:
    if not always and arg and all(c.isalnum() or c in "/._-=+:,@" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def describe(layout: Layout, name: str, source: str) -> Dict[str, Any]:
    """What `hosts` and `check` show: the source, the last address followed and its record's age."""
    import time

    entry = load_state(layout).get(name.lower())
    shown: Dict[str, Any] = {"source": source, "resolved": False}
    if isinstance(entry, dict) and isinstance(entry.get("host"), str) and entry.get("source") == source:
        at = entry.get("at") if isinstance(entry.get("at"), int) else None
        shown.update(resolved=True, host=entry["host"], port=entry.get("port"), kind=entry.get("kind"),
                     seq=entry.get("seq"), session=entry.get("session"),
                     record_age_s=max(0, int(time.time() - at)) if at is not None else None)
    return shown


def probe_endpoint(layout: Layout, record: Any, pinned_key: Optional[str]):
    """The paramiko probe's endpoint for a followed host: resolved here, exactly as the proxy does."""
    from remote.client.probe import Endpoint

    followed = load(layout, record.name)
    resolved = resolve(layout, followed)
    remember(layout, followed, resolved)
    proxy = None
    if resolved.kind == "cloudflared":
        from remote import cloudflared

        proxy = cloudflared.proxy_command(cloudflared_path(followed.cloudflared))
        return Endpoint(resolved.host, 22, record.user, record.identity, pinned_key, proxy)
    return Endpoint(resolved.host, resolved.port, record.user, record.identity, pinned_key, proxy)


def cloudflared_path(chosen: Optional[str] = None) -> Path:
    """cloudflared on this computer, for a followed host behind a Cloudflare tunnel: the one
    `connect --cloudflared` named, else $REMOTECTL_CLOUDFLARED, PATH, remotectl's install folder."""
    from remote import cloudflared

    for named in (chosen, os.environ.get("REMOTECTL_CLOUDFLARED")):
        if named and os.path.isfile(named) and os.access(named, os.X_OK):
            return Path(os.path.abspath(named))
    found = cloudflared.find_cloudflared([cloudflared.default_install_dir()])
    if found is None:
        raise FollowError("the followed host is now behind a Cloudflare tunnel, and cloudflared is not "
                          "installed on this computer (`remotectl install-cloudflared`)")
    return Path(found)
