"""Server tests: the ngrok stand-in's fixtures, and an environment with no stray secrets.

tests/ is on sys.path already (tests/conftest.py sits there without an __init__.py).
"""

import pytest
from helpers.ngrok_standin import isolated_server_env, ngrok_agent  # noqa: F401


@pytest.fixture(autouse=True)
def _isolated(request):
    return request.getfixturevalue("isolated_server_env")
