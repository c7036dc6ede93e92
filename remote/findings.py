"""One doctor finding, for both ends: what was looked at, its state, and the fix to run.

`remote/client/doctor.py` (the user's computer) and `remote/server/doctor.py` (the remote
machine) both report these, so `remotectl doctor` prints and serialises them one way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

OK, PROBLEM, NOTE = "ok", "problem", "note"


@dataclass
class Finding:
    check: str  # what was looked at, e.g. "ssh config", "host colab", "sshd"
    status: str  # ok | problem (the connection would fail, or leaks: exit 1) | note (worth knowing)
    detail: str
    fix: Optional[str] = None

    def as_dict(self) -> dict:
        return asdict(self)
