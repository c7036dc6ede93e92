"""ConfigParser: the config file, command-line overrides, run folders, and the object factory.

Same vocabulary as the classic PyTorch template (`init_obj`, `init_ftn`, `get_logger`,
`save_dir`, `log_dir`), plus: YAML as well as JSON, `--set a.b.c=VALUE` overrides, a
schema check that names the key and the file, `--resume auto`, collision-free run ids,
and a run that continues in its own folder when resumed.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import json
import logging
import os
import shutil
from copy import deepcopy
from datetime import datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import yaml

from logger import setup_logging
from utils import checkpoint as ckpt
from utils import dist
from utils.config_check import ConfigError, validate
from utils.util import repo_path, resolve_device

__all__ = ["ConfigParser", "ConfigError", "load_config_file", "parse_override"]


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML (by suffix) config; a malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("", "no such file", source=str(path)) from None
    except OSError as err:
        raise ConfigError("", f"cannot read: {err.strerror}", source=str(path)) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError("", f"malformed YAML{where}: {problem}", source=str(path)) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                "", f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}", source=str(path)
            ) from None
    if not isinstance(data, dict):
        raise ConfigError("", f"the top level must be a mapping, got {type(data).__name__}", source=str(path))
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'trainer.epochs=3' -> (['trainer', 'epochs'], 3); the value is typed by YAML rules."""
    source = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("", "expected KEY.PATH=VALUE", source=source)
    parts = key.split(".")
    if any(not part for part in parts):
        raise ConfigError(key, "empty part in the key path", source=source)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not a YAML value"
        raise ConfigError(key, f"cannot read the value {raw!r}: {problem}", source=source) from None
    return parts, value


def set_by_path(tree: dict, keys: Sequence[str], value: Any, source: str) -> None:
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        path = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, key, path, source)]
            continue
        if key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, (dict, list)):
            raise ConfigError(path, f"is {type(node).__name__} {node!r}, not a mapping", source=source)
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(keys), source)] = value
    else:
        node[last] = value


