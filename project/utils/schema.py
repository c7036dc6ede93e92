"""The template's config schema: `validate(config) -> config` with the defaults filled in.

Pure (the input is not changed). Every problem is a ConfigError naming the key path
(`trainer.epochs`), so train.py prints one line and exits 2 instead of failing later.
"""
from __future__ import annotations

import difflib
from copy import deepcopy
from typing import Any, Callable, Sequence

from .config import ConfigError, apply_overrides

TOP_LEVEL = ("name", "seed", "arch", "data_loader", "optimizer", "loss", "metrics", "lr_scheduler", "trainer",
             "extra")  # extra: the user's own settings (any mapping)
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
PER_STEP_SCHEDULERS = ("OneCycleLR", "CyclicLR", "WarmupCosineLR", "WarmupLinearLR")  # interval: step by default
WORDS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


def expect(key: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(key, f"expected {expected}, got {value!r} ({type(value).__name__})")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int, optional: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, float) and value.is_integer():  # 1e3 epochs
            value = int(value)
        expect(key, is_int(value) and value >= minimum, f"an integer >= {minimum}" + " or null" * optional, value)
        return value

    return check


def one_of(*options: Any) -> Callable[[str, Any], Any]:
    """One of `options`, types compared (1 is not true); where a boolean is an option the words
    yes/no/on/off count as one, and false means "off" where "off" is an option."""
    def check(key: str, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in WORDS and any(isinstance(o, bool) for o in options):
            value = WORDS[value.lower()]
        if value is False and "off" in options:
            value = "off"
        shown = ", ".join(str(o).lower() if isinstance(o, bool) else str(o) for o in options)
        expect(key, any(type(value) is type(o) and value == o for o in options), f"one of {shown}", value)
        return value

    return check


def string(key: str, value: Any) -> str:
    expect(key, isinstance(value, str) and value != "", "a non-empty string", value)
    return value


def seconds(key: str, value: Any) -> Any:
    expect(key, isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
           "a number of seconds >= 0", value)
    return value


def positive_or_null(key: str, value: Any) -> Any:
    expect(key, value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0),
           "a positive number or null", value)
    return value


boolean = one_of(True, False)
TRAINER: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {  # key: (default, check)
    "epochs": (None, integer(1)),  # required
    "save_dir": ("saved/", string),
    "save_period": (1, integer(1)),
    "save_min_interval": (1.0, seconds),  # epochs shorter than this share checkpoint writes (0: every period)
    "keep_last": (None, integer(0, optional=True)),
    "verbosity": (1, one_of(0, 1, 2)),
    "monitor": ("off", string),
    "early_stop": (None, integer(0, optional=True)),
    "tensorboard": (False, boolean),
    "len_epoch": (None, integer(1, optional=True)),
    "log_step": (None, integer(1, optional=True)),
    "progress": ("auto", one_of(True, False, "auto")),
    "train_metrics": ("sampled", one_of("sampled", "all", "off")),
    "amp": ("off", one_of("off", "bf16", "fp16")),
    "accumulate": (1, integer(1)),
    "clip_grad_norm": (None, positive_or_null),
    "compile": (False, lambda key, value: value if isinstance(value, dict) else boolean(key, value)),
    "loggers": (None, lambda key, value: value),  # checked below: it depends on trainer.tensorboard
}


