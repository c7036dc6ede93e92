"""Tunnel providers: turn our sshd's local address into a public endpoint for the card.

Each provider is one class with the same small interface (`prepare`, `open`,
`close`, `alive`, `pids`, `describe`, `probe_route`) registered in PROVIDERS under the
card's tunnel kind; adding a provider touches this file and the card's kind. A provider's
long-running process is named `agent`: `open` records it with the tracker (children.py)
just before it is spawned and again once its pid is known, so a crash never hides it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote.errors import BadInput, RemotectlError
from remote.files import atomic_write
from remote.server import pyngrok_adapter as pyngrok
from remote.server.children import NOT_TRACKED

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    """Where the client connects: the card's host and port."""

    host: str
    port: int
    url: str


@dataclass
class TunnelRequest:
    state_dir: Path
    ngrok_token: Optional[str] = None
    region: Optional[str] = None
    bind: str = "127.0.0.1"
    session: str = "remotectl"
    url: Optional[str] = None  # ngrok: a reserved address, tcp://N.tcp.ngrok.io:PORT
    metadata: Optional[str] = None  # ngrok: the endpoint's metadata (a signed endpoint record)
    hostname: Optional[str] = None  # cloudflared: a named tunnel's fixed public hostname
    tunnel_token: Optional[str] = field(default=None, repr=False)  # cloudflared: that tunnel's token


class Tunnel:
    """The provider interface."""

    kind = "?"

    def __init__(self, request: TunnelRequest) -> None:
        self.request = request

    def prepare(self, echo: Echo) -> None:
        """Checks and downloads, done where the user sees progress (before any detaching)."""

    def open(self, local_host: str, local_port: int, timeout: float, tracker: Any = NOT_TRACKED) -> Endpoint:
        """Start the tunnel to local_host:local_port; `tracker` records the agent as it starts."""
        raise NotImplementedError

    def close(self) -> Dict[str, int]:
        """Stop whatever `open` started; returns {what: pid} of what was stopped."""
        return {}

    def probe_route(self, endpoint: Endpoint) -> Optional[List[str]]:
        """The ProxyCommand argv a client needs to reach `endpoint` (None: plain TCP to host:port)."""
        return None

    def alive(self) -> bool:
        return True

    def pids(self) -> Dict[str, int]:
        return {}

    def describe(self) -> Dict[str, object]:
        """Extra fields for state.json (e.g. the agent's API address)."""
        return {}

    @classmethod
    def recorded_up(cls, recorded: Dict[str, Any], agent_alive: bool, sshd_up: bool) -> bool:
        """`status` from another process: is the tunnel state.json describes still serving?"""
        return agent_alive


class DirectTunnel(Tunnel):
    """No tunnel: the sshd's own address (a machine reachable on a LAN, and tests)."""

    kind = "direct"

    def open(self, local_host: str, local_port: int, timeout: float, tracker: Any = NOT_TRACKED) -> Endpoint:
        host = self.request.bind
        if host in ("0.0.0.0", "::", ""):
            host = _primary_address()
        return Endpoint(host=host, port=local_port, url=f"tcp://{host}:{local_port}")

    @classmethod
    def recorded_up(cls, recorded: Dict[str, Any], agent_alive: bool, sshd_up: bool) -> bool:
        return sshd_up


