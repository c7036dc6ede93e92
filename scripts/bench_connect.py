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

Then a followed host (`connect --follow`), whose ProxyCommand `remotectl proxy` finds the
address in a signed endpoint record before ssh logs in, against the same login direct:

- `ssh NAME true`, direct            the entry with HostName/Port (baseline)
- `ssh NAME true`, followed folder   `--follow DIR`: read DIR/endpoint.json, verify, hand the socket over
- `ssh NAME true`, followed ngrok    `--follow ngrok` against the API stand-in on loopback (a real
                                     API call adds a TLS round trip to api.ngrok.com on top)
- `ssh NAME true`, folder, no .pyc   the folder again with nothing compiled ahead (PYTHONDONTWRITEBYTECODE)

Runs alternate so load changes hit every variant alike; the added time is the median of each round's
difference to direct. Target: following adds under 50 ms (median).
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

from helpers.sshd import SshServer, private_root  # noqa: E402

from remote import endpoint_record as records  # noqa: E402
from remote import keys  # noqa: E402
from remote.files import atomic_write  # noqa: E402


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

    with tempfile.TemporaryDirectory(dir=private_root()) as tmp:  # sshd StrictModes: not under /tmp
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
            follow_times = bench_follow(root, server, identity, cli, ssh_dir, args.runs)
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

    direct = statistics.median(follow_times["direct"])
    print(f"\nssh NAME true through `remotectl proxy` (connect --follow), median of {args.runs * 3} runs")
    for name, values in follow_times.items():
        med = statistics.median(values)
        paired = statistics.median(v - d for v, d in zip(values, follow_times["direct"]))  # same round, same load
        added = f"  {paired * 1000:+6.1f} ms (paired)" if name != "direct" else " (baseline)"
        print(f"  {name:<22} {med * 1000:7.1f} ms   x{med / direct:5.2f}{added}   "
              f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")
    print("  (`followed` runs with .pyc files as an installed copy has them; `no .pyc` compiles remotectl's "
          "modules on every run, as under PYTHONDONTWRITEBYTECODE)")
    added = statistics.median(v - d for v, d in zip(follow_times["followed folder"], follow_times["direct"]))
    print(f"following a folder adds {added * 1000:.1f} ms: {'meets' if added < 0.05 else 'MISSES'} the 50 ms target")


def bench_follow(root: Path, server, identity: Path, cli, ssh_dir: Path, runs: int) -> dict:
    """Time `ssh NAME true` for the same sshd: direct, followed through a folder, through the ngrok API."""
    from helpers.ngrok_api import NgrokApi, endpoint_shape

    pem = server.host_key_path.read_bytes()
    public = keys.bare(keys.public_from_private(server.host_key_path))

    def signed(seq: int) -> str:
        record = records.EndpointRecord(fingerprint=keys.fingerprint(public), kind="ngrok", seq=seq,
                                        at=int(time.time()), session="bench", host="127.0.0.1", port=server.port)
        return records.sign(record, pem)

    persist = root / "persist"
    persist.mkdir(mode=0o700)
    atomic_write(persist / records.FILE_NAME, signed(1), mode=0o600)
    api_key = "bench-api-key"
    api = NgrokApi(root / "cloud", api_key).start()
    api.extra.append(endpoint_shape(f"tcp://127.0.0.1:{server.port}", signed(1)))
    env = dict(os.environ, NGROK_API_KEY=api_key, REMOTECTL_NGROK_API_URL=api.url)
    card = server.card(session="follow").encode()
    common = ["--ssh-dir", str(ssh_dir), "--identity", str(identity), "--no-check"]
    timed(cli + ["connect", card, "--name", "direct"] + common)
    timed(cli + ["connect", card, "--name", "folder", "--follow", str(persist)] + common)
    timed(cli + ["connect", card, "--name", "viaapi", "--follow", "ngrok"] + common, env=env)
    # An installed copy has .pyc files (pip compiles them); under PYTHONDONTWRITEBYTECODE (CI, this
    # repository's sandboxes) every proxy run compiles remotectl's modules again. Both are measured in
    # each round: remote/'s __pycache__ is removed for the "no .pyc" run and compiled for the others,
    # and removed at the end unless it was there before.
    import compileall
    import shutil

    def caches() -> list:
        return sorted((REPO / "remote").rglob("__pycache__"))

    had_caches = bool(caches())

    def uncompiled() -> None:
        for folder in caches():
            shutil.rmtree(folder, ignore_errors=True)

    no_pyc = dict(env, PYTHONDONTWRITEBYTECODE="1")
    ssh = ["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes"]
    variants = {"direct": ("direct", env), "followed folder": ("folder", env),
                "followed ngrok": ("viaapi", env), "folder, no .pyc": ("folder", no_pyc)}
    times = {name: [] for name in variants}
    try:
        compileall.compile_dir(str(REPO / "remote"), quiet=1)
        for name, with_env in variants.values():  # warm the page cache and the first-seen record
            timed(ssh + [name, "true"], env=with_env)
        for _ in range(runs * 3):
            for label, (name, with_env) in variants.items():
                if label == "folder, no .pyc":
                    uncompiled()
                times[label].append(timed(ssh + [name, "true"], env=with_env))
            compileall.compile_dir(str(REPO / "remote"), quiet=1)
    finally:
        api.stop()
        if not had_caches:
            uncompiled()
    return times


if __name__ == "__main__":
    main()
