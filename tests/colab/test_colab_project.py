"""Bringing the project onto a runtime over the Colab route, and one shared connection for all of it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from _colab import pinned_config, ssh, wait_for

from remote.client import colab_project, colab_route
from remote.errors import BadInput

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def link(google, login, runtime, short_dir, monkeypatch):
    """An entry (hand-written like connect's) to session s1, with connection sharing."""
    monkeypatch.setenv("COLAB_STANDIN_HOME", google.env["COLAB_STANDIN_HOME"])
    monkeypatch.setenv("PATH", google.env["PATH"])
    google.runtime("s1", runtime)
    proxy = colab_route.proxy_command(google.colab, "s1", login.identity)
    config = pinned_config(short_dir / "cfg", proxy, login.identity, runtime,
                           extra=colab_route.control_options(short_dir / "cfg", "h"))
    return colab_project.Ssh(config, "h", timeout=60)


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}).stdout


@pytest.fixture
def work_tree(tmp_path):
    tree = tmp_path / "my project"
    (tree / "project").mkdir(parents=True)
    (tree / "project" / "train.py").write_text("print('train')\n")
    (tree / "odd name 'q' $x.txt").write_text("odd\n")
    (tree / ".gitignore").write_text("data/\n*.ckpt\n")
    (tree / "data").mkdir()
    (tree / "data" / "big.bin").write_bytes(b"0" * 1000)
    (tree / "model.ckpt").write_text("weights")
    git("init", "-q", cwd=tree)
    git("add", "-A", cwd=tree)
    git("commit", "-qm", "init", cwd=tree)
    (tree / "notes.md").write_text("untracked, not ignored\n")
    os.chmod(tree / "project" / "train.py", 0o755)
    return tree


def test_push_copies_what_git_would_carry(link, work_tree, tmp_path):
    dest = tmp_path / "remote side" / "proj"
    done = colab_project.bring(link, push=str(work_tree), path=str(dest))
    assert done.how == "copied" and done.files == 4
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == [".gitignore", "notes.md", "odd name 'q' $x.txt", "project/train.py"]
    assert not (dest / "data").exists() and not (dest / "model.ckpt").exists() and not (dest / ".git").exists()
    assert os.stat(dest / "project" / "train.py").st_mode & 0o777 == 0o755
    assert os.stat(dest / "notes.md").st_mtime == pytest.approx(os.stat(work_tree / "notes.md").st_mtime, abs=1)
    again = colab_project.bring(link, push=str(work_tree), path=str(dest))
    assert again.files == done.files


@pytest.mark.slow
def test_clone_then_present_and_never_over_a_folder(link, work_tree, tmp_path):
    bare = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(work_tree), str(bare))
    dest = tmp_path / "runtime" / "content" / "proj"
    done = colab_project.bring(link, repo=f"file://{bare}", path=str(dest))
    assert done.how == "cloned" and (dest / "project" / "train.py").read_text() == "print('train')\n"
    (dest / "local-work.txt").write_text("mine")
    assert colab_project.bring(link, repo=f"file://{bare}", path=str(dest)).how == "present"
    assert (dest / "local-work.txt").read_text() == "mine"
    other = tmp_path / "runtime" / "content" / "busy"
    other.mkdir()
    (other / "x").write_text("keep")
    with pytest.raises(BadInput, match="not a git clone"):
        colab_project.bring(link, repo=f"file://{bare}", path=str(other))
    assert (other / "x").read_text() == "keep"


@pytest.mark.parametrize("url", ["https://user:ghp_secret@github.com/a/b.git", "https://ghp_secret@github.com/a/b",
                                 "--upload-pack=touch /tmp/x", "a b", "https://x/y\nz", "https://x/\x1b[2J", ""])
def test_bad_or_secret_bearing_urls_are_refused(url):
    with pytest.raises(BadInput):
        colab_project.check_repo_url(url)


def test_default_folders():
    assert colab_project.default_folder("https://github.com/me/remotectl.git") == "/content/remotectl"
    assert colab_project.default_folder("git@github.com:me/proj") == "/content/proj"
    assert colab_project.default_folder("/home/me/my project/") == "/content/my_project"


def test_remote_error_text_reaches_the_terminal_cleaned():
    """A runtime answering with an OSC 52 clipboard sequence: the error line holds no ESC or BEL."""
    said = subprocess.CompletedProcess([], 128, "", "warning: x\nfatal: \x1b]52;c;ZXZpbA==\x07 gone\r\n")
    message = colab_project._failed("git clone", said).message
    assert "\x1b" not in message and "\x07" not in message and "\r" not in message
    assert message.startswith("git clone failed on the runtime: fatal: ") and "gone" in message


def test_one_shared_connection_serves_every_client(link, google, login, runtime, tmp_path):
    """Google allows one SSH connection per runtime: with the entry's ControlMaster, a second
    `ssh`, an sftp and a forward ride the first; a client outside the entry gets HTTP 429."""
    config, name = link.config, link.name
    holder = subprocess.Popen(["ssh", "-F", str(config), "-N", name], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: colab_route.mux_alive(config, name), what="the shared connection")
        out = ssh(config, name, "echo shared", env=os.environ.copy())
        assert out.returncode == 0 and out.stdout == "shared\n", out.stderr
        target = tmp_path / "sftp-target.txt"
        target.write_text("payload")
        got = subprocess.run(["sftp", "-F", str(config), "-b", "-", name], input=f"get {target} {tmp_path}/back\n",
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0 and (tmp_path / "back").read_text() == "payload", got.stderr
        assert len([c for c in google.calls() if "--proxy-mode" in c]) == 1  # one WebSocket, shared
        outside = subprocess.run([str(google.colab), "ssh", "--proxy-mode", "-s", "s1", "-i", str(login.identity)],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert outside.returncode == 1 and "HTTP 429" in outside.stderr
        assert json.loads(json.dumps(colab_route.explain(outside.stderr, 1, "s1").kind)) == "busy"
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    wait_for(lambda: not colab_route.mux_alive(config, name), what="no lingering shared connection")
