"""Serving until told to stop: the owner's signals and its watch loop.

The foreground `up` and the supervisor run `own`: start, announce the card, serve, and tear
everything down however it ends. Each poll asks the server for a problem (sshd or the agent
exited); `on_problem` is where a policy such as "restart the agent with backoff" plugs in:
it gets the server and the problem, and returns True if it repaired it (serving goes on;
`server.republish()` rewrites state.json with the new pids) or False (the server stops).
"""

from __future__ import annotations

import signal
import time
from typing import Callable, Optional

from remote.errors import RemotectlError
from remote.server.control import describe_stopped
from remote.server.info import ServerInfo
from remote.server.options import Echo
from remote.server.owner import STOPPING, Server

OnProblem = Callable[[Server, str], bool]


class StopRequested(Exception):
    """SIGTERM or SIGHUP reached the owner."""


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP raise StopRequested (in the main thread), except while tearing down."""
    def _raise(signum, _frame):
        if not STOPPING.is_set():
            raise StopRequested(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)


def own(server: Server, echo: Echo, announce: Callable[[ServerInfo], bool], poll: float = 0.5,
        on_problem: Optional[OnProblem] = None) -> str:
    """Start, announce, serve until stopped: one guarded sequence, so a signal at any moment
    (even between the card being printed and the loop) tears down whatever had started.

    `announce` shows the ready server (the card) and returns False when nobody can receive it
    (the supervisor's `up` is gone): the server then stops at once. A failure or interrupt
    during start-up raises RemotectlError (after everything is stopped). Returns why serving ended.
    """
    info: Optional[ServerInfo] = None
    reason = "stopped"
    try:
        info = server.start()
        if not announce(info):
            reason = "nobody is left to give the card to"
            return reason
        reason = _serve(server, poll, on_problem)
        return reason
    except (KeyboardInterrupt, StopRequested) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"received {exc.args[0]}"
        if info is None:
            raise RemotectlError(f"{reason} during start-up; nothing is left running") from None
        return reason
    finally:
        stopped = server.stop()
        if info is not None:
            echo(f"remotectl: {reason}; stopped {describe_stopped(stopped) or 'nothing (already gone)'}")


def _serve(server: Server, poll: float, on_problem: Optional[OnProblem]) -> str:
    """Poll the server until a problem nobody repairs; returns that problem."""
    while True:
        time.sleep(poll)
        problem = server.problem()
        if problem is None:
            continue
        if on_problem is not None and on_problem(server, problem):
            continue
        return problem

