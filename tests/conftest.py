"""Shared test set-up.

sshd's StrictModes refuses an authorized_keys file under a world-writable folder such
as /tmp, so every test's tmp_path lives under a private (0700) root instead. This must
happen before pytest creates its base temp dir, hence at import time.
"""

import os
from pathlib import Path

_root = Path(os.environ.get("REMOTECTL_TEST_TMP", Path.home() / ".cache" / "remotectl-tests"))
_root.mkdir(parents=True, exist_ok=True)
os.chmod(_root, 0o700)
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(_root))


# -- no test may change a real account --------------------------------------------------------
# The suite may run as root. Password mode changes the served user's system password, so its
# tests run inside a private mount namespace with a copy of /etc (tests/helpers/private_etc.py);
# this check fails the run if the real /etc/shadow or /etc/passwd changed all the same.
import pytest  # noqa: E402

_ACCOUNT_FILES = ("/etc/shadow", "/etc/passwd")


def _account_bytes():
    found = {}
    for name in _ACCOUNT_FILES:
        try:
            with open(name, "rb") as handle:
                found[name] = handle.read()
        except OSError:
            found[name] = None  # unreadable as an ordinary user: nothing here could change it either
    return found


@pytest.fixture(scope="session", autouse=True)
def _real_accounts_untouched():
    before = _account_bytes()
    yield
    changed = [name for name, data in _account_bytes().items() if data != before[name]]
    assert not changed, f"the test run changed {', '.join(changed)}: a test touched a real account"


@pytest.fixture
def etc(tmp_path):
    """A private copy of /etc in its own mount namespace (password tests); the real /etc/shadow is
    checked unchanged after each test, not only at the end of the run."""
    from helpers.private_etc import PrivateEtc

    real = open("/etc/shadow", "rb").read()
    with PrivateEtc(tmp_path / "ns") as private:
        yield private
    assert open("/etc/shadow", "rb").read() == real, "the real /etc/shadow changed"


# -- the long runs first -------------------------------------------------------------------------
def pytest_collection_modifyitems(config, items):
    """With several workers (`-n`), a 30 s test handed out last is the whole run's tail: the
    tests marked slow are handed out first (a stable sort keeps each group's order)."""
    if getattr(config.option, "numprocesses", None):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
