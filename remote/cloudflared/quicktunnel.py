"""A Cloudflare quick tunnel to our sshd, and its public hostname read from the metrics server.

The hostname comes from `GET /quicktunnel` on cloudflared's `--metrics` address (what
cloudflared's own tests read), not from its log banner, whose wording changes between
releases. A quick tunnel needs no account and no secret, so nothing here is sensitive.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

from remote.errors import RemotectlError

PathLike = Union[str, "os.PathLike[str]"]
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


def tunnel_argv(cloudflared: PathLike, local_port: int, metrics_port: int) -> list:
    """The quick-tunnel command line (no token, no account: nothing secret on it)."""
    return [os.fspath(cloudflared), "tunnel", "--no-autoupdate",
            "--url", f"ssh://localhost:{int(local_port)}",
            "--metrics", f"127.0.0.1:{int(metrics_port)}"]


def named_tunnel_argv(cloudflared: PathLike, metrics_port: int) -> list:
    """A named (remotely managed) tunnel's command line: its token comes in TUNNEL_TOKEN, never here.

    Its hostname and the service it forwards to (ssh://localhost:PORT) are set in Cloudflare's
    dashboard for that tunnel, not on this command line.
    """
    return [os.fspath(cloudflared), "tunnel", "--no-autoupdate", "--metrics", f"127.0.0.1:{int(metrics_port)}",
            "run"]


def free_port() -> int:
    """A loopback port for the metrics server, as the kernel hands one out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_quick_tunnel(cloudflared: PathLike, local_port: int, metrics_port: int,
                       log_path: PathLike, env: Optional[Mapping[str, str]] = None,
                       new_session: bool = True, argv: Optional[list] = None) -> subprocess.Popen:
    """Start `cloudflared tunnel --url ssh://localhost:PORT` with its log in `log_path`.

    cloudflared logs to stderr; stdout and stderr both go to `log_path`, so even a crash
    before its logger is set up is kept for the error message. `new_session` detaches it
    from the terminal's Ctrl-C so the supervisor decides when it stops.
    """
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(argv or tunnel_argv(cloudflared, local_port, metrics_port),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None,
                                start_new_session=new_session and os.name == "posix")
    except OSError as exc:
        raise RemotectlError(f"could not start cloudflared ({cloudflared}): {exc.strerror or exc}") from None
    finally:
        log.close()


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Terminate, then kill if it lingers; idempotent."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def log_tail(log_path: Optional[PathLike], lines: int = 15) -> str:
    if log_path is None:
        return ""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _get_json(metrics_port: int, path: str) -> Tuple[int, dict]:
    """(HTTP status, JSON body) from the metrics server; (0, {}) while it is not up yet."""
    url = f"http://127.0.0.1:{metrics_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return status, {}
    return status, data if isinstance(data, dict) else {}


def _with_tail(text: str, log_path: Optional[PathLike]) -> str:
    tail = log_tail(log_path)
    return f"{text}\nLast lines of its log ({log_path}):\n{tail}" if tail else text


def wait_hostname(metrics_port: int, deadline_s: float, proc: subprocess.Popen,
                  log_path: Optional[PathLike] = None, poll_s: float = 0.2,
                  known_hostname: Optional[str] = None) -> str:
    """The `*.trycloudflare.com` hostname once the tunnel has a live edge connection.

    Waits for `/quicktunnel` to name a hostname (a named tunnel's, `known_hostname`, is known
    already), then for `/ready` to answer 200. If
    cloudflared exits, or `deadline_s` passes, it raises RemotectlError (with the log's
    tail) and `proc` is stopped: a failed wait never leaves a tunnel running.
    """
    end = time.monotonic() + deadline_s
    hostname = known_hostname or ""
    what_tunnel = "the named tunnel" if known_hostname else "the quick tunnel"
    try:
        while True:
            code = proc.poll()
            if code is not None:
                raise RemotectlError(
                    f"cloudflared exited (code {code}) before {what_tunnel} was ready",
                    hint=_with_tail("Check that this machine can reach Cloudflare" +
                                    (" and the tunnel's token (TUNNEL_TOKEN)" if known_hostname else "") +
                                    ", or use another tunnel.", log_path))
            if not hostname:
                _, data = _get_json(metrics_port, "/quicktunnel")
                name = str(data.get("hostname") or "").strip().lower().rstrip(".")
                if name and not _HOSTNAME.match(name):
                    raise RemotectlError(f"cloudflared reported an invalid hostname: {name!r}")
                hostname = name
            if hostname:
                status, _ = _get_json(metrics_port, "/ready")
                if status == 200:
                    return hostname
            if time.monotonic() >= end:
                what = (f"cloudflared reported {hostname} but no connection to Cloudflare became ready"
                        if hostname else "cloudflared reported no quick-tunnel hostname")
                raise RemotectlError(
                    f"{what} within {deadline_s:g} s",
                    hint=_with_tail("Cloudflare's quick-tunnel service may be slow or unreachable from "
                                    "here; try again, or use another tunnel.", log_path))
            time.sleep(poll_s)
    except BaseException:
        stop(proc)
        raise


@dataclass
class QuickTunnel:
    """A running quick tunnel: its process, public hostname, metrics port and log."""

    proc: subprocess.Popen
    hostname: str
    metrics_port: int
    log_path: Path

    @classmethod
    def open(cls, cloudflared: PathLike, local_port: int, log_path: PathLike,
             deadline_s: float = 60.0, env: Optional[Mapping[str, str]] = None) -> QuickTunnel:
        """Start a tunnel to `local_port` and wait for its hostname (stopped again on failure)."""
        metrics_port = free_port()
        proc = start_quick_tunnel(cloudflared, local_port, metrics_port, log_path, env=env)
        hostname = wait_hostname(metrics_port, deadline_s, proc, log_path=log_path)
        return cls(proc=proc, hostname=hostname, metrics_port=metrics_port, log_path=Path(log_path))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        stop(self.proc)
