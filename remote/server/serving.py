"""Serving until told to stop: the owner's signals and its watch loop.

The foreground `up` and the supervisor block in `serve_until_stopped`; it returns why it
ended after tearing everything down. Each poll asks the server for a problem (sshd or the
agent exited); `on_problem` is where a policy such as "restart the agent with backoff"
plugs in: it gets the server and the problem, and returns True if it repaired it (serving
goes on) or False (the server stops).
"""

from __future__ import annotations

import signal
import time
from typing import Callable, Optional

from remote.server.control import describe_stopped
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


def serve_until_stopped(server: Server, echo: Echo, poll: float = 0.5,
                        on_problem: Optional[OnProblem] = None) -> str:
    """Block until Ctrl-C, SIGTERM/SIGHUP or an unrepaired problem; then tear down. Returns why."""
    reason = "stopped"
    try:
        while True:
            time.sleep(poll)
            problem = server.problem()
            if problem is None:
                continue
            if on_problem is not None and on_problem(server, problem):
                continue
            reason = problem
            break
    except KeyboardInterrupt:
        reason = "interrupted"
    except StopRequested as exc:
        reason = f"received {exc.args[0]}"
    finally:
        stopped = server.stop()
        echo(f"remotectl: {reason}; stopped {describe_stopped(stopped) or 'nothing (already gone)'}")
    return reason

