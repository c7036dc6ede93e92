"""Train a model from a config: `python project/train.py -c project/config.json`.

Also runs under `torchrun --nproc_per_node=N project/train.py ...` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import torch

import data_loader.data_loaders as module_data
import model.loss as module_loss
import model.metric as module_metric
import model.model as module_arch
from data_loader.device_loader import device_resident
from parse_config import ConfigError, ConfigParser
from trainer import Trainer
from utils import TemplateError, dist, seed_everything


def main(config: ConfigParser) -> dict:
    logger = config.get_logger("train")
    device, env = config.device, config.dist
    seed_everything(config["seed"])

    # data: the same seeded split on every rank; each rank trains on its own shard
    data_loader = config.init_obj("data_loader", module_data, seed=config["seed"], rank=env.rank,
                                  world_size=env.world_size, pin_memory=device.type == "cuda")
    valid_data_loader = data_loader.split_validation()
    if data_loader.device_resident:  # the whole split on the device, no workers, no copies
        data_loader, valid_data_loader = device_resident(data_loader, valid_data_loader, device)

    # model, loss and metrics
    model = config.init_obj("arch", module_arch)
    logger.info(model)
    model = model.to(device)
    criterion = config.get_function("loss", config["loss"], module_loss)
    metrics = [config.get_function(f"metrics[{i}]", met, module_metric) for i, met in enumerate(config["metrics"])]

    # optimizer and learning-rate scheduler
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = config.init_obj("optimizer", torch.optim, trainable_params)
    lr_scheduler = None
    if config["lr_scheduler"]:
        lr_scheduler = config.init_obj("lr_scheduler", torch.optim.lr_scheduler, optimizer)

    where = f"{device}" + (f", rank 0 of {env.world_size} (DDP)" if env.enabled else "")
    logger.info(f"run {config.run_id} on {where}: {len(data_loader.sampler)} training samples per "
                f"{'rank' if env.enabled else 'epoch'}, "
                f"{len(valid_data_loader.dataset) if valid_data_loader else 0} validation")
    trainer = Trainer(model, criterion, metrics, optimizer, config=config, device=device,
                      data_loader=data_loader, valid_data_loader=valid_data_loader, lr_scheduler=lr_scheduler)
    return trainer.train()


def build_parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description="Train a model from a config (PyTorch template).")
    args.add_argument("-c", "--config", default=None, type=str, help="config file (.json, .yaml or .yml)")
    args.add_argument("-r", "--resume", default=None, type=str,
                      help="checkpoint to continue from, or 'auto' (newest valid checkpoint of --run-id, "
                           "else of this experiment's latest run; none = start fresh)")
    args.add_argument("-d", "--device", default=None, type=str,
                      help="cpu, cuda, cuda:1, mps or auto (default: cuda if present)")
    args.add_argument("--run-id", default=None, type=str,
                      help="name of the run folder (default: timestamp with microseconds)")
    args.add_argument("-s", "--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                      help="override a config value, typed by YAML rules (repeatable), "
                           "e.g. --set trainer.epochs=5 --set optimizer.args.lr=1e-3")
    return args


CustomArgs = collections.namedtuple("CustomArgs", "flags type target")
OPTIONS = [
    CustomArgs(["--lr", "--learning_rate"], type=float, target="optimizer;args;lr"),
    CustomArgs(["--bs", "--batch_size"], type=int, target="data_loader;args;batch_size"),
    CustomArgs(["--epochs"], type=int, target="trainer;epochs"),
]


def cli(argv: list[str] | None = None) -> int:
    debug = os.environ.get("TEMPLATE_DEBUG") == "1"
    config = None
    try:
        config = ConfigParser.from_args(build_parser(), OPTIONS, argv)
        main(config)
    except (ConfigError, TemplateError) as err:
        if debug:
            raise
        if config is not None:
            config.discard_if_unused()
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume auto", file=sys.stderr)
        return 130
    dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
