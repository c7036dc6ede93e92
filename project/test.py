"""Evaluate a checkpoint: `python project/test.py -r saved/models/NAME/RUN/model_best.pth`.

Loss and metrics come from the checkpoint's stored config; the split is the data
loader's test split (`--split val` re-measures the validation split the trainer used).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import data_loader.data_loaders as module_data
import model.loss as module_loss
import model.metric as module_metric
import model.model as module_arch
from parse_config import ConfigError, ConfigParser
from utils import MetricTracker, TemplateError
from utils import checkpoint as ckpt
from utils.metric_tracker import metric_name
from utils.util import accepted_kwargs, resolve_device


def evaluate(checkpoint_path: str, device_name: str = "auto", split: str = "test", batch_size: int | None = None) -> dict:
    try:
        device = resolve_device(device_name)
    except ValueError as err:
        raise ConfigError("", str(err), source="--device") from None
    if not os.path.isfile(checkpoint_path):
        raise ConfigError("", f"no checkpoint file at {checkpoint_path}", source="--resume")
    try:
        state = ckpt.open_checkpoint(checkpoint_path)
    except ckpt.NotOurCheckpoint as err:
        raise ConfigError("", str(err), source="--resume") from None

    changes = [("data_loader.args.shuffle", False), ("data_loader.args.num_workers", 0)]
    if split == "test":
        changes += [("data_loader.args.training", False), ("data_loader.args.validation_split", 0.0)]
    if batch_size:
        changes.append(("data_loader.args.batch_size", batch_size))
    changes = [(key.split("."), value, f"test.py's {key}={value}") for key, value in changes]
    config = ConfigParser(state["config"], modification=changes, source=f"{checkpoint_path} (stored config)")
    loader_type = getattr(module_data, config["data_loader"]["type"], None)
    loader = config.init_obj("data_loader", module_data, **accepted_kwargs(loader_type, seed=config["seed"]))
    if split == "val":
        loader = loader.split_validation()
        if loader is None:
            raise ConfigError("data_loader.args.validation_split", "is 0: this run had no validation split",
                              source=config.source)

    model = config.init_obj("arch", module_arch)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise TemplateError(f"{checkpoint_path}: weights do not fit {type(model).__name__}: "
                            f"{str(err).splitlines()[-1].strip()}") from None
    model = model.to(device).eval()
    criterion = config.get_function("loss", config["loss"], module_loss, what="loss")
    metric_fns = [config.get_function(f"metrics[{i}]", m, module_metric, what="metric")
                  for i, m in enumerate(config["metrics"])]

    tracker = MetricTracker("loss", *[metric_name(m) for m in metric_fns], device=device)
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            tracker.update_batch(criterion(output, target), output, target, metric_fns)
    return {
        "checkpoint": str(checkpoint_path),
        "epoch": state.get("epoch"),
        "split": split,
        "samples": tracker.counts["loss"],
        "device": str(device),
        **tracker.result(),
    }


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description="Evaluate a checkpoint on the test (or validation) split.")
    args.add_argument("-r", "--resume", required=True, help="checkpoint file (.pth) to evaluate")
    args.add_argument("-d", "--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    args.add_argument("--split", choices=("test", "val"), default="test",
                      help="test: the held-out test split (default); val: the trainer's validation split")
    args.add_argument("--bs", "--batch_size", dest="batch_size", type=int, default=None,
                      help="evaluation batch size (default: the config's)")
    args.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    opts = args.parse_args(argv)
    try:
        result = evaluate(opts.resume, opts.device, opts.split, opts.batch_size)
    except (ConfigError, TemplateError) as err:
        if os.environ.get("TEMPLATE_DEBUG") == "1":
            raise
        print(f"test.py: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    if opts.json:
        print(json.dumps(result))
    else:
        print(f"checkpoint: {result['checkpoint']} (epoch {result['epoch']})")
        print(f"split: {result['split']}  samples: {result['samples']}  device: {result['device']}")
        for key in ("loss", *[k for k in result if k not in ("checkpoint", "epoch", "split", "samples", "device", "loss")]):
            print(f"    {key:15s}: {result[key]:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
