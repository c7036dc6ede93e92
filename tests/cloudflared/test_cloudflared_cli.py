"""`remotectl install-cloudflared` as a user runs it: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_cloudflared_install import FAKE_BINARY, AssetServer

from remote.cloudflared import BASE_URL_ENV, asset_for
from remote.cloudflared.quicktunnel import free_port

REMOTECTL = [sys.executable, "-c", "from remote.cli import main; main()"]


def remotectl(*args, path_dirs=(), base_url=None):
    env = {k: v for k, v in os.environ.items() if k != BASE_URL_ENV}
    env["PATH"] = os.pathsep.join(str(d) for d in path_dirs)
    if base_url:
        env[BASE_URL_ENV] = base_url
    return subprocess.run([*REMOTECTL, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def mirror(request):
    asset = asset_for()
    server = AssetServer({f"mirror/{asset.name}": FAKE_BINARY})  # not the real release
    request.addfinalizer(server.close)
    return server


def test_a_file_that_is_not_the_pinned_release_is_refused(tmp_path, mirror):
    dest = tmp_path / "bin"
    done = remotectl("install-cloudflared", "--dir", str(dest), path_dirs=[tmp_path], base_url=mirror.url)
    asset = asset_for()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    if asset.sha256:
        assert (f"\nremotectl: error: checksum mismatch for {asset.name}: expected sha256 {asset.sha256}"
                in done.stderr)
        assert len(mirror.requests) == 1
    else:
        assert "no verified checksum" in done.stderr
    assert not dest.exists() or os.listdir(dest) == []


def test_no_network_is_one_line_plus_the_manual_route(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/gone"
    done = remotectl("install-cloudflared", "--dir", str(tmp_path / "bin"), path_dirs=[tmp_path], base_url=url)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("remotectl: error: ")]
    assert len(errors) == 1
    assert "could not download cloudflared" in lines[errors[0]]
    hint = lines[errors[0] + 1:]
    assert "Traceback" not in done.stderr
    assert any("cloudflared" in line for line in hint)


def test_a_cloudflared_on_path_is_reported_and_nothing_is_fetched(tmp_path, standin):
    url = f"http://127.0.0.1:{free_port()}/never-asked"
    done = remotectl("install-cloudflared", "--json", path_dirs=[standin.path.parent], base_url=url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"path": str(standin.path), "source": "PATH",
                                       "version": None}
