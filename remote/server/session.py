"""`up` and `down`: the order of steps, the state file, and teardown on any failure.

Data flows one way: secrets -> keys -> sshd -> tunnel -> card. Whoever runs these
steps *owns* the server: the foreground `up`, the detached supervisor, or the
notebook kernel (pyngrok ends its agent when that Python process exits, so the owner
must live as long as the tunnel). `down` from another process stops what the
owner recorded in state.json, by pid and start time, never by name.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from remote import card as cards
from remote import keys
from remote.errors import BadInput, RemotectlError
from remote.server import passwords, persist, processes, state
from remote.server.credentials import Credentials
from remote.server.sshd import (
    Sshd,
    SshdSettings,
    banner_answers,
    ensure_openssh_server,
    write_files,
)
from remote.server.tunnels import PROVIDERS, Tunnel, TunnelRequest, make_tunnel

Echo = Callable[[str], None]
DEFAULT_TIMEOUT = 30.0


@dataclass
class UpOptions:
    """Everything about an `up` except its secrets."""

    tunnel: str = "ngrok"
    port: int = 0
    bind: str = "127.0.0.1"
    region: Optional[str] = None
    state_dir: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT
    persist: Optional[str] = None  # a folder that keeps the host key and authorized keys
    workdir: Optional[str] = None  # the folder the card tells VS Code to open [default: cwd]

    def validate(self) -> None:
        if self.tunnel not in PROVIDERS:
            raise BadInput(f"unknown tunnel {self.tunnel!r} (available: {', '.join(sorted(PROVIDERS))})")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise BadInput(f"port {self.port!r} is out of range (0-65535; 0 picks a free port)")
        if self.port and self.port < 1024 and os.geteuid() != 0:
            raise BadInput(f"port {self.port} needs root; pick one above 1024, or 0 for any free port")
        if self.timeout <= 0:
            raise BadInput("--timeout must be positive")
        self.state_dir = str(state.resolve(self.state_dir))
        if self.persist:
            self.persist = str(persist.check_dir(self.persist))


class Server:
    """The owning side of one running server: sshd, the tunnel, the lock, the state file."""

    def __init__(self, options: UpOptions, creds: Credentials, mode: str, echo: Echo) -> None:
        options.validate()
        self.options = options
        self.creds = creds
        self.mode = mode  # "foreground" | "supervisor" | "kernel"
        self.echo = echo
        self.state_dir = Path(options.state_dir or state.default_state_dir())
        self.lock = state.StateLock(self.state_dir)
        self.sshd: Optional[Sshd] = None
        self.tunnel: Optional[Tunnel] = None
        self.info: Dict[str, Any] = {}
        self._stopped = False
        self._stop_lock = threading.Lock()

    # -- start ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Every check that needs no running process, so bad input fails before anything starts."""
        if self.options.persist and not self.creds.authorized_keys:  # a fresh runtime, no secret
            kept = persist.saved_authorized_keys(Path(self.options.persist))
            if kept:
                self.creds = replace(self.creds, authorized_keys=kept)
                self.echo(f"using the {len(kept)} authorized key(s) kept in {self.options.persist}")
        check_input(self.options, self.creds)
        ensure_openssh_server(self.echo)
        self.tunnel = make_tunnel(self.options.tunnel, self._tunnel_request(""))
        self.tunnel.prepare(self.echo)

    def _tunnel_request(self, session: str) -> TunnelRequest:
        return TunnelRequest(state_dir=self.state_dir, ngrok_token=self.creds.ngrok_token,
                             region=self.options.region, bind=self.options.bind,
                             session=session or "remotectl")

    def start(self) -> Dict[str, Any]:
        began = time.monotonic()
        state.prepare(self.state_dir)
        if not self.lock.acquire():
            raise already_running(self.state_dir)
        try:
            clean_leftovers(self.state_dir)
            if self.tunnel is None:
                self.preflight()
            assert self.tunnel is not None
            session_id = cards.new_session_id()
            self.tunnel.request.session = session_id
            settings = SshdSettings(state_dir=self.state_dir, authorized_keys=self.creds.authorized_keys,
                                    port=self.options.port, bind=self.options.bind,
                                    password_login=bool(self.creds.password))
            if self.creds.password:
                passwords.set_password(self.state_dir, settings.user, self.creds.password)
            if self.options.persist:
                kept = Path(self.options.persist)
                persist.restore_host_key(kept, self.state_dir)
                persist.keep_authorized_keys(kept, settings.authorized_keys)
            host_key = write_files(settings)
            self.sshd = Sshd(settings)
            remaining = max(1.0, self.options.timeout - (time.monotonic() - began))
            self.sshd.start(timeout=remaining)
            local_host = "127.0.0.1" if settings.bind in ("0.0.0.0", "") else (
                "::1" if settings.bind == "::" else settings.bind)
            remaining = max(1.0, self.options.timeout - (time.monotonic() - began))
            endpoint = self.tunnel.open(local_host, settings.port, timeout=remaining)
            card = cards.Card(user=settings.user, host=endpoint.host, port=endpoint.port,
                              host_key=host_key, session=session_id, tunnel=self.tunnel.kind,
                              path=os.path.abspath(self.options.workdir or os.getcwd()),
                              python=sys.executable if cards.plain_remote_path(sys.executable) else None)
            self.info = self._describe(card, settings, endpoint.url, time.monotonic() - began)
            state.write_state(self.state_dir, self.info)
            return self.info
        except BaseException:
            self.stop()
            raise

    def _describe(self, card: cards.Card, settings: SshdSettings, public_url: str,
                  seconds: float) -> Dict[str, Any]:
        assert self.sshd is not None and self.tunnel is not None
        me = os.getpid()
        pids = {"owner": me, "sshd": self.sshd.pid, **self.tunnel.pids()}
        return {
            "card": card.encode(), "connect_line": cards.connect_line(card),
            "host": card.host, "port": card.port, "user": card.user, "host_key": card.host_key,
            "fingerprint": keys.fingerprint(card.host_key), "session": card.session,
            "tunnel": card.tunnel, "public_url": public_url,
            "local_host": settings.bind, "local_port": settings.port,
            "state_dir": str(self.state_dir), "password_login": settings.password_login,
            "authorized_keys": len(settings.authorized_keys),
            "mode": self.mode, "pid": me, "pids": pids, "persist": self.options.persist,
            "starts": {name: processes.start_time(pid) for name, pid in pids.items()},
            "tunnel_info": self.tunnel.describe(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ready_seconds": round(seconds, 3),
            "python": card.python,  # the interpreter ssh sessions should use ($REMOTECTL_PYTHON)
        }

    # -- health and stop -----------------------------------------------------------------------
    def healthy(self) -> bool:
        return bool(self.sshd and self.sshd.alive() and self.tunnel and self.tunnel.alive())

    def what_died(self) -> str:
        if self.sshd is not None and not self.sshd.alive():
            return "sshd exited"
        if self.tunnel is not None and not self.tunnel.alive():
            return f"the {self.tunnel.kind} agent exited"
        return "stopped"

    def stop(self) -> Dict[str, int]:
        """Tear everything down (idempotent); returns {what: pid} of what was still running."""
        with self._stop_lock:
            if self._stopped:
                return {}
            self._stopped = True
            stopped: Dict[str, int] = {}
            if self.tunnel is not None:
                try:
                    stopped.update(self.tunnel.close())
                except Exception as exc:  # keep tearing down the rest
                    self.echo(f"warning: stopping the tunnel failed: {exc}")
            if self.sshd is not None:
                pid = self.sshd.pid
                if self.sshd.stop() and pid:
                    stopped["sshd"] = pid
            try:
                passwords.restore_password(self.state_dir)
            except RemotectlError as exc:
                self.echo(f"warning: could not restore the previous password: {exc.message}")
            if self.info:
                state.clear_state(self.state_dir)
            self.lock.release()
            return stopped


def check_input(options: UpOptions, creds: Credentials) -> None:
    options.validate()
    if not creds.authorized_keys and not creds.password:
        raise BadInput("no way to log in: give a public key or a password",
                       "Set REMOTECTL_AUTHORIZED_KEY (the line `remotectl keygen` printed on your "
                       "computer) in the environment or Colab's Secrets panel, or pass --authorized-key.")
    if creds.password:
        passwords.check_possible(_user())
    if options.tunnel == "ngrok" and not creds.ngrok_token:
        make_tunnel("ngrok", TunnelRequest(state_dir=Path(options.state_dir or ".")))  # raises BadInput


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def already_running(state_dir: Path) -> RemotectlError:
    recorded = state.read_state(state_dir) or {}
    pid = recorded.get("pid")
    where = f" (pid {pid})" if pid else ""
    return RemotectlError(f"a server already runs from {state_dir}{where}",
                          f"Stop it first: remotectl down --state-dir {state_dir}  "
                          "(or use another --state-dir)")


def clean_leftovers(state_dir: Path) -> Dict[str, int]:
    """After an owner died without cleaning up: stop its recorded children, restore the password."""
    recorded = state.read_state(state_dir)
    stopped: Dict[str, int] = {}
    if recorded:
        starts = recorded.get("starts") or {}
        for name, pid in (recorded.get("pids") or {}).items():
            if name != "owner" and processes.stop(pid, starts.get(name)):
                stopped[name] = pid
        state.clear_state(state_dir)
    passwords.restore_password(state_dir)
    return stopped


# -- stopping and inspecting from another process -----------------------------------------------
def stop_recorded(state_dir: Path, grace: float = 10.0) -> Dict[str, Any]:
    """`down`: stop the owner (unless it is a notebook kernel) and every child it recorded."""
    recorded = state.read_state(state_dir)
    result: Dict[str, Any] = {"state_dir": str(state_dir), "stopped": {}, "was_running": bool(recorded)}
    if not recorded:
        try:
            passwords.restore_password(state_dir)
        except RemotectlError:
            pass
        return result
    pids = recorded.get("pids") or {}
    starts = recorded.get("starts") or {}
    children = {name: pid for name, pid in pids.items()
                if name != "owner" and processes.is_alive(pid, starts.get(name))}
    stopped: Dict[str, int] = {}
    owner = pids.get("owner")
    if recorded.get("mode") in ("supervisor", "foreground") and owner != os.getpid():
        # The owner tears its children down itself on SIGTERM; what it leaves, we stop below.
        if processes.stop(owner, starts.get("owner"), grace=grace):
            stopped["supervisor" if recorded.get("mode") == "supervisor" else "up"] = owner
    for name, pid in children.items():
        processes.stop(pid, starts.get(name))
        stopped[f"{recorded.get('tunnel')} agent" if name == "agent" else name] = pid
    if state.read_state(state_dir) is not None:
        state.clear_state(state_dir)
    try:
        passwords.restore_password(state_dir)
    except RemotectlError:
        pass
    host = recorded.get("local_host") or "127.0.0.1"
    port = recorded.get("local_port")
    result["stopped"] = stopped
    result["port"] = port
    result["port_free"] = bool(port) and _wait_port_free(host, int(port))
    return result


def _wait_port_free(host: str, port: int, timeout: float = 5.0) -> bool:
    bind = "127.0.0.1" if host in ("0.0.0.0", "") else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes.port_is_free(bind, port):
            return True
        time.sleep(0.05)
    return processes.port_is_free(bind, port)


def status(state_dir: Path) -> Dict[str, Any]:
    """`status`: is sshd up, is the tunnel up, the endpoint, the fingerprint, the GPU."""
    recorded = state.read_state(state_dir)
    report: Dict[str, Any] = {"state_dir": str(state_dir), "running": False, "gpu": gpu_report()}
    if not recorded:
        return report
    pids = recorded.get("pids") or {}
    starts = recorded.get("starts") or {}
    alive = {name: processes.is_alive(pid, starts.get(name)) for name, pid in pids.items()}
    host = recorded.get("local_host") or "127.0.0.1"
    bind = "127.0.0.1" if host in ("0.0.0.0", "") else host
    sshd_up = alive.get("sshd", False) and banner_answers(bind, int(recorded.get("local_port") or 0))
    provider = PROVIDERS.get(str(recorded.get("tunnel")))
    tunnel_up = bool(provider) and provider.recorded_up(recorded, alive.get("agent", False), bool(sshd_up))
    keep = ("card", "connect_line", "host", "port", "user", "host_key", "fingerprint", "session",
            "tunnel", "public_url", "local_host", "local_port", "mode", "pid", "pids", "started_at",
            "password_login", "python")
    report.update({k: recorded.get(k) for k in keep})
    report.update({"running": bool(sshd_up and tunnel_up), "sshd_up": bool(sshd_up),
                   "tunnel_up": bool(tunnel_up), "alive": alive})
    return report


def gpu_report() -> Optional[str]:
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# -- owning a server in this process -----------------------------------------------------------
class StopRequested(Exception):
    """SIGTERM or SIGHUP reached the owner."""


def install_stop_signals() -> None:
    def _raise(signum, _frame):
        raise StopRequested(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)


def serve_until_stopped(server: Server, echo: Echo, poll: float = 0.5) -> str:
    """Block until Ctrl-C, SIGTERM/SIGHUP or a child's death; then tear down. Returns why."""
    reason = "stopped"
    try:
        while server.healthy():
            time.sleep(poll)
        reason = server.what_died()
    except KeyboardInterrupt:
        reason = "interrupted"
    except StopRequested as exc:
        reason = f"received {exc.args[0]}"
    finally:
        stopped = server.stop()
        echo(f"remotectl: {reason}; stopped {describe_stopped(stopped) or 'nothing (already gone)'}")
    return reason


def describe_stopped(stopped: Dict[str, int]) -> str:
    return ", ".join(f"{name} (pid {pid})" for name, pid in stopped.items())


def options_dict(options: UpOptions) -> Dict[str, Any]:
    return asdict(options)


def credentials_dict(creds: Credentials) -> Dict[str, Any]:
    return {"authorized_keys": creds.authorized_keys, "ngrok_token": creds.ngrok_token,
            "password": creds.password}


# -- in the notebook kernel --------------------------------------------------------------------
_KERNEL_SERVERS: Dict[str, Server] = {}


def start_in_kernel(options: UpOptions, creds: Credentials, echo: Echo) -> Server:
    """Own the server from this Python process (a notebook); stopped at exit or on `down()`."""
    options.validate()
    previous = _KERNEL_SERVERS.pop(str(options.state_dir), None)
    if previous is not None:
        echo("remotectl: stopping this notebook's previous server first")
        previous.stop()
    server = Server(options, creds, mode="kernel", echo=echo)
    server.preflight()
    server.start()
    _KERNEL_SERVERS[str(options.state_dir)] = server
    atexit.register(server.stop)
    threading.Thread(target=_watch, args=(server, echo), daemon=True, name="remotectl-watch").start()
    return server


def _watch(server: Server, echo: Echo) -> None:
    """Tear down in the kernel as soon as sshd or the agent dies (e.g. `remotectl down` elsewhere)."""
    while not server._stopped:
        time.sleep(1.0)
        if not server._stopped and not server.healthy():
            why = server.what_died()
            server.stop()
            print(f"remotectl: {why}; the server in this notebook has stopped", file=sys.stderr)
            return


def kernel_server(state_dir: str) -> Optional[Server]:
    return _KERNEL_SERVERS.get(state_dir)


def forget_kernel_server(state_dir: str) -> None:
    _KERNEL_SERVERS.pop(state_dir, None)

