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
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from remote.client import registry, sshconfig
from remote.client.layout import SshLayout
from remote.client.registry import HostRecord
from remote.findings import NOTE, OK, PROBLEM, Finding

MIN_OPENSSH = (7, 3)  # `Include` in ssh_config arrived in OpenSSH 7.3
REMOTE_SSH_EXTENSION = "ms-vscode-remote.remote-ssh"
_MANAGED_INCLUDE_RE = re.compile(rb"^[ \t]*include[ \t]*=?[ \t]*\S*remotectl[/\\]config\b", re.I | re.M)


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


def _ssh_g(lay: SshLayout, name: str) -> Tuple[Optional[Dict[str, List[str]]], Optional[str]]:
    """`ssh -G NAME` through the user's config: (every option's values, None) or (None, error)."""
    ssh = shutil.which("ssh")
    if not ssh or not lay.user_config.exists():
        return None, None
    try:
        out = subprocess.run([ssh, "-G", "-F", str(lay.user_config), name], capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if out.returncode != 0:
        return None, (out.stderr.strip().splitlines() or ["ssh -G failed"])[-1]
    seen: Dict[str, List[str]] = {}
    for row in out.stdout.splitlines():
        key, _, value = row.partition(" ")
        seen.setdefault(key, []).append(value)
    return seen, None


def _resolves(record: HostRecord, seen: Optional[Dict[str, List[str]]], error: Optional[str]) -> Optional[str]:
    """What `ssh -G NAME` makes of our host, when it differs from the entry (shadowing, typos)."""
    if error:
        return error
    if seen is None:
        return None
    wanted = {"hostname": record.host.lower(), "port": str(record.port), "hostkeyalias": record.alias}
    wrong = [f"{k} {(seen.get(k) or [None])[0]!s} (entry: {v})" for k, v in wanted.items()
             if (seen.get(k) or [None])[0] != v]
    return ("`ssh -G` resolves " + ", ".join(wrong)) if wrong else None


# Options that add up instead of "first value wins": a user's `Host *` line for one of them
# applies to our hosts too, whatever our entry says (OpenSSH has no way to take them back:
# even `SendEnv -*` only removes what came before it, and our entry comes first).
_ADDITIVE = {"sendenv": "SendEnv", "setenv": "SetEnv", "identityfile": "IdentityFile",
             "certificatefile": "CertificateFile", "localforward": "LocalForward",
             "remoteforward": "RemoteForward", "dynamicforward": "DynamicForward"}
_LOCALE = {"LANG", "LC_*", "LANGUAGE", "LC_ALL"}  # Debian's and Ubuntu's own `SendEnv LANG LC_*`


def _config_lines(path: Path, keyword: str) -> List[Tuple[int, str, Optional[Tuple[int, str]]]]:
    """(line number, line, enclosing Host/Match header) for each `keyword` line in `path`."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    found, header = [], None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        word = re.split(r"[\s=]+", line, maxsplit=1)[0].lower() if line else ""
        if word in ("host", "match"):
            header = (number, line)
        elif word == keyword.lower():
            found.append((number, line, header))
    return found


def leaks(lay: SshLayout, record: HostRecord, seen: Dict[str, List[str]], names: List[str]) -> List[Finding]:
    """Settings from elsewhere in the user's ssh config that still reach this host.

    remotectl's own ssh runs (pull, push, check) use only remotectl's config, so they are not
    affected; `ssh NAME` and VS Code read the user's whole config.
    """
    what = f"host {record.name}"
    ours = {"identityfile": {Path(record.identity).as_posix().replace("%", "%%")},
            "localforward": {f"{fw.local_port} [{fw.remote_host}]:{fw.remote_port}"
                             for fw in map(sshconfig.parse_forward, record.forwards)}}
    found: List[Finding] = []
    scope = " ".join(f"!{n}" for n in names)
    for key, keyword in _ADDITIVE.items():
        extra = [v for v in seen.get(key, []) if v not in ours.get(key, set())
                 and not (key == "sendenv" and v in _LOCALE)]
        if not extra:
            continue
        places = _config_lines(lay.user_config, keyword)
        where = "; ".join(f"line {n}: `{line}`" + (f" under `{h[1]}` (line {h[0]})" if h else "")
                          for n, line, h in places[:3]) or "an Included file or the system-wide ssh_config"
        header = next((h for _, _, h in places if h and h[1].lower().startswith("host")), None)
        fix = (f"scope it to the hosts that need it: change `{header[1]}` (line {header[0]} of "
               f"{lay.user_config}) to `{header[1]} {scope}`" if header else
               f"move it under the Host blocks that need it (in {lay.user_config}, or wherever it is set)")
        if key in ("sendenv", "setenv"):
            found.append(Finding(what, PROBLEM, f"`ssh {record.name}` and VS Code send environment variables "
                                 f"{', '.join(extra)} to this host, set by {where}: OpenSSH adds these up, so "
                                 "remotectl's entry cannot take them back", fix))
        elif key in ("identityfile", "certificatefile"):
            found.append(Finding(what, NOTE, f"`ssh {record.name}` also offers {', '.join(extra)} ({keyword}, "
                                 f"set by {where}) when remotectl's key is refused: a hostile host learns "
                                 "who you are from it", fix))
        else:
            found.append(Finding(what, NOTE, f"`ssh {record.name}` also sets up {keyword} {', '.join(extra)} "
                                 f"(set by {where})", fix))
    return found


def host(lay: SshLayout, record: HostRecord, managed_names: List[str], timeout: float,
         deep: bool) -> List[Finding]:
    """One managed host: entry written, key pinned, ssh resolves it, and it answers."""
    what = f"host {record.name}"
    found: List[Finding] = []
    again = "run the bootstrap cell (or `remotectl up`) and paste its new line: remotectl connect <card>"
    if record.name not in managed_names:
        found.append(Finding(what, PROBLEM, f"no `Host {record.name}` block in {lay.managed_config}",
                             f"remotectl connect <card> --name {record.name}"))
    from remote.client.manage import pinned_key

    key = pinned_key(lay, record)
    pinned = [key] if key else []
    colab = record.tunnel == "colab"
    if colab:  # no card: the key is learned through Google's route, so "not yet" is a note
        from remote.client import colab_connect

        found += colab_connect.pin_findings(lay, record)
    elif record.host_key is None:
        found.append(Finding(what, NOTE, "no host key was given: the first key seen is trusted (accept-new)",
                             "connect with the card (or --host-key) to pin the key"))
    elif not pinned:
        found.append(Finding(what, PROBLEM, f"its host key is not pinned in {lay.known_hosts} "
                             f"(alias {record.alias}): ssh refuses the host", again))
    elif record.host_key not in pinned:
        found.append(Finding(what, PROBLEM, f"{lay.known_hosts} pins a different key for {record.alias} "
                             "than the card gave", again))
    seen, error = _ssh_g(lay, record.name)
    wrong = _resolves(record, seen, error)
    if seen is not None:
        found += leaks(lay, record, seen, managed_names)
    if wrong:
        found.append(Finding(what, PROBLEM, wrong + ": another block in the ssh config wins",
                             "see the Include line finding; remotectl's lines must come first"))
    if colab:  # colab present and new enough, signed in, session running, answering
        found += colab_connect.route_findings(lay, record, timeout)
    elif record.proxy_command and not deep:
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
