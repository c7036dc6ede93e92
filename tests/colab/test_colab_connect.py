"""`remotectl connect --colab SESSION` end to end: the stand-in `colab`, a real sshd as the runtime,
the real OpenSSH client and the CLI in its own process.

Interface the lead's checks use: `remotectl connect --colab SESSION --name NAME --ssh-dir S
--identity KEY`, with `colab` found on PATH (or REMOTECTL_COLAB naming it).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from _colab import wait_for
from helpers.sshkit import remotectl

from remote import keys
from remote.client import colab_route

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # whole journeys: seconds each


class World:
    """One laptop (an ssh folder) and the stand-in's Google side with session s1 running."""

    def __init__(self, google, login, runtime, short_dir: Path) -> None:
        self.google, self.login, self.runtime = google, login, runtime
        self.ssh_dir = short_dir / "ssh"
        google.runtime("s1", runtime)

    def connect(self, *args: str, session: str = "s1", name: str = "box", env=None):
        return remotectl("connect", "--colab", session, "--name", name, "--ssh-dir", str(self.ssh_dir),
                         "--identity", str(self.login.identity), *args, env=env or self.google.env)

    def cli(self, *args: str, env=None):
        return remotectl(*args, "--ssh-dir", str(self.ssh_dir), env=env or self.google.env)

    def ssh(self, *args: str, name: str = "box", input=None, timeout: float = 90):
        return subprocess.run(["ssh", "-F", str(self.ssh_dir / "config"), "-o", "BatchMode=yes", *args[:-1],
                               name, args[-1]], capture_output=True, text=True, timeout=timeout,
                              env=self.google.env, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    @property
    def pinned(self) -> str:
        return (self.ssh_dir / "remotectl" / "known_hosts").read_text()


@pytest.fixture
def world(google, login, runtime, short_dir) -> World:
    return World(google, login, runtime, short_dir)


def first_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("remotectl: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_connect_colab_then_ssh_with_no_prompt(world, google, login, runtime):
    done = world.connect("--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["check"]["ok"] and result["tunnel"] == "colab"
    assert result["proxy_command"] == colab_route.proxy_command(google.colab, "s1", login.identity)
    config = (world.ssh_dir / "remotectl" / "config").read_text()
    assert f"    ProxyCommand {result['proxy_command']}\n" in config
    assert "    User root\n" in config and "    StrictHostKeyChecking yes\n" in config
    assert "    ControlMaster auto\n" in config and "StrictHostKeyChecking no" not in config
    assert world.pinned == f"remotectl.box {runtime.host_public_key}\n"  # learned through the route
    assert "learned on the first login through Google's `colab ssh` route" in done.stderr
    assert keys.bare(runtime.authorized_keys_path.read_text()) == keys.bare(login.public_line)
    out = world.ssh("echo ok")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
    again = world.connect()
    assert again.returncode == 0 and "Unchanged: Host box" in again.stdout
    assert world.pinned == f"remotectl.box {runtime.host_public_key}\n"


def _echo_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                conn.sendall(b"echo:" + data)

    threading.Thread(target=serve, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _until_connects(port: int):
    def ready():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(ready, what=f"port {port}")


def test_what_vscode_needs_through_the_entry(world, google, tmp_path):
    """Remote-SSH runs `bash` fed on stdin, holds -L/-D forwards, and uses sftp: all through the
    entry, sharing Google's one connection per runtime while the forward is held."""
    assert world.connect().returncode == 0
    echo = _echo_server()
    lport, dport = _free_port(), _free_port()
    before = len(google.calls())
    holder = subprocess.Popen(["ssh", "-F", str(world.ssh_dir / "config"), "-o", "BatchMode=yes", "-N",
                               "-L", f"{lport}:127.0.0.1:{echo.getsockname()[1]}", "-D", str(dport), "box"],
                              env=google.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        _until_connects(lport)
        with socket.create_connection(("127.0.0.1", lport), timeout=10) as sock:
            sock.sendall(b"via -L")
            assert sock.recv(64) == b"echo:via -L"
        with socket.create_connection(("127.0.0.1", dport), timeout=10) as sock:  # SOCKS5, as -D serves
            sock.sendall(b"\x05\x01\x00")
            assert sock.recv(2) == b"\x05\x00"
            sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", echo.getsockname()[1]))
            assert sock.recv(10)[:2] == b"\x05\x00"
            sock.sendall(b"via -D")
            assert sock.recv(64) == b"echo:via -D"
        script = "echo $((6*7))\nuname -s\nexit 0\n"
        shell = world.ssh("-T", "bash", input=script)  # how Remote-SSH installs and starts its server
        assert shell.returncode == 0 and shell.stdout.split() == ["42", "Linux"], shell.stderr
        src = tmp_path / "up.txt"
        src.write_text("payload\n")
        sftp = subprocess.run(["sftp", "-F", str(world.ssh_dir / "config"), "-b", "-", "box"],
                              input=f"put {src} {tmp_path}/remote.txt\nget {tmp_path}/remote.txt {tmp_path}/down.txt\n",
                              capture_output=True, text=True, timeout=60, env=google.env)
        assert sftp.returncode == 0 and (tmp_path / "down.txt").read_text() == "payload\n", sftp.stderr
        check = world.cli("check", "box", "--quick")  # rides the shared connection, no HTTP 429
        assert check.returncode == 0, check.stderr
        (tmp_path / "pushed").mkdir()
        (tmp_path / "pulled").mkdir()
        pushed = world.cli("push", "box", str(src), str(tmp_path / "pushed"))
        assert pushed.returncode == 0 and (tmp_path / "pushed" / "up.txt").read_text() == "payload\n", pushed.stderr
        pulled = world.cli("pull", "box", str(tmp_path / "pushed" / "up.txt"), str(tmp_path / "pulled"))
        assert pulled.returncode == 0 and (tmp_path / "pulled" / "up.txt").exists(), pulled.stderr
        bridges = [c for c in google.calls()[before:] if "--proxy-mode" in c]
        assert len(bridges) == 1  # everything since the forward opened rode one connection
    finally:
        holder.terminate()
        holder.wait(timeout=30)
        echo.close()


def test_a_recreated_runtime_is_relearned_through_the_route_only(world, google, runtime, sshd_other):
    assert world.connect().returncode == 0
    old = runtime.host_public_key
    new = runtime.new_host_key()
    runtime.restart()
    refused = world.ssh("true")
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
    check = world.cli("check", "box", "--quick", "--json")
    assert check.returncode == 0, check.stderr
    said = json.loads(check.stdout)["check"]
    assert said["relearned_from"] == keys.fingerprint(old) and said["host_key"] == new
    assert (f"Re-learned the host key of Colab session s1 through Google's `colab ssh` route: the runtime "
            f"was recreated ({keys.fingerprint(old)} -> {keys.fingerprint(new)})") in check.stderr
    assert world.pinned == f"remotectl.box {new}\n"
    assert world.ssh("echo back").stdout == "back\n"

    # Any other route: a changed key is refused and the pin stays.
    other, card = sshd_other
    assert world.cli("connect", card, "--name", "other", "--identity", str(world.login.identity)).returncode == 0
    before = world.pinned
    other.restart(new_host_key=True)
    mismatch = world.cli("check", "other", "--quick")
    assert mismatch.returncode == 1 and "host key mismatch" in first_error_line(mismatch)
    assert world.pinned == before

    # The Colab host under a ProxyCommand remotectl did not write: not re-learned either.
    registry = world.ssh_dir / "remotectl" / "hosts.json"
    data = json.loads(registry.read_text())
    data["hosts"]["box"]["proxy_command"] = data["hosts"]["box"]["proxy_command"].replace("'s1'", "'s2'")
    registry.write_text(json.dumps(data))
    runtime.restart(new_host_key=True)
    tampered = world.cli("check", "box", "--quick")
    assert tampered.returncode == 1 and "does not run the `colab ssh` ProxyCommand" in first_error_line(tampered)
    assert world.pinned == before


@pytest.fixture
def sshd_other(tmp_path_factory, request, login):
    """A plain host on another route (direct, with its key pinned from a card)."""
    from helpers.sshd import SshServer

    server = SshServer(tmp_path_factory.mktemp("other"))
    request.addfinalizer(server.stop)
    server.authorize(login.public_line)
    server.start()
    return server, server.card(session="other1").encode()


def test_no_card_can_claim_the_colab_route(world, runtime, login):
    """A crafted card saying `colab` would buy trust on first use elsewhere: it is refused."""
    import base64

    from remote import card as cards

    raw = json.dumps({"v": 1, "u": "root", "h": "127.0.0.1", "p": runtime.port, "k": runtime.host_public_key,
                      "s": "s1", "t": "colab"}, separators=(",", ":"), sort_keys=True).encode()
    head = f"rc1.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"
    card = f"{head}.{cards._check(head)}"
    refused = world.cli("connect", card, "--name", "evil", "--identity", str(login.identity))
    assert refused.returncode == 2 and "unknown tunnel kind 'colab'" in first_error_line(refused)
    assert not (world.ssh_dir / "remotectl" / "hosts.json").exists()


def test_a_missing_session_is_created_with_its_gpu(world, google, runtime_factory):
    google.spare(runtime_factory())
    done = world.connect("--gpu", "t4", session="fresh1", name="fresh")
    assert done.returncode == 0, done.stderr
    assert "Colab session fresh1 is not running: the first connection creates it with a T4" in done.stdout
    assert "'--gpu' 'T4'" in (world.ssh_dir / "remotectl" / "config").read_text()
    listed = subprocess.run([str(google.colab), "sessions"], capture_output=True, text=True, env=google.env)
    assert "[fresh1] " in listed.stdout and "Hardware: T4" in listed.stdout


def test_the_project_is_brought_and_open_names_it(world, google, tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "train.py").write_text("print('hi')\n")
    env = {**google.env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=origin, check=True, env=env)
    bare = tmp_path / "proj.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(origin), str(bare)], check=True)
    folder = tmp_path / "content" / "proj"
    done = world.connect("--repo", f"file://{bare}", "--path", str(folder))
    assert done.returncode == 0, done.stderr
    assert (folder / "train.py").read_text() == "print('hi')\n"
    assert f"Cloned the project into {folder} on the runtime." in done.stdout
    assert "ssh-remote+box" in done.stdout + done.stderr and str(folder) in done.stdout + done.stderr
    again = world.connect("--repo", f"file://{bare}", "--path", str(folder))
    assert "already there" in again.stdout
    opened = world.cli("open", "box", env={**google.env, "PATH": "/usr/bin:/bin"})  # no `code` here
    assert opened.returncode == 1 and "`code` command is not on PATH" in opened.stderr
    assert "ssh-remote+box" in opened.stderr and str(folder).replace(" ", "%20") in opened.stderr.replace(" ", "%20")
    pushed = world.connect("--push", str(origin), "--path", str(tmp_path / "content" / "copy"))
    assert pushed.returncode == 0 and (tmp_path / "content" / "copy" / "train.py").exists(), pushed.stderr


@pytest.mark.parametrize("mode,words", [("busy", "busy (HTTP 429)"), ("no-ssh", "does not expose SSH (HTTP 404)"),
                                        ("expired", "HTTP 401")])
def test_refused_by_google_is_one_line(world, google, mode, words):
    google.mode(mode)
    done = world.connect()
    assert done.returncode == 1
    assert words in first_error_line(done)
    assert "The entry stays written" in done.stderr  # nothing the user had is lost; check later


def test_nothing_written_when_colab_cannot_carry_it(world, google, tmp_path):
    bare_env = {**google.env, "PATH": "/usr/bin:/bin"}
    missing = world.connect(env=bare_env)
    assert missing.returncode == 1
    assert "`colab` command is not installed" in first_error_line(missing)
    assert "uv tool install git+https://github.com/googlecolab/google-colab-cli" in missing.stderr
    google.mode("0.6.0")
    old = world.connect()
    assert old.returncode == 1 and "no `ssh` subcommand" in first_error_line(old)
    google.mode("")
    rsa = tmp_path / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    bad_key = remotectl("connect", "--colab", "s1", "--ssh-dir", str(world.ssh_dir), "--identity", str(rsa),
                        env=google.env)
    assert bad_key.returncode == 2 and "accepts only ssh-ed25519 and ecdsa" in first_error_line(bad_key)
    bad_gpu = world.connect("--gpu", "V100")
    assert bad_gpu.returncode == 2
    bad_session = world.connect(session="a;b")
    assert bad_session.returncode == 2 and "not usable" in first_error_line(bad_session)
    with_card = world.cli("connect", "--colab", "s1", "host:22")
    assert with_card.returncode == 2
    named = world.connect(env={**bare_env, "REMOTECTL_COLAB": str(tmp_path / "nope")})
    assert named.returncode == 2 and "REMOTECTL_COLAB names" in first_error_line(named)
    assert not world.ssh_dir.exists()  # nothing of the user's was written or created


def test_not_signed_in(world, google):
    google.sign_out()
    fresh = world.connect(session="brandnew", name="nb")
    assert fresh.returncode == 1 and "not signed in" in first_error_line(fresh)
    assert "colab sessions" in fresh.stderr
    existing = world.connect()  # an existing session works without a sign-in, with a warning
    assert existing.returncode == 0, existing.stderr
    assert "not signed in: this session works, but a new one cannot be created" in existing.stderr


def test_doctor_knows_the_route(world, google):
    assert world.connect().returncode == 0
    ok = world.cli("doctor", "--json")
    colab_lines = [f for f in json.loads(ok.stdout)["user"] if f["check"] in ("host box", "colab CLI")]
    assert [f["status"] for f in colab_lines] == ["ok", "ok", "ok"], colab_lines
    for mode, words in (("busy", "HTTP 429"), ("no-ssh", "HTTP 404"), ("0.6.0", "no `ssh` subcommand")):
        google.mode(mode)
        found = json.loads(world.cli("doctor", "--json").stdout)["user"]
        problems = [f for f in found if f["status"] == "problem" and f["check"] in ("host box", "colab CLI")]
        assert len(problems) == 1 and words in problems[0]["detail"] and problems[0]["fix"], found
    google.mode("")
    google.sign_out()
    text = world.cli("doctor")
    assert text.returncode == 1 and "not signed in" in text.stdout and "fix: " in text.stdout


def test_no_check_writes_without_a_key_and_check_learns_it(world, runtime):
    done = world.connect("--no-check")
    assert done.returncode == 0 and "No key pinned yet: `remotectl check box` learns it" in done.stdout
    assert not (world.ssh_dir / "remotectl" / "known_hosts").exists()
    refused = world.ssh("true")  # no blind trust: ssh refuses an unpinned host
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
    learned = world.cli("check", "box", "--quick")
    assert learned.returncode == 0 and "learned on the first login through Google's" in learned.stdout
    assert world.pinned == f"remotectl.box {runtime.host_public_key}\n"
    assert world.cli("disconnect", "box").returncode == 0
    assert not (world.ssh_dir / "remotectl" / "known_hosts").exists()
