"""The link pull/push copy over: OpenSSH's `ssh -s NAME sftp` through the written entry.

Decision (measured with scripts/bench_transfer.py, 200 MB on loopback, 2 busy cores): the
copy runs over the real `ssh` client, not paramiko's transport. paramiko's transport does
its packet handling in Python and reached about 0.5 of `scp`; with OpenSSH carrying the
bytes and remote/client/sftp.py keeping large requests in flight, pull and push move what
`scp` moves, because the same program does the same work. It also means the copy goes
exactly where `ssh NAME` goes: the entry's pinned HostKeyAlias, StrictHostKeyChecking,
IdentityFile and ProxyCommand (cloudflared, `remotectl proxy`) all apply, checked by
OpenSSH itself. `-F` names remotectl's own config, so a user's `Host *` (SendEnv,
IdentityFile, ControlMaster) never rides along, and `ClearAllForwardings` keeps the entry's
LocalForward from colliding with a VS Code window already holding the port.

Short commands (`sha256sum` for `--verify`) share the connection through a private
ControlMaster socket on POSIX (opened only when a copy will need them); elsewhere they log
in again through the same entry.
Where there is no `ssh` (or `REMOTECTL_SSH=paramiko`), paramiko with the pinned key from
known_hosts carries the same SFTP client, slower but with the same checks.
ssh's own stderr can hold remote text (a server banner, a disconnect message): it is
captured, never passed through, and shown only as one cleaned line when something fails.
A server that stops answering (its transport still alive, so ssh's ServerAlive never fires)
would otherwise hang the copy for ever: when no byte moves on the SFTP stream for
`reply_limit(timeout)` seconds, the link is closed and the copy says so (the next run resumes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional

from remote.client.layout import SshLayout
from remote.client.registry import HostRecord
from remote.client.sftp import ProtocolError, SftpClient
from remote.client.untrusted import clean_line
from remote.errors import RemotectlError

SSH_VAR = "REMOTECTL_SSH"
STDERR_KEEP = 16 * 1024
PIPE_BUFFER = 1024 * 1024
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it; the number is Linux's)


class LinkFailed(RemotectlError):
    """The login for a copy failed (unreachable, key refused, host key not the pinned one)."""


def reply_limit(timeout: float) -> float:
    """Seconds an SFTP read or write may wait with no byte moving before the server counts as
    gone: four of `--timeout` (60 s by default), room for a slow disk's close or fsync."""
    return max(5.0, 4.0 * timeout)


def ssh_binary() -> Optional[str]:
    """The OpenSSH client to copy with, or None for paramiko (`REMOTECTL_SSH` decides first)."""
    named = os.environ.get(SSH_VAR, "").strip()
    if named.lower() == "paramiko":
        return None
    if named:
        return named
    return shutil.which("ssh")


def _widen_pipes(proc: subprocess.Popen) -> None:
    """1 MB pipes to and from ssh (Linux; elsewhere the default): with the 64 KB default, ssh
    and this process take turns every 64 KB, which cost ~15% of the throughput on 2 cores."""
    if not sys.platform.startswith("linux"):
        return
    import fcntl

    for pipe in (proc.stdin, proc.stdout):
        try:
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BUFFER)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for this user: the default it is


