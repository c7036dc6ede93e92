"""A mount namespace whose /etc is a private copy, for everything that changes a password.

Password mode sets the served user's system password (root's, when the suite runs as root)
with chpasswd and keeps its machine-wide record in /etc/remotectl. Tests and benchmarks
must never change a real account, so they run those commands inside this namespace:

    with PrivateEtc(folder) as etc:
        etc.run([*CLI, "up", ...])            # nsenter'd: sees the copy as /etc
        etc.popen([...])                      # the same, as a Popen
        etc.shadow_line("root")               # root's line in the copy's shadow file
        etc.path("remotectl/password-restore.json")   # a path of the copy, from outside

A holder process (`unshare --mount --propagation private`, then `mount --bind COPY /etc`)
keeps the namespace alive; commands join it with `nsenter --mount`. Everything started
inside (sshd, the supervisor) stays inside. `start()` checks that the namespace's
/etc/shadow really is another file than the real one before anything runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

_HOLD = 'mount --bind "$1" /etc && echo ready && exec sleep 1000000'


def available() -> bool:
    """Root with unshare and nsenter (the suite's usual setting; CI runs as root)."""
    return os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("nsenter"))


class PrivateEtc:
    def __init__(self, folder: os.PathLike) -> None:
        self.folder = Path(folder)
        self.copy = self.folder / "etc"
        self.holder: Optional[subprocess.Popen] = None

    def __enter__(self) -> PrivateEtc:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self) -> PrivateEtc:
        if not available():
            raise RuntimeError("password tests need root, unshare and nsenter (util-linux)")
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "/etc", str(self.copy)], check=True, capture_output=True)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _HOLD, "sh", str(self.copy)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            raise RuntimeError("could not make a private /etc: " + (self.holder.stderr.read() or "")[:500])
        inside = os.stat(f"/proc/{self.holder.pid}/root/etc/shadow")
        outside = os.stat("/etc/shadow")
        if (inside.st_dev, inside.st_ino) == (outside.st_dev, outside.st_ino):
            self.stop()
            raise RuntimeError("the namespace's /etc/shadow is the real one; refusing to go on")
        return self

    def argv(self, command: Sequence[str]) -> List[str]:
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--", *command]

    def run(self, command: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 180)
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(command), **kwargs)

    def popen(self, command: Sequence[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(command), **kwargs)

    def path(self, relative: str) -> Path:
        """A file of the private /etc, as seen from outside the namespace."""
        return self.copy / relative

    def shadow_line(self, user: str) -> str:
        for line in self.path("shadow").read_text().splitlines():
            if line.startswith(user + ":"):
                return line
        raise KeyError(user)

    def shadow_hash(self, user: str) -> str:
        return self.shadow_line(user).split(":")[1]

    def stop(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait(10)
        shutil.rmtree(self.copy, ignore_errors=True)
