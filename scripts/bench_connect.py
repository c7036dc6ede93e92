#!/usr/bin/env python3
"""How long `remotectl connect` takes end to end (write + probe) on loopback, against baselines.

Starts a private sshd on 127.0.0.1 (tests/helpers/sshd.py), then times, each `--runs` times
with a fresh card (a new session, so every run really rewrites the pin and the entry):

- `remotectl connect CARD`            the whole command as a user runs it (process start,
                                      validation, writes, paramiko probe, report)
- `remotectl connect CARD --no-check` the writes alone (plus process start)
- `remotectl check --quick`           the probe alone (plus process start)
- `ssh -F config NAME true`           baseline: one bare OpenSSH login with the written entry

Prints medians and each one's ratio to the ssh baseline. Target: connect under 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers.sshd import SshServer  # noqa: E402

from remote import keys  # noqa: E402


def timed(argv, env=None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO,
                            stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    private_root = Path.home() / ".cache" / "remotectl-bench"  # sshd StrictModes: not under /tmp
    private_root.mkdir(parents=True, exist_ok=True)
    os.chmod(private_root, 0o700)
    with tempfile.TemporaryDirectory(dir=private_root) as tmp:
        root = Path(tmp)
        os.chmod(root, 0o700)
        (root / "sshd").mkdir(mode=0o700)
        identity = root / "id_ed25519"
        public = keys.write_keypair(identity, "bench")
        server = SshServer(root / "sshd")
        server.authorize(public)
        server.start()
        ssh_dir = root / "dot-ssh"
        cli = [sys.executable, "-m", "remote.cli"]
        common = ["--ssh-dir", str(ssh_dir), "--identity", str(identity), "--name", "bench"]
        times = {"connect": [], "connect --no-check": [], "check --quick": [], "ssh true (baseline)": []}
        try:
            timed(cli + ["connect", server.card(session="warmup").encode()] + common)  # warm caches
            for i in range(args.runs):
                times["connect"].append(timed(cli + ["connect", server.card(session=f"a{i}").encode()] + common))
                times["connect --no-check"].append(
                    timed(cli + ["connect", server.card(session=f"b{i}").encode(), "--no-check"] + common))
                times["check --quick"].append(timed(cli + ["check", "bench", "--quick", "--ssh-dir", str(ssh_dir)]))
                times["ssh true (baseline)"].append(
                    timed(["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes", "bench", "true"]))
        finally:
            server.stop()

    base = statistics.median(times["ssh true (baseline)"])
    print(f"remotectl connect on loopback, median of {args.runs} runs (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<22} {med * 1000:7.0f} ms   x{med / base:5.2f} of ssh   "
              f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")
    verdict = "meets" if statistics.median(times["connect"]) < 1.0 else "MISSES"
    print(f"connect end to end {verdict} the 1 s target")


if __name__ == "__main__":
    main()
