"""Check a config dict against the template's schema and fill in the trainer's defaults.

Every problem is reported as a ConfigError naming the key path (`trainer.epochs`), so
train.py can print one line and exit 2 instead of failing later with a traceback.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

TRAINER_DEFAULTS: dict[str, Any] = {
    "epochs": None,  # required
    "save_dir": "saved/",
    "save_period": 1,
    "keep_last": None,
    "verbosity": 2,
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
}
AMP_MODES = ("off", "bf16", "fp16")


class ConfigError(Exception):
    """A mistake in a config: where (file or --set) and which key, in one line."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.source = source

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        key = f"{self.key}: " if self.key else ""
        return f"config error{where}: {key}{self.message}"


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _need(key: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(key, f"expected {expected}, got {_describe(value)}")


def _int(minimum: int, optional: bool = False) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if optional and value is None:
            return
        what = f"an integer >= {minimum}" + (" or null" if optional else "")
        _need(key, _is_int(value) and value >= minimum, what, value)

    return check


def _bool(key: str, value: Any) -> None:
    _need(key, isinstance(value, bool), "true or false", value)


def _string(key: str, value: Any) -> None:
    _need(key, isinstance(value, str) and value != "", "a non-empty string", value)


def _progress(key: str, value: Any) -> None:
    _need(key, isinstance(value, bool) or value == "auto", "true, false or \"auto\"", value)


def _train_metrics(key: str, value: Any) -> None:
    _need(key, value in ("sampled", "all", "off") or value is False, "one of sampled, all, off", value)


def _amp(key: str, value: Any) -> None:
    _need(key, value is False or value in AMP_MODES, "one of off, bf16, fp16", value)


def _clip(key: str, value: Any) -> None:
    _need(key, value is None or (_is_number(value) and value > 0), "a positive number or null", value)


def _compile(key: str, value: Any) -> None:
    _need(key, isinstance(value, (bool, dict)), "true, false or a mapping of torch.compile options", value)


def _verbosity(key: str, value: Any) -> None:
    _need(key, _is_int(value) and 0 <= value <= 2, "0, 1 or 2", value)


TRAINER_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "epochs": _int(1),
    "save_dir": _string,
    "save_period": _int(1),
    "keep_last": _int(0, optional=True),
    "verbosity": _verbosity,
    "monitor": _string,
    "early_stop": _int(0, optional=True),
    "tensorboard": _bool,
    "len_epoch": _int(1, optional=True),
    "log_step": _int(1, optional=True),
    "progress": _progress,
    "train_metrics": _train_metrics,
    "amp": _amp,
    "accumulate": _int(1),
    "clip_grad_norm": _clip,
    "compile": _compile,
}


def _unknown(key: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{key}.{name}" if key else name, f"unknown key{hint}")


def _check_object(config: dict, key: str, optional: bool = False) -> None:
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
    args = value.setdefault("args", {})
    _need(f"{key}.args", isinstance(args, dict), "a mapping of keyword arguments", args)


def monitor_parts(monitor: str) -> tuple[str, str]:
    """'max val_accuracy' -> ('max', 'val_accuracy'); 'off' -> ('off', '')."""
    if monitor == "off":
        return "off", ""
    mode, _, metric = monitor.partition(" ")
    return mode, metric.strip()


def validate(config: dict) -> dict:
    """Raise ConfigError on the first mistake; returns the config with trainer defaults filled."""
    if not isinstance(config, dict):
        raise ConfigError("", f"the config must be a mapping, got {type(config).__name__}")
    if "name" not in config:
        raise ConfigError("name", "missing key")
    _string("name", config["name"])
    if "/" in config["name"] or "\\" in config["name"] or config["name"] in (".", ".."):
        raise ConfigError("name", f"must be usable as a folder name, got {config['name']!r}")
    config.setdefault("seed", 0)
    _need("seed", _is_int(config["seed"]), "an integer", config["seed"])
    for key in ("arch", "data_loader", "optimizer"):
        _check_object(config, key)
    _check_object(config, "lr_scheduler", optional=True)
    scheduler = config.get("lr_scheduler")
    if scheduler:
        interval = scheduler.setdefault("interval", "epoch")
        _need("lr_scheduler.interval", interval in ("epoch", "step"), "\"epoch\" or \"step\"", interval)
    if "loss" not in config:
        raise ConfigError("loss", "missing key")
    _string("loss", config["loss"])
    metrics = config.setdefault("metrics", [])
    _need("metrics", isinstance(metrics, list), "a list of metric names", metrics)
    for i, name in enumerate(metrics):
        _string(f"metrics[{i}]", name)

    if "trainer" not in config:
        raise ConfigError("trainer", "missing key")
    trainer = config["trainer"]
    _need("trainer", isinstance(trainer, dict), "a mapping", trainer)
    for name in trainer:
        if name not in TRAINER_DEFAULTS:
            raise _unknown("trainer", name, list(TRAINER_DEFAULTS))
    if "epochs" not in trainer:
        raise ConfigError("trainer.epochs", "missing key")
    for name, default in TRAINER_DEFAULTS.items():
        trainer.setdefault(name, default)
        TRAINER_CHECKS[name](f"trainer.{name}", trainer[name])
    for name in ("amp", "train_metrics"):
        if trainer[name] is False:
            trainer[name] = "off"  # YAML reads a bare `off` as false

    mode, metric = monitor_parts(trainer["monitor"])
    if mode not in ("off", "min", "max") or (mode != "off" and not metric):
        raise ConfigError("trainer.monitor", f"expected \"off\", \"min METRIC\" or \"max METRIC\", got {trainer['monitor']!r}")
    if mode != "off":
        known = ["loss", *metrics]
        base = metric[4:] if metric.startswith("val_") else metric
        if base not in known:
            names = ", ".join(known + [f"val_{k}" for k in known])
            raise ConfigError("trainer.monitor", f"{metric!r} is not a logged metric (have: {names})")
    return config
