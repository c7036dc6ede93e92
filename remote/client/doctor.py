"""`remotectl doctor` on the user's computer: what would stop `ssh colab` or VS Code, and the fix.

Each check reads real state (files, modes, `ssh -V`, `ssh -G`, a TCP banner) and never
changes anything: the fixes are printed for the user to run. A finding is `ok`, a
`problem` (the connection would fail: exit code 1) or a `note` (worth knowing, not fatal).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from remote.client import known_hosts, registry, sshconfig
from remote.client.layout import SshLayout
from remote.client.registry import HostRecord

OK, PROBLEM, NOTE = "ok", "problem", "note"
MIN_OPENSSH = (7, 3)  # `Include` in ssh_config arrived in OpenSSH 7.3
REMOTE_SSH_EXTENSION = "ms-vscode-remote.remote-ssh"
_MANAGED_INCLUDE_RE = re.compile(rb"^[ \t]*include[ \t]*=?[ \t]*\S*remotectl[/\\]config\b", re.I | re.M)


@dataclass
class Finding:
    check: str  # what was looked at, e.g. "ssh config", "host colab"
    status: str  # ok | problem | note
    detail: str
    fix: Optional[str] = None

    def as_dict(self) -> dict:
        return asdict(self)


def openssh_client() -> Finding:
    """The `ssh` the user's tools run, and whether it is new enough for `Include`."""
    ssh = shutil.which("ssh")
    if not ssh:
        return Finding("OpenSSH client", PROBLEM, "no `ssh` command on PATH (VS Code Remote-SSH needs it)",
                       _install_openssh_hint())
    try:
        out = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("OpenSSH client", PROBLEM, f"{ssh} -V failed: {exc}", _install_openssh_hint())
    text = (out.stderr or out.stdout).strip().splitlines()
    version = text[0] if text else "unknown version"
    match = re.search(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)", version)
    if match and (int(match.group(1)), int(match.group(2))) < MIN_OPENSSH:
        return Finding("OpenSSH client", PROBLEM, f"{version}: too old for `Include` (needs 7.3 or newer)",
                       _install_openssh_hint())
    return Finding("OpenSSH client", OK, f"{version} ({ssh})")


def _install_openssh_hint() -> str:
    if os.name == "nt":
        return ("Settings > System > Optional features > add 'OpenSSH Client', or: "
                "Add-WindowsCapability -Online -Name OpenSSH.Client~~~~0.0.1.0")
    if shutil.which("apt-get"):
        return "sudo apt-get install openssh-client"
    if shutil.which("dnf"):
        return "sudo dnf install openssh-clients"
    return "install the OpenSSH client with your system's package manager (macOS ships it)"


def _mode_problem(path: Path, what: str) -> Optional[Finding]:
    """An ssh config file ssh refuses ("Bad owner or permissions"), with the chmod/chown fix.

    OpenSSH's rule: owned by the user (or root) and not writable by group or others.
    """
    st = path.stat()
    if os.name != "posix":
        return None
    if st.st_uid not in (os.geteuid(), 0):
        return Finding(what, PROBLEM, f"{path} belongs to uid {st.st_uid}, not you: ssh refuses it "
                       "(\"Bad owner or permissions\")", f"chown {os.geteuid()} {shlex.quote(str(path))}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return Finding(what, PROBLEM, f"{path} is mode {mode:04o}, writable by group or others, so ssh "
                       "refuses it (\"Bad owner or permissions\")", f"chmod 600 {shlex.quote(str(path))}")
    return None


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def user_config(lay: SshLayout, hosts: List[HostRecord]) -> List[Finding]:
    """`~/.ssh/config`: its owner and mode, and where our Include sits (first match wins)."""
    path = Path(os.path.realpath(lay.user_config))
    shown = lay.user_config if path == lay.user_config else f"{lay.user_config} -> {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if hosts:
            return [Finding("ssh config", PROBLEM, f"{shown} does not exist, so ssh never reads remotectl's entries",
                            "run `remotectl connect <card>` again (it adds the Include line)")]
        return [Finding("ssh config", NOTE, f"{shown} does not exist yet; `remotectl connect` creates it")]
    except OSError as exc:
        return [Finding("ssh config", PROBLEM, f"cannot read {shown}: {exc.strerror or exc}",
                        f"chmod 600 {shlex.quote(str(path))}")]
    bad_mode = _mode_problem(path, "ssh config")
    found = [bad_mode or Finding("ssh config", OK, f"{shown} (mode {stat.S_IMODE(path.stat().st_mode):04o})")]
    include = sshconfig.find_block(data)
    start = include[0] if include else None
    if start is None:  # a hand-added line (a read-only, dotfile-managed config) counts too
        match = _MANAGED_INCLUDE_RE.search(data)
        start = match.start() if match else None
    first = sshconfig.first_section_offset(data)
    line = sshconfig.include_line(lay.managed_config)
    if start is None:
        status = PROBLEM if hosts else NOTE
        detail = f"no remotectl Include line in {shown}" + (
            ": ssh and VS Code never see the managed hosts" if hosts else " (added by the first connect)")
        found.append(Finding("Include line", status, detail,
                             f"run `remotectl connect <card>` again, or add at the very top of {path}:\n{line}"
                             if hosts else None))
    elif first is not None and first < start:
        section = data[first:].split(b"\n", 1)[0].decode(errors="replace").strip()
        found.append(Finding("Include line", PROBLEM,
                             f"the Include sits at line {_line_of(data, start)} of {shown}, below "
                             f"`{section}` (line {_line_of(data, first)}): there it belongs to that block and "
                             "ssh's first match wins, so remotectl's entries are shadowed",
                             f"move the remotectl lines (`{sshconfig.BEGIN.split(' (')[0]}` ... "
                             f"`{sshconfig.END}`) to the top of {path}, above line {_line_of(data, first)}"))
    else:
        found.append(Finding("Include line", OK, f"at line {_line_of(data, start)} of {shown}, "
                             "above the first Host/Match block"))
    return found