def _primary_address() -> str:
    """This machine's outward address (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))
            return sock.getsockname()[0]
    except OSError:
        return socket.gethostname()


NGROK_CONFIG = "ngrok.yml"
NGROK_LOG = "ngrok.log"
AGENT_VAR = "PYNGROK_NGROK_PATH"
_ERR_CODE = re.compile(r"ERR_NGROK_(\d+)")


class NgrokTunnel(Tunnel):
    """ngrok's v3 agent driven by pyngrok, with the authtoken in a 0600 config file.

    The token never reaches argv: pyngrok puts `PyngrokConfig.auth_token` (which it
    also fills from NGROK_AUTHTOKEN) on the agent's command line, and its
    `set_auth_token` runs `ngrok config add-authtoken TOKEN`, so we write the agent's
    config file ourselves, in the same v3 format that command writes, and clear
    `auth_token`. Each state dir gets its own config, never ~/.config/ngrok, and it is
    deleted when the tunnel closes: the token lives no longer than the server.
    """

    kind = "ngrok"

    def __init__(self, request: TunnelRequest) -> None:
        super().__init__(request)
        if not request.ngrok_token:
            raise BadInput(
                "the ngrok tunnel needs an authtoken, and none was found",
                "Copy yours from https://dashboard.ngrok.com/get-started/your-authtoken into Colab's "
                "Secrets panel (name NGROK_AUTHTOKEN) or the environment variable NGROK_AUTHTOKEN. "
                "Without ngrok: --tunnel cloudflared (a Cloudflare quick tunnel, no account), or "
                "--tunnel direct for a machine you can reach directly.")
        self.config_path = request.state_dir / NGROK_CONFIG
        self.log_path = request.state_dir / NGROK_LOG
        self.agent_path: Optional[str] = None
        self._config = None
        self._api_url: Optional[str] = None
        self._public_url = ""
        self._log_lock = threading.Lock()
        self._watchdog_fired = False
        self._tracker: Any = NOT_TRACKED
        self._agent_pid: Optional[int] = None
        self._starting: Optional[pyngrok.Agent] = None  # the agent seen during start-up

    # -- preparing (before any detaching, so downloads are seen) -----------------------------
    def prepare(self, echo: Echo) -> None:
        pyngrok.check_supported()
        self.agent_path = self._agent(echo)
        self._check_version()

    def _agent(self, echo: Echo) -> str:
        named = _named_executable(AGENT_VAR, "the ngrok v3 agent", "download it")
        if named:
            return named  # nothing is ever downloaded when the user named an agent
        path = pyngrok.default_agent_path()
        if not os.path.exists(path):
            echo(f"Downloading the ngrok agent (v3) to {path} ...")
            try:
                pyngrok.install(path)
            except Exception as exc:
                raise RemotectlError(f"could not download the ngrok agent: {exc}",
                                     f"Install it yourself and set {AGENT_VAR} to its path.") from None
        return path

    def _check_version(self) -> None:
        assert self.agent_path
        try:
            out = subprocess.run([self.agent_path, "--version"], capture_output=True, text=True,
                                 timeout=20, env=_agent_env()).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RemotectlError(f"cannot run the ngrok agent {self.agent_path}: {exc}") from None
        match = re.search(r"version (\d+)\.", out)
        if not match or match.group(1) != "3":
            raise RemotectlError(
                f"{self.agent_path} is not ngrok's v3 agent (it says {out.strip()[:60]!r})",
                "ngrok no longer accepts v2 agents (the one colab-ssh downloads). Remove it, or "
                f"point {AGENT_VAR} at a v3 agent.")

    # -- running -----------------------------------------------------------------------------
    def open(self, local_host: str, local_port: int, timeout: float, tracker: Any = NOT_TRACKED) -> Endpoint:
        http_error, agent_error, any_error = pyngrok.errors()
        if self.agent_path is None:
            self.prepare(lambda _line: None)
        assert self.agent_path is not None
        already = pyngrok.agent(self.agent_path)
        if already is not None and already.alive():
            raise RemotectlError("an ngrok tunnel already runs from this Python process",
                                 "Stop it first (its Session.down(), or remotectl down); one process "
                                 "drives one ngrok agent.")
        _quiet_pyngrok()
        write_agent_config(self.config_path, self.request.ngrok_token or "")
        self._config = pyngrok.make_config(self.agent_path, str(self.config_path), self.request.region,
                                           int(timeout), self._record)
        self._tracker = tracker
        tracker.expect("agent", ["--config", str(self.config_path)])  # pyngrok's argv names our config
        # pyngrok checks its start-up timeout only between the agent's lines: a silent agent
        # would block it forever, so a watchdog ends such an agent at our deadline.
        watchdog = threading.Timer(timeout, self._kill_agent)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._public_url = pyngrok.connect_tcp(self._config, f"remotectl-{self.request.session}",
                                                   local_host, local_port, url=self.request.url,
                                                   metadata=self.request.metadata)
        except http_error as exc:
            self.close()
            raise explain_ngrok(exc.body or str(exc), self._secret(), started=True) from None
        except agent_error as exc:
            timed_out = self._watchdog_fired
            self.close()
            text = exc.ngrok_error or ""
            if not text:
                text = "\n".join(getattr(log, "line", "") for log in exc.ngrok_logs[-8:])
            if not _ERR_CODE.search(text):
                text = "\n".join(filter(None, (text, self._last_words())))
            raise explain_ngrok(text, self._secret(), started=False,
                                timed_out=timed_out and not _ERR_CODE.search(text),
                                timeout=timeout) from None
        except any_error as exc:
            self.close()
            raise RemotectlError("the ngrok agent failed: " + _redact(str(exc), self._secret())) from None
        except BaseException:
            self.close()
            raise
        finally:
            watchdog.cancel()
        running = pyngrok.agent(self.agent_path)
        if running is not None:
            self._note_pid(running.pid)
        self._api_url = running.api_url if running else None
        match = re.match(r"^tcp://([^:/]+):(\d+)$", self._public_url)
        if not match:
            self.close()
            raise RemotectlError(f"ngrok reported an unexpected address {self._public_url!r}")
        if self.request.url and self._public_url != self.request.url:
            got = self._public_url
            self.close()
            raise RemotectlError(f"ngrok opened {got}, not the reserved address {self.request.url}",
                                 "Check the address on https://dashboard.ngrok.com/tcp-addresses "
                                 "(and --region: an address is reserved in one region).")
        return Endpoint(host=match.group(1), port=int(match.group(2)), url=self._public_url)

    def _secret(self) -> str:
        return self.request.ngrok_token or ""

    def _note_pid(self, pid: int) -> None:
        if self._agent_pid != pid:
            self._agent_pid = pid
            self._tracker.started("agent", pid)

    def _record(self, log) -> None:
        """pyngrok's log callback: the agent's lines go to ngrok.log with the token removed.

        Its first line is also the first moment the agent's pid can be read: record it.
        """
        if self._agent_pid is None:
            running = pyngrok.agent(self.agent_path)
            if running is not None:
                self._starting = running
                self._note_pid(running.pid)
        line = _redact(getattr(log, "line", ""), self._secret())
        with self._log_lock:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

    def _last_words(self) -> str:
        """What an agent that exited during start-up wrote after the line pyngrok read last.

        pyngrok stops reading as soon as the agent has exited, so the line that says why (the
        ERR_NGROK_105 of a bad token) can still sit in the pipe; it goes to ngrok.log too.
        """
        text = pyngrok.unread_output(self._starting)
        for line in text.splitlines():
            self._record(type("Line", (), {"line": line})())
        return text

    def _kill_agent(self) -> None:
        self._watchdog_fired = True
        running = pyngrok.agent(self.agent_path)
        if running is not None and running.alive():
            running.handle.proc.kill()

    def alive(self) -> bool:
        running = pyngrok.agent(self.agent_path)
        return running is not None and running.alive()

    def pids(self) -> Dict[str, int]:
        running = pyngrok.agent(self.agent_path)
        return {"agent": running.pid} if running is not None else {}

    @classmethod
    def recorded_up(cls, recorded: Dict[str, Any], agent_alive: bool, sshd_up: bool) -> bool:
        """The agent runs and its own API still lists our public URL."""
        if not agent_alive:
            return False
        api = (recorded.get("tunnel_info") or {}).get("api_url")
        if not api:
            return False
        _, data = _get_json(f"{api}/api/endpoints")
        urls = [e.get("url") or e.get("public_url")
                for e in data.get("endpoints") or data.get("tunnels") or []]
        return recorded.get("public_url") in urls

    def describe(self) -> Dict[str, object]:
        return {"api_url": self._api_url, "public_url": self._public_url,
                "agent_path": self.agent_path, "config": str(self.config_path)}

    def close(self) -> Dict[str, int]:
        stopped: Dict[str, int] = {}
        running = pyngrok.agent(self.agent_path)
        if running is not None:
            proc = running.handle.proc
            if proc.poll() is None:
                stopped["ngrok agent"] = proc.pid
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self._config is not None:
            pyngrok.forget(self._config, running)
        self._tracker.stopped("agent")
        forget_agent_config(self.request.state_dir)
        return stopped


def write_agent_config(path: Path, token: str) -> None:
    """The agent's config (ngrok's v3 format, as `ngrok config add-authtoken` writes it), 0600."""
    import yaml

    text = yaml.safe_dump({"version": "3", "agent": {"authtoken": token}}, default_flow_style=False)
    atomic_write(path, text, mode=0o600)


def forget_agent_config(state_dir: Path) -> None:
    """Delete the agent config (it holds the token); OSError if the folder refuses."""
    try:
        (state_dir / NGROK_CONFIG).unlink()
    except FileNotFoundError:
        pass


def _agent_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("NGROK_AUTHTOKEN", "REMOTECTL_PASSWORD", "TUNNEL_TOKEN")}


def _quiet_pyngrok() -> None:
    """pyngrok logs every agent line; the agent's auth errors quote the token. Keep them home."""
    logger = logging.getLogger("pyngrok")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text


