"""pull/push against a real sshd, as people use rsync: where things land, what a second run
does, modes, mtimes and links kept, resume only of an unchanged source, --verify, and no
writing through a link already on the receiving side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import REPO, remotectl, snapshot
from helpers.slow_link import SlowLink

from remote.card import Card

pytestmark = pytest.mark.timeout(240)
STAMP = 1_650_000_000  # a fixed mtime, so "kept" is checkable


def connect(ssh_dir, client_key, card: Card, name: str = "colab"):
    result = remotectl("connect", card.encode(), "--no-check", "--name", name, "--ssh-dir", str(ssh_dir),
                       "--identity", str(client_key))
    assert result.returncode == 0, result.stderr
    return result


def cli(ssh_dir, *args):
    return remotectl(*args, "--json", "--ssh-dir", str(ssh_dir))


def stats_of(result) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def tree(root: Path):
    """path -> (kind, mode, mtime, content or link target) for everything under `root`."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = os.lstat(path)
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", st.st_mode & 0o777, int(st.st_mtime), path.read_bytes())
    return out


def make_saved(folder: Path) -> Path:
    """A project's saved/ with a private checkpoint, a relative and an absolute link inside."""
    run = folder / "saved" / "models" / "run1"
    run.mkdir(parents=True)
    (run / "model_best.pth").write_bytes(os.urandom(300_000))
    (run / "model_best.pth").chmod(0o600)
    (run / "config.json").write_text('{"lr": 0.1}')
    (folder / "saved" / "latest").symlink_to("models/run1")
    (folder / "saved" / "by-path").symlink_to(run / "config.json")  # absolute, but inside the tree
    for path in [*run.iterdir(), run]:
        os.utime(path, (STAMP, STAMP), follow_symlinks=False)
    return folder / "saved"


@pytest.mark.slow
def test_pull_lands_like_rsync_twice_without_nesting(sshd, ssh_dir, client_key, tmp_path):
    project = tmp_path / "remote" / "proj"
    saved = make_saved(project)
    connect(ssh_dir, client_key, sshd.card(path=str(project)))
    home = tmp_path / "home"

    first = stats_of(cli(ssh_dir, "pull", "saved", str(home)))  # DEST does not exist yet
    assert first["files"] == 2 and first["links"] == 2 and first["refused"] == []
    pulled = home / "saved"
    got = tree(pulled)
    want = tree(saved)
    assert got["models/run1/model_best.pth"] == want["models/run1/model_best.pth"]  # bytes, 0600, mtime
    assert got["models/run1/model_best.pth"][1] == 0o600
    assert got["latest"] == ("link", "models/run1")
    assert got["by-path"] == ("link", "models/run1/config.json")  # made relative: it still works here
    assert (pulled / "by-path").read_text() == '{"lr": 0.1}'

    files = snapshot(home)
    second = stats_of(cli(ssh_dir, "pull", "saved", str(home)))  # DEST exists now: same place
    assert second["files"] == 0 and second["bytes"] == 0 and second["skipped"] == 4
    assert snapshot(home) == files and not (pulled / "saved").exists()

    contents = stats_of(cli(ssh_dir, "pull", "saved/", str(tmp_path / "flat")))
    assert contents["files"] == 2 and (tmp_path / "flat" / "models" / "run1" / "config.json").exists()

    single = cli(ssh_dir, "pull", "saved/models/run1/config.json", str(tmp_path / "cfg-copy.json"))
    assert single.returncode == 0 and (tmp_path / "cfg-copy.json").read_text() == '{"lr": 0.1}'
    assert int((tmp_path / "cfg-copy.json").stat().st_mtime) == STAMP


