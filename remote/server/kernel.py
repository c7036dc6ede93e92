"""Servers owned by this Python process: the notebook kernel behind `remote.up()`.

pyngrok ends its agent when the kernel exits, and a notebook re-runs cells, so the
kernel keeps one server per state dir: a re-run stops the previous one first; `atexit`
and a watcher thread (sshd or the agent died, e.g. `remotectl down` from a terminal)
tear it down.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Dict, Optional

from remote.server.credentials import Credentials
from remote.server.options import Echo, UpOptions
from remote.server.owner import Server

_SERVERS: Dict[str, Server] = {}


def start(options: UpOptions, creds: Credentials, echo: Echo) -> Server:
    """Own the server from this Python process; stopped at exit, on `down()`, or when a child dies."""
    options.validate()
    previous = _SERVERS.pop(str(options.state_dir), None)
    if previous is not None:
        echo("remotectl: stopping this notebook's previous server first")
        previous.stop()
    server = Server(options, creds, mode="kernel", echo=echo)
    server.preflight()
    server.start()
    _SERVERS[str(options.state_dir)] = server
    atexit.register(server.stop)
    threading.Thread(target=_watch, args=(server,), daemon=True, name="remotectl-watch").start()
    return server


def _watch(server: Server, poll: float = 1.0) -> None:
    """Until the server stops: a dead agent is brought back (AgentRestarts), anything else stops it."""
    from remote.server.restart import AgentRestarts

    def echo(line: str) -> None:
        print(f"remotectl: {line}", file=sys.stderr, flush=True)

    repair = AgentRestarts(echo)
    while not server.stopped:
        time.sleep(poll)
        problem = None if server.stopped else server.problem()
        if problem is None:
            continue
        try:
            repaired = repair(server, problem)
        except Exception as exc:  # never let the watcher die silently with the server half up
            echo(f"restarting the tunnel failed: {type(exc).__name__}: {exc}")
            repaired = False
        if not repaired and not server.stopped:
            server.stop()
            print(f"remotectl: {problem}; the server in this notebook has stopped", file=sys.stderr)
            return


def server_for(state_dir: str) -> Optional[Server]:
    return _SERVERS.get(state_dir)


def forget(state_dir: str) -> None:
    _SERVERS.pop(state_dir, None)
