"""The quick tunnel end to end: the stand-in cloudflared, a real sshd, the real OpenSSH client."""

from __future__ import annotations

import base64
import shlex
import subprocess

import pytest
from helpers.cloudflared_standin import REGISTRY_ENV

from remote import keys
from remote.cloudflared import (
    QuickTunnel,
    argv_from_proxy_command,
    proxy_command,
    start_quick_tunnel,
    tunnel_argv,
    wait_hostname,
)
from remote.cloudflared.quicktunnel import free_port, stop
from remote.errors import RemotectlError


def write_ssh_config(tmp_path, standin, login, hostname, pinned_key, alias="remotectl-cftest"):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{alias} {pinned_key}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"""\
Host colab-cf
  HostName {hostname}
  Port 22
  User root
  IdentityFile {login.identity}
  IdentitiesOnly yes
  HostKeyAlias {alias}
  UserKnownHostsFile {known_hosts}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  BatchMode yes
  ConnectTimeout 30
  ProxyCommand {proxy_command(standin.path)}
""")
    config.chmod(0o600)
    return config


def run_ssh(config, env, *command):
    return subprocess.run(["ssh", "-F", str(config), "colab-cf", *command], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(180)
def test_openssh_logs_in_through_the_quick_tunnel_with_the_host_key_pinned(tmp_path, standin, sshd, login):
    metrics_port, log = free_port(), tmp_path / "cloudflared.log"
    proc = start_quick_tunnel(standin.path, sshd.port, metrics_port, log, env=standin.env)
    try:
        hostname = wait_hostname(metrics_port, 60, proc, log_path=log)
        assert hostname.endswith(".trycloudflare.com")
        assert standin.entries() == [hostname]

        config = write_ssh_config(tmp_path, standin, login, hostname, sshd.host_public_key)
        done = run_ssh(config, standin.env, "echo", "through-the-tunnel", "$((6*7))")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "through-the-tunnel 42\n"

        # The pin is really checked through the proxy: another key is refused.
        other_key = keys.bare(keys.generate_ed25519("another-machine")[1])
        config = write_ssh_config(tmp_path, standin, login, hostname, other_key)
        refused = run_ssh(config, standin.env, "true")
        assert refused.returncode == 255
        assert "Host key verification failed" in refused.stderr
    finally:
        stop(proc)
    assert proc.poll() is not None
    assert standin.entries() == []


@pytest.mark.timeout(120)
def test_paramiko_logs_in_through_the_same_proxy_command(tmp_path, standin, sshd, login, monkeypatch):
    import paramiko

    monkeypatch.setenv(REGISTRY_ENV, str(standin.registry))  # paramiko's proxy inherits os.environ
    tunnel = QuickTunnel.open(standin.path, sshd.port, tmp_path / "cf.log", deadline_s=60, env=standin.env)
    client = paramiko.SSHClient()
    try:
        host_key = paramiko.PKey.from_type_string(*sshd.host_public_key.split()[:1],
                                                  base64.b64decode(sshd.host_public_key.split()[1]))
        client.get_host_keys().add(tunnel.hostname, host_key.get_name(), host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        argv = argv_from_proxy_command(proxy_command(standin.path), tunnel.hostname)
        client.connect(tunnel.hostname, 22, username="root", key_filename=str(login.identity),
                       allow_agent=False, look_for_keys=False, timeout=30,
                       sock=paramiko.ProxyCommand(shlex.join(argv)))
        _, out, _ = client.exec_command("echo paramiko-through-tunnel")
        assert out.read() == b"paramiko-through-tunnel\n"
    finally:
        client.close()
        tunnel.close()


@pytest.mark.timeout(120)
def test_quick_tunnel_open_and_close(tmp_path, standin, sshd):
    tunnel = QuickTunnel.open(standin.path, sshd.port, tmp_path / "cf.log", deadline_s=60, env=standin.env)
    try:
        assert tunnel.alive()
        assert tunnel.hostname.endswith(".trycloudflare.com")
        assert "Your quick Tunnel has been created" in tunnel.log_path.read_text()
        assert standin.entries() == [tunnel.hostname]
    finally:
        tunnel.close()
    assert not tunnel.alive()
    assert standin.entries() == []


def test_tunnel_argv_carries_no_account_and_the_metrics_address():
    assert tunnel_argv("/opt/cloudflared", 2222, 45678) == [
        "/opt/cloudflared", "tunnel", "--no-autoupdate", "--url", "ssh://localhost:2222",
        "--metrics", "127.0.0.1:45678"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_tunnel_that_never_reports_a_hostname_times_out_and_is_stopped(tmp_path, standin):
    metrics_port, log = free_port(), tmp_path / "cloudflared.log"
    proc = start_quick_tunnel(standin.path, 1, metrics_port, log, env=standin.with_mode("no-hostname"))
    try:
        with pytest.raises(RemotectlError) as caught:
            wait_hostname(metrics_port, 2.0, proc, log_path=log)
    finally:
        stop(proc)
    assert "reported no quick-tunnel hostname within 2 s" in caught.value.message
    assert "Requesting new quick Tunnel" in caught.value.hint
    assert proc.returncode is not None  # wait_hostname itself stopped it
    assert standin.entries() == []


@pytest.mark.timeout(60)
def test_a_tunnel_that_dies_gives_its_exit_code_and_log_tail(tmp_path, standin):
    metrics_port, log = free_port(), tmp_path / "cloudflared.log"
    proc = start_quick_tunnel(standin.path, 1, metrics_port, log, env=standin.with_mode("die"))
    with pytest.raises(RemotectlError) as caught:
        wait_hostname(metrics_port, 60, proc, log_path=log)
    assert caught.value.message == "cloudflared exited (code 1) before the quick tunnel was ready"
    assert "stand-in told to die" in caught.value.hint
    assert str(log) in caught.value.hint
    assert proc.poll() == 1


def test_a_missing_cloudflared_is_a_clear_error(tmp_path):
    with pytest.raises(RemotectlError, match="could not start cloudflared"):
        start_quick_tunnel(tmp_path / "nowhere" / "cloudflared", 22, free_port(), tmp_path / "log")
