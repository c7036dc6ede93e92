"""The bootstrap notebook: valid nbformat 4, one code cell, no secrets; its cell runs outside Colab."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers.sshkit import CLI, assert_all_gone, client_key, pinned_ssh_config, ssh

from remote import card as cards

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "scripts" / "colab_bootstrap.ipynb"
FAKE_COLAB = REPO / "tests" / "helpers" / "fake_colab"
pytestmark = pytest.mark.timeout(180)


def _cell() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 and nb.cells[0].cell_type == "markdown"
    return code[0].source


def test_notebook_shape_and_no_secret_literals():
    source = _cell()
    for name in ("REPO_URL", "PROJECT_DIR", "TUNNEL", "USE_DRIVE"):
        assert re.search(rf"^{name} = ", source, re.M), name
    assert "remote.up(" in source
    assert not re.search(r"(authtoken|password|PASSWORD|TOKEN)\s*=\s*['\"]\w", source)
    assert "ssh-ed25519 AAAA" not in source


@pytest.mark.parametrize("secret_source", ["environment", "colab"])
def test_cell_runs_as_a_script_and_serves(tmp_path, secret_source):
    key, public = client_key(tmp_path / "client")
    state_dir = tmp_path / "state"
    script = tmp_path / "bootstrap.py"
    script.write_text(_cell())
    env = dict(os.environ, REMOTECTL_TUNNEL="direct", REMOTECTL_STATE_DIR=str(state_dir),
               REMOTECTL_PROJECT_DIR=str(REPO), REMOTECTL_DETACH="1",
               REMOTECTL_REPO_URL="file:///nonexistent-never-cloned")
    if secret_source == "environment":
        env["REMOTECTL_AUTHORIZED_KEY"] = public
    else:  # read from Colab's Secrets panel (the google.colab stand-in)
        secrets = tmp_path / "colab-secrets.json"
        secrets.write_text(json.dumps({"REMOTECTL_AUTHORIZED_KEY": public}))
        env.update(FAKE_COLAB_SECRETS=str(secrets), REMOTECTL_USE_DRIVE="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(FAKE_COLAB), env.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=120, cwd=tmp_path)
    try:
        assert result.returncode == 0, result.stderr
        last = result.stdout.strip().splitlines()[-1]
        card = cards.decode(last)
        assert last.startswith("remotectl connect ")
        recorded = json.loads((state_dir / "state.json").read_text())
        assert recorded["card"] == card.encode()
        out = ssh(pinned_ssh_config(tmp_path / "ssh", recorded, key), "echo from-bootstrap")
        assert out.stdout.strip() == "from-bootstrap", out.stderr
    finally:
        subprocess.run([*CLI, "down", "--state-dir", str(state_dir)], capture_output=True, timeout=60)
    assert_all_gone(recorded)


def test_colab_secret_missing_is_a_clear_error(tmp_path):
    secrets = tmp_path / "colab-secrets.json"
    secrets.write_text("{}")
    env = dict(os.environ, FAKE_COLAB_SECRETS=str(secrets),
               PYTHONPATH=os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([*CLI, "up", "--tunnel", "direct", "--state-dir", str(tmp_path / "s")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "REMOTECTL_AUTHORIZED_KEY" in result.stderr and "Traceback" not in result.stderr


def test_colab_secrets_are_read_in_order(tmp_path, monkeypatch):
    """API argument, then environment, then Colab's Secrets panel; a denied secret counts as absent."""
    secrets = tmp_path / "colab-secrets.json"
    secrets.write_text(json.dumps({"NGROK_AUTHTOKEN": "from-colab", "REMOTECTL_PASSWORD": "colab-pw"}))
    monkeypatch.setenv("FAKE_COLAB_SECRETS", str(secrets))
    monkeypatch.setenv("FAKE_COLAB_DENIED", "REMOTECTL_PASSWORD")
    monkeypatch.syspath_prepend(str(FAKE_COLAB))
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        monkeypatch.delitem(sys.modules, name)
    from remote.server.credentials import gather

    assert gather().ngrok_token == "from-colab"
    assert gather().password is None
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    assert gather().ngrok_token == "from-env"
    assert gather(ngrok_token="from-arg").ngrok_token == "from-arg"
    assert "from-arg" not in repr(gather(ngrok_token="from-arg"))
