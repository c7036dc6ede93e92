"""A private sshd: its own config, host key, authorized_keys, pid file and log under the state dir.

/etc/ssh is never read or changed: sshd gets `-f <state>/sshd_config`, which names
every file it uses. `-D` keeps it in the foreground so its owner (the `up` process,
the supervisor or the notebook kernel) can stop it; `-e` sends its log to stderr,
which we point at `<state>/sshd.log`. Ready means the port answers an `SSH-2.0-`
banner, polled against a deadline: never a fixed sleep.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from remote import keys
from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write
from remote.server import environment
from remote.server.children import NOT_TRACKED, stop_with_connections
from remote.server.processes import bind_error, free_port, start_time
from remote.server.state import tail

SSHD = "/usr/sbin/sshd"
HOST_KEY = "ssh_host_ed25519_key"
PRIVSEP_DIR = "/run/sshd"
READY_TIMEOUT = 20.0

Echo = Callable[[str], None]


@dataclass
class SshdSettings:
    """What our sshd serves; the user is the one running `up` (root on Colab)."""

    state_dir: Path
    authorized_keys: List[str]
    port: int = 0
    bind: str = "127.0.0.1"
    password_login: bool = False
    user: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)
    environment: Dict[str, str] = field(default_factory=environment.session_environment)
    client_alive_interval: int = 30
    client_alive_count_max: int = 4

    @property
    def config_path(self) -> Path:
        return self.state_dir / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "sshd.log"


def ensure_openssh_server(echo: Echo) -> str:
    """The sshd executable; on Debian/Ubuntu as root, apt-get installs it when missing."""
    if os.access(SSHD, os.X_OK):
        return SSHD
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RemotectlError(
            f"OpenSSH's server is not installed ({SSHD} is missing)",
            "Install it with your system's package manager, e.g. sudo apt-get install -y openssh-server, "
            "then run up again.")
    echo("OpenSSH's server is missing: installing openssh-server with apt-get (about a minute) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "install", "-y", "-q", "openssh-server"],
                 ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "openssh-server"]):
        code = _stream(argv, env, echo)
        if argv[1] == "install" and code == 0 and os.access(SSHD, os.X_OK):
            return SSHD
    raise RemotectlError("apt-get could not install openssh-server (see its output above)",
                         "Check the machine's package sources and network, then run up again.")


def _stream(argv: List[str], env: Dict[str, str], echo: Echo) -> int:
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        echo("  " + line.rstrip())
    return proc.wait()


def ensure_host_key(state_dir: Path) -> str:
    """The host's public key line; the key pair is made once per state dir and then kept."""
    private = state_dir / HOST_KEY
    public = state_dir / (HOST_KEY + ".pub")
    if private.exists():
        line = keys.public_from_private(private)
        if not public.exists():
            atomic_write(public, line + "\n", mode=0o644)
        return keys.bare(line)
    private_pem, line = keys.generate_ed25519("remotectl-host")
    atomic_write(private, private_pem, mode=0o600)
    atomic_write(public, line + "\n", mode=0o644)
    return keys.bare(line)


def config_path_arg(path: Path, tokens: bool = False) -> str:
    """A state-dir path as one sshd_config argument: in double quotes (so spaces, `#` and `'`
    stay part of it, in every sshd since quotes were read), `%` doubled where sshd expands
    tokens (AuthorizedKeysFile: `%h` is a home folder). Paths holding `"`, `\\` or control
    characters are refused before this (options.check_state_dir)."""
    text = str(path).replace("%", "%%") if tokens else str(path)
    return f'"{text}"'


def render_config(settings: SshdSettings) -> str:
    """The whole sshd_config. Every choice below is deliberate; see the comments in the file."""
    state = settings.state_dir
    root = settings.user == "root"
    if settings.password_login:
        permit_root = "yes"
    else:
        permit_root = "prohibit-password"
    lines = [
        "# Written by remotectl for this state dir only. /etc/ssh is neither read nor changed.",
        f"Port {settings.port}",
        f"ListenAddress {settings.bind}",
        f"HostKey {config_path_arg(state / HOST_KEY)}",
        f"PidFile {config_path_arg(state / 'sshd.pid')}",
        f"AuthorizedKeysFile {config_path_arg(state / 'authorized_keys', tokens=True)}",
        f"AllowUsers {settings.user}",
        "PubkeyAuthentication yes",
        f"PasswordAuthentication {'yes' if settings.password_login else 'no'}",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        f"PermitRootLogin {permit_root}",
        # PAM would make root logins depend on the image's /etc/pam.d (pam_loginuid fails in
        # many containers); without it sshd checks keys itself and, in password mode, the
        # shadow hash directly. An ordinary user's sshd cannot use PAM at all.
        "UsePAM no",
        "StrictModes yes",
        "AllowTcpForwarding yes",  # VS Code Remote-SSH forwards ports
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "Subsystem sftp internal-sftp",  # no dependency on where sftp-server lives
        f"ClientAliveInterval {settings.client_alive_interval}",
        f"ClientAliveCountMax {settings.client_alive_count_max}",
        # The tunnel makes this port the internet's. Few tries per connection, a short grace
        # time, and random early drops past 10 unauthenticated connections (all of them past
        # 60) bound guessing and slot-hogging; key logins never need more than one try here
        # (the client's entry sets IdentitiesOnly).
        "MaxAuthTries 3",
        "LoginGraceTime 20",
        "MaxStartups 10:30:60",
        "LogLevel INFO",
    ]
    if not root:
        lines.append("# Not root: this sshd can only serve its own user.")
    directive = environment.setenv_directive(settings.environment)
    if directive:
        lines.append(directive)
    return "\n".join(lines) + "\n"


