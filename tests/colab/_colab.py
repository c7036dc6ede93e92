"""Helpers shared by the Colab route's tests: a hand-pinned ssh config and polling."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

from helpers.sshd import SshServer


def wait_for(predicate: Callable[[], bool], deadline_s: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pinned_config(folder: Path, proxy_command: str, identity: Path, server: SshServer,
                  alias: str = "h", extra: Sequence[Tuple[str, str]] = ()) -> Path:
    """An `ssh -F` file around `proxy_command` with the runtime's host key pinned (strict)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    known = folder / "known_hosts"
    known.write_text(f"pin-{alias} {server.host_public_key}\n")
    config = folder / "config"
    config.write_text("\n".join([
        f"Host {alias}",
        "    HostName colab-runtime",
        "    User root",
        f"    IdentityFile \"{str(identity).replace('%', '%%')}\"",
        "    IdentitiesOnly yes",
        f"    HostKeyAlias pin-{alias}",
        f"    UserKnownHostsFile \"{known}\"",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
        "    ConnectTimeout 30",
        f"    ProxyCommand {proxy_command}",
    ] + [f"    {key} {value}" for key, value in extra]) + "\n")
    os.chmod(config, 0o600)
    return config


def ssh(config: Path, alias: str, *args: str, env: Dict[str, str], timeout: float = 90,
        **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(config), *args[:-1], alias, *args[-1:]] if args else
                          ["ssh", "-F", str(config), alias], capture_output=True, text=True,
                          timeout=timeout, env=env, **({"stdin": subprocess.DEVNULL} | kwargs))