def _list_index(node: list, key: str, path: str, source: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(path, f"no item {key} in a list of {len(node)}", source=source)
    return int(key)


def new_run_id() -> str:
    """A timestamp with the year and microseconds: sorts by time, no clash within a second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")


class ConfigParser:
    def __init__(
        self,
        config: dict,
        resume: str | Path | None = None,
        modification: dict | Sequence[tuple[str, Any]] | None = None,
        run_id: str | None = None,
        source: str = "<config>",
        device: str = "cpu",
        dist_env: dist.DistEnv | None = None,
        create_dirs: bool = True,
        reuse_run: bool = False,
    ) -> None:
        """`modification`: {'a;b;c': value} as in the classic template (None = not given),
        or (key path, value) pairs applied in order (None = set to null)."""
        self.source = source
        self.dist = dist_env or dist.DistEnv()
        self._config = deepcopy(dict(config))
        self._overridden: dict[str, str] = {}
        for parts, value, label in _modifications(modification):
            set_by_path(self._config, parts, value, label)
            self._overridden[".".join(parts)] = label
        self._validate()
        self.resume = Path(resume) if resume else None
        self.device = _device(device, self.dist.local_rank)

        trainer = self._config["trainer"]
        root = repo_path(trainer["save_dir"])
        name = self._config["name"]
        if self.resume is not None:
            self._save_dir = self.resume.resolve().parent
            self.run_id = self._save_dir.name
        else:
            self.run_id = run_id or new_run_id()
            self._save_dir = root / "models" / name / self.run_id
        self._log_dir = root / "log" / name / self.run_id
        if create_dirs and self.dist.is_main:
            self._make_dirs(explicit_id=run_id is not None, reuse_run=reuse_run)
            self._write_effective_config()
        if create_dirs:
            dist.barrier(self.dist)
            setup_logging(self._log_dir if self.dist.is_main else None, rank=self.dist.rank)
        self.log_levels = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_args(cls, args: argparse.ArgumentParser, options: Sequence = (), argv: Sequence[str] | None = None):
        """Parse the command line, start torch.distributed under torchrun, build the config."""
        for opt in options:
            args.add_argument(*opt.flags, default=None, type=opt.type, help=f"sets {opt.target.replace(';', '.')}")
        if not isinstance(args, argparse.Namespace):
            args = args.parse_args(argv)
        env = dist.from_environment()
        device = _device(args.device or "auto", env.local_rank)
        dist.init(env, device)

        changes: list[tuple[str, Any]] = [
            (opt.target, getattr(args, _dest(opt.flags)))
            for opt in options
            if getattr(args, _dest(opt.flags)) is not None
        ]
        changes += [(".".join(parts), value) for parts, value in map(parse_override, getattr(args, "set", None) or [])]

        resume = args.resume
        run_id = getattr(args, "run_id", None)
        reuse_run = False
        if resume == "auto":
            if not args.config:
                raise ConfigError("", "--resume auto needs -c CONFIG to know which experiment to continue",
                                  source="command line")
            config, source = load_config_file(args.config), str(args.config)
            resume, run_id = dist.broadcast(_find_auto_resume(config, changes, source, run_id), env)
            reuse_run = True
        elif resume:
            resume = Path(resume)
            if not resume.is_file():
                raise ConfigError("", f"no checkpoint file at {resume}", source="--resume")
            if not ckpt.is_valid(resume):
                raise ConfigError("", f"{resume} is not a complete checkpoint", source="--resume")
            if args.config:
                config, source = load_config_file(args.config), str(args.config)
            else:
                config, source = ckpt.load(resume)["config"], f"{resume} (its stored config)"
        else:
            if not args.config:
                raise ConfigError("", "give a config file with -c, or a checkpoint with -r", source="command line")
            config, source = load_config_file(args.config), str(args.config)
        if not resume and run_id is None:
            run_id = dist.broadcast(new_run_id(), env)

        return cls(
            config,
            resume=resume,
            modification=changes,
            run_id=run_id,
            source=source,
            device=args.device or "auto",
            dist_env=env,
            reuse_run=reuse_run,
        )

    def _validate(self) -> None:
        try:
            validate(self._config)
        except ConfigError as err:
            err.source = self._source_of(err.key)
            raise

    def _source_of(self, key: str) -> str:
        key = key.replace("[", ".").replace("]", "")
        for path, label in self._overridden.items():
            if key == path or key.startswith(path + ".") or path.startswith(key + ".") and key:
                return label
        return self.source

    def _make_dirs(self, explicit_id: bool, reuse_run: bool) -> None:
        if self.resume is None and explicit_id and not reuse_run and _has_checkpoints(self._save_dir):
            raise ConfigError(
                "",
                f"run '{self.run_id}' already has checkpoints in {self._save_dir}; "
                "continue it with --resume auto, or choose another --run-id",
                source="--run-id",
            )
        self._fresh = not self._save_dir.exists() and not self._log_dir.exists()
        while True:
            try:
                self._save_dir.mkdir(parents=True, exist_ok=explicit_id or self.resume is not None)
                break
            except FileExistsError:  # two runs started in the same microsecond
                self.run_id = new_run_id()
                self._save_dir = self._save_dir.parent / self.run_id
                self._log_dir = self._log_dir.parent / self.run_id
        self._log_dir.mkdir(parents=True, exist_ok=True)

    def discard_if_unused(self) -> None:
        """After a failure before the first checkpoint, remove the run folders this
        process created (nothing else: a resumed or reused run keeps everything)."""
        if not getattr(self, "_fresh", False) or _has_checkpoints(self._save_dir):
            return
        logging.shutdown()
        for folder in (self._save_dir, self._log_dir):
            shutil.rmtree(folder, ignore_errors=True)

    def _write_effective_config(self) -> None:
        target = self._save_dir / "config.json"
        tmp = target.with_name(f".tmp-config.json.{os.getpid()}")
        tmp.write_text(json.dumps(self._config, indent=4) + "\n")
        os.replace(tmp, target)

    # ----------------------------------------------------------------- factory
    def init_obj(self, name: str, module: ModuleType, *args: Any, **kwargs: Any) -> Any:
        """`self[name]` is {type, args}: build `module.<type>(*args, **config_args, **kwargs)`."""
        cls, module_args = self._resolve(name, module, kwargs)
        return self._call(f"{name}.args", cls, args, module_args)

    def init_ftn(self, name: str, module: ModuleType, *args: Any, **kwargs: Any) -> partial:
        """Like init_obj, but returns the function with its arguments bound."""
        func, module_args = self._resolve(name, module, kwargs)
        return partial(func, *args, **module_args)

    def _resolve(self, name: str, module: ModuleType, kwargs: dict) -> tuple[Any, dict]:
        """The callable `self[name].type` names and its config args merged with the caller's
        (a key set on both sides is a config mistake: the code's value would silently win)."""
        spec = self[name]
        target = self._lookup(f"{name}.type", spec["type"], module)
        module_args = dict(spec.get("args") or {})
        clash = sorted(set(kwargs) & set(module_args))
        if clash:
            raise ConfigError(f"{name}.args.{clash[0]}", "is set by train.py; remove it from the config",
                              source=self._source_of(f"{name}.args"))
        module_args.update(kwargs)
        return target, module_args

    def get_function(self, key: str, name: str, module: ModuleType) -> Any:
        """A function named by a plain string in the config (`loss`, `metrics[i]`)."""
        return self._lookup(key, name, module)

    def _lookup(self, key: str, type_name: str, module: ModuleType) -> Any:
        found = getattr(module, type_name, None) if not type_name.startswith("_") else None
        if found is None or not callable(found):
            known = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            close = difflib.get_close_matches(type_name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known[:12])}"
            raise ConfigError(key, f"unknown type '{type_name}' in {module.__name__} ({hint})",
                              source=self._source_of(key))
        return found

    def _call(self, key: str, target: Any, args: tuple, kwargs: dict) -> Any:
        try:
            inspect.signature(target).bind(*args, **kwargs)
        except TypeError as err:
            raise ConfigError(key, f"{_name(target)}: {err}", source=self._source_of(key)) from None
        except ValueError:  # no signature available (some builtins): let the call decide
            pass
        try:
            return target(*args, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(key, f"{_name(target)}: {err}", source=self._source_of(key)) from None

    # ----------------------------------------------------------------- access
    def __getitem__(self, name: str) -> Any:
        return self._config[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._config.get(name, default)

    def get_logger(self, name: str, verbosity: int = 2) -> logging.Logger:
        if verbosity not in self.log_levels:
            raise ConfigError("trainer.verbosity", f"expected 0, 1 or 2, got {verbosity!r}", source=self.source)
        logger = logging.getLogger(name)
        logger.setLevel(self.log_levels[verbosity])
        return logger

    @property
    def config(self) -> dict:
        return self._config

    @property
    def save_dir(self) -> Path:
        """Checkpoints of this run: <save_dir>/models/<name>/<run_id>/."""
        return self._save_dir

    @property
    def log_dir(self) -> Path:
        """Logs of this run: <save_dir>/log/<name>/<run_id>/."""
        return self._log_dir


def _modifications(modification: dict | Sequence[tuple[str, Any]] | None):
    """(key parts, value, label) for each change to apply, in order."""
    if not modification:
        return []
    pairs = [(k, v) for k, v in modification.items() if v is not None] if isinstance(modification, dict) \
        else list(modification)
    out = []
    for key, value in pairs:
        parts = key.replace(";", ".").split(".")
        shown = "null" if value is None else value
        out.append((parts, value, f"--set {'.'.join(parts)}={shown}"))
    return out


def _device(name: str, local_rank: int):
    try:
        return resolve_device(name, local_rank)
    except ValueError as err:
        raise ConfigError("", str(err), source="--device") from None


def _dest(flags: Sequence[str]) -> str:
    long = next((f for f in flags if f.startswith("--")), flags[0])
    return long.lstrip("-").replace("-", "_")


def _name(target: Any) -> str:
    return getattr(target, "__name__", type(target).__name__)


def _has_checkpoints(folder: Path) -> bool:
    return bool(ckpt.epoch_checkpoints(folder)) or (folder / ckpt.BEST_NAME).exists()


def _find_auto_resume(config: dict, changes: Sequence[tuple[str, Any]], source: str, run_id: str | None):
    """(checkpoint or None, run id) for --resume auto: the newest valid checkpoint of
    the given run id, or of the latest run of this experiment; none found = fresh start."""
    probe = deepcopy(config)
    for parts, value, label in _modifications(changes):
        set_by_path(probe, parts, value, label)
    name = probe.get("name")
    trainer = probe.get("trainer") if isinstance(probe.get("trainer"), dict) else {}
    if not isinstance(name, str) or not name:
        raise ConfigError("name", "missing key", source=source)
    models = repo_path(trainer.get("save_dir") or "saved/") / "models" / name
    if run_id is not None:
        return ckpt.newest_valid(models / run_id), run_id
    found = ckpt.latest_run_checkpoint(models)
    if found is not None:
        return found, found.parent.name
    return None, new_run_id()
