"""`up --detach`: a supervisor process, in its own session, that owns sshd and the tunnel.

pyngrok ends its agent when its Python process exits, so the process that returns
to the shell cannot own the tunnel. It starts `python -m remote.server.supervisor`
instead and hands it the options and secrets through an inherited pipe (its stdin),
never argv or the environment; the supervisor answers with one JSON line on its
stdout once the login through the tunnel is proven (or with the explained failure),
then serves until `remotectl down` sends SIGTERM or a child dies.

If the `up` that started it is gone before the answer (killed, or interrupted), nobody
holds the card: the supervisor tears down rather than serve a server no one knows of.
An interrupted `up` stops its supervisor itself before it returns.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from remote.errors import RemotectlError
from remote.server import state
from remote.server.control import already_running
from remote.server.credentials import SECRET_VARS, Credentials
from remote.server.info import ServerInfo
from remote.server.options import Echo, UpOptions
from remote.server.owner import Server
from remote.server.restart import AgentRestarts
from remote.server.serving import StopRequested, install_stop_signals, own

LOG = "supervisor.log"


def detach(options: UpOptions, creds: Credentials, echo: Echo) -> ServerInfo:
    """Start a supervisor; return the server's info once it is ready, or raise its explained error."""
    server = Server(options, creds, mode="supervisor", echo=echo)
    server.preflight()  # checks, installs and downloads happen here, where the user sees them
    state_dir = server.state_dir
    if server.lock.held_elsewhere():
        raise already_running(state_dir)
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    log_fd = os.open(state_dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "remote.server.supervisor", "--state-dir", str(state_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_fd, env=env,
            start_new_session=True, close_fds=True)
    finally:
        os.close(log_fd)
    assert proc.stdin is not None and proc.stdout is not None
    request = {"options": server.options.as_dict(),
               "credentials": {"authorized_keys": server.creds.authorized_keys,
                               "ngrok_token": creds.ngrok_token, "password": creds.password,
                               "tunnel_token": creds.tunnel_token}}
    try:
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
        answer = _read_answer(proc, options.timeout + 30)
    except (KeyboardInterrupt, StopRequested):
        _stop_supervisor(proc)
        raise RemotectlError("interrupted during start-up; nothing is left running") from None
    proc.stdout.close()
    if answer is None:
        code = proc.poll()
        if code is None:
            _stop_supervisor(proc)
        log_tail = state.tail(state_dir / LOG)
        raise RemotectlError("the supervisor did not report back"
                             + (f" (exit code {code})" if code is not None else "")
                             + (". Its log ends:\n" + log_tail if log_tail else ""),
                             "Run `remotectl up` in the foreground to see what fails.")
    if not answer.get("ok"):
        proc.wait(30)
        error = RemotectlError(answer.get("message", "the supervisor failed"), answer.get("hint"))
        error.exit_code = int(answer.get("exit_code", 1))
        raise error
    return ServerInfo.from_dict(answer["info"])


def _stop_supervisor(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM: the supervisor tears down what it started, then exits; SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_answer(proc: subprocess.Popen, timeout: float) -> Optional[Dict[str, Any]]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            if b"\n" in buffer:
                try:
                    return json.loads(buffer.split(b"\n", 1)[0])
                except ValueError:
                    return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="remote.server.supervisor")
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    install_stop_signals()
    line = sys.stdin.buffer.readline()
    if not line.strip():
        sys.exit(1)  # the `up` that started us is gone before it asked for anything
    request = json.loads(line)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # from now on our stdout goes to supervisor.log too
    os.close(devnull)

    def echo(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    def answer(obj: Dict[str, Any]) -> bool:
        try:
            with os.fdopen(answer_fd, "w") as out:
                out.write(json.dumps(obj) + "\n")
            return True
        except OSError:  # EPIPE: the `up` waiting for us is gone
            return False

    opts = UpOptions(**request.get("options", {}))
    opts.state_dir = args.state_dir
    creds = Credentials(**request.get("credentials", {}))
    del request, line
    server = Server(opts, creds, mode="supervisor", echo=echo)

    def announce(info: ServerInfo) -> bool:
        echo(f"ready: {info.public_url} (sshd pid {info.pids.get('sshd')}); the probe login took "
             f"{info.proof_seconds:.2f} s")
        if answer({"ok": True, "info": info.to_dict()}):
            return True
        echo("the `up` that started this supervisor is gone, so nobody has the card: stopping")
        return False

    try:
        own(server, echo, announce, on_problem=AgentRestarts(echo))
    except RemotectlError as exc:
        echo(f"start failed: {exc.message}")
        answer({"ok": False, "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        sys.exit(exc.exit_code)
    except BaseException as exc:  # report, never hang the parent
        echo("start failed:\n" + traceback.format_exc())
        answer({"ok": False, "message": f"the supervisor failed: {type(exc).__name__}",
                "hint": f"See {Path(args.state_dir) / LOG}."})
        sys.exit(1)

if __name__ == "__main__":
    main()
