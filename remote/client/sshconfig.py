"""ssh_config: the file remotectl owns and the one marked Include block in the user's file.

`~/.ssh/remotectl/config` is generated whole from the hosts registry (one `Host` block per
managed host). The user's `~/.ssh/config` gets one marked block at its very top::

    # >>> remotectl >>> (managed block: `remotectl disconnect` removes it)
    Include /home/me/.ssh/remotectl/config
    # <<< remotectl <<<

Why the top, not merely above the first Host block: ssh_config is first-match-wins, and
global lines above the first `Host` (a user's `User`, `ForwardAgent yes`, `ProxyJump`)
would otherwise beat our entry's values. Included `Host` blocks do not leak: ssh restores
the including file's context after the Include. The block's bytes use the file's line
ending, and removing it gives back the user's original file byte for byte.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write

BEGIN = "# >>> remotectl >>> (managed block: `remotectl disconnect` removes it)"
END = "# <<< remotectl <<<"
BOM = b"\xef\xbb\xbf"
_BEGIN_RE = re.compile(rb"(?:^|(?<=\A\xef\xbb\xbf))[ \t]*# >>> remotectl >>>[^\n]*\n?", re.M)
_END_RE = re.compile(rb"^[ \t]*# <<< remotectl <<<[^\n]*(\n|$)", re.M)
_SECTION_RE = re.compile(rb"^[ \t]*(host|match)([ \t]*=[ \t]*|[ \t]+)", re.I | re.M)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MANAGED_HEADER = (
    "# Written by remotectl: one Host block per `remotectl connect`.\n"
    "# Regenerated on every change; edit with remotectl connect/disconnect, not by hand.\n"
)


# -- values ---------------------------------------------------------------------------
_PLAIN_ARG = re.compile(r"[A-Za-z0-9/._+,:@~-]+")


def ssh_quote(value: str, percent: bool = False, glob: bool = False) -> str:
    """A config argument OpenSSH reads back as exactly `value`.

    OpenSSH (8.7 and newer) splits arguments like a shell without variables: double quotes
    group, and inside them `\\"` and `\\\\` are escapes. `percent` doubles `%` for the keywords
    that expand `%` tokens (IdentityFile, UserKnownHostsFile); `glob` escapes `* ? [ ]` for
    Include, which globs. Refused: control characters (no escape reaches them) and, with
    `percent`, `${`, which those keywords read as an environment variable.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadInput(f"cannot write {value!r} into an ssh config (a control character or newline in it)")
    if percent and "${" in value:
        raise BadInput(f"cannot write {value!r} into an ssh config: ssh reads '${{' as an environment variable")
    text = value
    if percent:
        text = text.replace("%", "%%")
    if glob:
        text = re.sub(r"([*?\[\]\\])", r"\\\1", text)
    if text and _PLAIN_ARG.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ssh_path(path: os.PathLike, percent: bool = False, glob: bool = False) -> str:
    """An absolute path as ssh reads it on every OS (forward slashes), quoted as needed."""
    return ssh_quote(Path(os.path.abspath(path)).as_posix(), percent=percent, glob=glob)


def is_plain_path(path: os.PathLike) -> bool:
    """A path every OpenSSH reads the same, written bare (no quotes, escapes or expansion)."""
    return bool(_PLAIN_ARG.fullmatch(Path(os.path.abspath(path)).as_posix()))


