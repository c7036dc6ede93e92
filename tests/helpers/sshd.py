"""A real OpenSSH server on 127.0.0.1 for tests: its own config, host key and authorized_keys.

Usage from a conftest::

    from helpers.sshd import SshServer

    @pytest.fixture
    def sshd(tmp_path_factory, request):
        server = SshServer(tmp_path_factory.mktemp("sshd"))
        request.addfinalizer(server.stop)
        server.authorize(public_line)
        return server.start()

`restart(new_host_key=True)` brings it back on the same port with a fresh host key (the
"host key changed" case). Everything lives under the given folder, which must sit under a
private (0700) root because sshd's StrictModes checks authorized_keys and its parents
(tests/conftest.py arranges that for tmp_path). Needs root or a port above 1024 and
`UsePAM no`; as root, sshd wants its privilege-separation folder /run/sshd.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, List, Optional

from remote import keys
from remote.card import Card
from remote.files import atomic_write

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


def private_root() -> Path:
    """~/.cache/remotectl-bench, 0700: the benchmarks' sshd folders live under it, since sshd's
    StrictModes refuses keys under a world-writable folder such as /tmp."""
    root = Path.home() / ".cache" / "remotectl-bench"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def free_port() -> int:
    """A port the kernel just handed out (a race is possible; start() retries)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_banner(port: int, deadline_s: float = 20.0, proc: Optional[subprocess.Popen] = None) -> bool:
    """True once the port answers with an `SSH-2.0-` banner; False if `proc` died or time ran out."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.settimeout(5)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class SshServer:
    """One private sshd; `start()` it, `stop()` it (idempotent), `restart()` it."""

    def __init__(self, root: Path, user: str = "root") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.user = user
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.host_key_path = self.root / "ssh_host_ed25519_key"
        self.authorized_keys_path = self.root / "authorized_keys"
        self.config_path = self.root / "sshd_config"
        self.log_path = self.root / "sshd.log"
        self._authorized: List[str] = []
        self.new_host_key()

    # -- keys -------------------------------------------------------------------------
    def new_host_key(self) -> str:
        """Replace the host key (takes effect on the next start); return its public line."""
        private, public = keys.generate_ed25519("test-host")
        atomic_write(self.host_key_path, private, mode=0o600)
        self.host_public_key = keys.bare(public)
        return self.host_public_key

    def authorize(self, public_lines: Iterable[str] | str) -> None:
        """Add key lines to authorized_keys (read by sshd at each login, no restart needed)."""
        if isinstance(public_lines, str):
            public_lines = [public_lines]
        self._authorized.extend(line.strip() for line in public_lines)
        atomic_write(self.authorized_keys_path, "".join(f"{k}\n" for k in self._authorized), mode=0o600)

    def card(self, session: str = "testsession", user: Optional[str] = None, tunnel: str = "direct",
             path: Optional[str] = None) -> Card:
        """The card a remotectl server would print for this sshd (`path`: the folder up ran in)."""
        return Card(user=user or self.user, host=HOST, port=self.port,
                    host_key=self.host_public_key, session=session, tunnel=tunnel, path=path)

    # -- process ----------------------------------------------------------------------
    def _write_config(self) -> None:
        if not self.authorized_keys_path.exists():
            atomic_write(self.authorized_keys_path, "", mode=0o600)
        config = f"""\
Port {self.port}
ListenAddress {HOST}
HostKey {self.host_key_path}
PidFile {self.root / 'sshd.pid'}
AuthorizedKeysFile {self.authorized_keys_path}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AllowTcpForwarding yes
PrintMotd no
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""
        atomic_write(self.config_path, config, mode=0o600)

    def start(self, port: Optional[int] = None, attempts: int = 5) -> SshServer:
        """Start sshd (on `port`, or a fresh one) and return once it answers its banner."""
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        last_error = ""
        for _ in range(attempts):
            self.port = port or free_port()
            self._write_config()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config_path)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if wait_for_banner(self.port, proc=self.proc):
                return self
            last_error = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            time.sleep(0.2)
        raise RuntimeError(f"sshd did not start on 127.0.0.1:\n{last_error}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, new_host_key: bool = False) -> SshServer:
        """Stop and start on the same port; with `new_host_key`, as a different machine would."""
        port = self.port
        self.stop()
        if new_host_key:
            self.new_host_key()
        return self.start(port=port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
