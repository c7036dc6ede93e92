"""Helpers for the follow tests: the CLI and OpenSSH as subprocesses, signed records, snapshots.

Real parts: sshd on 127.0.0.1 (helpers/sshd.py, or remotectl's own `up` in the slow tests),
the OpenSSH client running the written ProxyCommand, paramiko for `check`, the CLI in a
subprocess. Stand-ins: ngrok's agent and cloud API only (helpers/fake_ngrok.py, ngrok_api.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from helpers.sshd import SshServer

from remote import endpoint_record as records
from remote import keys
from remote.files import atomic_write

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "remote.cli"]
STRIPPED = ("NGROK_AUTHTOKEN", "NGROK_API_KEY", "REMOTECTL_AUTHORIZED_KEY", "REMOTECTL_PASSWORD",
            "REMOTECTL_STATE_DIR", "REMOTECTL_SSH_DIR", "REMOTECTL_DEBUG", "REMOTECTL_NGROK_API_URL",
            "FAKE_NGROK_MODE", "REMOTECTL_SSH")


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(extra)
    return env


def remotectl(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env if env is not None else clean_env(), stdin=subprocess.DEVNULL)


def ssh(ssh_dir: Path, name: str, command: str, *extra: str, env: Optional[Dict[str, str]] = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Plain OpenSSH with the user's config file (the Include), as `ssh NAME` reads it."""
    return subprocess.run(["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes", *extra, name, command],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=env if env is not None else clean_env())


def remotectl_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("remotectl:")]


def snapshot(folder: Path) -> Dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*")) if p.name != ".followed.lock"}


def sign_record(host_key_pem: bytes, host: str, port: int, seq: int, kind: str = "direct",
                session: str = "rt1", at: Optional[int] = None) -> str:
    public = _public(host_key_pem)
    record = records.EndpointRecord(fingerprint=keys.fingerprint(public), kind=kind, seq=seq,
                                    at=at if at is not None else records.next_seq(None) // 1000,
                                    session=session, host=host, port=port)
    return records.sign(record, host_key_pem)


def sign_raw(host_key_pem: bytes, fields: dict) -> str:
    """A record over any payload (what a careless or hostile signer could make), signed for real."""
    import base64

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(host_key_pem, password=None)
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(records.CONTEXT + payload)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return json.dumps({"remotectl_endpoint": 1, "payload": b64(payload), "sig": b64(sig)})


def _public(pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


@dataclass
class Laptop:
    """The user's computer: an ssh folder remotectl manages and a login key."""

    ssh_dir: Path
    identity: Path
    public: str

    def connect(self, card: str, follow: str, name: str = "colab", *extra: str,
                env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return remotectl("connect", card, "--follow", follow, "--name", name, "--ssh-dir", str(self.ssh_dir),
                         "--identity", str(self.identity), *extra, env=env)


@dataclass
class Runtime:
    """A real sshd (helpers/sshd.py) whose host key signs records into a persist folder."""

    sshd: SshServer
    persist: Path

    @property
    def pem(self) -> bytes:
        return self.sshd.host_key_path.read_bytes()

    def publish(self, seq: int, port: Optional[int] = None, host: str = "127.0.0.1", **kw) -> str:
        text = sign_record(self.pem, host, port or self.sshd.port, seq, **kw)
        atomic_write(self.persist / records.FILE_NAME, text, mode=0o600)
        return text


