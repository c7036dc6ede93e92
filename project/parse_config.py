"""ConfigParser: the classic template's config object and factory (`init_obj`, `init_ftn`).

Reading, overriding and checking a config are plain functions (utils/config.py,
utils/schema.py); run folders and resume lookup are utils/runs.py. This class ties them to
one run and builds the objects a config names, with errors that say where the name came from.
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
from utils import checkpoint as ckpt
from utils import dist, runs
from utils.config import ConfigError, as_changes, parse_override, read_config
from utils.schema import effective_config, source_of

__all__ = ["ConfigParser", "ConfigError"]
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
RESUME_ADVICE = {
    "classic": " (it pickles its ConfigParser): it cannot be resumed here; start a new run from its weights with "
               "-c CONFIG --init-from CKPT --trust-checkpoint (only if you trust the file)",
    "weights": "; start a new run from these weights with -c CONFIG --init-from CKPT",
}


class ConfigParser:
    def __init__(self, config: dict, resume: str | Path | None = None, modification: dict | Sequence | None = None,
                 run_id: str | None = None, *, source: str = "<config>", env: dist.DistEnv | None = None,
                 dirs: runs.RunDirs | None = None) -> None:
        """`modification`: {'a;b;c': value} as in the classic template (None = not given), or
        (key parts, value, label) triples from parse_override. Reads the disk, writes nothing."""
        self.source, self.dist = source, env or dist.DistEnv()
        self._config, self._labels = effective_config(config, as_changes(modification), source)
        self.resume = Path(resume) if resume else None
        self.dirs = dirs or runs.plan(self._config, self.resume, run_id)
        setup_logging(self.dist.rank)
        if "n_gpu" in self._config and self.dist.is_main:
            logging.getLogger("config").warning(
                "n_gpu is the classic template's key and is ignored here: choose the device with -d "
                "(cuda, cuda:1, cpu) and train on N GPUs with torchrun --nproc_per_node=N project/train.py ...")

    @classmethod
    def from_args(cls, args: argparse.ArgumentParser | argparse.Namespace, options: Sequence = (),
                  env: dist.DistEnv | None = None) -> ConfigParser:
        """Build the run's config from the command line: -c, -r (a path or 'auto'), --run-id,
        --set and the custom options (flags, type, target)."""
        if not isinstance(args, argparse.Namespace):
            for opt in options:
                args.add_argument(*opt.flags, default=None, type=opt.type, help=f"sets {opt.target.replace(';', '.')}")
            args = args.parse_args()
        env = env or dist.DistEnv()
        changes = [(opt.target.split(";"), getattr(args, _dest(opt.flags)),
                    f"{opt.flags[0]} {getattr(args, _dest(opt.flags))}")
                   for opt in options if getattr(args, _dest(opt.flags), None) is not None]
        changes += [parse_override(text) for text in getattr(args, "set", None) or []]
        resume, run_id = args.resume, getattr(args, "run_id", None)
        if resume == "auto":
            if not args.config:
                raise ConfigError("", "--resume auto needs -c CONFIG to know which experiment to continue",
                                  source="command line")
            config, source = read_config(args.config), str(args.config)
            probe, _ = effective_config(config, changes, source)
            resume, found_id = runs.find_auto_resume(probe, run_id)
            if resume is not None and run_id is None:
                runs.check_same_experiment(probe, resume)
            run_id = run_id or found_id
        elif resume:
            resume = Path(resume)
            if not resume.is_file():
                raise ConfigError("", f"no checkpoint file at {resume}", source="--resume")
            try:
                stored = ckpt.open_checkpoint(resume)["config"]
            except ckpt.NotOurCheckpoint as err:
                raise ConfigError("", f"{err}{RESUME_ADVICE.get(err.kind, '')}", source="--resume") from None
            config, source = (read_config(args.config), str(args.config)) if args.config else \
                (stored, f"{resume} (its stored config)")
        else:
            if not args.config:
                raise ConfigError("", "give a config file with -c, or a checkpoint with -r", source="command line")
            config, source = read_config(args.config), str(args.config)
        resume = Path(resume) if resume else None
        dirs = dist.broadcast(runs.plan(effective_config(config, changes, source)[0], resume, run_id), env)
        return cls(config, resume, changes, source=source, env=env, dirs=dirs)  # one plan for all ranks

    # ----------------------------------------------------------------- the run's folders
    def open_run(self) -> None:
        """Create the run folders and config.json (rank 0), start info.log; called once every
        check has passed."""
        if self.dist.is_main:
            source_log = self.dirs.log_dir.parent / self.dirs.branch_of.name if self.dirs.branch_of else None
            runs.create(self.dirs, self._config, source_log)
            attach_log_file(self.dirs.log_dir)
        dist.barrier(self.dist)

    def discard_if_unused(self) -> None:
        """After a failure before the first checkpoint, remove the folders open_run made."""
        close_logging()
        runs.discard_if_unused(self.dirs)

    # ----------------------------------------------------------------- factory
    def init_obj(self, name: str, module: ModuleType, *args: Any, **kwargs: Any) -> Any:
        """`self[name]` is {type, args}: build `module.<type>(*args, **config_args, **kwargs)`."""
        target, merged = self._resolve(name, module, kwargs)
        try:
            inspect.signature(target).bind(*args, **merged)
        except TypeError as err:
            raise ConfigError(f"{name}.args", f"{_name(target)}: {err}", source=self.source_of(f"{name}.args")) from None
        except ValueError:  # no signature available (some builtins): let the call decide
            pass
        try:
            return target(*args, **merged)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{name}.args", f"{_name(target)}: {err}", source=self.source_of(f"{name}.args")) from None

    def init_ftn(self, name: str, module: ModuleType, *args: Any, **kwargs: Any) -> partial:
        """Like init_obj, but returns the function with its arguments bound."""
        target, merged = self._resolve(name, module, kwargs)
        return partial(target, *args, **merged)

    def _resolve(self, name: str, module: ModuleType, kwargs: dict) -> tuple[Any, dict]:
        spec = self[name]
        target = self.get_function(f"{name}.type", spec["type"], module, what="type")
        clash = sorted(k for k in set(kwargs) & set(spec["args"]) if spec["args"][k] != "auto")
        if clash:  # the code's value would silently win (an `auto` in the config asks for it)
            raise ConfigError(f"{name}.args.{clash[0]}", "is set by train.py; remove it from the config",
                              source=self.source_of(f"{name}.args"))
        return target, {**spec["args"], **kwargs}

    def get_function(self, key: str, name: str, module: ModuleType, what: str = "name") -> Any:
        """The callable `name` in `module` (a loss, a metric, a type), or a ConfigError saying
        which key named an unknown one and the closest known name."""
        found = getattr(module, name, None) if not name.startswith("_") else None
        if found is None or not callable(found):
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


def _dest(flags: Sequence[str]) -> str:
    return next((f for f in flags if f.startswith("--")), flags[0]).lstrip("-").replace("-", "_")


def _name(target: Any) -> str:
    return getattr(target, "__name__", type(target).__name__)
