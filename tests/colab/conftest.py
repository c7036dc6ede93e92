"""Fixtures for Colab's own route: the stand-in `colab` on an awkward path, a runtime behind a session.

The stand-in's folder name holds a space, `%`, `$` and a single quote on purpose: the
ProxyCommand remotectl writes must survive ssh's `%` expansion and the user's shell. Each
runtime is a real sshd on 127.0.0.1 that starts with an EMPTY authorized_keys: only the key
the stand-in received with `-i` (as Google's endpoint receives it in its pubkey header) can log in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
from helpers.colab_standin import HOME_ENV, MODE_ENV, add_runtime, calls, make_standin
from helpers.sshd import SshServer

from remote import keys
from remote.files import atomic_write

AWKWARD_DIR = "colab dir 100% $HOME 'q'"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STRIPPED = ("REMOTECTL_COLAB", "REMOTECTL_SSH_DIR", "REMOTECTL_DEBUG", MODE_ENV)


@dataclass
class Google:
    """The stand-in's "Google side": the account, its runtimes, and the `colab` on PATH."""

    home: Path
    colab: Path
    env: Dict[str, str]

    def runtime(self, session: str, server: SshServer, accelerator: str = "NONE") -> SshServer:
        add_runtime(self.home, session, server.port, server.authorized_keys_path, accelerator)
        return server

    def spare(self, server: SshServer) -> SshServer:
        add_runtime(self.home, "spare", server.port, server.authorized_keys_path, spare=True)
        return server

    def mode(self, mode: str) -> None:
        path = self.home / "mode"
        if mode:
            path.write_text(mode + "\n")
        elif path.exists():
            path.unlink()

    def sign_out(self) -> None:
        (self.home / "signed-in").unlink()

    def calls(self) -> List[List[str]]:
        return calls(self.home)


@pytest.fixture
def google(tmp_path) -> Google:
    folder = tmp_path / AWKWARD_DIR
    folder.mkdir()
    home = tmp_path / "google"
    home.mkdir()
    (home / "signed-in").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env[HOME_ENV] = str(home)
    env["PATH"] = f"{folder}{os.pathsep}{SYSTEM_PATH}"
    return Google(home=home, colab=make_standin(folder), env=env)


@dataclass
class Login:
    identity: Path
    public_line: str


def _key(folder: Path, name: str) -> Login:
    private, public = keys.generate_ed25519(f"colab-test-{name}")
    identity = folder / name
    atomic_write(identity, private, mode=0o600)
    atomic_write(folder / f"{name}.pub", public + "\n", mode=0o644)
    return Login(identity=identity, public_line=public)


@pytest.fixture
def login(tmp_path) -> Login:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    return _key(folder, "id_ed25519")


@pytest.fixture
def runtime(tmp_path_factory, request) -> SshServer:
    """A runtime's sshd: nothing authorized until the stand-in authorizes the presented key."""
    server = SshServer(tmp_path_factory.mktemp("runtime"))
    request.addfinalizer(server.stop)
    return server.start()


@pytest.fixture
def short_dir(request) -> Path:
    """A private folder with a short path (a control socket's path must stay under ~100 bytes)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="c", dir=os.environ.get("PYTEST_DEBUG_TEMPROOT")))
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder


@pytest.fixture
def runtime_factory(tmp_path_factory, request):
    def make() -> SshServer:
        server = SshServer(tmp_path_factory.mktemp("runtime"))
        request.addfinalizer(server.stop)
        return server.start()
    return make
