#!/usr/bin/env python3
"""Password guesses per second through the tunnel: remotectl 0.1's password mode vs today's.

One password server (`remote.up("ngrok", password=...)`, the tests' ngrok stand-in, a real
sshd) is attacked through its public endpoint by paramiko clients that send wrong
passwords as fast as sshd lets them, reconnecting whenever it cuts them off. Measured:

  before   remotectl 0.1: sshd without MaxAuthTries/LoginGraceTime/MaxStartups lines (sshd's
           defaults: 6 tries per connection, 120 s, 10:30:100), the password hashed by a plain
           `chpasswd` (the system's default method)
  after    today: MaxAuthTries 3, LoginGraceTime 20, MaxStartups 10:30:60, SHA-512 with
           500,000 rounds (~0.2 s of server CPU per guess)

each with one guesser and with several in parallel. The ratio is before/after (how many
times fewer guesses an attacker gets). Bounded (--seconds per figure, at most 60; at most
--max-guesses per figure) and loopback only: the endpoint must be 127.0.0.1.

It changes root's password, so it runs only as root and only inside a private mount
namespace whose /etc is a copy (tests/helpers/private_etc.py); the real /etc/shadow is
checked to be byte-identical at the end.

    sudo python scripts/bench_guessing.py [--seconds 8] [--threads 1,16]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

PASSWORD = "bench-guessing-" + os.urandom(8).hex()
HARDENING = ("MaxAuthTries ", "LoginGraceTime ", "MaxStartups ")


def guess(host: str, port: int, seconds: float, threads: int, max_guesses: int) -> dict:
    """Wrong passwords from `threads` clients for `seconds`: evaluated guesses, cut connections."""
    import paramiko

    assert host == "127.0.0.1", "loopback only"
    counts = {"guesses": 0, "connections": 0, "refused": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attacker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            with lock:
                if counts["guesses"] >= max_guesses:
                    return
            try:
                sock = socket.create_connection((host, port), timeout=10)
                transport = paramiko.Transport(sock)
                transport.start_client(timeout=10)
            except (OSError, EOFError, paramiko.SSHException):
                with lock:
                    counts["refused"] += 1  # MaxStartups drops, or the handshake was cut
                continue
            with lock:
                counts["connections"] += 1
            try:
                while time.monotonic() < deadline:
                    i += 1
                    try:
                        transport.auth_password("root", f"wrong-{n}-{i}-guess")
                    except paramiko.AuthenticationException:
                        with lock:
                            counts["guesses"] += 1
            except (OSError, EOFError, paramiko.SSHException):
                pass  # cut off after its tries: reconnect
            finally:
                transport.close()

    began = time.monotonic()
    workers = [threading.Thread(target=attacker, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    counts["seconds"] = time.monotonic() - began
    counts["rate"] = counts["guesses"] / counts["seconds"]
    return counts


def _wait_banner(port: int, timeout: float = 20) -> None:
    from remote.server.sshd import banner_answers

    deadline = time.monotonic() + timeout
    while not banner_answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise SystemExit("sshd did not come back after SIGHUP")
        time.sleep(0.05)


def _chpasswd(args, line: str) -> None:
    subprocess.run(["chpasswd", *args], input=line, text=True, check=True, capture_output=True)


def inside(args) -> None:
    """Runs in the private namespace: the server, both configurations, the figures."""
    from helpers.ngrok_standin import GOOD_TOKEN, write_agent

    import remote
    from remote.server import passwords

    work = Path(args.work)
    os.environ["PYNGROK_NGROK_PATH"] = str(write_agent(work / "bin"))
    os.environ.pop("REMOTECTL_AUTHORIZED_KEY", None)
    session = remote.up("ngrok", password=PASSWORD, ngrok_token=GOOD_TOKEN, state_dir=work / "state",
                        quiet=True)
    config = Path(session.state_dir) / "sshd_config"
    today = config.read_text()
    ours = passwords.current_hash("root")
    figures = {}
    try:
        threads = [int(t) for t in args.threads.split(",")]
        for t in threads:
            figures[("after", t)] = guess(session.host, session.port, args.seconds, t, args.max_guesses)
        # remotectl 0.1: the same config without the three lines, and chpasswd's default hash
        config.write_text("".join(line for line in today.splitlines(keepends=True)
                                  if not line.startswith(HARDENING)))
        os.kill(session.pids["sshd"], signal.SIGHUP)  # sshd re-executes itself with the new config
        time.sleep(0.5)
        _wait_banner(session.local_port)
        _chpasswd([], f"root:{PASSWORD}\n")
        old_method = passwords.current_hash("root").split("$")[1]
        for t in threads:
            figures[("before", t)] = guess(session.host, session.port, args.seconds, t, args.max_guesses)
    finally:
        _chpasswd(["-e"], f"root:{ours}\n")  # so that down finds its own hash and restores exactly
        config.write_text(today)
        session.down()
    print(f"guessing root's password through the ngrok stand-in at {session.host}:{session.port}; "
          f"{args.seconds:g} s per figure")
    print(f"before: sshd defaults, hash ${old_method}$ (chpasswd's default)   "
          "after: MaxAuthTries 3, LoginGraceTime 20, MaxStartups 10:30:60, $6$rounds=500000$")
    print(f"{'clients':>8}{'before/s':>10}{'after/s':>10}{'ratio':>8}   {'before: guesses, conns, cut':<30}"
          "after: guesses, conns, cut")
    for t in threads:
        b, a = figures[("before", t)], figures[("after", t)]
        ratio = b["rate"] / a["rate"] if a["rate"] else float("inf")
        print(f"{t:>8}{b['rate']:>10.1f}{a['rate']:>10.1f}{ratio:>7.1f}x   "
              f"{b['guesses']:>6} {b['connections']:>6} {b['refused']:>6}{'':12}"
              f"{a['guesses']:>6} {a['connections']:>6} {a['refused']:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", default="1,16", help="guessers in parallel, one figure each")
    parser.add_argument("--max-guesses", type=int, default=5000)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 1.0), 60.0)
    if args.inside:
        return inside(args)
    from helpers.private_etc import PrivateEtc, available
    from helpers.sshd import private_root

    if not available():
        raise SystemExit("bench_guessing needs root, unshare and nsenter: it changes root's password, "
                         "inside a private copy of /etc only")
    work = Path(tempfile.mkdtemp(dir=private_root()))  # sshd's StrictModes: not under /tmp
    real = Path("/etc/shadow").read_bytes()
    try:
        with PrivateEtc(work / "ns") as etc:
            result = etc.run([sys.executable, __file__, "--inside", "--work", str(work),
                              "--seconds", str(args.seconds), "--threads", args.threads,
                              "--max-guesses", str(args.max_guesses)],
                             capture_output=False, timeout=60 * 10)
        if result.returncode:
            raise SystemExit(result.returncode)
    finally:
        subprocess.run(["rm", "-rf", str(work)])
        assert Path("/etc/shadow").read_bytes() == real, "the real /etc/shadow changed"


if __name__ == "__main__":
    main()
