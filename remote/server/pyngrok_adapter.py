"""pyngrok, behind the few calls remotectl makes, including the two private internals it needs.

pyngrok has no public way to ask "which agent runs for this path" without starting one
(`process.get_process` starts it), and its installer prints progress bars to stdout (which
would corrupt `up --json`). So this module, and only this module, touches
`process._current_processes` and `installer._print_progress_enabled`; SUPPORTED is the
range in which they were checked (tests/server/test_pyngrok_adapter.py pins it against
setup.cfg and the installed version). pyngrok is imported inside the functions: importing
remotectl stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from remote.errors import RemotectlError

SUPPORTED = ((7, 0), (10, 0))  # pyngrok >= 7.0, < 10.0 (setup.cfg says the same)


@dataclass(frozen=True)
class Agent:
    """The ngrok agent pyngrok runs for one agent path."""

    pid: int
    api_url: Optional[str]
    handle: Any  # pyngrok's NgrokProcess

    def alive(self) -> bool:
        return self.handle.proc.poll() is None


def version() -> Tuple[int, ...]:
    """The installed pyngrok's version (7.0 has no __version__; its package metadata has)."""
    import pyngrok

    text = getattr(pyngrok, "__version__", None)
    if not text:
        from importlib.metadata import version as dist_version

        text = dist_version("pyngrok")
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_supported(found: Optional[Tuple[int, ...]] = None) -> None:
    """RemotectlError unless the installed pyngrok is one this adapter was checked against."""
    found = version() if found is None else found
    low, high = SUPPORTED
    shown = ".".join(map(str, found))
    if not low <= tuple(found[:2]) < high:
        raise RemotectlError(
            f"pyngrok {shown} is outside the range remotectl supports "
            f"(>= {'.'.join(map(str, low))}, < {'.'.join(map(str, high))})",
            f"pip install 'pyngrok>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}'")
    from pyngrok import installer, process

    if not hasattr(process, "_current_processes") or not hasattr(installer, "_print_progress_enabled"):
        raise RemotectlError(f"pyngrok {shown} lacks the internals remotectl relies on",
                             "Install the pyngrok version setup.cfg names, and report this.")


def errors() -> Tuple[type, type, type]:
    """(PyngrokNgrokHTTPError, PyngrokNgrokError, PyngrokError), most specific first."""
    from pyngrok.exception import PyngrokError, PyngrokNgrokError, PyngrokNgrokHTTPError

    return PyngrokNgrokHTTPError, PyngrokNgrokError, PyngrokError


def install(path: str) -> None:
    """Download ngrok's v3 agent to `path`, without pyngrok's progress bar on our stdout."""
    from pyngrok import installer

    installer._print_progress_enabled = False
    installer.install_ngrok(path, ngrok_version="3")


def default_agent_path() -> str:
    from pyngrok import conf

    return conf.DEFAULT_NGROK_PATH


def make_config(agent_path: str, config_path: str, region: Optional[str], startup_timeout: int,
                on_log: Callable[[Any], None]) -> Any:
    """A PyngrokConfig that never puts a token on argv (our agent config file holds it)."""
    from pyngrok import conf

    config = conf.PyngrokConfig(ngrok_path=agent_path, config_path=config_path, region=region or None,
                                monitor_thread=True, log_event_callback=on_log,
                                startup_timeout=max(1, int(startup_timeout)))
    config.auth_token = None  # filled from NGROK_AUTHTOKEN: it would land on the agent's argv
    config.api_key = None
    return config


def connect_tcp(config: Any, name: str, local_host: str, local_port: int, url: Optional[str] = None,
                metadata: Optional[str] = None) -> str:
    """Start the agent if needed, open a TCP endpoint to local_host:local_port; its public URL.

    `url` asks for a reserved address (`tcp://N.tcp.ngrok.io:PORT`); `metadata` is the
    endpoint's user-defined string, which the ngrok API lists with it.
    """
    from pyngrok import ngrok

    address = f"{local_host}:{local_port}"
    extra = {"metadata": metadata} if metadata else {}
    if getattr(config, "config_version", "2") == "3":  # pyngrok 9: endpoints, with an upstream
        if url:
            extra["url"] = url
        tunnel = ngrok.connect(proto="tcp", name=name, upstream={"url": address}, pyngrok_config=config,
                               **extra)
    else:  # pyngrok 7 and 8: the tunnels API, addr + proto (+ remote_addr for a reserved address)
        if url:
            extra["remote_addr"] = url.split("://", 1)[-1]
        tunnel = ngrok.connect(address, "tcp", name=name, pyngrok_config=config, **extra)
    return tunnel.public_url or ""


def agent(agent_path: Optional[str]) -> Optional[Agent]:
    """The agent pyngrok runs (or is starting) in this process for `agent_path`, if any."""
    if not agent_path:
        return None
    from pyngrok import process

    running = process._current_processes.get(agent_path)
    if running is None:
        return None
    return Agent(pid=running.proc.pid, api_url=running.api_url, handle=running)


def unread_output(running: Optional[Agent], limit: int = 65536) -> str:
    """The rest of an exited agent's stdout that pyngrok's start-up loop left unread ("" if none)."""
    proc = getattr(getattr(running, "handle", None), "proc", None)
    stream = getattr(proc, "stdout", None)
    if proc is None or stream is None or proc.poll() is None or stream.closed:
        return ""
    try:
        os.set_blocking(stream.fileno(), False)  # a child still holding the pipe must not block us
        data = stream.read(limit)
    except (OSError, ValueError):
        return ""
    if not data:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def forget(config: Any, running: Optional[Agent]) -> None:
    """Stop pyngrok's monitor thread and drop the agent from its registry (the agent is already stopped)."""
    from pyngrok import ngrok

    if running is not None:
        running.handle.stop_monitor_thread()
    ngrok.kill(config)