CARD_REQUIRED_HINT = (
    "Since June 2024 ngrok asks free accounts to add a payment card (it is not charged) before "
    "they may open TCP endpoints, which SSH needs. Add one at "
    "https://dashboard.ngrok.com/settings#id-verification and run up again, or use a tunnel that "
    "needs no account at all: --tunnel cloudflared (a Cloudflare quick tunnel; your computer then "
    "needs cloudflared, and `remotectl connect` says how to get it).")
BAD_TOKEN_HINT = (
    "NGROK_AUTHTOKEN must be the authtoken shown at "
    "https://dashboard.ngrok.com/get-started/your-authtoken (not an API key, not a tunnel URL). "
    "Copy it again into Colab's Secrets panel (name NGROK_AUTHTOKEN) or the environment, then run up again.")


RESERVED_HINT = (
    "--url takes a TCP address reserved for the account whose authtoken this is, in the region the "
    "agent uses: see https://dashboard.ngrok.com/tcp-addresses (and pass --region if it is not the "
    "nearest), or leave --url out for a new address each start.")


def permanent(error: RemotectlError) -> RemotectlError:
    """Mark an error that trying again cannot fix (a bad token, no card, an address not ours)."""
    error.permanent = True  # type: ignore[attr-defined]
    return error


def explain_ngrok(text: str, secret: str, started: bool, timed_out: bool = False,
                  timeout: float = 0) -> RemotectlError:
    """One short paragraph for each way the agent says no; never quotes the token."""
    code_match = _ERR_CODE.search(text or "")
    code = code_match.group(0) if code_match else None
    if code == "ERR_NGROK_8013":
        return permanent(RemotectlError("ngrok refused the TCP tunnel: this account has no card on file "
                                        "(ERR_NGROK_8013)", CARD_REQUIRED_HINT))
    if code in ("ERR_NGROK_105", "ERR_NGROK_107") or "authentication failed" in (text or ""):
        return permanent(RemotectlError(f"ngrok rejected the authtoken ({code or 'authentication failed'})",
                                        BAD_TOKEN_HINT))
    if code in ("ERR_NGROK_307", "ERR_NGROK_309"):
        whose = "is not reserved by this account" if code == "ERR_NGROK_307" else \
            "is reserved by another account"
        return permanent(RemotectlError(f"ngrok refused the address: it {whose} ({code})", RESERVED_HINT))
    if timed_out:
        return RemotectlError(f"the ngrok agent did not report ready within {timeout:.0f} s",
                              "Check the machine's network, or run up again with a larger --timeout.")
    detail = _redact((text or "").replace("\\r", "").replace("\\n", " ").strip(), secret)
    first = detail.splitlines()[0][:200] if detail else "no reason given"
    what = "ngrok refused the tunnel" if started else "the ngrok agent stopped during start-up"
    hint = f"See https://ngrok.com/docs/errors/{code.lower().replace('_', '-')}/" if code else \
        "Its log is in ngrok.log in the state dir."
    return RemotectlError(f"{what}: {first}", hint)