def preflight_paths(managed_config: os.PathLike, identity: os.PathLike, known_hosts: os.PathLike,
                    ssh: Optional[str] = None) -> None:
    """Prove with this computer's own `ssh -G` that the Include, IdentityFile and
    UserKnownHostsFile lines read back as exactly these paths, before anything is written.

    Only paths with quotes, spaces, `%`, glob characters or non-ASCII letters need the proof
    (older OpenSSH quote differently); they are mirrored under a temporary folder, so the
    user's files are not touched. BadInput (exit 2) with the reason when ssh disagrees.
    """
    import shutil
    import subprocess
    import tempfile

    paths = [Path(os.path.abspath(p)) for p in (managed_config, identity, known_hosts)]
    lines = [include_line(paths[0]), ssh_path(paths[1], percent=True), ssh_path(paths[2], percent=True)]
    if all(is_plain_path(p) for p in paths):
        return
    ssh = ssh or shutil.which("ssh")
    if not ssh:
        return  # nothing to ask; the quoting rules above are OpenSSH 8.7+'s
    with tempfile.TemporaryDirectory(prefix="remotectl-preflight-") as tmp:
        mirror = Path(tmp, "m", *paths[0].parts[1:])
        mirror.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(mirror, "Host remotectl-preflight\n    HostName included.invalid\n"
                     f"    IdentityFile {lines[1]}\n    UserKnownHostsFile {lines[2]}\n", mode=0o600)
        top = Path(tmp, "config")
        atomic_write(top, include_line(mirror) + "\n", mode=0o600)

        def resolve(host: str) -> Tuple[int, dict, str]:
            try:
                out = subprocess.run([ssh, "-G", "-F", str(top), host], capture_output=True, text=True,
                                     timeout=20, stdin=subprocess.DEVNULL, errors="surrogateescape")
            except (OSError, subprocess.TimeoutExpired) as exc:
                return 1, {}, str(exc)
            seen: dict = {}
            for row in out.stdout.splitlines():
                key, _, value = row.partition(" ")
                seen.setdefault(key, value)
            return out.returncode, seen, (out.stderr.strip().splitlines() or [""])[-1]

        code, seen, error = resolve("remotectl-preflight")
        wanted = {"hostname": ("included.invalid", paths[0]),
                  "identityfile": (paths[1].as_posix().replace("%", "%%"), paths[1]),
                  "userknownhostsfile": (paths[2].as_posix(), paths[2])}
        wrong = [where for key, (value, where) in wanted.items() if seen.get(key) != value]
        other, _, other_error = resolve("unrelated-host.invalid")
        if code != 0 or other != 0 or wrong:
            where = wrong[0] if wrong else paths[0]
            why = error or other_error or "it reads the path back differently"
            raise BadInput(f"OpenSSH on this computer cannot read the path {where} from an ssh config "
                           f"({why}); nothing was written",
                           "Use an ssh folder and key path without quotes, '%', '$' or glob characters "
                           "(--ssh-dir, --identity), or upgrade OpenSSH (8.7 or newer).")