def managed_file(lay: SshLayout) -> List[Finding]:
    """ssh applies the same owner/mode rule to an included file as to ~/.ssh/config."""
    if not lay.managed_config.exists():
        return []
    problem = _mode_problem(lay.managed_config, "managed config")
    return [problem] if problem else []


def identity(path: Path, needed: bool) -> Finding:
    """The private key: present, a private key, and 0600 (ssh ignores a key others can read)."""
    what = f"key {path.name}"
    try:
        st = path.stat()
        head = path.read_bytes()[:64]
    except FileNotFoundError:
        return Finding(what, PROBLEM if needed else NOTE, f"{path} does not exist" + (
            ": ssh cannot log in" if needed else " (no key yet)"),
            "remotectl keygen   (then put its public line in the Colab secret REMOTECTL_AUTHORIZED_KEY "
            "and run the bootstrap cell again)")
    except OSError as exc:
        return Finding(what, PROBLEM, f"cannot read {path}: {exc.strerror or exc}",
                       f"chmod 600 {shlex.quote(str(path))}")
    if not head.startswith(b"-----BEGIN"):
        return Finding(what, PROBLEM, f"{path} is not a private key", "remotectl keygen --force")
    mode = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and mode & 0o077:
        return Finding(what, PROBLEM, f"{path} is mode {mode:04o}: ssh ignores a private key others can "
                       "read (\"UNPROTECTED PRIVATE KEY FILE\")", f"chmod 600 {shlex.quote(str(path))}")
    return Finding(what, OK, f"{path} (mode {mode:04o})")