CLOUDFLARED_VAR = "REMOTECTL_CLOUDFLARED"
CLOUDFLARED_LOG = "cloudflared.log"


class CloudflaredTunnel(Tunnel):
    """A Cloudflare quick tunnel: no account, no token; the hostname comes from its metrics port.

    cloudflared is, in order: the file REMOTECTL_CLOUDFLARED names, one on PATH, the copy
    cached in `<state>/bin`, else the pinned release downloaded there (SHA-256 checked
    before it is made executable). The card's port is 22: cloudflared ignores it, the
    client's ProxyCommand carries the hostname.
    """

    kind = "cloudflared"

    def __init__(self, request: TunnelRequest) -> None:
        super().__init__(request)
        self.path: Optional[Path] = None
        self.tunnel = None  # remote.cloudflared.QuickTunnel once open
        self.log_path = request.state_dir / CLOUDFLARED_LOG
        self._tracker: Any = NOT_TRACKED

    @property
    def cache_dir(self) -> Path:
        return self.request.state_dir / "bin"

    def prepare(self, echo: Echo) -> None:
        from remote import cloudflared

        named = _named_executable(CLOUDFLARED_VAR, "cloudflared",
                                  "use the one on PATH or download the pinned release")
        if named:
            self.path = Path(os.path.abspath(named))
            return
        self.path = cloudflared.find_cloudflared([self.cache_dir])
        if self.path is None:
            echo(f"cloudflared is not installed: downloading the pinned release {cloudflared.VERSION} "
                 f"(SHA-256 checked) into {self.cache_dir} ...")
            self.path = cloudflared.install(self.cache_dir)  # explained RemotectlError on failure

    def open(self, local_host: str, local_port: int, timeout: float, tracker: Any = NOT_TRACKED) -> Endpoint:
        from remote import cloudflared
        from remote.cloudflared.quicktunnel import free_port

        if self.path is None:
            self.prepare(lambda _line: None)
        assert self.path is not None
        self._tracker = tracker
        metrics_port = free_port()
        named = self.request.hostname
        env = _agent_env()
        if named:  # a named tunnel: its token by environment only, its ingress set at Cloudflare
            from remote.cloudflared.quicktunnel import named_tunnel_argv

            argv = named_tunnel_argv(self.path, metrics_port)
            env["TUNNEL_TOKEN"] = self.request.tunnel_token or ""
        else:
            argv = cloudflared.tunnel_argv(self.path, local_port, metrics_port)
        tracker.expect("agent", argv[1:])
        proc = cloudflared.start_quick_tunnel(self.path, local_port, metrics_port, self.log_path,
                                              env=env, argv=argv)
        tracker.started("agent", proc.pid)
        try:
            hostname = cloudflared.wait_hostname(metrics_port, timeout, proc, log_path=self.log_path,
                                                 known_hostname=named)
        except BaseException:
            tracker.stopped("agent")  # wait_hostname stopped it
            raise
        self.tunnel = cloudflared.QuickTunnel(proc=proc, hostname=hostname, metrics_port=metrics_port,
                                              log_path=self.log_path)
        return Endpoint(host=hostname, port=22, url=f"ssh://{hostname}")

    def probe_route(self, endpoint: Endpoint) -> Optional[List[str]]:
        from remote import cloudflared

        assert self.path is not None
        return cloudflared.proxy_argv(self.path, endpoint.host)

    def alive(self) -> bool:
        return self.tunnel is not None and self.tunnel.alive()

    def pids(self) -> Dict[str, int]:
        return {"agent": self.tunnel.pid} if self.tunnel is not None else {}

    def describe(self) -> Dict[str, object]:
        tunnel = self.tunnel
        return {"agent_path": str(self.path) if self.path else None,
                "metrics_port": tunnel.metrics_port if tunnel else None,
                "hostname": tunnel.hostname if tunnel else None, "log": str(self.log_path)}

    @classmethod
    def recorded_up(cls, recorded: Dict[str, Any], agent_alive: bool, sshd_up: bool) -> bool:
        """cloudflared runs and its metrics server reports a ready edge connection."""
        port = (recorded.get("tunnel_info") or {}).get("metrics_port")
        return agent_alive and bool(port) and _get_json(f"http://127.0.0.1:{int(port)}/ready")[0] == 200

    def close(self) -> Dict[str, int]:
        if self.tunnel is None or not self.tunnel.alive():
            return {}
        pid = self.tunnel.pid
        self.tunnel.close()
        self._tracker.stopped("agent")
        return {"cloudflared": pid}


