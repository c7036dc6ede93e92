"""Fixtures for following a moving runtime: a real sshd whose host key signs records, a laptop.

Real parts: sshd on 127.0.0.1 (helpers/sshd.py, or remotectl's own `up` in the slow tests),
the OpenSSH client running the written ProxyCommand, paramiko for `check`, the CLI in a
subprocess. Stand-ins: ngrok's agent and cloud API only (helpers/fake_ngrok.py, ngrok_api.py).
"""

from __future__ import annotations

import pytest
from _followkit import Laptop, Runtime
from helpers.ngrok_standin import isolated_server_env, ngrok_agent  # noqa: F401
from helpers.sshd import SshServer

from remote import keys


@pytest.fixture(autouse=True)
def _isolated(request):
    return request.getfixturevalue("isolated_server_env")


@pytest.fixture
def laptop(tmp_path) -> Laptop:
    folder = tmp_path / "laptop"
    folder.mkdir(mode=0o700)
    identity = folder / "id_ed25519"
    public = keys.write_keypair(identity, comment="follow-test")
    return Laptop(ssh_dir=folder / "dot-ssh", identity=identity, public=public)


@pytest.fixture
def runtime(tmp_path_factory, request, laptop) -> Runtime:
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    request.addfinalizer(server.stop)
    server.authorize(laptop.public)
    server.start()
    persist = tmp_path_factory.mktemp("persist")
    rt = Runtime(server, persist)
    rt.publish(seq=100)
    return rt