def check_name(name: str) -> str:
    """A host alias usable as `Host NAME` and `ssh NAME` (no patterns, no leading dash)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):  # match() with `$` takes "colab\n"
        raise BadInput(f"host name {name!r} is not valid",
                       "Use letters, digits, '.', '_' or '-' (e.g. --name colab).")
    return name


@dataclass(frozen=True)
class Forward:
    """`LocalForward local_port remote_host:remote_port` (bound to loopback by ssh's default)."""

    local_port: int
    remote_port: int
    remote_host: str = "localhost"

    def spec(self) -> str:
        if self.remote_host == "localhost":
            return f"{self.local_port}:{self.remote_port}"
        return f"{self.local_port}:{self.remote_host}:{self.remote_port}"


def parse_forward(spec: str) -> Forward:
    """`6006` (same port both ends), `8080:6006`, or `8080:HOST:6006` (HOST as the remote sees it)."""
    parts = str(spec).strip().split(":")
    try:
        if len(parts) == 1:
            local = remote = int(parts[0])
            host = "localhost"
        elif len(parts) == 2:
            local, remote, host = int(parts[0]), int(parts[1]), "localhost"
        elif len(parts) == 3 and re.fullmatch(r"[A-Za-z0-9._-]+", parts[1]):
            local, host, remote = int(parts[0]), parts[1], int(parts[2])
        else:
            raise ValueError
    except ValueError:
        raise BadInput(f"--forward {spec!r}: expected PORT, LOCAL:REMOTE or LOCAL:HOST:REMOTE") from None
    for port in (local, remote):
        if not 1 <= port <= 65535:
            raise BadInput(f"--forward {spec!r}: port {port} is out of range (1-65535)")
    return Forward(local, remote, host)


# -- the managed file -----------------------------------------------------------------
@dataclass(frozen=True)
class HostEntry:
    """One `Host` block. `proxy_command` (e.g. cloudflared) is written before ProxyJump-likes."""

    name: str
    hostname: str
    port: int
    user: str
    identity_file: str
    host_key_alias: str
    known_hosts_file: str
    strict_host_key_checking: str = "yes"  # "accept-new" only for plain addresses without a key
    forwards: Tuple[Forward, ...] = ()
    proxy_command: Optional[str] = None  # written verbatim (already quoted by the caller)
    extra: Tuple[Tuple[str, str], ...] = field(default=())  # (Keyword, value) pairs, last

    def options(self) -> List[Tuple[str, str]]:
        """The keyword/value lines, in the order written."""
        opts = [("HostName", ssh_quote(self.hostname)), ("Port", str(self.port)),
                ("User", ssh_quote(self.user)),
                ("IdentityFile", ssh_path(self.identity_file, percent=True)), ("IdentitiesOnly", "yes"),
                ("HostKeyAlias", ssh_quote(self.host_key_alias)),
                ("UserKnownHostsFile", ssh_path(self.known_hosts_file, percent=True)),
                ("StrictHostKeyChecking", self.strict_host_key_checking),
                ("CheckHostIP", "no"), ("UpdateHostKeys", "no"), ("HashKnownHosts", "no"),
                ("ForwardAgent", "no"), ("ServerAliveInterval", "15"),
                ("ServerAliveCountMax", "4")]
        # A user's `Host *` ProxyJump/ProxyCommand must not apply to our host: set ours first.
        opts.append(("ProxyCommand", self.proxy_command or "none"))
        opts += [("LocalForward", f"{f.local_port} {f.remote_host}:{f.remote_port}")
                 for f in self.forwards]
        opts += list(self.extra)
        return opts


def render_entry(entry: HostEntry) -> str:
    """The block for one host (LF line endings: the managed file is ours)."""
    check_name(entry.name)
    lines = [f"Host {entry.name}"] + [f"    {key} {value}" for key, value in entry.options()]
    return "\n".join(lines) + "\n"


def render_managed(entries: Iterable[HostEntry]) -> str:
    """The whole managed file, entries sorted by name so the same hosts give the same bytes."""
    blocks = [render_entry(e) for e in sorted(entries, key=lambda e: e.name)]
    return MANAGED_HEADER + "".join("\n" + b for b in blocks)


def managed_names(text: str) -> List[str]:
    """The `Host` names in a managed file (for doctor and consistency checks)."""
    return [m.group(1) for m in re.finditer(r"^Host\s+(\S+)\s*$", text, re.M)]


# -- the user's file ------------------------------------------------------------------
def include_line(managed_config: os.PathLike) -> str:
    return f"Include {ssh_path(managed_config, glob=True)}"


def include_block(managed_config: os.PathLike, newline: str = "\n") -> bytes:
    return newline.join([BEGIN, include_line(managed_config), END, ""]).encode()


def newline_of(data: bytes) -> str:
    """The file's line ending: CRLF if it uses any, else LF."""
    return "\r\n" if b"\r\n" in data else "\n"


def find_block(data: bytes) -> Optional[Tuple[int, int]]:
    """Byte span of our marked block (begin line through end line and its newline), if any."""
    begin = _BEGIN_RE.search(data)
    if not begin:
        return None
    end = _END_RE.search(data, begin.end())
    return (begin.start(), end.end() if end else begin.end())


def first_section_offset(data: bytes) -> Optional[int]:
    """Offset of the first `Host`/`Match` line (an Include after it is shadowed)."""
    match = _SECTION_RE.search(data)
    return match.start() if match else None


def with_include(data: bytes, managed_config: os.PathLike) -> bytes:
    """`data` with our block at its top (after a BOM); unchanged if the same block is there."""
    block = include_block(managed_config, newline_of(data))
    span = find_block(data)
    if span:
        if data[span[0]:span[1]].replace(b"\r\n", b"\n") == block.replace(b"\r\n", b"\n"):
            return data
        return data[:span[0]] + block + data[span[1]:]
    start = len(BOM) if data.startswith(BOM) else 0
    return data[:start] + block + data[start:]


def without_include(data: bytes) -> bytes:
    """`data` with our block cut out: exactly what the user had before we added it."""
    span = find_block(data)
    return data if span is None else data[:span[0]] + data[span[1]:]


def include_is_shadowed(data: bytes) -> bool:
    """True when our block sits below a Host/Match line (then ssh never reads our entries)."""
    span = find_block(data)
    first = first_section_offset(data)
    return span is not None and first is not None and first < span[0]


@dataclass
class UserConfigChange:
    """What happened to the user's ssh config, for the CLI to report."""

    status: str  # "added" | "present" | "updated" | "removed" | "absent" | "read-only"
    path: Path  # the file written (a symlink's target)
    line: str  # the Include line (to add or remove by hand when read-only)
    created: bool = False  # we created the file (disconnect then deletes it when empty)
    warning: Optional[str] = None


def _target(user_config: Path) -> Path:
    """A symlinked config is written at its target, so the link (e.g. into dotfiles) stays."""
    return Path(os.path.realpath(user_config))


def _read(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a folder named config, a loop of links, no read permission
        raise RemotectlError(f"cannot read {path}: {exc.strerror or exc}; nothing was written",
                             f"ssh reads {path} as its config file: make it a readable file "
                             "(or move it aside), then run the same command again.") from None


def check_user_config(user_config: Path) -> None:
    """RemotectlError (exit 1) unless the user's config is absent or a file we can read: called
    before the first write, so such a config never leaves a half-made connect behind."""
    target = _target(user_config)
    if os.path.isdir(os.path.dirname(target)):  # else making the ssh folder says what is wrong
        _read(target)


def _read_only(path: Path) -> bool:
    """No owner write bit (a dotfile tool's choice, honoured even as root) or no write access."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return not os.access(path.parent, os.W_OK)
    return not st.st_mode & 0o200 or not os.access(path.parent, os.W_OK)


def backup_path(target: Path) -> Path:
    return target.with_name(target.name + ".remotectl.bak")


def _backup(target: Path, old: bytes) -> None:
    """Keep the bytes before our change; a differing older backup moves to `.bak.1`, not lost."""
    bak = backup_path(target)
    previous = _read(bak)
    if previous == old:
        return
    if previous is not None:
        os.replace(bak, bak.with_name(bak.name + ".1"))
    atomic_write(bak, old, mode=0o600)


def _write(target: Path, old: Optional[bytes], new: bytes) -> None:
    mode = 0o600 if old is None else (target.stat().st_mode & 0o7777 & ~0o022)
    if old is not None:
        _backup(target, old)
    atomic_write(target, new, mode=mode)


def _readonly_change(target: Path, line: str, adding: bool) -> UserConfigChange:
    verb = "Add this line at the top of" if adding else "Remove this line from"
    return UserConfigChange(
        "read-only", target, line,
        warning=f"{target} is read-only, so remotectl left it alone. {verb} it yourself "
                f"(e.g. in your dotfiles):\n    {line}")


def ensure_include(user_config: Path, managed_config: Path) -> UserConfigChange:
    """Make sure the user's config includes ours, at the top; every other byte stays."""
    target = _target(user_config)
    line = include_line(managed_config)
    old = _read(target)
    new = with_include(old or b"", managed_config)
    if old is not None and new == old:
        warning = None
        if include_is_shadowed(old):
            warning = (f"the remotectl Include block in {target} sits below a Host/Match line, so ssh "
                       "skips it there; move the three marked lines to the top of the file")
        return UserConfigChange("present", target, line, warning=warning)
    refused = _write_or_refuse(target, line, adding=True, write=lambda: _write(target, old, new))
    if refused:
        return refused
    status = "updated" if old is not None and find_block(old) else "added"
    return UserConfigChange(status, target, line, created=old is None)


def drop_include(user_config: Path, managed_config: Path, delete_if_empty: bool = False) -> UserConfigChange:
    """Remove our block; with `delete_if_empty` (we created the file) an empty result is deleted."""
    target = _target(user_config)
    line = include_line(managed_config)
    old = _read(target)
    if old is None or find_block(old) is None:
        return UserConfigChange("absent", target, line)
    new = without_include(old)
    if delete_if_empty and not new:  # we created it; nothing of the user's to back up
        write = target.unlink
    else:
        def write() -> None:
            _write(target, old, new)
    refused = _write_or_refuse(target, line, adding=False, write=write)
    return refused or UserConfigChange("removed", target, line)


def _write_or_refuse(target: Path, line: str, adding: bool, write) -> Optional[UserConfigChange]:
    """Run `write`, unless the user's file is read-only (a dotfile manager's, say): then the
    change that tells them the line to add or remove by hand, and nothing is written."""
    if _read_only(target):
        return _readonly_change(target, line, adding=adding)
    try:
        write()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _readonly_change(target, line, adding=adding)
        raise
    return None
