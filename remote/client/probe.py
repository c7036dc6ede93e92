"""paramiko with the pinned key only: connect, run the probe, open SFTP.

paramiko ignores HostKeyAlias, so the pinned key goes into this client's own host-key
store under `[host]:port` (plain `host` for port 22) and anything else is refused: no
system host keys (a stale line for a reused ngrok address would raise), no agent, no
~/.ssh keys, timeouts everywhere. With no pinned key (a plain address without
`--host-key`), the first key seen is *recorded*, never silently re-trusted: the caller pins
it, and from then on a different key is refused exactly like a card's.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from remote import keys
from remote.client import interpreter
from remote.client.untrusted import clean_line
from remote.errors import RemotectlError

# Runs on the remote python. Quick mode reads torch's version and CUDA build from its files
# (importing torch takes seconds on Colab); deep mode imports it and asks torch.cuda itself.
PROBE_PY = r"""
import importlib.util, json, os, re, sys
r = {"python": sys.version.split()[0]}
spec = importlib.util.find_spec("torch")
if spec is not None:
    if DEEP:
        try:
            import torch
            r.update(torch=torch.__version__, cuda_build=torch.version.cuda,
                     cuda=bool(torch.cuda.is_available()), cuda_checked=True)
        except Exception as exc:
            r["torch_error"] = str(exc)[:200]
    else:
        try:
            text = open(os.path.join(os.path.dirname(spec.origin), "version.py")).read()
            found = re.search(r"^__version__[^=]*=\s*[\x27\x22]([^\x27\x22]+)", text, re.M)
            cuda = re.search(r"^cuda[^=]*=\s*[\x27\x22]([^\x27\x22]+)", text, re.M)
            r.update(torch=found.group(1) if found else "?", cuda_build=cuda.group(1) if cuda else None)
        except Exception as exc:
            r["torch_error"] = str(exc)[:200]
print("@@py " + json.dumps(r))
"""


def probe_command(deep: bool = False) -> str:
    """One shell line: hostname, `nvidia-smi -L`, then python (base64, so no quoting issues)."""
    code = base64.b64encode(f"DEEP = {deep}\n{PROBE_PY}".encode()).decode()
    return ('echo "@@host $(hostname 2>/dev/null || uname -n)"; '
            "if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>/dev/null | sed 's/^/@@gpu /'; fi; "
            # the interpreter `up` ran under first ($REMOTECTL_PYTHON, from our sshd's SetEnv)
            'for py in "${REMOTECTL_PYTHON:-}" python3 python; do '
            'if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1; then '
            f"\"$py\" -c 'import base64;exec(base64.b64decode(\"{code}\"))'; break; fi; done; "
            + interpreter.shell_snippet())


class HostKeyMismatch(RemotectlError):
    """The server is not the machine whose key we pinned."""


class Unreachable(RemotectlError):
    """No SSH answer at the address (tunnel down, runtime gone, wrong address)."""


class AuthFailed(RemotectlError):
    """The server is right but refuses our key."""


@dataclass(frozen=True)
class Endpoint:
    """Everything needed to open one pinned SSH connection."""

    host: str
    port: int
    user: str
    identity: str
    host_key: Optional[str]  # "type base64"; None: record the first key seen
    proxy_command: Optional[str] = None  # argv string with %h/%p, e.g. cloudflared access ssh
    # A socket-like object for paramiko instead (Colab's route: colab_route.ProxySocket, whose
    # failure() turns what the route said into one line).
    sock_factory: Optional[Callable[[], Any]] = field(default=None, compare=False)

    @property
    def known_name(self) -> str:
        """The name paramiko looks the key up under."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass
class ProbeReport:
    hostname: str = ""
    gpus: List[str] = field(default_factory=list)
    python: Optional[str] = None
    torch: Optional[str] = None
    cuda_build: Optional[str] = None  # torch's CUDA version (None: a CPU build)
    cuda: Optional[bool] = None  # torch.cuda.is_available(), asked only in deep mode
    cuda_checked: bool = False
    torch_error: Optional[str] = None
    connect_ms: float = 0.0  # TCP + key exchange + login
    rtt_ms: float = 0.0  # one network round trip (TCP connect, or a request through a proxy)
    total_ms: float = 0.0
    host_key: str = ""  # the key the server presented ("type base64")
    learned: bool = False  # True when it was recorded now (trust on first use)
    interpreter: Optional[Dict[str, Any]] = None  # ssh's python vs `up`'s (remote.client.interpreter)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        gpu = "; ".join(self.gpus) if self.gpus else "no GPU (nvidia-smi absent or empty)"
        if self.torch and self.cuda_checked:
            torch = f"torch {self.torch} (CUDA {'available' if self.cuda else 'NOT available'})"
        elif self.torch:
            build = f"CUDA {self.cuda_build} build" if self.cuda_build else "CPU-only build"
            torch = f"torch {self.torch} ({build}; `remotectl check` asks torch.cuda)"
        else:
            torch = "torch not importable" + (f": {self.torch_error}" if self.torch_error else "")
        py = f"Python {self.python}" if self.python else "no python on PATH"
        return f"{self.hostname or '?'} | {gpu} | {py} | {torch}"


def _pkey(host_key: str):
    import paramiko

    key_type, blob = keys.bare(host_key).split()
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))


def mismatch_error(endpoint: Endpoint, presented: str) -> HostKeyMismatch:
    pinned = keys.fingerprint(endpoint.host_key) if endpoint.host_key else "?"
    return HostKeyMismatch(
        f"host key mismatch at {endpoint.host}:{endpoint.port}: it presented {keys.fingerprint(presented)}, "
        f"but {pinned} is pinned; connection refused",
        "This is not the machine the card named. If the runtime was restarted, it is a new machine:\n"
        "get its new card and run `remotectl connect <card>` again. If not, someone may be in the\n"
        "middle of the connection: do not log in.")


def open_client(endpoint: Endpoint, timeout: float = 10.0):
    """A logged-in paramiko SSHClient, or HostKeyMismatch / Unreachable / AuthFailed."""
    import paramiko

    _quiet_paramiko()
    seen: Dict[str, str] = {}

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # noqa: ARG002 - paramiko's signature
            seen["key"] = f"{key.get_name()} {key.get_base64()}"
            if endpoint.host_key is not None:  # pinned, but the server offered another type
                raise mismatch_error(endpoint, seen["key"])

    client = paramiko.SSHClient()
    if endpoint.host_key:
        key = _pkey(endpoint.host_key)
        client.get_host_keys().add(endpoint.known_name, key.get_name(), key)
    client.set_missing_host_key_policy(Policy())
    where = f"{endpoint.host}:{endpoint.port}"
    tcp_ms = None
    sock = None
    try:
        if endpoint.sock_factory is not None:
            sock = endpoint.sock_factory()
        elif endpoint.proxy_command:
            # Expanded as ssh would (%h, %p, %%) and re-quoted for paramiko's shlex.split, so
            # Windows paths and a literal % survive.
            import shlex

            from remote.cloudflared import argv_from_proxy_command

            argv = argv_from_proxy_command(endpoint.proxy_command, endpoint.host, endpoint.port)
            sock = paramiko.ProxyCommand(shlex.join(argv))
        else:  # our own socket: its connect time is one clean network round trip
            start = time.perf_counter()
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
            tcp_ms = (time.perf_counter() - start) * 1000
            # Small SSH packets must not wait for delayed ACKs (40 ms each on Linux).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(endpoint.host, endpoint.port, username=endpoint.user,
                       key_filename=endpoint.identity, allow_agent=False, look_for_keys=False,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                       channel_timeout=timeout, sock=sock)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise mismatch_error(endpoint, f"{exc.key.get_name()} {exc.key.get_base64()}") from None
    except RemotectlError:
        client.close()
        raise
    except paramiko.AuthenticationException as exc:
        client.close()
        raise AuthFailed(f"{where} refused the key {endpoint.identity}: {clean_line(exc)}",
                         "Put its public key (.pub) in the Colab secret REMOTECTL_AUTHORIZED_KEY "
                         "and run the bootstrap cell again.") from None
    except (OSError, socket.timeout, EOFError, paramiko.SSHException) as exc:
        client.close()
        failed = sock.failure() if hasattr(sock, "failure") else None  # the route's own words
        if failed is not None:
            raise failed from None
        raise Unreachable(f"cannot reach {where}: {clean_line(exc) or type(exc).__name__}",
                          "Is the remote side still running (`remotectl up` / the bootstrap cell)? "
                          "A new runtime prints a new card.") from None
    transport = client.get_transport()
    presented = transport.get_remote_server_key()
    client.remotectl_host_key = f"{presented.get_name()} {presented.get_base64()}"
    client.remotectl_learned = endpoint.host_key is None
    client.remotectl_tcp_ms = tcp_ms
    return client


