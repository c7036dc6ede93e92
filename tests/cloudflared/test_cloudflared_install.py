"""install(): the pinned release fetched from a local HTTP server the test owns (no GitHub here)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from remote.cloudflared import (
    BASE_URL_ENV,
    asset_for,
    find_cloudflared,
    install,
    install_hint,
)
from remote.cloudflared.quicktunnel import free_port
from remote.errors import RemotectlError

FAKE_BINARY = b"#!/bin/sh\necho 'cloudflared version 2024.11.1 (fake)'\n"
LINUX = {"system": "Linux", "machine": "x86_64"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AssetServer:
    """Serves `files` (name -> bytes) over HTTP on 127.0.0.1 and records each request path."""

    def __init__(self, files):
        self.files, self.requests = dict(files), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)  # shutdown() waits one poll: 0.5 s by default
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(request):
    def start(files):
        server = AssetServer({f"mirror/{name}": body for name, body in files.items()})
        request.addfinalizer(server.close)
        return server
    return start


def test_install_verifies_makes_executable_and_caches(tmp_path, serve, capfd):
    server = serve({"cloudflared-linux-amd64": FAKE_BINARY})
    dest = tmp_path / "bin"
    checksums = {"cloudflared-linux-amd64": sha256(FAKE_BINARY)}

    path = install(dest, base_url=server.url, checksums=checksums, **LINUX)

    assert path == dest / "cloudflared"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert subprocess.run([str(path)], capture_output=True, text=True).stdout.startswith(
        "cloudflared version 2024.11.1")
    assert server.requests == ["/mirror/cloudflared-linux-amd64"]
    assert "downloading cloudflared 2024.11.1 (cloudflared-linux-amd64)" in capfd.readouterr().err
    assert not [p for p in os.listdir(dest) if p.startswith(".")]  # no temp left

    assert install(dest, base_url=server.url, checksums=checksums, **LINUX) == path
    assert server.requests == ["/mirror/cloudflared-linux-amd64"]  # cached: nothing downloaded


def test_a_changed_cached_binary_is_fetched_again(tmp_path, serve):
    server = serve({"cloudflared-linux-amd64": FAKE_BINARY})
    checksums = {"cloudflared-linux-amd64": sha256(FAKE_BINARY)}
    path = install(tmp_path, base_url=server.url, checksums=checksums, **LINUX)
    path.write_bytes(b"#!/bin/sh\necho tampered\n")

    install(tmp_path, base_url=server.url, checksums=checksums, **LINUX)

    assert path.read_bytes() == FAKE_BINARY
    assert len(server.requests) == 2


def test_macos_archive_is_verified_then_unpacked(tmp_path, serve):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cloudflared")
        info.size, info.mode = len(FAKE_BINARY), 0o644
        tar.addfile(info, io.BytesIO(FAKE_BINARY))
    archive = buffer.getvalue()
    server = serve({"cloudflared-darwin-arm64.tgz": archive})

    path = install(tmp_path / "bin", base_url=server.url,
                   checksums={"cloudflared-darwin-arm64.tgz": sha256(archive)},
                   system="Darwin", machine="arm64")

    assert path.read_bytes() == FAKE_BINARY
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert sorted(os.listdir(tmp_path / "bin")) == ["cloudflared", "cloudflared.installed.json"]


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, serve):
    server = serve({"cloudflared-linux-amd64": FAKE_BINARY})
    dest = tmp_path / "bin"
    wanted = "0" * 64

    with pytest.raises(RemotectlError) as caught:
        install(dest, base_url=server.url, checksums={"cloudflared-linux-amd64": wanted}, **LINUX)

    message = caught.value.message
    assert message.startswith("checksum mismatch for cloudflared-linux-amd64")
    assert f"expected sha256 {wanted}" in message
    assert f"got {sha256(FAKE_BINARY)}" in message
    assert os.listdir(dest) == []  # neither the final name nor a temp file


def test_the_pinned_digest_is_used_by_default(tmp_path, serve):
    """Without an override a file that is not the real release is refused."""
    server = serve({"cloudflared-linux-amd64": FAKE_BINARY})
    with pytest.raises(RemotectlError, match="expected sha256 55d78946"):
        install(tmp_path, base_url=server.url, **LINUX)
    assert os.listdir(tmp_path) == []


def test_unreachable_mirror_names_the_url_and_the_manual_route(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/nothing-listens"
    with pytest.raises(RemotectlError) as caught:
        install(tmp_path, base_url=url, checksums={"cloudflared-linux-amd64": "a" * 64}, **LINUX)
    assert caught.value.message.startswith(
        f"could not download cloudflared from {url}/cloudflared-linux-amd64: ")
    assert "sudo apt-get install cloudflared" in caught.value.hint
    assert os.listdir(tmp_path) == []


def test_missing_asset_is_reported_with_its_http_status(tmp_path, serve):
    server = serve({})
    with pytest.raises(RemotectlError, match=r"HTTP 404"):
        install(tmp_path, base_url=server.url, checksums={"cloudflared-linux-amd64": "a" * 64}, **LINUX)
    assert os.listdir(tmp_path) == []


def test_base_url_comes_from_the_environment(tmp_path, serve, monkeypatch):
    server = serve({"cloudflared-linux-amd64": FAKE_BINARY})
    monkeypatch.setenv(BASE_URL_ENV, server.url + "/")
    install(tmp_path, checksums={"cloudflared-linux-amd64": sha256(FAKE_BINARY)}, **LINUX)
    assert server.requests == ["/mirror/cloudflared-linux-amd64"]


@pytest.mark.parametrize("system, machine, route", [
    ("Linux", "aarch64", "sudo apt-get install cloudflared"),
    ("Windows", "AMD64", "winget install --id Cloudflare.cloudflared"),
])
def test_platforms_without_a_verified_digest_get_the_package_manager_route(
        tmp_path, serve, system, machine, route):
    server = serve({})
    with pytest.raises(RemotectlError) as caught:
        install(tmp_path, base_url=server.url, system=system, machine=machine)
    assert "no verified checksum for cloudflared 2024.11.1" in caught.value.message
    assert route in caught.value.hint
    assert server.requests == []


def test_assets_per_platform():
    assert asset_for("Linux", "x86_64").name == "cloudflared-linux-amd64"
    assert asset_for("Linux", "x86_64").sha256 == (
        "55d789465955ccfffcd61ba72807a2a4495002f7d9b7cc5eadcaa1f93c279d25")
    assert asset_for("Linux", "i686").name == "cloudflared-linux-386"
    assert asset_for("Darwin", "x86_64").name == "cloudflared-darwin-amd64.tgz"
    assert asset_for("Darwin", "arm64").is_archive
    assert asset_for("Windows", "AMD64").name == "cloudflared-windows-amd64.exe"
    with pytest.raises(RemotectlError, match="no release for linux/riscv64"):
        asset_for("Linux", "riscv64")


def test_install_hints_name_each_os_route():
    assert "brew install cloudflared" in install_hint("Darwin")
    assert "winget install --id Cloudflare.cloudflared" in install_hint("Windows")
    linux = install_hint("Linux")
    assert "https://pkg.cloudflare.com/cloudflared any main" in linux
    assert "remotectl install-cloudflared" in linux


def test_find_prefers_path_then_the_cache(tmp_path, monkeypatch, serve):
    on_path, cache, empty = tmp_path / "on-path", tmp_path / "cache", tmp_path / "empty"
    for folder in (on_path, cache, empty):
        folder.mkdir()
    for folder in (on_path, cache):
        (folder / "cloudflared").write_bytes(FAKE_BINARY)
        (folder / "cloudflared").chmod(0o755)

    monkeypatch.setenv("PATH", str(empty))
    assert find_cloudflared() is None
    assert find_cloudflared([tmp_path / "absent", cache]) == cache / "cloudflared"
    monkeypatch.setenv("PATH", f"{empty}{os.pathsep}{on_path}")
    assert find_cloudflared([cache]) == on_path / "cloudflared"


def test_find_keeps_a_link_so_package_upgrades_do_not_break_the_entry(tmp_path, monkeypatch):
    cellar, bin_dir = tmp_path / "Cellar" / "2024.11.1", tmp_path / "bin"
    cellar.mkdir(parents=True)
    bin_dir.mkdir()
    (cellar / "cloudflared").write_bytes(FAKE_BINARY)
    (cellar / "cloudflared").chmod(0o755)
    (bin_dir / "cloudflared").symlink_to(cellar / "cloudflared")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_cloudflared() == bin_dir / "cloudflared"
