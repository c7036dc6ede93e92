"""The bootstrap notebook: valid nbformat 4, one code cell, no secrets; its cell runs outside Colab.

Where the project comes from is tested with real git: a local repository by path, and a private
one over git's smart HTTP (`git http-backend` behind a server the test owns, which demands the
token the cell must send). Nothing but git and the cell is involved; the token must reach git
through its environment alone (never argv, never `.git/config`, never the cell's output).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import nbformat
import pytest
from helpers.sshkit import CLI, assert_all_gone, client_key, pinned_ssh_config, ssh

from remote import card as cards

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "scripts" / "colab_bootstrap.ipynb"
FAKE_COLAB = REPO / "tests" / "helpers" / "fake_colab"
pytestmark = pytest.mark.timeout(180)
TOKEN = "github_pat_11AAAAAAA0test0token0never0printed"


def _cell() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 and nb.cells[0].cell_type == "markdown"
    return code[0].source


def test_notebook_shape_and_no_secret_literals():
    source = _cell()
    for name in ("REPO_URL", "DRIVE_PROJECT", "GIT_TOKEN_SECRET", "PROJECT_DIR", "TUNNEL", "USE_DRIVE"):
        assert re.search(rf"^{name} = ", source, re.M), name
    # no made-up repository: the user names their own copy (or a Drive folder)
    assert re.search(r'^REPO_URL = os\.environ\.get\("REMOTECTL_REPO_URL", ""\)', source, re.M)
    assert not re.findall(r"https://github\.com/(?!YOU/)", source)
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
        out = ssh(pinned_ssh_config(tmp_path / "ssh", recorded, key), 'echo "from-bootstrap $REMOTECTL_PYTHON"')
        assert out.stdout.strip() == f"from-bootstrap {sys.executable}", out.stderr
        # the interpreter the cell ran under: in the card, the report above it, and ssh sessions
        assert card.python == sys.executable and recorded["python"] == sys.executable
        assert f"python     {sys.executable}  (over ssh: $REMOTECTL_PYTHON)" in result.stdout
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


# -- where the project comes from -------------------------------------------------------------
def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                   check=True, capture_output=True, timeout=60)


def _origin(root: Path) -> Path:
    """A user's copy of the repository: a small git repository with one commit."""
    src = root / "origin"
    (src / "project").mkdir(parents=True)
    (src / "README.md").write_text("my copy\n")
    (src / "project" / "train.py").write_text("print('train')\n")
    _git("init", "-q", "-b", "main", cwd=src)
    _git("add", "-A", cwd=src)
    _git("commit", "-q", "-m", "first", cwd=src)
    return src


def _run_cell(tmp_path: Path, colab_secrets: Dict[str, str] = None, **settings: str):
    """The cell as a script; with `colab_secrets`, google.colab's stand-in serves them."""
    script = tmp_path / "bootstrap.py"
    script.write_text(_cell())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTECTL_", "NGROK_", "FAKE_", "GIT_"))}
    env.update(REMOTECTL_TUNNEL="direct", REMOTECTL_STATE_DIR=str(tmp_path / "state"), **settings)
    if colab_secrets is not None:
        secrets = tmp_path / "colab-secrets.json"
        secrets.write_text(json.dumps(colab_secrets))
        env.update(FAKE_COLAB_SECRETS=str(secrets),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)


