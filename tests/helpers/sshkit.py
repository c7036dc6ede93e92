"""Client-side helpers for server tests: real OpenSSH client, pinned host keys, subprocess CLI.

    client_key(folder) -> (private key path, public line)
    pinned_ssh_config(folder, info, key) -> Path of an `ssh -F` file with host alias "remote",
        the card's host key pinned under HostKeyAlias remotectl-<session> in its own known_hosts,
        StrictHostKeyChecking yes, BatchMode yes, publickey only
    ssh(config, command, *extra) -> CompletedProcess of `ssh -F config remote command`
    remotectl(*args, env=None, timeout=...) -> CompletedProcess of the CLI in a subprocess
    up_detached(state_dir, *args, env=None) -> the JSON `remotectl up --detach --json` printed
    assert_all_gone(info) -> every recorded pid has exited and the local port is free
    cmdlines() -> every process's argv as text (for secret scans)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

from remote.keys import write_keypair
from remote.server.processes import port_is_free

CLI = [sys.executable, "-c", "import sys; from remote.cli import main; main(sys.argv[1:])"]


def client_key(folder: Path, name: str = "id_test") -> Tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / name
    public = write_keypair(path, comment="remotectl-test")
    return path, public


def pinned_ssh_config(folder: Path, info: Dict, key: Optional[Path], alias: str = "remote") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    known = folder / "known_hosts"
    hka = f"remotectl-{info['session']}"
    known.write_text(f"{hka} {info['host_key']}\n")
    empty = folder / "global_known_hosts"
    empty.write_text("")
    lines = [
        f"Host {alias}",
        f"  HostName {info['host']}",
        f"  Port {info['port']}",
        f"  User {info['user']}",
        f"  HostKeyAlias {hka}",
        f"  UserKnownHostsFile {known}",
        f"  GlobalKnownHostsFile {empty}",
        "  StrictHostKeyChecking yes",
        "  CheckHostIP no",
        "  BatchMode yes",
        "  IdentitiesOnly yes",
        "  PreferredAuthentications publickey",
        "  PasswordAuthentication no",
        "  ConnectTimeout 20",
        "  LogLevel ERROR",
    ]
    if key is not None:
        lines.append(f"  IdentityFile {key}")
    config = folder / "ssh_config"
    config.write_text("\n".join(lines) + "\n")
    os.chmod(config, 0o600)
    return config


def ssh(config: Path, command: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(config), *extra, "remote", command],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def remotectl(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
              input: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ), input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def up_detached(state_dir: Path, *args: str, env: Optional[Dict[str, str]] = None) -> Dict:
    result = remotectl("up", "--detach", "--json", "--state-dir", str(state_dir), *args, env=env)
    assert result.returncode == 0, f"up failed ({result.returncode}):\n{result.stderr}"
    return json.loads(result.stdout)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def assert_all_gone(info: Dict, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    pids = [p for p in (info.get("pids") or {}).values() if p and p != os.getpid()]
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"still running: {alive}"
    host = info.get("local_host") or "127.0.0.1"
    assert port_is_free("127.0.0.1" if host == "0.0.0.0" else host, int(info["local_port"]))


def cmdlines() -> str:
    texts = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    texts.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return "\n".join(texts)
