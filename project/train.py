"""Train a model from a config: `python project/train.py -c project/config.json`.

Also runs under `torchrun --nproc_per_node=N project/train.py ...` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import signal
import sys


def _interrupted_while_loading(signum, frame) -> None:
    """Nothing is written yet, and an exception raised inside torch's import can abort the process
    (SIGABRT) or be swallowed by the import machinery: leave at once instead."""
    print("train.py: interrupted", file=sys.stderr, flush=True)
    os._exit(130)


if __name__ == "__main__":  # Ctrl-C while torch loads (seconds on Colab): one line, not an import traceback
    signal.signal(signal.SIGINT, _interrupted_while_loading)

import torch

import data_loader.data_loaders as module_data
import model.loss as module_loss
import model.metric as module_metric
import model.model as module_arch
import trainer.lr_scheduler as module_scheduler
from data_loader.device_loader import device_resident
from parse_config import ConfigError, ConfigParser
from trainer import Trainer
from utils import TemplateError, accepted_kwargs, dist, resolve_device, seed_everything
from utils.checkpoint import NotOurCheckpoint, init_from

CustomArgs = collections.namedtuple("CustomArgs", "flags type target")
OPTIONS = [
    CustomArgs(["--lr", "--learning_rate"], type=float, target="optimizer;args;lr"),
    CustomArgs(["--bs", "--batch_size"], type=int, target="data_loader;args;batch_size"),
    CustomArgs(["--epochs"], type=int, target="trainer;epochs"),
]


def main(args: argparse.Namespace) -> dict:
    # where this process computes: the device first, then torch.distributed under torchrun
    env = dist.from_environment()
    try:
        device = resolve_device(args.device or "auto", env.local_rank)
    except ValueError as err:
        raise ConfigError("", str(err), source="--device") from None
    dist.init(env, device)
    if args.init_from and args.resume:
        raise ConfigError("", "--init-from starts a new run from weights; --resume continues a run: give one",
                          source="command line")
    config = ConfigParser.from_args(args, OPTIONS, env=env)
    logger = config.get_logger("train")
    seed_everything(config["seed"])

    # data: the same seeded split on every rank; each rank trains on its own shard
    loader_type = getattr(module_data, config["data_loader"]["type"], None)
    runtime = accepted_kwargs(loader_type, seed=config["seed"], rank=env.rank, world_size=env.world_size,
                              pin_memory=device.type == "cuda")
    if env.enabled and "rank" not in runtime:
        logger.warning(f"{loader_type.__name__} takes no rank/world_size: every rank trains on all of its data")
    data_loader = config.init_obj("data_loader", module_data, **runtime)
    valid_data_loader = data_loader.split_validation()
    if getattr(data_loader, "device_resident", False):  # the whole split on the device: no workers, no copies
        resident = device_resident(data_loader, valid_data_loader, device)
        if isinstance(resident, str):
            logger.info(f"data_loader.args.device_resident: {resident}; using the DataLoader")
        else:
            data_loader, valid_data_loader = resident

    # model, loss and metrics
    model = config.init_obj("arch", module_arch)
    if args.init_from:  # fine-tuning: another run's weights, nothing else of its state
        init_from(model, args.init_from, [s for text in args.init_skip for s in text.split(",") if s],
                  args.trust_checkpoint, logger)
    logger.info(model)
    model = model.to(device)
    criterion = config.get_function("loss", config["loss"], module_loss, what="loss")
    metrics = [config.get_function(f"metrics[{i}]", name, module_metric, what="metric")
               for i, name in enumerate(config["metrics"])]

    # optimizer and learning-rate scheduler
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = config.init_obj("optimizer", torch.optim, trainable_params)
    lr_scheduler = None
    if config["lr_scheduler"]:
        lr_scheduler = config.init_obj("lr_scheduler", module_scheduler, optimizer,
                                       **schedule_lengths(config, len(data_loader)))

    where = f"{device}" + (f", rank 0 of {env.world_size} (DDP)" if env.enabled else "")
    logger.info(f"run {config.run_id} on {where}: {len(data_loader.sampler)} training samples per "
                f"{'rank' if env.enabled else 'epoch'}, "
                f"{len(valid_data_loader.dataset) if valid_data_loader else 0} validation")
    trainer = Trainer(model, criterion, metrics, optimizer, config=config, device=device,
                      data_loader=data_loader, valid_data_loader=valid_data_loader, lr_scheduler=lr_scheduler)
    try:
        return trainer.train()
    except BaseException:
        config.discard_if_unused()
        raise


def schedule_lengths(config: ConfigParser, batches_per_pass: int) -> dict:
    """The scheduler arguments written as `auto` (total_steps, T_max, steps_per_epoch, epochs),
    counted in the scheduler's own steps: optimizer steps (batches / accumulation) or epochs."""
    spec, trainer = config["lr_scheduler"], config["trainer"]
    per_epoch = 1
    if spec["interval"] == "step":
        per_epoch = math.ceil((trainer["len_epoch"] or batches_per_pass) / trainer["accumulate"])
    sizes = {"total_steps": per_epoch * trainer["epochs"], "T_max": per_epoch * trainer["epochs"],
             "steps_per_epoch": per_epoch, "epochs": trainer["epochs"]}
    return {key: sizes[key] for key, value in spec["args"].items() if value == "auto" and key in sizes}


