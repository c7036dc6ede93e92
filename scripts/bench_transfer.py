#!/usr/bin/env python3
"""pull/push throughput against OpenSSH's `scp`, through the same written entry, in one run.

Starts a private sshd on 127.0.0.1 (tests/helpers/sshd.py), writes the entries with
`remotectl connect` (one straight to sshd, one through a relay this script starts that
holds every byte 50 ms in each direction, like a far-away runtime), then times, interleaved
and alternating who goes first:

- `remotectl pull NAME BIG DEST`  vs  `scp NAME:BIG DEST`
- `remotectl push NAME BIG DEST`  vs  `scp BIG NAME:DEST`

Each is the whole command as a user runs it (process start, login, copy, close), on a
200 MB file of random bytes; every copy is checked to be byte-identical. Prints MB/s and the
ratio remotectl/scp (throughput) per case, median over the rounds with the spread, so a busy
machine shows as spread rather than as a wrong verdict. Target: >= 0.8 in all four.

The relay is a child process bound to loopback that exits on its own after --relay-limit
seconds or as soon as this script goes away (its stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

TARGET = 0.8


# -- the relay (run as a child: bench_transfer.py --relay LISTEN TARGET DELAY_MS LIMIT_S) --------
async def _relay(listen_port: int, target_port: int, delay: float, limit: float) -> None:
    loop = asyncio.get_running_loop()

    async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=4096)  # bounded: at most ~1 GB held

        async def receive() -> None:
            while True:
                data = await reader.read(256 * 1024)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(receive(), send())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(carry(reader, up_writer), carry(up_reader, writer), return_exceptions=True)
        except asyncio.CancelledError:  # the relay stops with connections open: Python 3.11's streams
            writer.close()              # would print a traceback for a cancelled connection handler

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("ready", flush=True)

    async def parent_gone() -> None:
        await loop.run_in_executor(None, sys.stdin.read)  # returns when the parent closes our stdin

    async with server:
        await asyncio.wait([asyncio.ensure_future(parent_gone()), asyncio.ensure_future(asyncio.sleep(limit))],
                           return_when=asyncio.FIRST_COMPLETED)


def start_relay(target_port: int, delay_ms: float, limit_s: float) -> Tuple[subprocess.Popen, int]:
    from helpers.sshd import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--relay", str(port), str(target_port), str(delay_ms),
                             str(limit_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the relay did not start")
    return proc, port


# -- the measurements ---------------------------------------------------------------------------
def run(argv: List[str], env: Dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(argv)}\n{out.stderr[-2000:]}")
    return elapsed


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fresh(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="rounds on loopback")
    parser.add_argument("--relay-rounds", type=int, default=3, help="rounds through the 50 ms relay")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="added in each direction")
    parser.add_argument("--relay-limit", type=float, default=1800.0, help="the relay exits after this")
    parser.add_argument("--relay", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        listen, target, delay_ms, limit = args.relay
        asyncio.run(_relay(int(listen), int(target), float(delay_ms) / 1000, float(limit)))
        return

    from helpers.sshd import SshServer, private_root

    from remote import keys

    with tempfile.TemporaryDirectory(dir=private_root()) as tmp:  # sshd StrictModes: not under /tmp
        root = Path(tmp)
        os.chmod(root, 0o700)
        (root / "sshd").mkdir(mode=0o700)
        identity = root / "id_ed25519"
        server = SshServer(root / "sshd")
        server.authorize(keys.write_keypair(identity, "bench"))
        server.start()
        relay, relay_port = start_relay(server.port, args.delay_ms, args.relay_limit)
        try:
            measure(args, root, server, identity, relay_port)
        finally:
            relay.stdin.close()
            try:
                relay.wait(timeout=10)
            except subprocess.TimeoutExpired:
                relay.kill()
            server.stop()


def measure(args, root: Path, server, identity: Path, relay_port: int) -> None:
    from remote.card import Card

    ssh_dir = root / "dot-ssh"
    env = dict(os.environ)
    env.pop("REMOTECTL_DEBUG", None)
    cli = [sys.executable, "-m", "remote.cli"]
    for name, port in (("bench", server.port), ("bench-wan", relay_port)):
        card = Card(user="root", host="127.0.0.1", port=port, host_key=server.host_public_key, session=name)
        run(cli + ["connect", card.encode(), "--name", name, "--no-check", "--ssh-dir", str(ssh_dir),
                   "--identity", str(identity)], env)
    config = ssh_dir / "config"
    remote_dir, local_dir = root / "remote-side", root / "local-side"
    remote_dir.mkdir()
    local_dir.mkdir()
    big = remote_dir / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(args.size_mb):
            handle.write(os.urandom(1_000_000))
    want = digest(big)
    source = local_dir / "upload.bin"
    shutil.copyfile(big, source)
    size_mb = big.stat().st_size / 1e6

    def ours_pull(name: str) -> float:
        out = local_dir / "pulled.bin"
        fresh(out)
        t = run(cli + ["pull", name, str(big), str(out), "--quiet", "--ssh-dir", str(ssh_dir)], env)
        assert digest(out) == want, "remotectl pull copied different bytes"
        return t

    def scp_pull(name: str) -> float:
        out = local_dir / "scp-pulled.bin"
        fresh(out)
        t = run(["scp", "-q", "-F", str(config), f"{name}:{big}", str(out)], env)
        assert digest(out) == want
        return t

    def ours_push(name: str) -> float:
        out = remote_dir / "pushed.bin"
        fresh(out)
        t = run(cli + ["push", name, str(source), str(out), "--quiet", "--ssh-dir", str(ssh_dir)], env)
        assert digest(out) == want, "remotectl push copied different bytes"
        return t

    def scp_push(name: str) -> float:
        out = remote_dir / "scp-pushed.bin"
        fresh(out)
        t = run(["scp", "-q", "-F", str(config), str(source), f"{name}:{out}"], env)
        assert digest(out) == want
        return t

    cases = [("loopback", "bench", args.rounds), (f"relay +{args.delay_ms:.0f} ms each way", "bench-wan",
                                                    args.relay_rounds)]
    results = {}
    for label, name, rounds in cases:
        for verb in ("pull", "push"):
            results[(label, verb)] = {"remotectl": [], "scp": [], "ratio": []}
        for i in range(rounds):
            for verb, ours, theirs in (("pull", ours_pull, scp_pull), ("push", ours_push, scp_push)):
                if i % 2 == 0:
                    a, b = ours(name), theirs(name)
                else:
                    b, a = theirs(name), ours(name)
                row = results[(label, verb)]
                row["remotectl"].append(a)
                row["scp"].append(b)
                row["ratio"].append(b / a)  # throughput ratio remotectl/scp = time(scp)/time(ours)
                print(f"  {label:<26} {verb} round {i + 1}: remotectl {size_mb / a:6.1f} MB/s, "
                      f"scp {size_mb / b:6.1f} MB/s, ratio {b / a:.2f}", flush=True)

    print(f"\n{size_mb:.0f} MB, whole commands, median of the rounds (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    worst = None
    for (label, verb), row in results.items():
        ours, theirs, ratios = (statistics.median(row[k]) for k in ("remotectl", "scp", "ratio"))
        worst = ratios if worst is None else min(worst, ratios)
        print(f"  {label:<26} {verb}: remotectl {size_mb / ours:6.1f} MB/s  scp {size_mb / theirs:6.1f} MB/s  "
              f"ratio {ratios:.2f} (spread {min(row['ratio']):.2f}-{max(row['ratio']):.2f})")
    verdict = "meets" if worst is not None and worst >= TARGET else "MISSES"
    print(f"remotectl/scp {verdict} the {TARGET} target in every case (worst median {worst:.2f})")


if __name__ == "__main__":
    main()
