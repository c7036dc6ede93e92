"""Red-team tests: the claims of issues 10-12 tried as an attacker, a fault and a new user would.

Server-side tests get the ngrok stand-in and an environment without stray secrets, as tests/server
does; client-side ones a login key made by remotectl's own key code.
"""

from pathlib import Path

import pytest
from helpers.ngrok_standin import isolated_server_env, ngrok_agent  # noqa: F401

from remote import keys


@pytest.fixture(autouse=True)
def _isolated(request):
    return request.getfixturevalue("isolated_server_env")


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("redteam-key") / "id_ed25519"
    keys.write_keypair(path, comment="redteam")
    return path