@pytest.mark.slow
def test_push_lands_like_rsync_keeps_modes_and_refuses_links_out(sshd, ssh_dir, client_key, tmp_path):
    project = tmp_path / "remote" / "proj"
    project.mkdir(parents=True)
    connect(ssh_dir, client_key, sshd.card(path=str(project)))
    local = make_saved(tmp_path / "laptop")

    first = stats_of(cli(ssh_dir, "push", str(local)))  # default REMOTE: the card's folder
    assert first["files"] == 2 and first["links"] == 2
    pushed, here = tree(project / "saved"), tree(local)
    assert pushed.pop("by-path") == ("link", "models/run1/config.json")  # absolute here, relative there
    here.pop("by-path")
    assert pushed == here  # bytes, modes (0600 stays 0600), mtimes, links
    second = stats_of(cli(ssh_dir, "push", str(local)))
    assert second["files"] == 0 and not (project / "saved" / "saved").exists()

    stats_of(cli(ssh_dir, "push", f"{local}/", "elsewhere"))  # contents, relative to the folder
    assert (project / "elsewhere" / "models" / "run1" / "model_best.pth").stat().st_mode & 0o777 == 0o600

    (local / "leak").symlink_to(Path.home())
    out = cli(ssh_dir, "push", str(local))
    assert out.returncode == 1 and "refused leak: a symlink pointing out" in out.stderr
    assert not os.path.lexists(project / "saved" / "leak")


def test_nothing_is_written_through_a_local_link_inside_dest(sshd, ssh_dir, client_key, tmp_path):
    project = tmp_path / "remote" / "proj"
    make_saved(project)
    connect(ssh_dir, client_key, sshd.card(path=str(project)))
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / "saved" / "models").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (home / "saved" / "models" / "run1").symlink_to(outside)  # a link the user (or anyone) left
    before = snapshot(outside)

    result = cli(ssh_dir, "pull", "saved", str(home))
    assert result.returncode == 1
    stats = stats_of(result)
    # the folder, both files in it, and the two links that would now resolve through it
    assert sorted(stats["refused"]) == ["by-path", "latest", "models/run1", "models/run1/config.json",
                                        "models/run1/model_best.pth"]
    assert "symlink here; nothing is written through it" in result.stderr
    assert snapshot(outside) == before
    assert (home / "saved" / "models" / "run1").is_symlink()  # the user's link itself is left alone