def _stopped_at_login(result) -> None:
    """The checkout part worked; the cell then stops, as it should, for want of a key (no traceback)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "remotectl: error: no way to log in" in result.stderr and "Traceback" not in result.stderr


def test_neither_repo_url_nor_drive_folder_is_one_clear_paragraph(tmp_path):
    result = _run_cell(tmp_path, REMOTECTL_PROJECT_DIR=str(tmp_path / "content" / "remotectl"))
    assert result.returncode == 1 and result.stdout == ""
    said = result.stderr.strip()
    assert "Traceback" not in said and "\n" not in said, said  # one paragraph, nothing else
    for needed in ("REPO_URL", "DRIVE_PROJECT", "Fork", "Use this template", "GITHUB_TOKEN"):
        assert needed in said, needed
    assert not (tmp_path / "content").exists() and not (tmp_path / "state").exists()


def test_repo_url_is_cloned_once_and_a_rerun_keeps_the_users_edits(tmp_path):
    origin = _origin(tmp_path)
    target = tmp_path / "content" / "mycopy"
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "mycopy.partial").mkdir()  # an earlier clone, interrupted
    (tmp_path / "content" / "mycopy.partial" / "half").write_text("x")
    first = _run_cell(tmp_path, REMOTECTL_REPO_URL=str(origin), REMOTECTL_PROJECT_DIR=str(target))
    _stopped_at_login(first)
    assert f"project    {target}  (cloned from {origin})" in first.stdout
    assert (target / "project" / "train.py").read_text() == "print('train')\n"
    assert not (target / "half").exists() and not (tmp_path / "content" / "mycopy.partial").exists()

    (target / "project" / "train.py").write_text("my edit\n")  # edited on the runtime, not committed
    (target / "notes.txt").write_text("mine")
    (origin / "README.md").write_text("changed upstream\n")
    _git("commit", "-q", "-am", "second", cwd=origin)
    again = _run_cell(tmp_path, REMOTECTL_REPO_URL=str(origin), REMOTECTL_PROJECT_DIR=str(target))
    _stopped_at_login(again)
    assert f"project    {target}  (already here: used as it is, your edits kept)" in again.stdout
    assert (target / "project" / "train.py").read_text() == "my edit\n"
    assert (target / "notes.txt").read_text() == "mine" and (target / "README.md").read_text() == "my copy\n"


def test_a_url_with_credentials_in_it_is_refused_before_git_runs(tmp_path):
    target = tmp_path / "mycopy"
    result = _run_cell(tmp_path, REMOTECTL_REPO_URL=f"https://me:{TOKEN}@example.invalid/me/copy.git",
                       REMOTECTL_PROJECT_DIR=str(target))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Colab's Secrets panel as GITHUB_TOKEN" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert not target.exists() and not Path(f"{target}.partial").exists()


class GitServer:
    """git's smart HTTP (`git http-backend`) for the repositories under `root`, behind Basic auth
    with `token`, as GitHub serves a private repository. While each request is served it looks
    at every process's argv for the token (git is running then, so a leak would be seen)."""

    def __init__(self, root: Path, token: str) -> None:
        self.authorized = 0
        self.refused = 0
        self.argv_leaks: List[str] = []
        secrets = [token.encode(), base64.b64encode(f"x-access-token:{token}".encode())]
        expected = "Basic " + secrets[1].decode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                outer.argv_leaks.extend(_argv_with(secrets))
                if self.headers.get("Authorization") != expected:
                    outer.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.authorized += 1
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                       "REMOTE_ADDR": "127.0.0.1", "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                     timeout=60).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() != "status":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _argv_with(secrets: List[bytes]) -> List[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if any(secret in argv for secret in secrets):
            found.append(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def _files_containing(folder: Path, needles: List[bytes]) -> List[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_private_repo_token_from_colab_secrets_reaches_git_by_its_environment_only(tmp_path, request):
    bare = tmp_path / "served"
    bare.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(_origin(tmp_path)), str(bare / "copy.git")],
                   check=True, capture_output=True, timeout=60)
    server = GitServer(bare, TOKEN)
    request.addfinalizer(server.close)
    url = f"{server.url}/copy.git"
    secret_forms = [TOKEN.encode(), base64.b64encode(f"x-access-token:{TOKEN}".encode())]

    target = tmp_path / "mycopy"
    cloned = _run_cell(tmp_path, colab_secrets={"GITHUB_TOKEN": TOKEN}, REMOTECTL_REPO_URL=url,
                       REMOTECTL_PROJECT_DIR=str(target))
    assert "cloned from" in cloned.stdout, cloned.stderr
    assert (target / "project" / "train.py").exists()
    assert server.authorized >= 2 and server.argv_leaks == [], server.argv_leaks
    assert not any(form.decode() in cloned.stdout + cloned.stderr for form in secret_forms)
    assert _files_containing(target, secret_forms) == []  # .git/config included
    origin = subprocess.run(["git", "-C", str(target), "remote", "get-url", "origin"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert origin == url

    for secrets, says in (({"GITHUB_TOKEN": "github_pat_wrong0wrong0wrong"}, "(it was sent)"),
                          ({}, "(none was found)")):
        other = tmp_path / f"refused-{len(secrets)}"
        refused = _run_cell(tmp_path, colab_secrets=secrets, REMOTECTL_REPO_URL=url,
                            REMOTECTL_PROJECT_DIR=str(other))
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert f"Could not clone {url}:" in refused.stderr and says in refused.stderr, refused.stderr
        assert "wrong0wrong" not in refused.stdout + refused.stderr
        assert not other.exists() and not Path(f"{other}.partial").exists()
    assert server.refused >= 2 and server.argv_leaks == []


def test_drive_project_folder_is_served_in_place_without_git(tmp_path):
    key, public = client_key(tmp_path / "client")
    mount = tmp_path / "drive"
    folder = mount / "MyDrive" / "myproj"
    settings = dict(REMOTECTL_DRIVE_PROJECT="MyDrive/myproj", REMOTECTL_DRIVE_MOUNT=str(mount),
                    REMOTECTL_DETACH="1")
    missing = _run_cell(tmp_path, colab_secrets={"REMOTECTL_AUTHORIZED_KEY": public}, **settings)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"DRIVE_PROJECT is set, but {folder} is empty or missing" in missing.stderr

    (folder / "project").mkdir(parents=True)
    (folder / "project" / "train.py").write_text("print('train')\n")
    served = _run_cell(tmp_path, colab_secrets={"REMOTECTL_AUTHORIZED_KEY": public}, **settings)
    state_dir = tmp_path / "state"
    try:
        assert served.returncode == 0, served.stderr
        card = cards.decode(served.stdout.strip().splitlines()[-1])
        assert card.path == str(folder) and card.python == sys.executable
        recorded = json.loads((state_dir / "state.json").read_text())
        out = ssh(pinned_ssh_config(tmp_path / "ssh", recorded, key), f"ls {folder}/project")
        assert out.stdout.split() == ["train.py"], out.stderr
    finally:
        subprocess.run([*CLI, "down", "--state-dir", str(state_dir)], capture_output=True, timeout=60)
    assert_all_gone(recorded)
    assert not (folder / ".git").exists() and not (folder / "saved").is_symlink()
