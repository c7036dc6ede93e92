#!/usr/bin/env python3
"""bench_overhead.py's comparison counted in instructions instead of seconds: noise-free.

On a shared VM the wall-clock ratio of bench_overhead.py moves by +-0.1 between runs, more than
the effects worth measuring. Valgrind's callgrind counts the instructions the main thread executes
between the first epoch's start and the end of the last, for the raw loop and for the Trainer
(same model, data and epochs), and prints their ratio; `--without` removes one part of the
Trainer's per-epoch work to price it (checkpoint: no saves; serialise: the state is built and
torch.save'd into memory, no file; logs: no epoch rows and no step points). Instructions are not
time: code run once an epoch has colder caches than the training kernels, so the wall-clock
ratio is higher than this one. Checkpoints follow trainer.save_min_interval, and log rows their
one-second interval, as in real time (see --save-min-interval). Needs valgrind, its headers and a C compiler; about 5 minutes.

    python scripts/bench_overhead_instructions.py
    python scripts/bench_overhead_instructions.py --without checkpoint --without logs
"""
from __future__ import annotations

import argparse
import ctypes
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOGGLE_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void cg_stop(const char *name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
"""
PARTS = ("checkpoint", "serialise", "logs")


def measure(args) -> None:
    """Inside valgrind: warm up, then one counted raw run and one counted Trainer run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_overhead as bench
    import torch
    from base import base_trainer
    from trainer import trainer as trainer_module

    toggle = ctypes.CDLL(os.environ["COUNT_TOGGLE_LIB"])
    torch.set_num_threads(1)
    base_trainer.LOG_INTERVAL = 1e9  # as in real time, where a 20-epoch digits run lasts under a second
    if "checkpoint" in args.without:
        base_trainer.BaseTrainer._checkpoint = lambda self, *a, **k: None
    if "serialise" in args.without:
        base_trainer.BaseTrainer._checkpoint = \
            lambda self, epoch, log, *a, **k: torch.save(self._state(epoch, log), io.BytesIO())
    if "logs" in args.without:
        base_trainer.BaseTrainer._log_epoch = lambda self, *a, **k: None
        trainer_module.Trainer._log_point = lambda self, *a, **k: None

    class Counted(bench.TimedTrainer):
        counting = False

        def _train_epoch(self, epoch):
            if self.loop_start is None and self.counting:
                toggle.cg_start()
            return super()._train_epoch(epoch)

        def _finish(self, last_log, stopped_early):
            if self.counting:
                toggle.cg_stop(b"trainer")
            return super()._finish(last_log, stopped_early)

    bench.TimedTrainer = Counted
    device = torch.device("cpu")
    batch_size, _, split, model_args = bench.SETUPS["digits"]
    options = argparse.Namespace(progress=False, amp="off", device_loader=False,
                                 save_min_interval=args.save_min_interval)
    save_dir = Path(tempfile.mkdtemp(prefix="count-overhead-"))

    def model():
        torch.manual_seed(0)
        return bench.DigitsModel(**model_args)

    def raw(counted: bool):
        loader, valid = bench.make_loaders("digits", batch_size, split, False, device)
        net = model()
        if counted:
            toggle.cg_start()
        bench.raw_loop(net, loader, valid, args.epochs, device, "off")
        if counted:
            toggle.cg_stop(b"raw")

    def trainer(tag: str):
        loader, valid = bench.make_loaders("digits", batch_size, split, False, device)
        bench.trainer_run(model(), loader, valid, args.epochs, device, options, save_dir, tag, "digits")

    raw(False)
    trainer("warm")
    raw(True)
    Counted.counting = True
    trainer("counted")
    shutil.rmtree(save_dir, ignore_errors=True)


def totals(folder: Path) -> dict:
    """{'raw': Ir, 'trainer': Ir} from the main thread's dumps."""
    found = {}
    for dump in folder.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        trigger = next((line.rsplit(" ", 1)[-1] for line in text.splitlines()
                        if line.startswith("desc: Trigger: Client Request:")), None)
        total = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("summary:")), 0)
        if trigger in ("raw", "trainer") and total:
            found[trigger] = total
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--without", action="append", default=[], choices=PARTS,
                        help="leave this part of the Trainer's per-epoch work out (repeatable)")
    parser.add_argument("--save-min-interval", type=float, default=1e9,
                        help="trainer.save_min_interval; valgrind makes an epoch ~50x longer, so the default 1e9 "
                             "stands for real time, where the digits' 20 ms epochs share writes (epoch 1 and the "
                             "last are written, the best waits in memory); 0: a checkpoint every epoch")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args)
        return 0
    missing = [tool for tool in ("valgrind", "cc") if not shutil.which(tool)]
    if missing or not Path("/usr/include/valgrind/callgrind.h").exists():
        print(f"needs valgrind (with its headers) and a C compiler: missing {', '.join(missing) or 'callgrind.h'}",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="count-overhead-") as tmp:
        folder = Path(tmp)
        (folder / "toggle.c").write_text(TOGGLE_C)
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(folder / "toggle.so"), str(folder / "toggle.c")],
                       check=True)
        env = dict(os.environ, COUNT_TOGGLE_LIB=str(folder / "toggle.so"), OMP_NUM_THREADS="1")
        inner = [sys.executable, __file__, "--inside", "--epochs", str(args.epochs),
                 f"--save-min-interval={args.save_min_interval}",
                 *[f"--without={part}" for part in args.without]]
        subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", "--separate-threads=yes",
                        f"--callgrind-out-file={folder}/callgrind.out.%p", *inner],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = totals(folder)
    if set(found) != {"raw", "trainer"}:
        print(f"callgrind wrote no counts for {sorted({'raw', 'trainer'} - set(found))}", file=sys.stderr)
        return 1
    raw, trainer = found["raw"], found["trainer"]
    left_out = f" without {', '.join(args.without)}" if args.without else ""
    cadence = "every epoch" if args.save_min_interval == 0 else f"save_min_interval {args.save_min_interval:g} s"
    print(f"digits, {args.epochs} epochs, checkpoints {cadence}, main thread: raw {raw / 1e6:.1f} M instructions, Trainer{left_out} "
          f"{trainer / 1e6:.1f} M ({(trainer - raw) / args.epochs / 1e6:.2f} M more an epoch); "
          f"ratio Trainer/raw = {trainer / raw:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