def banner(host: str, port: int, timeout: float) -> str:
    """The SSH banner at host:port (raises OSError when nothing SSH-like answers in time)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not line.startswith("SSH-"):
        raise OSError(f"answered {line[:40]!r}, not an SSH banner" if line else "closed without an SSH banner")
    return line


def _resolves(lay: SshLayout, record: HostRecord) -> Optional[str]:
    """What `ssh -G NAME` makes of our host, when it differs from the entry (shadowing, typos)."""
    ssh = shutil.which("ssh")
    if not ssh or not lay.user_config.exists():
        return None
    try:
        out = subprocess.run([ssh, "-G", "-F", str(lay.user_config), record.name], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or ["ssh -G failed"])[-1]
    seen = {}
    for row in out.stdout.splitlines():
        key, _, value = row.partition(" ")
        seen.setdefault(key, value)
    wanted = {"hostname": record.host.lower(), "port": str(record.port), "hostkeyalias": record.alias}
    wrong = [f"{k} {seen.get(k)!s} (entry: {v})" for k, v in wanted.items() if seen.get(k) != v]
    return ("`ssh -G` resolves " + ", ".join(wrong)) if wrong else None


def host(lay: SshLayout, record: HostRecord, managed_names: List[str], timeout: float,
         deep: bool) -> List[Finding]:
    """One managed host: entry written, key pinned, ssh resolves it, and it answers."""
    what = f"host {record.name}"
    found: List[Finding] = []
    again = "run the bootstrap cell (or `remotectl up`) and paste its new line: remotectl connect <card>"
    if record.name not in managed_names:
        found.append(Finding(what, PROBLEM, f"no `Host {record.name}` block in {lay.managed_config}",
                             f"remotectl connect <card> --name {record.name}"))
    pinned = known_hosts.lookup(lay.known_hosts, record.alias)
    if record.host_key is None:
        found.append(Finding(what, NOTE, "no host key was given: the first key seen is trusted (accept-new)",
                             "connect with the card (or --host-key) to pin the key"))
    elif not pinned:
        found.append(Finding(what, PROBLEM, f"its host key is not pinned in {lay.known_hosts} "
                             f"(alias {record.alias}): ssh refuses the host", again))
    elif record.host_key not in pinned:
        found.append(Finding(what, PROBLEM, f"{lay.known_hosts} pins a different key for {record.alias} "
                             "than the card gave", again))
    wrong = _resolves(lay, record)
    if wrong:
        found.append(Finding(what, PROBLEM, wrong + ": another block in the ssh config wins",
                             "see the Include line finding; remotectl's lines must come first"))
    if record.proxy_command and not deep:
        found.append(Finding(what, NOTE, f"{record.endpoint} through a ProxyCommand: reachability "
                             "is checked with --deep"))
    elif deep:
        found.append(_probe(lay, record, timeout, again))
    else:
        try:
            line = banner(record.host, record.port, timeout)
        except OSError as exc:
            found.append(Finding(what, PROBLEM, f"{record.endpoint} does not answer: "
                                 f"{exc.strerror or exc or type(exc).__name__}",
                                 f"is the remote side still running? A new runtime needs a new card: {again}; "
                                 f"or drop the entry: remotectl disconnect {record.name}"))
        else:
            found.append(Finding(what, OK, f"{record.endpoint} answers ({line})"))
    return found


def _probe(lay: SshLayout, record: HostRecord, timeout: float, again: str) -> Finding:
    from remote.client import manage, probe
    from remote.errors import RemotectlError

    try:
        report = probe.probe(manage.endpoint_for(lay, record), timeout=timeout, deep=True)
    except RemotectlError as exc:
        return Finding(f"host {record.name}", PROBLEM, exc.message, exc.hint or again)
    return Finding(f"host {record.name}", OK, f"logged in as {record.user}: {report.summary()}")


def vscode(timeout: float = 20.0) -> List[Finding]:
    """The `code` command and the Remote-SSH extension, when they can be asked."""
    code = shutil.which("code")
    if not code:
        return [Finding("VS Code", NOTE, "no `code` command on PATH (needed only for `--open`/`remotectl open`)",
                        "in VS Code: Command Palette > 'Shell Command: Install code command in PATH'")]
    try:
        out = subprocess.run([code, "--list-extensions"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Finding("VS Code", NOTE, f"`code --list-extensions` did not answer: {exc}")]
    extensions = {e.strip().lower() for e in out.stdout.splitlines()}
    if REMOTE_SSH_EXTENSION not in extensions:
        return [Finding("VS Code", PROBLEM, f"{code}: the Remote-SSH extension is not installed",
                        f"code --install-extension {REMOTE_SSH_EXTENSION}")]
    return [Finding("VS Code", OK, f"{code} with Remote-SSH")]


def run(lay: SshLayout, timeout: float = 3.0, deep: bool = False) -> List[Finding]:
    """Every user-side check, in the order a connection uses them."""
    reg = registry.load(lay)
    hosts = sorted(reg.hosts.values(), key=lambda r: r.name)
    findings = [openssh_client()]
    findings += user_config(lay, hosts)
    findings += managed_file(lay)
    identities = {Path(r.identity) for r in hosts} or {lay.default_identity}
    findings += [identity(p, needed=bool(hosts) or p == lay.default_identity) for p in sorted(identities)]
    try:
        names = sshconfig.managed_names(lay.managed_config.read_text())
    except OSError:
        names = []
    for record in hosts:
        findings += host(lay, record, names, timeout, deep)
    if not hosts:
        findings.append(Finding("hosts", NOTE, "no managed hosts yet: run `remotectl connect <card>`"))
    findings += vscode()
    return findings
