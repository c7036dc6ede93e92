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
