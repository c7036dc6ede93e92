"""proxy_command(): the ssh_config ProxyCommand, quoted for POSIX shells and for Windows."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from remote.cloudflared import argv_from_proxy_command, proxy_argv, proxy_command
from remote.errors import BadInput


def ssh_expand(command: str, hostname: str) -> str:
    """ssh's own `%` expansion of a ProxyCommand (`%%` -> `%`, `%h` -> the host)."""
    return re.sub(r"%(.)", lambda m: {"%": "%", "h": hostname}[m.group(1)], command)


@pytest.mark.parametrize("path", [
    "/usr/local/bin/cloudflared",
    "/home/ann/My Tools/cloudflared",
    "/home/o'brien/100% $HOME `id` \\x/cloudflared",
])
def test_posix_ssh_reads_back_the_written_argv(tmp_path, path):
    config = tmp_path / "config"
    config.write_text(f"Host colab\n  HostName a-b-c.trycloudflare.com\n  ProxyCommand {proxy_command(path)}\n")
    shown = subprocess.run(["ssh", "-G", "-F", str(config), "colab"], capture_output=True, text=True,
                           check=True).stdout
    value = next(line.split(" ", 1)[1] for line in shown.splitlines() if line.startswith("proxycommand "))
    assert shlex.split(ssh_expand(value, "a-b-c.trycloudflare.com")) == [
        path, "access", "ssh", "--hostname", "a-b-c.trycloudflare.com"]


def test_posix_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert proxy_command("bin/cloudflared", system="Linux") == (
        f"'{tmp_path}/bin/cloudflared' access ssh --hostname %h")


def test_windows_path_is_double_quoted_with_backslashes_kept():
    assert proxy_command(r"C:\Program Files (x86)\cloudflared\cloudflared.exe", system="Windows") == (
        r'"C:\Program Files (x86)\cloudflared\cloudflared.exe" access ssh --hostname %h')
    assert proxy_command(r"C:\Users\Ann\100%\cloudflared.exe", system="Windows") == (
        r'"C:\Users\Ann\100%%\cloudflared.exe" access ssh --hostname %h')
    assert proxy_command("C:/Users/Ann/cloudflared.exe", system="Windows") == (
        r'"C:\Users\Ann\cloudflared.exe" access ssh --hostname %h')


@pytest.mark.parametrize("path, system", [
    (r"cloudflared.exe", "Windows"),
    ('C:\\odd"name\\cloudflared.exe', "Windows"),
    ("/usr/bin/cloud\nflared", "Linux"),
])
def test_unusable_paths_are_bad_input(path, system):
    with pytest.raises(BadInput):
        proxy_command(path, system=system)


@pytest.mark.parametrize("path, system", [
    (r"C:\Program Files (x86)\cloudflared\cloudflared.exe", "Windows"),
    (r"\\fileserver\tools\100%\cloudflared.exe", "Windows"),
    ("/home/o'brien/100% $HOME/cloudflared", "Linux"),
])
def test_written_proxy_command_reads_back_as_the_argv_ssh_runs(path, system):
    written = proxy_command(path, system=system)
    assert argv_from_proxy_command(written, "x-y.trycloudflare.com", system=system) == [
        path, "access", "ssh", "--hostname", "x-y.trycloudflare.com"]
    # what paramiko.ProxyCommand is given: shlex.join, which it splits back losslessly
    assert shlex.split(shlex.join(proxy_argv(path, "x-y.trycloudflare.com"))) == \
        argv_from_proxy_command(written, "x-y.trycloudflare.com", system=system)
