"""ConfigParser: the classic template's config object and factory (`init_obj`, `init_ftn`).

Reading, overriding and checking a config are plain functions (utils/config.py, utils/schema.py);
which checkpoint a command line means and where a run writes are utils/runs.py. This class ties
them to one run and builds the objects a config names, with errors that say where a name came from.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import logging
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from logger import attach_log_file, close_logging, setup_logging
from utils import dist, runs
from utils.config import ConfigError, as_changes, parse_override
from utils.schema import effective_config, source_of

__all__ = ["ConfigParser", "ConfigError"]
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


class ConfigParser:
    def __init__(self, config: dict, resume: str | Path | None = None, modification: dict | Sequence | None = None,
                 run_id: str | None = None, *, source: str = "<config>", env: dist.DistEnv | None = None) -> None:
        """`modification`: {'a;b;c': value} as in the classic template, or (key parts, value, label)
        triples from parse_override. Reads the disk, writes nothing (that is `open_run`)."""
        self.source, self.dist = source, env or dist.DistEnv()
        self._config, self._labels = effective_config(config, as_changes(modification), source)
        self.resume = Path(resume) if resume else None
        self.dirs = dist.broadcast(runs.plan(self._config, self.resume, run_id), self.dist)  # rank 0's, on all
        setup_logging(self.dist.rank)
        if "n_gpu" in self._config and self.dist.is_main:
            logging.getLogger("config").warning(
                "n_gpu is the classic template's key and is ignored here: choose the device with -d "
                "(cuda, cuda:1, cpu) and train on N GPUs with torchrun --nproc_per_node=N project/train.py ...")

    @classmethod
    def from_args(cls, args: argparse.Namespace, options: Sequence = (), env: dist.DistEnv | None = None):
        """The run's config from the command line: -c, -r (a path or 'auto'), --run-id, --set and
        the custom options (flags, type, target) the parser was given."""
        changes = []
        for opt in options:
            value = getattr(args, next(f for f in opt.flags if f.startswith("--")).lstrip("-").replace("-", "_"))
            if value is not None:
                changes.append((opt.target.split(";"), value, f"{opt.flags[0]} {value}"))
        changes += [parse_override(text) for text in args.set]
        config, source, resume, run_id = runs.locate(args.config, args.resume, args.run_id, changes)
        return cls(config, resume, changes, run_id, source=source, env=env)

    # ----------------------------------------------------------------- the run's folders
    def open_run(self) -> None:
        """Create the run folders and config.json (rank 0), start info.log; called once every
        check has passed."""
        if self.dist.is_main:
            runs.create(self.dirs, self._config)
            attach_log_file(self.dirs.log_dir)
        dist.barrier(self.dist)

    def discard_if_unused(self) -> None:
        """After a failure before the first checkpoint, remove the folders open_run made."""
        close_logging()
        runs.discard_if_unused(self.dirs)

    # ----------------------------------------------------------------- factory
    def init_obj(self, name: str, module: ModuleType, *args: Any, **kwargs: Any) -> Any:
        """`self[name]` is {type, args}: `module.<type>(*args, **config_args, **kwargs)`, with an
        argument the type does not take reported against the config key."""
        target, merged = self._resolve(name, module, kwargs)
        try:
            inspect.signature(target).bind(*args, **merged)
            return target(*args, **merged)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{name}.args", f"{target.__name__}: {err}", source=self.source_of(f"{name}.args")) \
                from None

    def init_ftn(self, name: str, module: ModuleType, *args: Any, **kwargs: Any) -> partial:
        """Like init_obj, but returns the function with its arguments bound."""
        target, merged = self._resolve(name, module, kwargs)
        return partial(target, *args, **merged)

    def _resolve(self, name: str, module: ModuleType, kwargs: dict) -> tuple[Any, dict]:
        spec = self[name]
        clash = [k for k in kwargs if spec["args"].get(k, "auto") != "auto"]  # as the classic template: no silent win
        if clash:
            raise ConfigError(f"{name}.args.{clash[0]}", "is set by train.py; remove it from the config",
                              source=self.source_of(f"{name}.args"))
        return self.get_function(f"{name}.type", spec["type"], module, what="type"), {**spec["args"], **kwargs}

    def get_function(self, key: str, name: str, module: ModuleType, what: str = "name") -> Any:
        """The callable `name` in `module` (a loss, a metric, a type), or a ConfigError saying
        which key named an unknown one and the closest known name."""
        found = getattr(module, name, None) if not name.startswith("_") else None
        if not callable(found):
            known = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known[:12])}"
            raise ConfigError(key, f"unknown {what} '{name}' in {module.__name__} ({hint})", source=self.source_of(key))
        return found

    def source_of(self, key: str) -> str:
        return source_of(self._labels, key, self.source)

    # ----------------------------------------------------------------- access
    def __getitem__(self, name: str) -> Any:
        return self._config[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._config.get(name, default)

    def get_logger(self, name: str, verbosity: int | None = None) -> logging.Logger:
        logger = logging.getLogger(name)
        logger.setLevel(LOG_LEVELS[self._config["trainer"]["verbosity"] if verbosity is None else verbosity])
        return logger

    @property
    def config(self) -> dict:
        return self._config

    @property
    def run_id(self) -> str:
        return self.dirs.run_id

    @property
    def save_dir(self) -> Path:
        """Checkpoints of this run: <save_dir>/models/<name>/<run_id>/."""
        return self.dirs.save_dir

    @property
    def log_dir(self) -> Path:
        """Logs of this run: <save_dir>/log/<name>/<run_id>/."""
        return self.dirs.log_dir
