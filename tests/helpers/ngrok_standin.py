"""The ngrok stand-in for tests: an executable wrapper around fake_ngrok.py, and fixtures.

`tests/` is on sys.path in every test (tests/conftest.py has no package around it), so
`from helpers.ngrok_standin import ngrok_agent, isolated_server_env` works from tests/e2e too;
helpers.sshkit has the client side (pinned ssh -F config, CLI runner, leftover checks).

Fixtures (import them into a conftest.py or test module: `from helpers.ngrok_standin import *`):

    isolated_server_env   autouse-able: removes NGROK_AUTHTOKEN / REMOTECTL_* from the
                          environment and points PYNGROK_NGROK_PATH at a missing file, so a test
                          that forgot the stand-in fails clearly instead of downloading ngrok
    ngrok_agent           -> Path of an executable stand-in agent; sets PYNGROK_NGROK_PATH to it

Functions: `write_agent(folder) -> Path` (the same wrapper, for scripts such as
scripts/bench_up.py). Choose a failure variant with the token's prefix (`bad...` ->
ERR_NGROK_105, `nocard...` -> ERR_NGROK_8013, `silent...` -> an agent that never speaks) or
with FAKE_NGROK_MODE; FAKE_NGROK_ARGV_LOG=<file> records every argv the agent got.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

STANDIN = Path(__file__).with_name("fake_ngrok.py")
GOOD_TOKEN = "2fakeTokenGood_0123456789abcdefABCDEF"
BAD_TOKEN = "bad_0123456789abcdef_wrongtoken"
NOCARD_TOKEN = "nocard_0123456789abcdef_nocardtoken"


def write_agent(folder: os.PathLike) -> Path:
    """An executable `ngrok` in `folder` that runs the stand-in with this Python (no PATH lookup)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    agent = folder / "ngrok"
    agent.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    agent.chmod(0o755)
    return agent


@pytest.fixture
def isolated_server_env(monkeypatch, tmp_path_factory):
    for name in ("NGROK_AUTHTOKEN", "REMOTECTL_AUTHORIZED_KEY", "REMOTECTL_PASSWORD",
                 "REMOTECTL_STATE_DIR", "FAKE_NGROK_MODE", "NGROK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path_factory.mktemp("no-agent") / "ngrok-not-installed"
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(missing))
    return missing


@pytest.fixture
def ngrok_agent(monkeypatch, tmp_path_factory) -> Path:
    agent = write_agent(tmp_path_factory.mktemp("ngrok-agent"))
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(agent))
    return agent
