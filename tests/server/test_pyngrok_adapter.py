"""pyngrok's private internals are used in one module only, for a pinned range of versions."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from remote.errors import RemotectlError
from remote.server import pyngrok_adapter

REPO = Path(__file__).resolve().parents[2]


def _declared_range():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requirement = next(line.strip() for line in config["options"]["install_requires"].splitlines()
                       if line.strip().startswith("pyngrok"))
    low = re.search(r">=\s*([\d.]+)", requirement).group(1)
    high = re.search(r"<\s*([\d.]+)", requirement).group(1)
    return tuple(int(p) for p in low.split(".")), tuple(int(p) for p in high.split("."))


def test_setup_cfg_declares_exactly_the_range_the_adapter_supports():
    low, high = _declared_range()
    assert (low, high) == pyngrok_adapter.SUPPORTED


def test_the_installed_pyngrok_is_in_range_and_has_the_internals():
    low, high = pyngrok_adapter.SUPPORTED
    assert low <= pyngrok_adapter.version()[:2] < high
    pyngrok_adapter.check_supported()  # raises if an internal we rely on went away
    from pyngrok import installer, process

    assert isinstance(process._current_processes, dict)
    assert isinstance(installer._print_progress_enabled, bool)


@pytest.mark.parametrize("found", [(6, 1, 2), (10, 0, 0), (11, 2)])
def test_a_pyngrok_outside_the_range_is_refused_with_the_fix(found):
    with pytest.raises(RemotectlError) as caught:
        pyngrok_adapter.check_supported(found)
    assert caught.value.message.startswith(f"pyngrok {'.'.join(map(str, found))} is outside the range")
    assert caught.value.hint == "pip install 'pyngrok>=7.0,<10.0'"


def test_no_other_module_touches_pyngrok_internals():
    for path in (REPO / "remote").rglob("*.py"):
        if path.name == "pyngrok_adapter.py":
            continue
        text = path.read_text()
        assert "_current_processes" not in text and "_print_progress_enabled" not in text, path
