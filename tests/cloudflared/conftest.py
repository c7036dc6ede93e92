"""Fixtures for the cloudflared tests: a stand-in `cloudflared` on an awkward path, a real sshd.

The stand-in's folder name holds a space, `%`, `$` and a single quote on purpose: the
ProxyCommand that remotectl writes must survive ssh's `%` expansion and the shell.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import pytest
from helpers.cloudflared_standin import MODE_ENV, REGISTRY_ENV, make_standin
from helpers.sshd import SshServer

from remote import keys
from remote.files import atomic_write

AWKWARD_DIR = "cf dir 100% $HOME 'q'"


@dataclass
class StandIn:
    path: Path
    registry: Path
    env: Dict[str, str]

    def with_mode(self, mode: str) -> Dict[str, str]:
        return {**self.env, MODE_ENV: mode}

    def entries(self) -> list:
        return sorted(p.name for p in self.registry.iterdir())


@pytest.fixture
def standin(tmp_path) -> StandIn:
    folder = tmp_path / AWKWARD_DIR
    folder.mkdir()
    registry = tmp_path / "registry"
    registry.mkdir()
    env = {k: v for k, v in os.environ.items() if k != MODE_ENV}
    env[REGISTRY_ENV] = str(registry)
    return StandIn(path=make_standin(folder), registry=registry, env=env)


@dataclass
class Login:
    identity: Path
    public_line: str


@pytest.fixture
def login(tmp_path) -> Login:
    private, public = keys.generate_ed25519("cloudflared-test")
    identity = tmp_path / "id_ed25519"
    atomic_write(identity, private, mode=0o600)
    return Login(identity=identity, public_line=public)


@pytest.fixture
def sshd(tmp_path_factory, request, login) -> SshServer:
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    request.addfinalizer(server.stop)
    server.authorize(login.public_line)
    return server.start()
