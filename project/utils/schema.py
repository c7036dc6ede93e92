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
             "extra", "n_gpu")  # extra: the user's own settings; n_gpu: the classic template's (ignored)
TRAINER_DEFAULTS: dict[str, Any] = {
    "epochs": None,  # required
    "save_dir": "saved/",
    "save_period": 1,
    "keep_last": None,
    "verbosity": 1,
    "monitor": "off",
    "early_stop": None,
    "tensorboard": False,
    "len_epoch": None,
    "log_step": None,
    "progress": "auto",
    "train_metrics": "sampled",
    "amp": "off",
    "accumulate": 1,
    "clip_grad_norm": None,
    "compile": False,
    "loggers": None,  # null: [tensorboard] when trainer.tensorboard is true, else none
}
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
# schedulers stepped per optimizer step unless the config says otherwise
PER_STEP_SCHEDULERS = ("OneCycleLR", "CyclicLR", "WarmupCosineLR", "WarmupLinearLR")
WORDS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _need(key: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(key, f"expected {expected}, got {_describe(value)}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(minimum: int, optional: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, float) and value.is_integer():  # 1e3 epochs
            value = int(value)
        _need(key, is_int(value) and value >= minimum, f"an integer >= {minimum}" + (" or null" if optional else ""),
              value)
        return value

    return check


def boolean(key: str, value: Any) -> bool:
    """true/false, or the words people use for them (yes/no/on/off) where a boolean is wanted."""
    if isinstance(value, str) and value.lower() in WORDS:
        return WORDS[value.lower()]
    _need(key, isinstance(value, bool), "true or false", value)
    return value


def _choice(*options: Any) -> Callable[[str, Any], Any]:
    """One of `options`, compared with their types (1 is not true); a boolean option also takes
    yes/no/on/off, and false means "off" where "off" is an option."""
    takes_bool = any(isinstance(o, bool) for o in options)

    def check(key: str, value: Any) -> Any:
        if takes_bool and isinstance(value, str) and value.lower() in WORDS:
            value = WORDS[value.lower()]
        if value is False and "off" in options:
            value = "off"
        if not any(type(value) is type(o) and value == o for o in options):
            shown = ", ".join(str(o).lower() if isinstance(o, bool) else str(o) for o in options)
            raise ConfigError(key, f"expected one of {shown}, got {_describe(value)}")
        return value

    return check


def _string(key: str, value: Any) -> str:
    _need(key, isinstance(value, str) and value != "", "a non-empty string", value)
    return value


def _positive_or_null(key: str, value: Any) -> Any:
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)
    _need(key, ok, "a positive number or null", value)
    return value


def _compile(key: str, value: Any) -> Any:
    return value if isinstance(value, dict) else boolean(key, value)


TRAINER_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "epochs": _int(1),
    "save_dir": _string,
    "save_period": _int(1),
    "keep_last": _int(0, optional=True),
    "verbosity": _choice(0, 1, 2),
    "monitor": _string,
    "early_stop": _int(0, optional=True),
    "tensorboard": boolean,
    "len_epoch": _int(1, optional=True),
    "log_step": _int(1, optional=True),
    "progress": _choice(True, False, "auto"),
    "train_metrics": _choice("sampled", "all", "off"),
    "amp": _choice("off", "bf16", "fp16"),
    "accumulate": _int(1),
    "clip_grad_norm": _positive_or_null,
    "compile": _compile,
    "loggers": lambda key, value: value,  # checked in validate (it depends on trainer.tensorboard)
}


