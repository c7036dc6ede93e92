"""What runs from a state dir: every process `up` starts, recorded before and as it starts.

`<state>/children.json` (0600) names the owner (the process that runs `up`'s steps and
stops them: the foreground `up`, the supervisor, or the notebook kernel) and each child
(sshd, the tunnel agent). A child is written *before* it is spawned, with a marker: the
consecutive arguments that name this state dir on its command line (`-f <state>/sshd_config`,
`--config <state>/ngrok.yml`, ...), and again once its pid is known (pid + kernel start
time). So a SIGKILL at any moment leaves either a pid to check, or a marker that finds the
process by its own arguments, started within the minute `up` meant to start it; never a
process nobody can find, and never a process found by its name alone.

The record is rewritten atomically at each step and removed only once everything in it
has stopped, so `down`, `status` and the next `up` read the same truth.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from remote.errors import RemotectlError
from remote.files import atomic_write
from remote.server import processes

RECORD = "children.json"
SPAWN_WINDOW_S = 60  # a marker only finds a process started this soon after it was written


@dataclass
class Child:
    """One process `up` started (or was about to start)."""

    marker: List[str]
    expected_at: int  # clock ticks since boot when the marker was written
    pid: Optional[int] = None
    start: Optional[int] = None

    def running(self) -> Dict[int, int]:
        """{pid: start} of the live process(es) this entry names."""
        if self.pid is not None:
            # pid + start time say which process; its arguments must still name our state dir
            # too (sshd's rewritten title keeps them), so no damaged record reaches another one.
            ours = processes.is_alive(self.pid, self.start) and (
                not self.marker or processes.has_arguments(processes.command_line(self.pid), self.marker))
            return {self.pid: self.start} if ours else {}
        slack = processes.ticks_per_second()
        return processes.find_started(self.marker, self.expected_at - slack,
                                      self.expected_at + SPAWN_WINDOW_S * slack)


@dataclass
class Owner:
    pid: int
    start: Optional[int]
    mode: str  # "foreground" | "supervisor" | "kernel"

    def alive(self) -> bool:
        return processes.is_alive(self.pid, self.start)


@dataclass
class Record:
    """children.json: the owner and its children. Each change is written at once."""

    state_dir: Path
    owner: Owner
    children: Dict[str, Child] = field(default_factory=dict)

    # -- the owner's side ----------------------------------------------------------------
    @classmethod
    def create(cls, state_dir: Path, mode: str) -> Record:
        me = os.getpid()
        record = cls(state_dir=state_dir, owner=Owner(pid=me, start=processes.start_time(me), mode=mode))
        record.save()
        return record

    def expect(self, name: str, marker: List[str]) -> None:
        """Call just before spawning `name`: from now on a crash leaves a way to find it."""
        self.children[name] = Child(marker=list(marker), expected_at=processes.ticks_now())
        self.save()

    def started(self, name: str, pid: int) -> None:
        """Call as soon as `name`'s pid is known (idempotent)."""
        child = self.children.get(name)
        start = processes.start_time(pid)
        if child is None:
            child = self.children[name] = Child(marker=[], expected_at=start or processes.ticks_now())
        if child.pid == pid and child.start == start:
            return
        child.pid, child.start = pid, start
        self.save()

    def stopped(self, name: str) -> None:
        """Call once `name` has exited (its owner stopped it, or saw it die)."""
        if self.children.pop(name, None) is not None:
            self.save()

    def pids(self) -> Dict[str, int]:
        """{name: pid} of the children whose pid is known, and the owner."""
        found = {"owner": self.owner.pid}
        found.update({name: child.pid for name, child in self.children.items() if child.pid})
        return found

    def starts(self) -> Dict[str, Optional[int]]:
        found = {"owner": self.owner.start}
        found.update({name: child.start for name, child in self.children.items() if child.pid})
        return found

    # -- file ----------------------------------------------------------------------------
    def save(self) -> None:
        data = {"owner": asdict(self.owner), "children": {k: asdict(v) for k, v in self.children.items()}}
        atomic_write(self.state_dir / RECORD, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o600)

    def remove(self) -> None:
        try:
            (self.state_dir / RECORD).unlink()
        except FileNotFoundError:
            pass

    @classmethod
    def load(cls, state_dir: Path) -> Optional[Record]:
        """The record, or None when nothing was recorded here; a damaged one is an explained error."""
        path = state_dir / RECORD
        try:
            data = json.loads(path.read_text())
            owner = Owner(**data["owner"])
            children = {name: Child(**entry) for name, entry in (data.get("children") or {}).items()}
            _check_types(owner, children)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemotectlError(f"cannot read {path}: {exc}",
                                 f"If no server runs from {state_dir}, remove that file.") from None
        return cls(state_dir=state_dir, owner=owner, children=children)

    # -- anyone's side -------------------------------------------------------------------
    def running(self) -> Dict[str, Dict[int, int]]:
        """{name: {pid: start}} of each recorded child still running (found by pid or marker)."""
        return {name: found for name, child in self.children.items() if (found := child.running())}

    def stop_children(self, grace: float = 5.0) -> Dict[str, int]:
        """Stop every recorded child that still runs; returns {name: pid} of those stopped."""
        stopped: Dict[str, int] = {}
        for name, found in self.running().items():
            for pid, start in found.items():
                if name == "sshd":
                    stop_with_connections(pid, start, grace)
                else:
                    processes.stop(pid, start, grace=grace)
                stopped[name] = pid
        return stopped


def _check_types(owner: Owner, children: Dict[str, Child]) -> None:
    """TypeError unless every field has the type the owner writes (a damaged file is refused
    whole, with the fix, rather than half-used)."""
    def number(value: object, optional: bool = True) -> bool:
        return (value is None and optional) or (isinstance(value, int) and not isinstance(value, bool))

    if not (number(owner.pid, optional=False) and number(owner.start) and isinstance(owner.mode, str)):
        raise TypeError("its owner entry is not one remotectl wrote")
    for name, child in children.items():
        if not (isinstance(child.marker, list) and all(isinstance(m, str) for m in child.marker)
                and number(child.expected_at, optional=False) and number(child.pid) and number(child.start)):
            raise TypeError(f"its entry for {name!r} is not one remotectl wrote")


def stop_with_connections(pid: int, start: Optional[int], grace: float = 5.0) -> bool:
    """Stop sshd's listener, then the per-connection processes it had forked (logged-in sessions)."""
    sessions = {kid: processes.start_time(kid) for kid in processes.children_of(pid)}
    stopped = processes.stop(pid, start, grace=grace)
    for kid, kid_start in sessions.items():
        processes.stop(kid, kid_start, grace=2.0)
    return stopped


class NotTracked:
    """A stand-in record for code run outside `up` (benchmarks, one-off tools): tracks nothing."""

    def expect(self, name: str, marker: List[str]) -> None:
        pass

    def started(self, name: str, pid: int) -> None:
        pass

    def stopped(self, name: str) -> None:
        pass


NOT_TRACKED = NotTracked()
