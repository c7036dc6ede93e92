#!/usr/bin/env python3
"""Device-resident loader vs torch DataLoader: samples per second, same order, same batches.

For each data set (the bundled digits; an MNIST-sized synthetic set, 60,000 x 1x28x28) and
each loader, interleaved over several repeats in one process:
  iterate  one pass, every batch on the device (the DataLoader copies with non_blocking)
  train    one pass of forward/backward/Adam step of a small MLP fed by that loader
prints samples/s (median) and the ratio device-resident / DataLoader.

    python scripts/bench_loader.py                     # CPU
    python scripts/bench_loader.py --device cuda       # GPU (add --amp bf16 for the train mode)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1] / "project"
sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from base import BaseDataLoader  # noqa: E402
from data_loader.data_loaders import DigitsDataLoader  # noqa: E402
from data_loader.device_loader import device_resident  # noqa: E402
from model.model import DigitsModel  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SETUPS = {"digits": (64, 64), "synthetic": (128, 784)}  # batch size, input features


def synthetic() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(60_000, 1, 28, 28, generator=gen), torch.randint(0, 10, (60_000,), generator=gen))


def make(kind: str, data: str, device: torch.device, workers: int):
    batch_size, _ = SETUPS[data]
    pin = device.type == "cuda"
    num_workers = workers if kind == "dataloader+workers" else 0
    if data == "digits":
        loader = DigitsDataLoader(batch_size=batch_size, validation_split=0.0, num_workers=num_workers, seed=0,
                                  pin_memory=pin)
    else:
        loader = BaseDataLoader(synthetic_set, batch_size, True, 0.0, num_workers, seed=0, pin_memory=pin)
    if kind == "device-resident":
        loader, _ = device_resident(loader, None, device)
    return loader


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_pass(loader, device, mode: str, model=None, optimizer=None, amp="off") -> tuple[float, int]:
    loader.sampler.set_epoch(1)
    seen = 0
    sync(device)
    started = time.perf_counter()
    for data, target in loader:
        data = data.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if mode == "train":
            with torch.autocast(device.type, dtype=AMP[amp], enabled=amp != "off"):
                loss = F.nll_loss(model(data), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seen += target.shape[0]
    sync(device)
    return time.perf_counter() - started, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", choices=("digits", "synthetic", "both"), default="both")
    parser.add_argument("--mode", choices=("iterate", "train", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the 'dataloader+workers' variant")
    parser.add_argument("--amp", choices=tuple(AMP), default="off")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}")
    global synthetic_set
    synthetic_set = synthetic()
    kinds = ["dataloader", "dataloader+workers", "device-resident"]
    for data in (("digits", "synthetic") if args.data == "both" else (args.data,)):
        loaders = {kind: make(kind, data, device, args.workers) for kind in kinds}
        for mode in (("iterate", "train") if args.mode == "both" else (args.mode,)):
            rates = {kind: [] for kind in kinds}
            for rep in range(args.repeats + 1):  # the first round warms up
                for kind in kinds:
                    model = optimizer = None
                    if mode == "train":
                        torch.manual_seed(0)
                        model = DigitsModel(hidden=256, in_features=SETUPS[data][1]).to(device)
                        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                    seconds, seen = one_pass(loaders[kind], device, mode, model, optimizer, args.amp)
                    if rep:
                        rates[kind].append(seen / seconds)
            medians = {kind: statistics.median(v) for kind, v in rates.items()}
            best_dl = max(medians["dataloader"], medians["dataloader+workers"])
            print(f"\n{data} / {mode} (batch {SETUPS[data][0]}, {args.repeats} repeats, device {device}):")
            for kind in kinds:
                print(f"  {kind:20s} {medians[kind]:12,.0f} samples/s")
            print(f"  ratio device-resident / best DataLoader = {medians['device-resident'] / best_dl:.2f}x"
                  f"  (vs workers=0: {medians['device-resident'] / medians['dataloader']:.2f}x)")
        for loader in loaders.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
    return 0


synthetic_set: TensorDataset | None = None

if __name__ == "__main__":
    sys.exit(main())