def unknown_key(key: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    return ConfigError(f"{key}.{name}" if key else name, f"unknown key{hint}")


def _object(config: dict, key: str, optional: bool = False) -> None:
    if key not in config:
        if optional:
            return
        raise ConfigError(key, "missing key")
    value = config[key]
    if value is None and optional:
        return
    _need(key, isinstance(value, dict), "a mapping with 'type' and 'args'", value)
    if "type" not in value:
        raise ConfigError(f"{key}.type", "missing key")
    _string(f"{key}.type", value["type"])
    value["args"] = value.get("args") or {}
    _need(f"{key}.args", isinstance(value["args"], dict), "a mapping of keyword arguments", value["args"])


def monitor_parts(monitor: str) -> tuple[str, str]:
    """'max val_accuracy' -> ('max', 'val_accuracy'); 'off' -> ('off', '')."""
    if monitor == "off":
        return "off", ""
    mode, _, metric = monitor.partition(" ")
    return mode, metric.strip()


def validate(config: dict) -> dict:
    """The config with defaults filled in; raises ConfigError on the first mistake."""
    if not isinstance(config, dict):
        raise ConfigError("", f"the config must be a mapping, got {type(config).__name__}")
    config = deepcopy(config)
    for key in config:
        if key not in TOP_LEVEL:
            raise unknown_key("", key, [k for k in TOP_LEVEL if k != "n_gpu"])
    if "name" not in config:
        raise ConfigError("name", "missing key")
    name = _string("name", config["name"])
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError("name", f"must be usable as a folder name, got {name!r}")
    config["seed"] = config.get("seed", 0)
    _need("seed", is_int(config["seed"]), "an integer", config["seed"])
    for key in ("arch", "data_loader", "optimizer"):
        _object(config, key)
    _object(config, "lr_scheduler", optional=True)
    config.setdefault("lr_scheduler", None)
    for key in ("loss",):
        if key not in config:
            raise ConfigError(key, "missing key")
        _string(key, config[key])
    metrics = config.setdefault("metrics", [])
    _need("metrics", isinstance(metrics, list), "a list of metric names", metrics)
    for i, metric in enumerate(metrics):
        _string(f"metrics[{i}]", metric)
    if "extra" in config:
        _need("extra", isinstance(config["extra"], dict), "a mapping (your own settings)", config["extra"])

    if "trainer" not in config:
        raise ConfigError("trainer", "missing key")
    trainer = config["trainer"]
    _need("trainer", isinstance(trainer, dict), "a mapping", trainer)
    for key in trainer:
        if key not in TRAINER_DEFAULTS:
            raise unknown_key("trainer", key, list(TRAINER_DEFAULTS))
    if "epochs" not in trainer:
        raise ConfigError("trainer.epochs", "missing key")
    for key, default in TRAINER_DEFAULTS.items():
        trainer[key] = TRAINER_CHECKS[key](f"trainer.{key}", trainer.get(key, default))
    trainer["loggers"] = _loggers(trainer["loggers"], trainer["tensorboard"])
    _check_monitor(trainer["monitor"], metrics)
    if config["lr_scheduler"]:
        _check_scheduler(config["lr_scheduler"], monitor_parts(trainer["monitor"])[0])
    return config


def _loggers(value: Any, tensorboard: bool) -> list:
    names = [] if value is None else value
    _need("trainer.loggers", isinstance(names, list), f"a list of {', '.join(LOGGERS)}", value)
    for i, entry in enumerate(names):
        name = entry.get("type") if isinstance(entry, dict) else entry
        if name not in LOGGERS:
            close = difflib.get_close_matches(str(name), LOGGERS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(LOGGERS)}"
            raise ConfigError(f"trainer.loggers[{i}]", f"unknown logger {name!r} ({hint})")
    if tensorboard and "tensorboard" not in names:
        names = ["tensorboard", *names]
    return names


def _check_monitor(monitor: str, metrics: list[str]) -> None:
    mode, metric = monitor_parts(monitor)
    if mode not in ("off", "min", "max") or (mode != "off" and not metric):
        raise ConfigError("trainer.monitor", f"expected \"off\", \"min METRIC\" or \"max METRIC\", got {monitor!r}")
    if mode != "off":
        known = ["loss", *metrics]
        base = metric[4:] if metric.startswith("val_") else metric
        if base not in known:
            names = ", ".join(known + [f"val_{k}" for k in known])
            raise ConfigError("trainer.monitor", f"{metric!r} is not a logged metric (have: {names})")


def _check_scheduler(scheduler: dict, monitor_mode: str) -> None:
    """Refuse what cannot work (a plateau scheduler per step, OneCycleLR without a length) and
    fill in what the rest of the config decides (the plateau scheduler's mode)."""
    kind, args = scheduler["type"], scheduler["args"]
    interval = scheduler.setdefault("interval", "step" if kind in PER_STEP_SCHEDULERS else "epoch")
    _need("lr_scheduler.interval", interval in ("epoch", "step"), "\"epoch\" or \"step\"", interval)
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
        if key in args and args[key] != "auto":
            args[key] = _int(1)(f"lr_scheduler.args.{key}", args[key])


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
