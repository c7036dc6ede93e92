"""Where the client's files live: the user's ssh folder and the `remotectl/` folder we own in it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from remote.errors import RemotectlError
from remote.files import private_dir


@dataclass(frozen=True)
class SshLayout:
    """Paths derived from one ssh folder (`--ssh-dir`, env REMOTECTL_SSH_DIR, default ~/.ssh)."""

    ssh_dir: Path

    @property
    def user_config(self) -> Path:
        """The user's own config: only our marked Include block is ever written into it."""
        return self.ssh_dir / "config"

    @property
    def managed_dir(self) -> Path:
        return self.ssh_dir / "remotectl"

    @property
    def managed_config(self) -> Path:
        return self.managed_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.managed_dir / "known_hosts"

    @property
    def registry(self) -> Path:
        return self.managed_dir / "hosts.json"

    @property
    def lock_file(self) -> Path:
        return self.managed_dir / ".lock"

    @property
    def default_identity(self) -> Path:
        return self.ssh_dir / "remotectl_ed25519"

    @property
    def is_default(self) -> bool:
        """Whether plain `ssh` reads this folder's config: OpenSSH takes `~` from the passwd
        entry, not $HOME, so a HOME pointed elsewhere does not count."""
        return os.path.normcase(str(self.ssh_dir)) == os.path.normcase(str(system_ssh_dir()))

    def ssh_command(self, name: str) -> str:
        """The `ssh` line that reaches host `name` with this layout (`-F` when not the default)."""
        if self.is_default:
            return f"ssh {name}"
        import shlex

        return f"ssh -F {shlex.quote(str(self.user_config))} {name}"

    def ensure_managed_dir(self) -> Path:
        """Create ~/.ssh (0700 when new) and ~/.ssh/remotectl (always 0700)."""
        try:
            if not self.ssh_dir.exists():
                private_dir(self.ssh_dir)
            return private_dir(self.managed_dir)
        except OSError as exc:  # a file in the way, a read-only disk, a folder of someone else's
            raise RemotectlError(f"cannot make the folder {exc.filename or self.managed_dir}: "
                                 f"{exc.strerror or exc}; nothing was written",
                                 "Give --ssh-dir (or REMOTECTL_SSH_DIR) a folder you can write.") from None


def system_ssh_dir() -> Path:
    """The folder plain `ssh` reads: ~/.ssh of the passwd entry on POSIX, of the profile elsewhere."""
    if os.name == "posix":
        try:
            import pwd

            return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
        except (ImportError, KeyError):
            pass
    return Path.home() / ".ssh"


def layout(ssh_dir: Optional[str] = None) -> SshLayout:
    """The layout for `ssh_dir`, made absolute: ssh expands `~` from passwd, not from $HOME."""
    folder = Path(os.path.expanduser(ssh_dir or "~/.ssh"))
    return SshLayout(Path(os.path.abspath(folder)))
