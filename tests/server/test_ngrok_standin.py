"""The stand-in agent speaks ngrok v3's protocol as pyngrok uses it (endpoints and tunnels APIs)."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest
import yaml
from helpers.ngrok_standin import GOOD_TOKEN

pytestmark = pytest.mark.timeout(120)


def test_version_and_add_authtoken(ngrok_agent, tmp_path):
    from pyngrok import conf, ngrok

    config = conf.PyngrokConfig(ngrok_path=str(ngrok_agent), config_path=str(tmp_path / "ngrok.yml"))
    assert ngrok.get_version(config)[0].startswith("3.")
    ngrok.set_auth_token(GOOD_TOKEN, config)  # runs `config add-authtoken`, expects "Authtoken saved"
    assert yaml.safe_load((tmp_path / "ngrok.yml").read_text())["agent"]["authtoken"] == GOOD_TOKEN


@pytest.mark.parametrize("config_version", ["3", "2"])
def test_pyngrok_connect_list_disconnect_and_forward(ngrok_agent, tmp_path, config_version):
    from pyngrok import conf, ngrok

    (tmp_path / "ngrok.yml").write_text(yaml.safe_dump({"version": "3", "agent": {"authtoken": GOOD_TOKEN}}))
    config = conf.PyngrokConfig(ngrok_path=str(ngrok_agent), config_path=str(tmp_path / "ngrok.yml"),
                                config_version=config_version)
    config.auth_token = None
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)

    def echo_once():
        conn, _ = upstream.accept()
        conn.sendall(b"hello:" + conn.recv(100))
        conn.close()

    threading.Thread(target=echo_once, daemon=True).start()
    try:
        tunnel = ngrok.connect(f"tcp://127.0.0.1:{upstream.getsockname()[1]}", "tcp", pyngrok_config=config)
        assert tunnel.public_url.startswith("tcp://127.0.0.1:")
        assert [t.public_url for t in ngrok.get_tunnels(config)] == [tunnel.public_url]
        host, port = tunnel.public_url[6:].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"x")
            assert conn.recv(100) == b"hello:x"
        ngrok.disconnect(tunnel.public_url, config)
        assert ngrok.get_tunnels(config) == []
    finally:
        ngrok.kill(config)
        upstream.close()


def test_unknown_command_fails(ngrok_agent):
    result = subprocess.run([str(ngrok_agent), "frobnicate"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "unknown command" in result.stderr
