"""What survives a runtime reset: `link_saved` (saved/ on Drive) and the bootstrap cell with Drive on.

The cell runs as a script with the google.colab stand-in (the only Colab part we fake); its
server is real (`--tunnel direct`, detached), and the real OpenSSH client logs in with the
host key read back from the Drive folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers.sshkit import CLI, assert_all_gone, client_key, pinned_ssh_config, ssh

from remote import card as cards
from remote import keys
from remote.errors import BadInput
from remote.server.persist import link_saved

REPO = Path(__file__).resolve().parents[2]
FAKE_COLAB = REPO / "tests" / "helpers" / "fake_colab"


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_saved(folder: Path) -> Path:
    saved = folder / "saved"
    (saved / "models" / "mnist" / "run1").mkdir(parents=True)
    (saved / "models" / "mnist" / "run1" / "checkpoint-epoch1.pth").write_bytes(b"weights")
    (saved / "README.md").write_text("checkpoints and logs\n")
    (saved / ".gitkeep").write_text("")
    return saved


def test_link_moves_local_checkpoints_in_and_is_idempotent(tmp_path):
    saved = make_saved(tmp_path / "project")
    before = tree(saved)
    drive = tmp_path / "drive" / "saved"
    said = link_saved(saved, drive)
    assert saved.is_symlink() and Path(os.path.realpath(saved)) == drive.resolve()
    assert "moved 3 items in" in said
    assert tree(drive) == before
    assert "already links" in link_saved(saved, drive)
    assert tree(saved) == before  # seen through the link


def test_a_fresh_clone_links_to_the_kept_checkpoints(tmp_path):
    drive = tmp_path / "drive" / "saved"
    link_saved(make_saved(tmp_path / "old-runtime"), drive)
    kept = tree(drive)
    fresh = tmp_path / "new-runtime" / "saved"
    fresh.mkdir(parents=True)
    (fresh / "README.md").write_text("checkpoints and logs\n")  # what git clone brings: identical
    (fresh / ".gitkeep").write_text("")
    link_saved(fresh, drive)
    assert fresh.is_symlink() and tree(fresh) == kept


def test_folders_merge_and_new_runs_move_in(tmp_path):
    drive = tmp_path / "drive" / "saved"
    link_saved(make_saved(tmp_path / "a"), drive)
    other = make_saved(tmp_path / "b")  # the same checkpoint, plus a run made before linking
    (other / "models" / "mnist" / "run2").mkdir()
    (other / "models" / "mnist" / "run2" / "model_best.pth").write_bytes(b"best")
    assert "moved 1 item in" in link_saved(other, drive)
    assert (drive / "models" / "mnist" / "run2" / "model_best.pth").read_bytes() == b"best"
    assert (drive / "models" / "mnist" / "run1" / "checkpoint-epoch1.pth").read_bytes() == b"weights"


def test_a_clash_changes_nothing(tmp_path):
    drive = tmp_path / "drive" / "saved"
    link_saved(make_saved(tmp_path / "a"), drive)
    kept = tree(drive)
    other = make_saved(tmp_path / "b")
    (other / "models" / "mnist" / "run1" / "checkpoint-epoch1.pth").write_bytes(b"other weights")
    local = tree(other)
    with pytest.raises(BadInput, match="hold different models/mnist/run1/checkpoint-epoch1.pth; nothing"):
        link_saved(other, drive)
    assert not other.is_symlink() and tree(other) == local and tree(drive) == kept


def test_a_link_elsewhere_or_a_file_is_left_alone(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    saved = tmp_path / "saved"
    saved.symlink_to(elsewhere)
    with pytest.raises(BadInput, match="already a link"):
        link_saved(saved, tmp_path / "drive")
    assert os.readlink(saved) == str(elsewhere)
    plain = tmp_path / "p" / "saved"
    plain.parent.mkdir()
    plain.write_text("a file")
    with pytest.raises(BadInput, match="is a file"):
        link_saved(plain, tmp_path / "drive")
    assert plain.read_text() == "a file"


def _cell() -> str:
    nb = nbformat.read(REPO / "scripts" / "colab_bootstrap.ipynb", as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"][0].source


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bootstrap_with_drive_keeps_identity_and_checkpoints(tmp_path):
    key, public = client_key(tmp_path / "client")
    secrets = tmp_path / "colab-secrets.json"
    secrets.write_text(json.dumps({"REMOTECTL_AUTHORIZED_KEY": public}))
    mount = tmp_path / "drive"
    script = tmp_path / "bootstrap.py"
    script.write_text(_cell())
    runs = []
    for runtime in ("first", "second"):  # two runtimes: fresh project folder and state dir each
        project = tmp_path / runtime
        make_saved(project)
        if runtime == "second":
            (project / "saved" / "models" / "mnist" / "run1" / "checkpoint-epoch1.pth").unlink()
        state_dir = tmp_path / f"state-{runtime}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("NGROK_AUTHTOKEN", "REMOTECTL_AUTHORIZED_KEY", "REMOTECTL_PASSWORD")}
        env.update(REMOTECTL_TUNNEL="direct", REMOTECTL_STATE_DIR=str(state_dir), REMOTECTL_DETACH="1",
                   REMOTECTL_PROJECT_DIR=str(project), REMOTECTL_USE_DRIVE="1",
                   REMOTECTL_DRIVE_MOUNT=str(mount), REMOTECTL_REPO_URL="file:///nonexistent",
                   FAKE_COLAB_SECRETS=str(secrets),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])))
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                env=env, timeout=120, cwd=tmp_path)
        try:
            assert result.returncode == 0, result.stderr
            card = cards.decode(result.stdout.strip().splitlines()[-1])
            recorded = json.loads((state_dir / "state.json").read_text())
            out = ssh(pinned_ssh_config(tmp_path / f"ssh-{runtime}", recorded, key), "echo ok")
            assert out.stdout.strip() == "ok", out.stderr
        finally:
            subprocess.run([*CLI, "down", "--state-dir", str(state_dir)], capture_output=True, timeout=60)
        assert_all_gone(recorded)
        runs.append(card)
        kept = mount / "MyDrive" / "remotectl"
        assert keys.bare((kept / "identity" / "ssh_host_ed25519_key.pub").read_text()) == card.host_key
        assert (project / "saved").is_symlink()
        assert (project / "saved" / "models" / "mnist" / "run1" / "checkpoint-epoch1.pth").read_bytes() == b"weights"
    assert runs[0].host_key == runs[1].host_key and runs[0].session != runs[1].session
