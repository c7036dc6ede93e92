#!/usr/bin/env python3
"""What our Trainer costs over a hand-written loop: same model, data, split, batch size, optimizer.

A (raw loop: each epoch trains, then validates with the same metrics: loss, accuracy, top-3, summed on
the device and read once an epoch, as a careful user writes it) and B (project/ Trainer with its default
features on: TensorBoard scalars, step-level loss and lr at the default log points, metrics.jsonl,
steps.jsonl, info.log, the monitor and model_best, checkpoints every epoch at most once a second (the
digits' 20 ms epochs share writes; `--save-min-interval 0` writes every epoch), and the progress
output it has without a terminal: one line per epoch) take turns in one process, several repeats: a
piece of the raw epoch at each of the Trainer's log points, each piece timed on its own, so both meet the
same moments of a shared machine (its speed drifts by a third over seconds; `--interleave run`
alternates whole runs, as this bench did before, and shows that drift). Prints per-step times and the
ratio Trainer/raw, the median of the repeats (targets: <= 1.03 on the MNIST-sized set, <= 1.10 on
the digits, whose 20 ms epochs make the per-epoch work weigh most). The ratio of the main thread's CPU
time is printed too: on a machine other processes load, it shows the work we add, where the wall-clock
ratio also shows who got the CPU. `--progress` puts the tqdm bar back (into /dev/null) to price it.

    python scripts/bench_overhead.py --threads 1          # CPU, digits and an MNIST-sized set
    python scripts/bench_overhead.py --device cuda --amp bf16 --data synthetic
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1] / "project"
sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from base import BaseDataLoader  # noqa: E402
from data_loader.data_loaders import DigitsDataLoader  # noqa: E402
from data_loader.device_loader import device_resident  # noqa: E402
from model.loss import nll_loss  # noqa: E402
from model.metric import accuracy, top_k_acc  # noqa: E402
from model.model import DigitsModel  # noqa: E402
from parse_config import ConfigParser  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402
from trainer import Trainer  # noqa: E402

STARTUP: list = []  # seconds from train() to the first epoch, per Trainer run
AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}

SETUPS = {
    # name: (batch size, epochs per timed run, validation split, model args), as in the shipped configs
    "digits": (64, 20, 0.15, {"hidden": 128}),
    "synthetic": (128, 1, 0.1, {"hidden": 256, "in_features": 784}),
}


def make_loaders(data: str, batch_size: int, split: float, device_loader: bool, device: torch.device):
    if data == "digits":
        loader = DigitsDataLoader(batch_size=batch_size, validation_split=split, seed=0,
                                  pin_memory=device.type == "cuda")
    else:  # MNIST-sized: 60,000 x 1x28x28 (random pixels: the cost is what matters here)
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(60_000, 1, 28, 28, generator=gen)
        labels = torch.randint(0, 10, (60_000,), generator=gen)
        loader = BaseDataLoader(TensorDataset(images, labels), batch_size, True, split, 0, seed=0,
                                pin_memory=device.type == "cuda")
    valid = loader.split_validation()
    return device_resident(loader, valid, device) if device_loader else (loader, valid)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RawLoop:
    """The loop a careful user writes by hand: train, validate, read the epoch's numbers once. It
    runs in pieces that end where the Trainer's log points are (every max(8, batches // 10) steps
    and at the epoch's end, after validation), so that the two can take turns (--interleave)."""

    def __init__(self, model, loader, valid, device, amp) -> None:
        self.model, self.loader, self.valid, self.device = model, loader, valid, device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        # AMP as PyTorch's recipe writes it; without AMP no autocast at all (a disabled one costs a digits step 2%)
        self.autocast = (lambda: torch.autocast(device.type, dtype=AMP[amp])) if amp != "off" else contextlib.nullcontext
        self.steps, self.history = 0, []
        batches = len(loader)
        self.every = max(8, batches // 10)  # the Trainer's default log_step
        self.pieces_per_epoch = -(-batches // self.every)
        self._pieces = self._epochs()

    def piece(self) -> None:
        next(self._pieces)

    def _epochs(self):
        model, optimizer, device, batches = self.model, self.optimizer, self.device, len(self.loader)
        while True:
            model.train()
            train_sum, seen = torch.zeros((), device=device), 0
            for i, (data, target) in enumerate(self.loader):
                data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)  # first, as in PyTorch's own examples (and the Trainer)
                with self.autocast():
                    loss = F.nll_loss(model(data), target)
                loss.backward()
                optimizer.step()
                train_sum.add_(loss.detach(), alpha=target.shape[0])
                seen += target.shape[0]
                self.steps += 1
                if (i + 1) % self.every == 0 and i + 1 < batches:
                    yield
            model.eval()
            sums, count = torch.zeros(3, device=device), 0
            with torch.no_grad():
                for data, target in self.valid:
                    data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
                    with self.autocast():
                        output = model(data)
                        batch = torch.stack([F.nll_loss(output, target), accuracy(output, target),
                                             top_k_acc(output, target)])
                    sums += batch * target.shape[0]
                    count += target.shape[0]
            self.history.append([train_sum.item() / seen, *(sums / count).tolist()])  # what a user prints
            yield


def raw_loop(model, loader, valid, epochs, device, amp) -> tuple[float, int, float]:
    """A whole raw run: (seconds, steps, main-thread CPU seconds)."""
    loop = RawLoop(model, loader, valid, device, amp)
    sync(device)
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(epochs * loop.pieces_per_epoch):
        loop.piece()
    sync(device)
    return time.perf_counter() - started, loop.steps, time.thread_time() - cpu


class TimedTrainer(Trainer):
    """Times the epochs: from the first epoch's start to the end of the last epoch and its
    checkpoint. The one-off start (run folders, config.json, TensorBoard files) and end (curves
    PNG, summary) are not per-step work; the start is reported on its own line.

    With a RawLoop in `raw`, the two take turns: at each of the Trainer's log points, just before
    its work there, a piece of the raw epoch runs, timed on its own. Both then meet the same moments
    of a shared machine, whose speed drifts over seconds while neighbouring pieces run at nearly the
    same speed. The turns come where they leave the Trainer's costs on the Trainer: what its log
    point, validation and per-epoch work push out of the caches, its own next steps pay, as in a run
    alone, not the raw loop's (taking turns at the epoch's start instead read 0.03 lower on the
    digits). The Trainer goes first, and its start's first touches are its own. Its clocks for
    save_min_interval and its log writes do not see the raw pieces: its writes come as in a run alone.
    """

    loop_start = None
    raw: RawLoop | None = None

    def _turn(self, raw_piece: bool) -> None:
        """The Trainer's piece ends here; a raw piece runs if it is its turn."""
        sync(self.device)
        now, cpu = time.perf_counter(), time.thread_time()
        if self.loop_start is None:
            self.loop_start, self.wall, self.cpu, self.raw_wall, self.raw_cpu = now, 0.0, 0.0, 0.0, 0.0
        else:
            self.wall, self.cpu = self.wall + now - self.mark[0], self.cpu + cpu - self.mark[1]
        if raw_piece and self.raw is not None:
            self.raw.piece()
            sync(self.device)
            after, after_cpu = time.perf_counter(), time.thread_time()
            self.raw_wall, self.raw_cpu = self.raw_wall + after - now, self.raw_cpu + after_cpu - cpu
            self._last_write += after - now
            self._last_log_write += after - now
            now, cpu = after, after_cpu
        self.mark = (now, cpu)

    def _train_epoch(self, epoch):
        self._turn(raw_piece=False)
        return super()._train_epoch(epoch)

    def _log_point(self, bar, epoch, done, total):
        if self.raw is not None:
            self._turn(raw_piece=True)
        super()._log_point(bar, epoch, done, total)

    def _finish(self, last_log, stopped_early):
        self._turn(raw_piece=False)
        return super()._finish(last_log, stopped_early)


def trainer_run(model, loader, valid, epochs, device, args, save_dir, run_id, data,
                raw: RawLoop | None = None) -> TimedTrainer:
    """A Trainer run with the template's defaults; its times are on the returned trainer."""
    config = {
        "name": f"bench_{data}", "seed": 0,
        "arch": {"type": "DigitsModel", "args": {}},
        "data_loader": {"type": "DigitsDataLoader", "args": {}},
        "optimizer": {"type": "Adam", "args": {"lr": 1e-3}},
        "loss": "nll_loss", "metrics": ["accuracy", "top_k_acc"], "lr_scheduler": None,
        "trainer": {"epochs": epochs, "save_dir": str(save_dir), "save_period": 1, "keep_last": 3,
                    "monitor": "max val_accuracy", "tensorboard": True, "progress": args.progress, "amp": args.amp},
    }
    if args.save_min_interval is not None:
        config["trainer"]["save_min_interval"] = args.save_min_interval
    parser = ConfigParser(config, run_id=run_id)
    for handler in logging.getLogger().handlers:  # keep the console quiet; info.log still written
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with open(os.devnull, "w") as bar_sink:
        trainer = TimedTrainer(model, nll_loss, [accuracy, top_k_acc], optimizer, parser, device, loader, valid)
        trainer.progress_file = bar_sink
        trainer.raw = raw
        sync(device)
        started = time.perf_counter()
        trainer.train()
    STARTUP.append(trainer.loop_start - started)
    return trainer


def bench(data: str, args, device: torch.device, save_dir: Path) -> float:
    batch_size, epochs, split, model_args = SETUPS[data]
    epochs = args.epochs or epochs

    def fresh_model():
        torch.manual_seed(0)
        return DigitsModel(**model_args).to(device)

    def loaders():
        return make_loaders(data, batch_size, split, args.device_loader, device)

    def pair(tag: str, n_epochs: int, raw_first: bool) -> tuple[float, int, float, float, int, float]:
        """(raw seconds, steps, CPU seconds, Trainer seconds, steps, CPU seconds) of n_epochs each.
        Whole runs: which goes first alternates (the first epochs after a start run slower)."""
        if args.interleave == "log-point":
            raw = RawLoop(fresh_model(), *loaders(), device, args.amp)
            trainer = trainer_run(fresh_model(), *loaders(), n_epochs, device, args, save_dir, tag, data, raw)
            return trainer.raw_wall, raw.steps, trainer.raw_cpu, trainer.wall, trainer.global_step, trainer.cpu
        if raw_first:
            raw_s, raw_steps, raw_c = raw_loop(fresh_model(), *loaders(), n_epochs, device, args.amp)
        trainer = trainer_run(fresh_model(), *loaders(), n_epochs, device, args, save_dir, tag, data)
        if not raw_first:
            raw_s, raw_steps, raw_c = raw_loop(fresh_model(), *loaders(), n_epochs, device, args.amp)
        return raw_s, raw_steps, raw_c, trainer.wall, trainer.global_step, trainer.cpu

    pair(f"{data}-warm", 1, True)  # warm-up: first calls, allocator, file system
    STARTUP.clear()
    raw_times, trainer_times, raw_cpu, trainer_cpu = [], [], [], []
    print(f"\n{data}: batch {batch_size}, {epochs} epoch(s) per run, validation {split}, device {device}, "
          f"amp {args.amp}, loader {'device-resident' if args.device_loader else 'DataLoader'}, "
          f"progress bar {'on' if args.progress else 'off (no terminal)'}, "
          + ("raw and Trainer take turns at log points" if args.interleave == "log-point" else "raw and Trainer runs alternate")
)
    for rep in range(args.repeats):
        raw_s, raw_steps, raw_c, tr_s, tr_steps, tr_c = pair(f"{data}-{rep}", epochs, raw_first=rep % 2 == 0)
        assert raw_steps == tr_steps, (raw_steps, tr_steps)
        raw_cpu.append(raw_c)
        trainer_cpu.append(tr_c)
        raw_times.append(raw_s / raw_steps)
        trainer_times.append(tr_s / tr_steps)
        print(f"  repeat {rep + 1}: raw {raw_times[-1] * 1e3:8.4f} ms/step   trainer {trainer_times[-1] * 1e3:8.4f} "
              f"ms/step   ratio {trainer_times[-1] / raw_times[-1]:.3f}   CPU ratio {tr_c / raw_c:.3f}   "
              f"({raw_steps} steps)")
    pairs = sorted(t / r for t, r in zip(trainer_times, raw_times))
    cpu_pairs = sorted(t / r for t, r in zip(trainer_cpu, raw_cpu))
    ratio = statistics.median(pairs)
    print(f"  ratio Trainer/raw = {ratio:.3f} (median of the repeats; range {pairs[0]:.3f}-{pairs[-1]:.3f}); "
          f"medians: raw {statistics.median(raw_times) * 1e3:.4f} ms/step, trainer "
          f"{statistics.median(trainer_times) * 1e3:.4f} ms/step, ratio {statistics.median(trainer_times) / statistics.median(raw_times):.3f}")
    print(f"  main-thread CPU time ratio {statistics.median(cpu_pairs):.3f} (range {cpu_pairs[0]:.3f}-{cpu_pairs[-1]:.3f})")
    print(f"  one-off start of a Trainer run (folders, config.json, loggers): {statistics.median(STARTUP) * 1e3:.1f} ms "
          "(not counted above)")
    STARTUP.clear()
    return ratio


def load_average() -> str:
    """Other processes on this machine compete for its cores (1, 5, 15 minute averages)."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("digits", "synthetic", "both"), default="both")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=tuple(AMP), default="off")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=None, help="epochs per timed run (default per data set)")
    parser.add_argument("--device-loader", action="store_true",
                        help="feed both loops from the device-resident loader (data_loader/device_loader.py)")
    parser.add_argument("--progress", action="store_true", help="the Trainer with its tqdm bar (into /dev/null)")
    parser.add_argument("--save-min-interval", type=float, default=None,
                        help="trainer.save_min_interval (default: the template's, 1 s: the digits' short epochs share "
                             "checkpoint writes); 0 prices a checkpoint written every epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--interleave", choices=("log-point", "run"), default="log-point",
                        help="log-point (default): the raw loop and the Trainer take turns at the Trainer's log points, "
                             "each piece timed apart; run: whole raw and Trainer runs alternate (a shared machine's "
                             "drift between runs then shows in the ratio)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for data in (("digits", "synthetic") if args.data == "both" else (args.data,)):
            bench(data, args, device, Path(tmp))
    print(f"at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
