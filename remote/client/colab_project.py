"""Bring the project onto a Colab runtime reached by its own SSH route: clone a repository
there, or copy the local project folder, over the entry remotectl wrote.

A Colab runtime from `colab new` starts empty: no cell ran, so nothing cloned the project.
Both ways run the real OpenSSH client against the managed config, so they share the one
connection Google allows per runtime (the entry's ControlMaster) with a VS Code window that
is already open. Nothing the remote says reaches the terminal raw, and no credential is ever
put on a command line: a URL with a password or token in it is refused.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from remote.client.untrusted import clean_line
from remote.errors import BadInput, RemotectlError

SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
             "node_modules", ".ipynb_checkpoints"}
_URL_RE = re.compile(r"^(?:(?:https?|ssh|git|file)://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$")


def check_repo_url(url: str) -> str:
    """A clone URL git can take as one argument: https/ssh/git/file or user@host:path, no credential."""
    url = (url or "").strip()
    if not _URL_RE.match(url) or any(ord(ch) < 32 for ch in url):
        raise BadInput(f"--repo {url!r} is not a repository URL",
                       "Give https://github.com/you/project.git, git@github.com:you/project.git or file:///path.")
    match = re.match(r"^[a-z]+://([^/@]*)@", url)
    if match and ":" in match.group(1) or re.match(r"^https?://[^/@]+@", url):
        raise BadInput("--repo holds a credential (user:token@...); remotectl never puts secrets on a command line",
                       "Use the repository's public URL, or copy your local folder with --push DIR.")
    return url


def check_remote_path(path: str) -> str:
    """An absolute remote folder that a shell word and ssh_config can hold."""
    if not path.startswith("/") or len(path) > 1024 or any(ord(ch) < 32 or ch in '"\\' for ch in path):
        raise BadInput(f"--path {path!r} is not an absolute remote folder")
    return posixpath.normpath(path)


def default_folder(source: str) -> str:
    """`/content/<name>`: the repository's or the local folder's name, as the bootstrap cell does."""
    name = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    name = name[:-4] if name.endswith(".git") else name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "project"
    return f"/content/{name}"


@dataclass
class Ssh:
    """The OpenSSH client against remotectl's own config, for host `name`."""

    config: Path
    name: str
    timeout: float = 120.0

    def argv(self, command: str) -> List[str]:
        # Ride a shared connection that is open (VS Code's), never hold one: a master waits for
        # every client riding it, so a VS Code window opened meanwhile would keep this call open.
        return ["ssh", "-F", str(self.config), "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-T",
                self.name, command]

    def run(self, command: str, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.argv(command), capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise RemotectlError(f"`ssh {self.name}` did not finish within {timeout or self.timeout:.0f} s") from None


def _failed(what: str, out: subprocess.CompletedProcess) -> RemotectlError:
    said = (out.stderr or out.stdout or "").strip().splitlines()
    last = clean_line(said[-1], limit=300) if said else f"exit {out.returncode}"
    return RemotectlError(f"{what} failed on the runtime: {last}")


@dataclass
class Seeded:
    """What bringing the project did: `cloned`, `present` (left as it was), or `copied` N files."""

    how: str
    path: str
    files: int = 0
    bytes: int = 0

    def line(self) -> str:
        if self.how == "cloned":
            return f"Cloned the project into {self.path} on the runtime."
        if self.how == "present":
            return f"The project is already there ({self.path}): left as it is."
        return f"Copied {self.files} file(s), {self.bytes / 1e6:.1f} MB, into {self.path} on the runtime."


def clone(ssh: Ssh, url: str, path: str) -> Seeded:
    """`git clone URL PATH` on the runtime, unless PATH already holds a clone (never overwritten)."""
    url, path = check_repo_url(url), check_remote_path(path)
    q = shlex.quote(path)
    probe = ssh.run(f"if [ -d {q}/.git ]; then echo git; elif [ -e {q} ]; then echo other; else echo none; fi")
    if probe.returncode != 0:
        raise _failed("looking for the project", probe)
    state = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else ""
    if state == "git":
        return Seeded("present", path)
    if state == "other":
        raise BadInput(f"{path} exists on the runtime and is not a git clone; nothing was changed",
                       "Pick another folder with --path, or remove it there first.")
    out = ssh.run(f"mkdir -p {shlex.quote(posixpath.dirname(path))} && "
                  f"GIT_TERMINAL_PROMPT=0 git clone --quiet -- {shlex.quote(url)} {q}", timeout=max(ssh.timeout, 600))
    if out.returncode != 0:
        raise _failed(f"git clone {url}", out)
    return Seeded("cloned", path)


def _git_files(folder: Path) -> Optional[List[str]]:
    """The files git would carry (tracked, plus untracked that are not ignored), or None off git."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return sorted({name for name in out.stdout.decode(errors="surrogateescape").split("\0") if name})


def _walk(folder: Path) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            yield os.path.relpath(os.path.join(root, name), folder)


def plan(folder: Path) -> List[Tuple[str, int]]:
    """(relative path, size) of each file to copy: git's list in a work tree, else the folder
    without virtualenvs, caches and .git. Symlinks are copied as links, never followed."""
    names = _git_files(folder)
    if names is None:
        names = list(_walk(folder))
    found = []
    for rel in names:
        path = folder / rel
        if any(part in (".", "..") for part in Path(rel).parts) or not os.path.lexists(path):
            continue  # deleted in the work tree but still in the index; or a name git should not give
        st = os.lstat(path)
        found.append((rel, st.st_size if os.path.isfile(path) and not os.path.islink(path) else 0))
    return found


def push_folder(ssh: Ssh, folder: os.PathLike, path: str) -> Seeded:
    """Copy `folder` to PATH on the runtime as one tar stream over ssh (mtimes and modes kept)."""
    local = Path(os.path.abspath(os.fspath(folder)))
    if not local.is_dir():
        raise BadInput(f"--push {local} is not a folder")
    path = check_remote_path(path)
    files = plan(local)
    q = shlex.quote(path)
    proc = subprocess.Popen(ssh.argv(f"mkdir -p {q} && tar -x -f - -C {q}"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    said: List[bytes] = []
    readers = [threading.Thread(target=lambda s=s: said.append(s.read()), daemon=True)
               for s in (proc.stdout, proc.stderr)]
    for reader in readers:
        reader.start()
    total = 0
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for rel, size in files:
                tar.add(str(local / rel), arcname=rel, recursive=False)
                total += size
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the far end stopped reading: its exit status and stderr say why
    try:
        code = proc.wait(timeout=max(ssh.timeout, 600))
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RemotectlError(f"copying {local} to the runtime did not finish") from None
    for reader in readers:
        reader.join(timeout=10)
    if code != 0:
        text = b"".join(said).decode(errors="replace")
        raise _failed(f"copying {local}", subprocess.CompletedProcess([], code, "", text))
    return Seeded("copied", path, files=len(files), bytes=total)


def bring(ssh: Ssh, repo: Optional[str] = None, push: Optional[str] = None,
          path: Optional[str] = None) -> Optional[Seeded]:
    """Clone `repo` or copy `push` to `path` (default /content/<name>); None when asked for neither."""
    if repo and push:
        raise BadInput("--repo and --push are two ways to bring the project: pick one")
    if repo:
        return clone(ssh, repo, path or default_folder(repo))
    if push:
        return push_folder(ssh, push, path or default_folder(os.path.abspath(push)))
    return None


def args_for(repo: Optional[str], push: Optional[str], path: Optional[str]) -> Sequence[Optional[str]]:
    """Validate what `connect --colab` was given before anything is written (BadInput, exit 2)."""
    if repo and push:
        raise BadInput("--repo and --push are two ways to bring the project: pick one")
    if repo:
        check_repo_url(repo)
    if push and not Path(push).is_dir():
        raise BadInput(f"--push {push} is not a folder")
    folder = path or (default_folder(repo) if repo else default_folder(os.path.abspath(push)) if push else None)
    return repo, push, check_remote_path(folder) if folder else None
