"""The first minutes of a new user: typing `remotectl` alone, then each command's `--help`.
Bare `remotectl` printed its help as `remotectl: error: Usage: ...` with exit 2 (click >= 8.2
raises for a group called without a command)."""

from __future__ import annotations

import re

import pytest
from _redteam import remotectl


def test_bare_remotectl_prints_its_help_not_an_error():
    result = remotectl()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: remotectl [OPTIONS] COMMAND [ARGS]...")
    assert "connect" in result.stdout and result.stderr == ""


@pytest.mark.slow
def test_every_command_answers_help_on_stdout():
    listing = remotectl("--help").stdout
    commands = re.findall(r"^  ([a-z][a-z-]+)  ", listing.split("Commands:", 1)[1], re.M)
    assert {"connect", "pull", "up", "down", "status", "doctor"} <= set(commands), commands
    for command in commands:
        result = remotectl(command, "--help")
        assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
        assert result.stdout.startswith(f"Usage: remotectl {command} "), (command, result.stdout[:80])