def build_parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description="Train a model from a config (PyTorch template).")
    args.add_argument("-c", "--config", default=None, type=str, help="config file (.json, .yaml or .yml)")
    args.add_argument("-r", "--resume", default=None, type=str,
                      help="checkpoint to continue from (an older one of a run starts a new run branched from it), "
                           "or 'auto': the newest checkpoint of --run-id, else of this experiment's latest run "
                           "(none: start fresh)")
    args.add_argument("-d", "--device", default=None, type=str,
                      help="cpu, cuda, cuda:1, mps or auto (default: cuda if present)")
    args.add_argument("--run-id", default=None, type=str,
                      help="name of the run folder (default: timestamp with microseconds)")
    args.add_argument("-s", "--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                      help="override a config value, read as YAML (repeatable), "
                           "e.g. --set trainer.epochs=5 --set optimizer.args.lr=1e-3")
    args.add_argument("--init-from", default=None, metavar="CKPT",
                      help="start from these weights only (our checkpoint, a state_dict file, or with "
                           "--trust-checkpoint a classic pytorch-template checkpoint); no optimizer, epoch or RNG")
    args.add_argument("--init-skip", action="append", default=[], metavar="LAYER",
                      help="with --init-from: layers to leave freshly initialised (e.g. a new head: fc); repeatable")
    args.add_argument("--trust-checkpoint", action="store_true",
                      help="allow --init-from to unpickle objects (weights_only=False): only for files you trust")
    for opt in OPTIONS:
        args.add_argument(*opt.flags, default=None, type=opt.type, help=f"sets {opt.target.replace(';', '.')}")
    return args


def cli(argv: list[str] | None = None) -> int:
    """train.py's command line: one line and exit 2 for a config mistake, 1 for a runtime failure."""
    args = build_parser().parse_args(argv)
    try:
        main(args)
    except (ConfigError, TemplateError, NotOurCheckpoint) as err:
        if os.environ.get("TEMPLATE_DEBUG") == "1":
            raise
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, TemplateError) else 2
    except OSError as err:  # the run's own files: a full disk, a read-only folder, Drive gone away
        if os.environ.get("TEMPLATE_DEBUG") == "1":
            raise
        print(f"train.py: error: {err}", file=sys.stderr)  # Python's text: file names quoted, escaped
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume auto", file=sys.stderr)
        return 130
    dist.shutdown()
    return 0


def _leave_at_once(exit_code: list[int]):
    """Once cli() has returned, the run is on disk: a Ctrl-C while Python shuts down (torch's and
    W&B's exit hooks print a traceback when interrupted) leaves at once, with cli()'s exit code."""
    def leave(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(exit_code[0])
    return leave


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: Ctrl-C is KeyboardInterrupt again
    exit_code = [130]  # cli()'s, once it has returned
    leave = _leave_at_once(exit_code)  # made now: calling it later is one more place a Ctrl-C can land
    try:
        exit_code[0] = cli()
        signal.signal(signal.SIGINT, leave)
    except KeyboardInterrupt:  # a second Ctrl-C in cli()'s own error handling or before the swap: its line is out
        signal.signal(signal.SIGINT, leave)
    sys.exit(exit_code[0])
