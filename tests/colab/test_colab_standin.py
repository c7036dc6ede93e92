"""The stand-in `colab` behaves as Google's CLI does where remotectl looks (the only stand-in here).

Facts from googlecolab/google-colab-cli (docs/06_ssh_access.md, commands/ssh.py, utility.py,
issue #102): `colab version` prints `Version: X`; PyPI's 0.6.0 answers `colab ssh` with click's
exit 2 "No such command 'ssh'"; proxy mode sends the `-i` key's public half (from
`ssh-keygen -y -f`), the server refuses RSA with HTTP 400 and a second connection with HTTP 429;
a handshake error is one `[colab] ...` line on stderr and exit 1.
"""

from __future__ import annotations

import subprocess

import pytest
from _colab import pinned_config, ssh, wait_for

from remote import keys
from remote.client import colab_route

pytestmark = pytest.mark.timeout(120)


def run(google, *args, **kwargs):
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    return subprocess.run([str(google.colab), *args], capture_output=True, text=True, env=google.env,
                          timeout=60, **kwargs)


def test_version_help_and_the_release_without_ssh(google):
    assert run(google, "version").stdout.strip().startswith("Version: 0.6.1")
    helped = run(google, "ssh", "--help")
    assert helped.returncode == 0 and "--proxy-mode" in helped.stdout and "--identity" in helped.stdout
    google.mode("0.6.0")
    assert run(google, "version").stdout.strip() == "Version: 0.6.0"
    old = run(google, "ssh", "--proxy-mode", "-s", "x")
    assert old.returncode == 2 and "No such command 'ssh'." in old.stderr and old.stdout == ""


def test_bridges_to_the_runtime_with_the_presented_key_only(google, login, runtime, tmp_path):
    google.runtime("s1", runtime)
    assert runtime.authorized_keys_path.read_text() == ""  # nothing authorized before the handshake
    proxy = colab_route.proxy_command(google.colab, "s1", login.identity)
    config = pinned_config(tmp_path / "cfg", proxy, login.identity, runtime)
    out = ssh(config, "h", "echo ok; id -un", env=google.env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "root"]
    assert keys.bare(runtime.authorized_keys_path.read_text()) == keys.bare(login.public_line)
    assert google.calls()[-1] == colab_route.proxy_argv(google.colab, "s1", login.identity)[1:]
    assert not list((google.home / "active").iterdir())  # the slot is free again


def test_rsa_is_refused_like_the_server_does(google, runtime, tmp_path):
    google.runtime("s1", runtime)
    rsa = tmp_path / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    out = run(google, "ssh", "--proxy-mode", "-s", "s1", "-i", str(rsa))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("[colab] Server rejected pubkey: unsupported key type.")
    assert runtime.authorized_keys_path.read_text() == ""


def test_one_connection_per_runtime_the_second_gets_429(google, login, runtime, tmp_path):
    google.runtime("s1", runtime)
    config = pinned_config(tmp_path / "cfg", colab_route.proxy_command(google.colab, "s1", login.identity),
                           login.identity, runtime)
    holder = subprocess.Popen(["ssh", "-F", str(config), "-N", "h"], env=google.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (google.home / "active" / "s1.pid").exists(), what="the first bridge")
        second = run(google, "ssh", "--proxy-mode", "-s", "s1", "-i", str(login.identity))
        assert second.returncode == 1
        assert "Already-active SSH session (HTTP 429)" in second.stderr
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    wait_for(lambda: not (google.home / "active" / "s1.pid").exists(), what="the slot to be released")
    assert ssh(config, "h", "true", env=google.env).returncode == 0


@pytest.mark.parametrize("mode,status", [("busy", "HTTP 429"), ("no-ssh", "HTTP 404"), ("expired", "HTTP 401")])
def test_handshake_failures_are_one_line_and_exit_1(google, login, runtime, mode, status):
    google.runtime("s1", runtime)
    google.mode(mode)
    out = run(google, "ssh", "--proxy-mode", "-s", "s1", "-i", str(login.identity))
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[colab] ") and status in lines[0]


def test_unknown_session_is_created_when_signed_in_else_sign_in_fails(google, login, runtime_factory):
    spare = google.spare(runtime_factory())
    google.sign_out()
    out = run(google, "ssh", "--proxy-mode", "-s", "fresh", "-i", str(login.identity), "--gpu", "T4",
              input="SSH-2.0-OpenSSH_9.2p1\r\n")
    assert out.returncode == 1 and "not signed in" in out.stderr and "invalid_grant" in out.stderr
    assert run(google, "sessions").returncode == 1
    (google.home / "signed-in").write_text("")
    created = subprocess.run([str(google.colab), "ssh", "--proxy-mode", "-s", "fresh", "-i", str(login.identity),
                              "--gpu", "t4"], input=b"", capture_output=True, env=google.env, timeout=60)
    assert b"Creating runtime 'fresh'" in created.stderr and created.stdout.startswith(b"SSH-2.0-")
    listed = run(google, "sessions")
    assert listed.returncode == 0 and listed.stdout.startswith("[fresh] ") and "Hardware: T4" in listed.stdout
    assert keys.bare(spare.authorized_keys_path.read_text()) == keys.bare(login.public_line)