class _StderrTail(threading.Thread):
    """Drain a pipe so ssh never blocks on it; keep its last bytes for an error line."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe, self.data = pipe, b""

    def run(self) -> None:
        for chunk in iter(lambda: self.pipe.read1(4096) if hasattr(self.pipe, "read1") else self.pipe.read(4096), b""):
            self.data = (self.data + chunk)[-STDERR_KEEP:]

    def last_line(self) -> str:
        lines = [line.strip() for line in self.data.decode("utf-8", "replace").splitlines() if line.strip()]
        return clean_line(lines[-1], limit=300) if lines else ""


def explain_ssh_failure(name: str, stderr_line: str, code: Optional[int]) -> LinkFailed:
    """ssh's last stderr line (already cleaned) as remotectl's error, with what to do."""
    text = stderr_line.lower()
    again = f"Run the `remotectl connect <card> --name {name}` line for the runtime again."
    if "host key verification failed" in text or "host identification has changed" in text:
        return LinkFailed(f"ssh refused {name}: its host key is not the one pinned for it",
                          "This is not the machine the card named. If the runtime was restarted, "
                          "it is a new machine: " + again + " If not, do not log in.")
    if "permission denied" in text:
        return LinkFailed(f"{name} refused remotectl's key ({stderr_line})",
                          "Put its public key (.pub) in the Colab secret REMOTECTL_AUTHORIZED_KEY "
                          "and run the bootstrap cell again.")
    if "subsystem request failed" in text:
        return LinkFailed(f"{name} offers no SFTP (the sshd has no sftp subsystem)",
                          "Start the remote side with `remotectl up`, which configures it.")
    if any(word in text for word in ("connection refused", "timed out", "could not resolve",
                                     "no route", "connection closed", "network is unreachable")):
        return LinkFailed(f"cannot reach {name}: {stderr_line}",
                          "Is the remote side still running (`remotectl up` / the bootstrap cell)? "
                          "A new runtime prints a new card.")
    shown = stderr_line or f"ssh exited with status {code}"
    return LinkFailed(f"ssh {name} failed: {shown}", f"Try `ssh {name} true` to see why; {again}")


class SshLink:
    """An SFTP session (`.sftp`) and short remote commands (`.run`) to one managed host."""

    def __init__(self, layout: SshLayout, record: HostRecord, timeout: float = 15.0,
                 commands: bool = False) -> None:
        """`commands`: `.run` will be used (then, on POSIX, it shares the login)."""
        self.layout, self.record, self.timeout = layout, record, timeout
        self.commands = commands
        self.sftp: Optional[SftpClient] = None
        self.via = "ssh"
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Optional[_StderrTail] = None
        self._client = None  # paramiko SSHClient in the fallback
        self._mux_dir: Optional[str] = None
        self._ssh: Optional[str] = None
        self._stalled: Optional[float] = None  # the limit that ran out, when the watchdog closed the link
        self._closing = threading.Event()

    def __enter__(self) -> SshLink:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, (EOFError, ConnectionError)):
            raise self._failure(exc) from None  # the link died mid-copy: say why, in one line
        self.close()

    # -- opening ----------------------------------------------------------------------
    def _base_argv(self, ssh: str) -> List[str]:
        connect_timeout = max(1, int(round(self.timeout)))
        argv = [ssh, "-F", str(self.layout.managed_config), "-o", "BatchMode=yes",
                "-o", "ClearAllForwardings=yes", "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "RequestTTY=no", "-o", "ForwardX11=no", "-o", "PermitLocalCommand=no",
                "-o", "LogLevel=ERROR"]
        if self._mux_dir:
            argv += ["-o", f"ControlPath={os.path.join(self._mux_dir, 'm')}", "-o", "ControlPersist=no"]
        return argv

    def open(self) -> SshLink:
        ssh = ssh_binary()
        if ssh is None:
            return self._open_paramiko()
        self._ssh = ssh
        # Colab's entry shares its own connection (Google allows one per runtime): ride that one
        if os.name == "posix" and self.commands and self.record.tunnel != "colab":
            self._mux_dir = tempfile.mkdtemp(prefix="rc-")  # 0700; a short path for the socket
        argv = self._base_argv(ssh)
        if self._mux_dir:
            argv += ["-o", "ControlMaster=auto"]
        argv += ["-s", "--", self.record.name, "sftp"]
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=PIPE_BUFFER)
        except OSError as exc:
            self.close()
            raise LinkFailed(f"cannot run {ssh}: {exc.strerror or exc}",
                             f"Install the OpenSSH client, or set {SSH_VAR}=paramiko.") from None
        _widen_pipes(self._proc)
        self._stderr = _StderrTail(self._proc.stderr)
        self._stderr.start()
        client = SftpClient(self._proc.stdout, self._proc.stdin)
        self._watch(client, self._proc)
        try:
            self.sftp = client.init()
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._failure(exc) from None
        return self

    def _watch(self, client: SftpClient, proc: subprocess.Popen) -> None:
        """End ssh when the stream has stood still for the reply limit (the blocked call then
        sees the end of the stream, and the copy stops with one line saying why)."""
        limit = reply_limit(self.timeout)

        def run() -> None:
            while not self._closing.wait(min(1.0, limit / 10)):
                since = client.waiting_since
                if since is not None and time.monotonic() - since > limit and proc.poll() is None:
                    self._stalled = limit
                    proc.kill()
                    return

        threading.Thread(target=run, daemon=True, name="remotectl-sftp-watchdog").start()

    def _failure(self, exc: BaseException) -> RemotectlError:
        """Why the ssh process stopped serving SFTP, from its exit status and stderr."""
        proc = self._proc
        code = None
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                code = proc.wait(timeout=self.timeout + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if self._stderr is not None:
            self._stderr.join(timeout=5)
        line = self._stderr.last_line() if self._stderr else ""
        self.close()
        if self._stalled is not None:
            return LinkFailed(f"{self.record.name} stopped answering: nothing came back for "
                              f"{self._stalled:.0f} s, so the copy was stopped",
                              "Check the remote side (`remotectl check`); run the same command again "
                              "once it answers: finished files are skipped and the interrupted one resumes.")
        if isinstance(exc, ProtocolError) and not line:
            return LinkFailed(f"{self.record.name}: {exc.message}")
        if self.sftp is not None:  # it had worked: the link died during the copy
            return LinkFailed(f"the connection to {self.record.name} closed during the copy"
                              + (f" ({line})" if line else ""),
                              "Run the same command again: finished files are skipped and the "
                              "interrupted one resumes.")
        return explain_ssh_failure(self.record.name, line, code)

    def _open_paramiko(self) -> SshLink:
        from remote.client import manage, probe

        self.via = "paramiko"
        self._client = probe.open_client(manage.endpoint_for(self.layout, self.record), timeout=self.timeout)
        channel = self._client.get_transport().open_session(timeout=self.timeout)
        channel.invoke_subsystem("sftp")
        channel.settimeout(reply_limit(self.timeout))  # a server that stops answering ends the copy
        self._channel = channel
        try:
            self.sftp = SftpClient(channel.makefile("rb", PIPE_BUFFER), channel.makefile("wb", PIPE_BUFFER)).init()
        except (EOFError, OSError, ProtocolError) as exc:
            self.close()
            raise LinkFailed(f"{self.record.name} did not start SFTP: {clean_line(exc)}") from None
        return self

    # -- commands ---------------------------------------------------------------------
    def run(self, command: str, timeout: float = 600.0) -> bytes:
        """`command` in the remote login shell; its stdout (stderr is dropped: remote text)."""
        if self._client is not None:
            _, stdout, _ = self._client.exec_command(command, timeout=timeout)
            return stdout.read()
        argv = self._base_argv(self._ssh or "ssh")
        if self._mux_dir:
            argv += ["-o", "ControlMaster=no"]
        argv += ["--", self.record.name, command]
        try:
            out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LinkFailed(f"ssh {self.record.name} could not run a command: {exc}") from None
        if out.returncode == 255:
            line = clean_line((out.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1])
            raise explain_ssh_failure(self.record.name, line, out.returncode)
        return out.stdout

    # -- closing ----------------------------------------------------------------------
    def close(self) -> None:
        self._closing.set()
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    if pipe:
                        pipe.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.join(timeout=2)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._mux_dir:
            shutil.rmtree(self._mux_dir, ignore_errors=True)
            self._mux_dir = None
