"""Bringing a dead tunnel agent back: the owner's answer to "the ngrok agent exited".

An agent dies for reasons that pass (a network blip, ngrok's edge restarting, the process
killed); sshd is still serving, so the owner opens a new tunnel (a new address, proven by a
login as at the start) and, with `--persist`, publishes it, so laptops that follow the
record reconnect by themselves. Tries come with backoff (1 s, 2 s, 4 s ... up to a minute)
and go on while sshd lives, except for refusals trying again cannot fix (a rejected token,
no card on file, an address reserved elsewhere): then the server stops, as before.

Used as `serving.own(..., on_problem=AgentRestarts(echo))` and by the notebook kernel's
watcher; it never blocks between tries, so a SIGTERM is handled at once.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from remote.errors import BadInput, RemotectlError
from remote.server.options import Echo
from remote.server.owner import Server

DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


class AgentRestarts:
    """`on_problem` policy: True while it repairs (or waits to retry) a dead agent, False otherwise."""

    def __init__(self, echo: Echo, delays: Sequence[float] = DELAYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.echo = echo
        self.delays = tuple(delays)
        self.clock = clock
        self.failures = 0
        self.next_try: Optional[float] = None
        self.gave_up: Optional[str] = None

    def __call__(self, server: Server, problem: str) -> bool:
        if server.sshd is None or not server.sshd.alive() or server.tunnel is None:
            return False  # sshd is the server: nothing to bring back behind a tunnel
        now = self.clock()
        if self.next_try is None:
            self.echo(f"{problem}; opening a new tunnel")
            self.next_try = now
        if now < self.next_try:
            return True
        try:
            info = server.reopen_tunnel()
        except RemotectlError as exc:
            if isinstance(exc, BadInput) or getattr(exc, "permanent", False):
                self.gave_up = exc.message
                self.echo(f"the tunnel cannot come back: {exc.message}")
                return False
            delay = self.delays[min(self.failures, len(self.delays) - 1)]
            self.failures += 1
            self.next_try = now + delay
            self.echo(f"a new tunnel failed ({exc.message}); trying again in {delay:.0f} s")
            return True
        published = f"; published record #{info.published['seq']}" if info.published else ""
        self.echo(f"tunnel back at {info.public_url} (restart {info.tunnel_restarts}){published}")
        self.failures, self.next_try = 0, None
        return True
