#!/usr/bin/env python3
"""Time from `up` to ready (a login through the public endpoint proven), median of several runs.

Baseline: colab-ssh sleeps a fixed 4 s after starting its agent before it even asks for the
tunnel's address (and never checks that sshd answers, let alone a login). We measure:

  api   remote.up(...) in this process, call to return (what the bootstrap cell waits for)
  cli   `remotectl up --detach` as a subprocess, launch to exit (adds interpreter start-up
        and the supervisor's own start)

for `direct` and for `ngrok` through the tests' stand-in agent (ngrok's cloud is not
reachable here, so the real agent's network handshake is not in these figures). "probe s"
is the median share of the one-use key's login (ServerInfo.proof_seconds), which is what
"ready means proven" costs.

    python scripts/bench_up.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

COLAB_SSH_SLEEP = 4.0
CLI = [sys.executable, "-c", "import sys; from remote.cli import main; main(sys.argv[1:])"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from helpers.ngrok_standin import GOOD_TOKEN, write_agent
    from helpers.sshd import private_root

    import remote
    from remote.keys import write_keypair

    work = Path(tempfile.mkdtemp(dir=private_root()))  # sshd's StrictModes: not under /tmp
    try:
        public = write_keypair(work / "id", comment="bench")
        os.environ["REMOTECTL_AUTHORIZED_KEY"] = public
        os.environ["PYNGROK_NGROK_PATH"] = str(write_agent(work / "bin"))
        os.environ["NGROK_AUTHTOKEN"] = GOOD_TOKEN
        os.environ.pop("REMOTECTL_PASSWORD", None)

        def api(kind: str, i: int) -> tuple:
            state = work / f"api-{kind}-{i}"
            began = time.perf_counter()
            session = remote.up(kind, state_dir=state, quiet=True)
            took = time.perf_counter() - began
            session.down()
            return took, session.proof_seconds

        def cli(kind: str, i: int) -> tuple:
            state = work / f"cli-{kind}-{i}"
            began = time.perf_counter()
            out = subprocess.run([*CLI, "up", "--tunnel", kind, "--detach", "--json", "--state-dir", str(state)],
                                 check=True, capture_output=True, text=True).stdout
            took = time.perf_counter() - began
            subprocess.run([*CLI, "down", "--state-dir", str(state)], check=True, capture_output=True)
            return took, json.loads(out)["proof_seconds"]

        print(f"runs per figure: {args.runs}; baseline: colab-ssh's fixed sleep {COLAB_SSH_SLEEP:.1f} s")
        print(f"{'how':<6}{'tunnel':<9}{'median s':>9}{'min s':>8}{'max s':>8}{'probe s':>9}{'vs 4 s':>9}")
        for how, fn in (("api", api), ("cli", cli)):
            for kind in ("direct", "ngrok"):
                fn(kind, -1)  # warm caches (first host key generation, imports)
                runs = [fn(kind, i) for i in range(args.runs)]
                times = [t for t, _ in runs]
                median = statistics.median(times)
                probe = statistics.median(p for _, p in runs)
                print(f"{how:<6}{kind:<9}{median:>9.3f}{min(times):>8.3f}{max(times):>8.3f}{probe:>9.3f}"
                      f"{COLAB_SSH_SLEEP / median:>8.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
