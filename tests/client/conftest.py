"""Fixtures for the user's end: a real sshd, a client key, and the CLI run for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.sshd import SshServer

from remote import keys


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    """A login key pair made by remotectl's own key code (the private file's path)."""
    path = tmp_path_factory.mktemp("client-key") / "id_ed25519"
    keys.write_keypair(path, comment="test-client")
    return path


@pytest.fixture
def sshd(tmp_path_factory, request, client_key) -> SshServer:
    """A started sshd on 127.0.0.1 that accepts `client_key` for root."""
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    request.addfinalizer(server.stop)
    server.authorize(client_key.with_name(client_key.name + ".pub").read_text())
    return server.start()


@pytest.fixture
def ssh_dir(tmp_path) -> Path:
    """The ssh folder remotectl manages in this test (not created: connect must cope)."""
    return tmp_path / "dot-ssh"