def unknown_key(key: str, name: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
    return ConfigError(f"{key}.{name}" if key else name, f"unknown key ({hint})")


def required(config: dict, key: str, prefix: str = "") -> Any:
    if key not in config:
        raise ConfigError(prefix + key, "missing key")
    return config[key]


def type_and_args(config: dict, key: str) -> None:
    """`{type, args}` objects: a type name, and keyword arguments (none: {})."""
    value = required(config, key)
    expect(key, isinstance(value, dict), "a mapping with 'type' and 'args'", value)
    string(f"{key}.type", required(value, "type", f"{key}."))
    value["args"] = value.get("args") or {}
    expect(f"{key}.args", isinstance(value["args"], dict), "a mapping of keyword arguments", value["args"])


def monitor_parts(monitor: str) -> tuple[str, str]:
    """'max val_accuracy' -> ('max', 'val_accuracy'); 'off' -> ('off', '')."""
    mode, _, metric = monitor.partition(" ")
    return mode, metric.strip()


def validate(config: dict) -> dict:
    """The config with defaults filled in; raises ConfigError on the first mistake."""
    expect("", isinstance(config, dict), "a mapping", config)
    config = deepcopy(config)
    for key in config:
        if key not in TOP_LEVEL and key != "n_gpu":  # n_gpu: the classic template's (ignored, with a warning)
            raise unknown_key("", key, TOP_LEVEL)
    name = string("name", required(config, "name"))
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError("name", f"must be usable as a folder name, got {name!r}")
    expect("seed", is_int(config.setdefault("seed", 0)), "an integer", config["seed"])
    for key in ("arch", "data_loader", "optimizer"):
        type_and_args(config, key)
    if config.setdefault("lr_scheduler", None) is not None:
        type_and_args(config, "lr_scheduler")
    string("loss", required(config, "loss"))
    metrics = config.setdefault("metrics", [])
    expect("metrics", isinstance(metrics, list), "a list of metric names", metrics)
    for i, metric in enumerate(metrics):
        string(f"metrics[{i}]", metric)
    expect("extra", isinstance(config.get("extra", {}), dict), "a mapping (your own settings)", config.get("extra"))

    trainer = required(config, "trainer")
    expect("trainer", isinstance(trainer, dict), "a mapping", trainer)
    for key in trainer:
        if key not in TRAINER:
            raise unknown_key("trainer", key, list(TRAINER))
    required(trainer, "epochs", "trainer.")
    for key, (default, check) in TRAINER.items():
        trainer[key] = check(f"trainer.{key}", trainer.get(key, default))
    trainer["loggers"] = _loggers(trainer["loggers"], trainer["tensorboard"])
    _check_monitor(trainer["monitor"], metrics)
    if config["lr_scheduler"]:
        _check_scheduler(config["lr_scheduler"], monitor_parts(trainer["monitor"])[0])
    return config


def _loggers(value: Any, tensorboard: bool) -> list:
    names = [] if value is None else value
    expect("trainer.loggers", isinstance(names, list), f"a list of {', '.join(LOGGERS)}", value)
    for i, entry in enumerate(names):
        name = entry.get("type") if isinstance(entry, dict) else entry
        if name not in LOGGERS:
            close = difflib.get_close_matches(str(name), LOGGERS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(LOGGERS)}"
            raise ConfigError(f"trainer.loggers[{i}]", f"unknown logger {name!r} ({hint})")
    return ["tensorboard", *names] if tensorboard and "tensorboard" not in names else names


def _check_monitor(monitor: str, metrics: list[str]) -> None:
    mode, metric = monitor_parts(monitor)
    if monitor != "off" and (mode not in ("min", "max") or not metric):
        raise ConfigError("trainer.monitor", f"expected \"off\", \"min METRIC\" or \"max METRIC\", got {monitor!r}")
    known = ["loss", *metrics]
    if metric and metric.removeprefix("val_") not in known:
        names = ", ".join(known + [f"val_{k}" for k in known])
        raise ConfigError("trainer.monitor", f"{metric!r} is not a logged metric (have: {names})")


def _check_scheduler(scheduler: dict, monitor_mode: str) -> None:
    """Refuse what cannot work (a plateau scheduler per step, OneCycleLR without a length) and
    fill in what the rest of the config decides (the plateau scheduler's mode)."""
    kind, args = scheduler["type"], scheduler["args"]
    interval = scheduler.setdefault("interval", "step" if kind in PER_STEP_SCHEDULERS else "epoch")
    expect("lr_scheduler.interval", interval in ("epoch", "step"), "\"epoch\" or \"step\"", interval)
    if kind == "ReduceLROnPlateau":
        if interval == "step":
            raise ConfigError("lr_scheduler.interval", "ReduceLROnPlateau steps on an epoch's metric: use \"epoch\"")
        wanted = monitor_mode if monitor_mode != "off" else "min"
        if args.setdefault("mode", wanted) != wanted:
            raise ConfigError("lr_scheduler.args.mode", f"is {args['mode']!r} but trainer.monitor is {monitor_mode!r} "
                              "(the mode follows the monitor: remove it)")
    if kind in ("WarmupCosineLR", "WarmupLinearLR"):
        args.setdefault("total_steps", "auto")
    if kind == "OneCycleLR" and args.get("total_steps") is None and args.get("steps_per_epoch") is None:
        raise ConfigError("lr_scheduler.args", "OneCycleLR needs its length: set total_steps: auto "
                          "(filled in from the loader, epochs and accumulation)")
    for key in ("total_steps", "steps_per_epoch", "T_max", "epochs"):
        if args.get(key, "auto") != "auto":
            args[key] = integer(1)(f"lr_scheduler.args.{key}", args[key])


def effective_config(config: dict, changes: Sequence, source: str) -> tuple[dict, dict]:
    """(validated config with the changes applied, {dotted key: label of the change})."""
    labels = {".".join(parts): label for parts, _, label in changes}
    try:
        return validate(apply_overrides(config, changes)), labels
    except ConfigError as err:
        err.source = err.source or source_of(labels, err.key, source)
        raise


def source_of(labels: dict, key: str, default: str) -> str:
    """The --set that wrote `key` (or one above or below it), else the config file."""
    key = key.replace("[", ".").replace("]", "")
    for path, label in labels.items():
        if key and (key == path or key.startswith(path + ".") or path.startswith(key + ".")):
            return label
    return default