def write_files(settings: SshdSettings) -> str:
    """Host key, authorized_keys and sshd_config in the state dir; returns the host public key."""
    if not settings.authorized_keys and not settings.password_login:
        raise BadInput("no way to log in: give a public key or a password",
                       "Set REMOTECTL_AUTHORIZED_KEY (the line `remotectl keygen` printed) in the "
                       "environment or Colab's Secrets panel, or pass --authorized-key.")
    host_key = ensure_host_key(settings.state_dir)
    atomic_write(settings.state_dir / "authorized_keys",
                 "".join(line + "\n" for line in settings.authorized_keys), mode=0o600)
    atomic_write(settings.config_path, render_config(settings), mode=0o600)
    return host_key


class Sshd:
    """One running sshd process that we started and will stop.

    `tracker` (children.py's record) hears of it before it is spawned and once its pid is
    known, so a crash of the owner at any moment leaves a way to find and stop it.
    """

    def __init__(self, settings: SshdSettings, tracker: Any = NOT_TRACKED) -> None:
        self.settings = settings
        self.proc: Optional[subprocess.Popen] = None
        self.tracker = tracker

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start sshd and return once it answers with its banner; explain any failure."""
        settings = self.settings
        requested = settings.port
        attempts = 3 if requested == 0 else 1
        for attempt in range(attempts):
            if requested == 0:
                try:
                    settings.port = free_port(settings.bind)
                except OSError as exc:
                    raise BadInput(f"cannot listen on {settings.bind}: {exc.strerror}",
                                   "--bind takes an address of this machine (127.0.0.1, 0.0.0.0, "
                                   "or one of its interfaces).") from None
            elif _in_use(settings.bind, settings.port):
                raise RemotectlError(
                    f"port {settings.port} on {settings.bind} is already in use",
                    "Pick another with --port N, or --port 0 for any free port; if an earlier "
                    "server still runs from this state dir, stop it with `remotectl down`.")
            atomic_write(settings.config_path, render_config(settings), mode=0o600)
            try:
                self._spawn()
                self._wait_ready(timeout)
                return
            except _PortTaken:
                self.stop()
                if attempt + 1 == attempts:
                    raise RemotectlError(
                        f"sshd could not bind port {settings.port} on {settings.bind}: it is in use",
                        "Pick another with --port N (or --port 0 for any free port).") from None

    def _spawn(self) -> None:
        if os.geteuid() == 0:
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        log_fd = os.open(self.settings.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.tracker.expect("sshd", ["-f", str(self.settings.config_path)])
        try:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.settings.config_path)],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, close_fds=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})  # no secrets
        except OSError as exc:
            self.tracker.stopped("sshd")
            raise RemotectlError(f"cannot start {SSHD}: {exc}") from None
        finally:
            os.close(log_fd)
        self.tracker.started("sshd", self.proc.pid)

    def _wait_ready(self, timeout: float) -> None:
        settings = self.settings
        host = _loopback_for(settings.bind)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                log = tail(settings.log_path)
                if "Address already in use" in log or "Cannot bind any address" in log:
                    raise _PortTaken()
                raise RemotectlError(
                    f"sshd exited during start-up (code {code}). Its log ({settings.log_path}) ends:\n"
                    + _indent(log or "(empty)"),
                    "Fix what the log names (a bad --bind address, a file's permissions), then run up again.")
            if banner_answers(host, settings.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RemotectlError(
                    f"sshd did not answer on {host}:{settings.port} within {timeout:.0f} s. Its log ends:\n"
                    + _indent(tail(settings.log_path) or "(empty)"),
                    "The machine may be overloaded; run up again, or raise --timeout.")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> bool:
        """Stop sshd and its logged-in connections (SIGTERM, then SIGKILL); True if it was running."""
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            self.tracker.stopped("sshd")
            return False
        stop_with_connections(self.proc.pid, start_time(self.proc.pid), grace=grace)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.tracker.stopped("sshd")
        return True


def _in_use(host: str, port: int) -> bool:
    problem = bind_error(host, port)
    return problem is not None and problem.errno == errno.EADDRINUSE


class _PortTaken(Exception):
    pass


def banner_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether host:port greets like an SSH server."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _loopback_for(bind: str) -> str:
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