def _get_json(url: str) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, JSON object) from a local agent API; (0, {}) when it does not answer."""
    import json
    from urllib.error import HTTPError
    from urllib.request import urlopen

    try:
        with urlopen(url, timeout=3) as response:
            status, body = response.status, response.read()
    except HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError):
        return 0, {}
    try:
        data = json.loads(body.decode() or "{}")
    except ValueError:
        return status, {}
    return status, data if isinstance(data, dict) else {}


PROVIDERS = {"direct": DirectTunnel, "ngrok": NgrokTunnel, "cloudflared": CloudflaredTunnel}


def make_tunnel(kind: str, request: TunnelRequest) -> Tunnel:
    try:
        provider = PROVIDERS[kind]
    except KeyError:
        raise BadInput(f"unknown tunnel {kind!r} (available: {', '.join(sorted(PROVIDERS))})") from None
    return provider(request)


def _named_executable(var: str, what: str, otherwise: str) -> Optional[str]:
    """The executable an environment variable names (the user's choice beats any download)."""
    named = os.environ.get(var)
    if named and not (os.path.isfile(named) and os.access(named, os.X_OK)):
        raise RemotectlError(f"{var} names {named}, which is not an executable file",
                             f"Point {var} at {what}, or unset it to let remotectl {otherwise}.")
    return named or None