def _quiet_paramiko() -> None:
    """paramiko's transport thread logs a failed handshake (a host that never sends its SSH
    banner) with a traceback; with no handler, Python prints that on stderr beside our one
    line. The failure reaches the caller as an exception anyway, so its log goes nowhere."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def run(client, command: str, timeout: float = 60.0, limit: int = 1024 * 1024) -> str:
    """Run `command`; its stdout (stderr is dropped), at most `limit` bytes of it."""
    _, stdout, _ = client.exec_command(command, timeout=timeout)
    return stdout.read(limit).decode(errors="replace")


def _field(value, limit: int = 200) -> Optional[str]:
    """One value from the remote's probe output: text only, controls escaped, bounded."""
    if value is None:
        return None
    return clean_line(value if isinstance(value, str) else str(value), limit=limit)


def parse_probe(output: str) -> ProbeReport:
    """Read the probe's `@@` lines. The remote wrote them: every value is cleaned of control
    characters (an OSC 52 sequence in a hostname must not reach the terminal) and bounded."""
    report = ProbeReport()
    for line in output.splitlines()[:1000]:
        if line.startswith("@@host "):
            report.hostname = _field(line[7:].strip()) or ""
        elif line.startswith("@@gpu ") and len(report.gpus) < 16:
            report.gpus.append(_field(line[6:].strip()) or "")
        elif line.startswith("@@py "):
            try:
                data = json.loads(line[5:])
            except (ValueError, RecursionError):
                continue
            if not isinstance(data, dict):
                continue
            report.python = _field(data.get("python"), 40)
            report.torch = _field(data.get("torch"), 60)
            report.cuda = data.get("cuda") if isinstance(data.get("cuda"), bool) else None
            report.cuda_build = _field(data.get("cuda_build"), 40)
            report.cuda_checked = data.get("cuda_checked") is True
            report.torch_error = _field(data.get("torch_error"))
    report.interpreter = interpreter.report(output)
    return report


def _ssh_exception():
    import paramiko

    return paramiko.SSHException


def probe(endpoint: Endpoint, timeout: float = 10.0, deep: bool = False) -> ProbeReport:
    """Connect with the pin, run the probe, measure. `deep` imports torch remotely (seconds)."""
    start = time.perf_counter()
    client = open_client(endpoint, timeout)
    try:
        connected = time.perf_counter()
        rtt_ms = client.remotectl_tcp_ms
        if rtt_ms is None:  # through a ProxyCommand: time one request/reply instead
            ping = time.perf_counter()
            client.get_transport().global_request("keepalive@openssh.com", wait=True)
            rtt_ms = (time.perf_counter() - ping) * 1000
        report = parse_probe(run(client, probe_command(deep), timeout=max(timeout, 120.0)))
    except (OSError, EOFError, _ssh_exception()) as exc:  # the server closed or broke the session
        raise Unreachable(f"the connection to {endpoint.host}:{endpoint.port} broke: {clean_line(exc)}") from None
    finally:
        client.close()
    report.connect_ms = round((connected - start) * 1000, 1)
    report.rtt_ms = round(rtt_ms, 1)
    report.total_ms = round((time.perf_counter() - start) * 1000, 1)
    report.host_key = client.remotectl_host_key
    report.learned = client.remotectl_learned
    return report