@pytest.mark.slow
def test_same_size_rewrite_is_copied_again_and_verify_catches_a_kept_mtime(sshd, ssh_dir, client_key, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    ckpt = remote / "ckpt.pth"
    ckpt.write_bytes(b"A" * 100_000)
    os.utime(ckpt, (STAMP, STAMP))
    connect(ssh_dir, client_key, sshd.card())
    home = tmp_path / "home"
    home.mkdir()
    assert stats_of(cli(ssh_dir, "pull", str(ckpt), str(home)))["files"] == 1

    ckpt.write_bytes(b"B" * 100_000)  # same size, a new mtime: a new checkpoint
    os.utime(ckpt, (STAMP + 60, STAMP + 60))
    assert stats_of(cli(ssh_dir, "pull", str(ckpt), str(home)))["files"] == 1
    assert (home / "ckpt.pth").read_bytes() == b"B" * 100_000

    ckpt.write_bytes(b"C" * 100_000)  # same size and the same mtime: only the content can tell
    os.utime(ckpt, (STAMP + 60, STAMP + 60))
    assert stats_of(cli(ssh_dir, "pull", str(ckpt), str(home)))["skipped"] == 1
    verified = stats_of(cli(ssh_dir, "pull", str(ckpt), str(home), "--verify"))
    assert verified["recopied"] == 1 and verified["verified"] == 1
    assert (home / "ckpt.pth").read_bytes() == b"C" * 100_000
    again = stats_of(cli(ssh_dir, "pull", str(ckpt), str(home), "--verify"))
    assert again["recopied"] == 0 and again["verified"] == 1 and again["files"] == 0

    (home / "ckpt.pth").write_bytes(b"D" * 100_000)  # push --verify: the remote copy differs
    os.utime(home / "ckpt.pth", (STAMP + 60, STAMP + 60))
    pushed = stats_of(cli(ssh_dir, "push", str(home / "ckpt.pth"), str(remote), "--verify"))
    assert pushed["recopied"] == 1 and ckpt.read_bytes() == b"D" * 100_000


def _interrupted(ssh_dir, args, part: Path, at_least: int) -> None:
    """Start `remotectl ARGS`, kill it (SIGKILL) once `part` holds `at_least` bytes."""
    proc = subprocess.Popen([sys.executable, "-m", "remote.cli", *args, "--quiet", "--ssh-dir", str(ssh_dir)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if part.exists() and part.stat().st_size >= at_least:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        else:
            raise AssertionError(f"{part} never reached {at_least} bytes")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_resume_only_while_the_source_is_unchanged(sshd, ssh_dir, client_key, tmp_path, request):
    link = SlowLink(sshd.port, rate=1_500_000)
    request.addfinalizer(link.stop)
    link.start()
    card = Card(user="root", host="127.0.0.1", port=link.port, host_key=sshd.host_public_key, session="slow")
    connect(ssh_dir, client_key, card, name="slow")
    remote = tmp_path / "remote"
    remote.mkdir()
    ckpt = remote / "ckpt.pth"
    data = os.urandom(6_000_000)
    ckpt.write_bytes(data)
    home = tmp_path / "home"
    home.mkdir()
    part = home / "ckpt.pth.remotectl.part"

    _interrupted(ssh_dir, ["pull", "slow", str(ckpt), str(home)], part, 1_000_000)
    kept = part.stat().st_size
    resumed = stats_of(cli(ssh_dir, "pull", "slow", str(ckpt), str(home)))
    assert resumed["resumed"] == 1 and resumed["bytes"] == len(data) - kept
    assert (home / "ckpt.pth").read_bytes() == data and not part.exists()

    (home / "ckpt.pth").unlink()
    _interrupted(ssh_dir, ["pull", "slow", str(ckpt), str(home)], part, 1_000_000)
    fresh = os.urandom(len(data))  # rewritten with the same size while the part waited
    ckpt.write_bytes(fresh)
    os.utime(ckpt, (STAMP, STAMP))
    restarted = stats_of(cli(ssh_dir, "pull", "slow", str(ckpt), str(home)))
    assert restarted["resumed"] == 0 and restarted["bytes"] == len(fresh)
    assert (home / "ckpt.pth").read_bytes() == fresh

    local = tmp_path / "upload.bin"
    local.write_bytes(data)
    remote_part = remote / "upload.bin.remotectl.part"
    _interrupted(ssh_dir, ["push", "slow", str(local), str(remote)], remote_part, 1_000_000)
    pushed = stats_of(cli(ssh_dir, "push", "slow", str(local), str(remote)))
    assert pushed["resumed"] == 1 and pushed["bytes"] < len(data)
    assert (remote / "upload.bin").read_bytes() == data


@pytest.mark.slow
def test_progress_without_a_terminal_ends_every_line(sshd, ssh_dir, client_key, tmp_path, request):
    link = SlowLink(sshd.port, rate=1_000_000)
    request.addfinalizer(link.stop)
    link.start()
    card = Card(user="root", host="127.0.0.1", port=link.port, host_key=sshd.host_public_key, session="slow")
    connect(ssh_dir, client_key, card, name="slow")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6_500_000))
    result = remotectl("pull", "slow", str(big), str(tmp_path / "copy.bin"), "--ssh-dir", str(ssh_dir))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and result.stderr.endswith("\n")
    lines = [line for line in result.stderr.splitlines() if line.startswith("pull big.bin:")]
    assert len(lines) >= 2 and lines[-1].startswith("pull big.bin: 6.5/6.5 MB (100%)")


@pytest.mark.slow
def test_without_openssh_the_same_copy_runs_over_paramiko_with_the_pin(sshd, ssh_dir, client_key, tmp_path):
    project = tmp_path / "remote" / "proj"
    saved = make_saved(project)
    connect(ssh_dir, client_key, sshd.card(path=str(project)))
    env = {"REMOTECTL_SSH": "paramiko"}
    home = tmp_path / "home"
    pulled = remotectl("pull", "saved", str(home), "--json", "--verify", "--ssh-dir", str(ssh_dir), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["verified"] == 2
    assert tree(home / "saved")["models/run1/model_best.pth"] == tree(saved)["models/run1/model_best.pth"]
    sshd.restart(new_host_key=True)  # another machine at the address: refused, nothing copied
    again = remotectl("pull", "saved", str(tmp_path / "other"), "--ssh-dir", str(ssh_dir), env=env)
    assert again.returncode == 1 and "host key mismatch" in again.stderr
    assert not (tmp_path / "other").exists()
    refused = remotectl("pull", "saved", str(tmp_path / "other"), "--ssh-dir", str(ssh_dir))  # and OpenSSH
    assert refused.returncode == 1 and "not the one pinned" in refused.stderr
