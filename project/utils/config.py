"""Configuration as plain functions: read a file, apply `--set` overrides, compare two configs.

Dict in, dict out: nothing here writes a file, touches the run folders or changes its input.
The schema (defaults, types, did-you-mean) is `utils/schema.py`.
"""
from __future__ import annotations

import json
import re
from copy import deepcopy
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml


class ConfigError(Exception):
    """A mistake in a config: where (file or --set) and which key, in one line (exit 2)."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.key, self.message, self.source = key, message, source

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        key = f"{self.key}: " if self.key else ""
        return f"config error{where}: {key}{self.message}"


class NumberFriendlyLoader(yaml.SafeLoader):
    """YAML as people write configs: `1e-3`, `3E-4`, `.5` and `1_000` are numbers (PyYAML's
    YAML 1.1 rules read `1e-3` as a string), and only true/false are booleans: `on`, `no`,
    `yes` stay words unless the schema wants a boolean there."""


_DROPPED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
NumberFriendlyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
NumberFriendlyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
NumberFriendlyLoader.add_implicit_resolver(  # before float: "10" is an int
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))
NumberFriendlyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def read_config(path: str | Path) -> dict:
    """A JSON or YAML (by suffix) config file as a dict; a malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("", "no such file", source=str(path)) from None
    except OSError as err:
        raise ConfigError("", f"cannot read: {err.strerror}", source=str(path)) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.load(text, Loader=NumberFriendlyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError("", f"malformed YAML{where}: {problem}", source=str(path)) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError("", f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}",
                              source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("", f"the top level must be a mapping, got {type(data).__name__}", source=str(path))
    return data


def parse_override(text: str) -> tuple[list[str], Any, str]:
    """'trainer.epochs=3' -> (['trainer', 'epochs'], 3, '--set trainer.epochs=3'): the value is
    read by the YAML rules above; the label echoes what was typed, for error messages."""
    label = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("", "expected KEY.PATH=VALUE", source=label)
    parts = key.split(".")
    if any(not part for part in parts):
        raise ConfigError(key, "empty part in the key path", source=label)
    try:
        value = yaml.load(raw, Loader=NumberFriendlyLoader) if raw.strip() else None  # noqa: S506
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not a YAML value"
        raise ConfigError(key, f"cannot read the value {raw!r}: {problem}", source=label) from None
    return parts, value, label


def apply_overrides(config: dict, overrides: Iterable[tuple[Sequence[str], Any, str]]) -> dict:
    """A copy of `config` with each (key parts, value, label) set in order; list items by index."""
    out = deepcopy(config)
    for parts, value, label in overrides:
        node: Any = out
        for depth, key in enumerate(parts[:-1]):
            path = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = node[_index(node, key, path, label)]
                continue
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, (dict, list)):
                raise ConfigError(path, f"is {type(node).__name__} {node!r}, not a mapping", source=label)
        if isinstance(node, list):
            node[_index(node, parts[-1], ".".join(parts), label)] = value
        else:
            node[parts[-1]] = value
    return out


def _index(node: list, key: str, path: str, label: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(path, f"no item {key} in a list of {len(node)}", source=label)
    return int(key)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (mappings compared key by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [d for k in keys for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def lookup(config: dict, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def as_changes(modification: dict | Sequence | None) -> list:
    """(key parts, value, label) triples from the classic {'a;b': value} form or a sequence of them."""
    if isinstance(modification, dict):  # the classic form: {'optimizer;args;lr': 0.01}
        return [(k.replace(";", ".").split("."), v, f"--set {k.replace(';', '.')}={v}")
                for k, v in modification.items() if v is not None]
    return list(modification or [])
