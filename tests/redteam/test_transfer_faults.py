"""pull and push against servers that misbehave in ways issue 10's tests did not try: a remote
whose shell start-up file prints a greeting (real sshd, real bash, real sha256sum), a server
that stops answering mid-session, modes that would leave the laptop's copy writable by others,
names remotectl keeps for its own links, and a host that accepts TCP but never speaks SSH."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
from _redteam import one_error_line, remotectl
from helpers.hostile_sftp import File, Folder, HostileServer, Link
from helpers.sshd import SshServer

from remote import keys
from remote.card import Card

pytestmark = pytest.mark.timeout(180)


class GreetingSshd(SshServer):
    """A real sshd whose sessions have a chatty ~/.bashrc, which bash reads for `ssh host command`
    too. Root's own home is left alone: sshd's SetEnv gives the sessions a HOME of the test's."""

    def _write_config(self) -> None:
        super()._write_config()
        home = self.root / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        (home / ".bashrc").write_text('echo "Welcome to the GPU box, $(whoami)!"\necho "0123456789abcdef"\n')
        with open(self.config_path, "a") as handle:
            handle.write(f"SetEnv HOME={home}\n")


@pytest.fixture
def chatty(tmp_path_factory, request, client_key) -> GreetingSshd:
    server = GreetingSshd(tmp_path_factory.mktemp("chatty-sshd"))
    request.addfinalizer(server.stop)
    server.authorize(client_key.with_name(client_key.name + ".pub").read_text())
    return server.start()


@pytest.fixture
def hostile(request, client_key) -> HostileServer:
    server = HostileServer(client_key.with_name(client_key.name + ".pub").read_text())
    request.addfinalizer(server.stop)
    return server.start()


def _connect(ssh_dir, client_key, card: Card, name: str = "box"):
    result = remotectl("connect", card.encode(), "--ssh-dir", str(ssh_dir), "--identity", str(client_key),
                       "--name", name, "--no-check")
    assert result.returncode == 0, result.stderr
    return ["--ssh-dir", str(ssh_dir)]


def test_verify_is_not_fooled_by_what_a_start_up_file_prints(chatty, tmp_path, client_key):
    src = tmp_path / "remote-src"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (src / name).write_bytes(os.urandom(5000))
    args = _connect(tmp_path / "dot-ssh", client_key, chatty.card())
    assert "Welcome" in remotectl_ssh(tmp_path / "dot-ssh", "true")  # the greeting really comes

    pulled = remotectl("pull", "box", str(src), str(tmp_path / "here"), "--verify", "--json", *args)
    assert pulled.returncode == 0, pulled.stderr
    stats = json.loads(pulled.stdout)
    assert (stats["files"], stats["verified"], stats["recopied"], stats["failed"]) == (3, 3, 0, [])

    pushed = remotectl("push", "box", str(tmp_path / "here" / "remote-src"), str(tmp_path / "back"),
                       "--verify", "--json", *args)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["verified"] == 3
    assert (tmp_path / "back" / "remote-src" / "c.bin").read_bytes() == (src / "c.bin").read_bytes()


def remotectl_ssh(ssh_dir, command: str) -> str:
    import subprocess

    return subprocess.run(["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes", "box", command],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL).stdout


@pytest.mark.slow
@pytest.mark.parametrize("stall", ["listing", "read"])
def test_a_server_that_stops_answering_ends_the_copy_with_one_line(stall, hostile, tmp_path, client_key,
                                                                   monkeypatch):
    from helpers import hostile_sftp

    hostile.tree["/src"] = [File("a.bin", b"a" * 100_000)]
    if stall == "listing":
        monkeypatch.setattr(hostile_sftp._Sftp, "list_folder", lambda self, path: time.sleep(600))
    else:
        monkeypatch.setattr(hostile_sftp._Handle, "read", lambda self, offset, length: time.sleep(600))
    args = _connect(tmp_path / "dot-ssh", client_key, hostile.card())
    began = time.monotonic()
    result = remotectl("pull", "box", "/src", str(tmp_path / "here"), "--timeout", "1", *args, timeout=90)
    took = time.monotonic() - began
    assert result.returncode == 1
    line = one_error_line(result)
    assert line == "remotectl: error: box stopped answering: nothing came back for 5 s, so the copy was stopped"
    assert "run the same command again" in result.stderr
    assert took < 45, took  # it used to wait for ever (ssh's ServerAlive sees a live transport)
    assert not (tmp_path / "here" / "src" / "a.bin").exists()


def test_a_remote_cannot_make_the_laptops_copy_writable_by_others(hostile, tmp_path, client_key):
    hostile.tree["/src"] = [File("open.bin", b"x", mode=0o777), File("private.key", b"k", mode=0o600),
                            File("tool", b"t", mode=0o4755), Folder("shared", mode=0o777)]
    hostile.tree["/src/shared"] = [File("notes", b"n", mode=0o666)]
    args = _connect(tmp_path / "dot-ssh", client_key, hostile.card())
    old = os.umask(0o022)
    try:
        result = remotectl("pull", "box", "/src", str(tmp_path / "here"), *args)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "here" / "src"

    def mode(rel: str) -> str:
        return oct((root / rel).stat().st_mode & 0o7777)

    assert (mode("open.bin"), mode("private.key"), mode("tool")) == ("0o755", "0o600", "0o755")
    assert (mode("shared"), mode("shared/notes")) == ("0o755", "0o644")


def test_names_remotectl_keeps_for_its_links_are_refused_not_overwritten(hostile, tmp_path, client_key):
    hostile.tree["/src"] = [File("model.remotectl-link", b"precious"), Link("model", "weights"),
                            File("weights", b"w")]
    args = _connect(tmp_path / "dot-ssh", client_key, hostile.card())
    result = remotectl("pull", "box", "/src", str(tmp_path / "here"), "--json", *args)
    assert result.returncode == 1
    assert json.loads(result.stdout)["refused"] == ["'model.remotectl-link'"]
    assert "refused 'model.remotectl-link': a name ending in '.remotectl-link'" in result.stderr
    root = tmp_path / "here" / "src"
    assert sorted(os.listdir(root)) == ["model", "weights"] and os.readlink(root / "model") == "weights"


@pytest.mark.slow
def test_a_host_that_never_speaks_ssh_is_one_line_without_a_traceback(tmp_path, client_key):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        card = Card("root", "127.0.0.1", listener.getsockname()[1], keys.bare(keys.generate_ed25519()[1]),
                    "silent")
        args = _connect(tmp_path / "dot-ssh", client_key, card, name="silent")
        for command in (["check", "silent"], ["pull", "silent", "/x", str(tmp_path / "here")]):
            result = remotectl(*command, "--timeout", "1", *args, timeout=60)
            assert result.returncode == 1, result.stderr
            assert one_error_line(result).startswith("remotectl: error: cannot reach ")
            assert "Traceback" not in result.stderr and "paramiko" not in result.stderr, result.stderr
    finally:
        listener.close()
        for conn in held:
            conn.close()
