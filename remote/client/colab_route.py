"""Colab's own SSH route: Google's `colab ssh --proxy-mode` as the entry's ProxyCommand.

Google's CLI (google-colab-cli, installed from its GitHub repository: PyPI's 0.6.0 lacks
`colab ssh`) carries SSH to a Colab runtime over an authenticated WebSocket. remotectl writes
the entry around it and keeps its own rules: an absolute path to `colab` (ssh runs the
ProxyCommand in a non-login shell), remotectl's key passed with `-i` (the endpoint accepts only
ssh-ed25519 and ecdsa keys), and the host key learned through that route pinned, never
`StrictHostKeyChecking no`. This module finds and vets `colab`, builds the ProxyCommand, reads
its failures (HTTP 429, 404, 401, 400, sign-in, no `ssh` subcommand) into one line with the
fix, and gives paramiko a socket through it that reports those failures instead of a timeout.

Its proxy mode does not work on Windows (google-colab-cli PR #99: the stdin pump calls
`select()` on a pipe, which Windows only allows on sockets), so the route refuses to be set
up there and says so.
"""

from __future__ import annotations

import os
import platform
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from remote.errors import BadInput, RemotectlError

COLAB_VAR = "REMOTECTL_COLAB"
HOSTNAME = "colab-runtime"  # what Google's own `colab ssh` calls the far end; never resolved
USER = "root"
GPUS = ("T4", "L4", "A100", "H100", "G4")
ACCEPTED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
REPO = "https://github.com/googlecolab/google-colab-cli"
INSTALL = f"uv tool install git+{REPO}"
REINSTALL = f"uv tool install --force git+{REPO}"
INSTALL_HINT = (
    "Install Google's colab CLI from its GitHub repository (PyPI's 0.6.0 has no `colab ssh`, "
    "google-colab-cli#102; it needs Python 3.13 or newer):\n"
    f"    {INSTALL}\n"
    f"Or name a colab executable with {COLAB_VAR}=/path/to/colab. Then run the same command again.")
SIGN_IN_FIX = ("sign in with Google's CLI in a terminal first: run `colab sessions` and follow its "
               "sign-in steps, then try again")
_SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ColabRouteError(RemotectlError):
    """The Colab route cannot be used as it stands; `kind` names why (for doctor and tests)."""

    kind = "failed"

    def __init__(self, message: str, hint: Optional[str] = None, kind: Optional[str] = None) -> None:
        super().__init__(message, hint)
        if kind:
            self.kind = kind


# -- inputs -----------------------------------------------------------------------------
def check_session(name: str) -> str:
    """A Colab session name we can pass through ssh_config and a shell unchanged."""
    if not isinstance(name, str) or not _SESSION_RE.match(name):
        raise BadInput(f"Colab session name {name!r} is not usable here",
                       "Use letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit, "
                       "e.g. --colab train1.")
    return name


def check_gpu(gpu: Optional[str]) -> Optional[str]:
    """The accelerator in Google's spelling. Google's CLI maps an unknown name to A100 without a
    word (a costly surprise), so only the names it documents pass."""
    if gpu is None:
        return None
    wanted = gpu.strip().upper()
    if wanted not in GPUS:
        raise BadInput(f"--gpu {gpu!r} is not one of {', '.join(GPUS)}")
    return wanted


def refuse_windows(system: Optional[str] = None) -> None:
    """The route's one platform rule: Google's proxy mode does not run on Windows."""
    if (system or platform.system()).strip().lower() == "windows":
        raise ColabRouteError(
            "Colab's own SSH route does not work on Windows: `colab ssh --proxy-mode` cannot pump a pipe "
            "there (google-colab-cli PR #99); nothing was written",
            "Use it from WSL (Ubuntu on Windows) with remotectl and colab installed there, or use a "
            "tunnel instead: run the bootstrap cell (ngrok or cloudflared) and paste its line.",
            kind="windows")


def key_type(identity: os.PathLike) -> Optional[str]:
    """The key type of a private key file, read from its own header (no library, no passphrase):
    OpenSSH format keeps the public key in clear; PEM names the algorithm. None if unknown."""
    import base64
    import binascii

    try:
        text = Path(identity).read_text(errors="replace")
    except OSError:
        return None
    if "BEGIN RSA PRIVATE KEY" in text:
        return "ssh-rsa"
    if "BEGIN DSA PRIVATE KEY" in text:
        return "ssh-dss"
    if "BEGIN EC PRIVATE KEY" in text:
        return "ecdsa"
    match = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", text, re.S)
    if not match:
        pub = Path(f"{identity}.pub")
        try:
            return pub.read_text().split()[0]
        except (OSError, IndexError):
            return None
    try:
        blob = base64.b64decode("".join(match.group(1).split()))
    except (binascii.Error, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        return None
    pos = len(magic)
    try:
        for _ in range(3):  # cipher name, kdf name, kdf options
            size = int.from_bytes(blob[pos:pos + 4], "big")
            pos += 4 + size
        pos += 4  # number of keys
        pos += 4  # length of the first public key
        size = int.from_bytes(blob[pos:pos + 4], "big")
        return blob[pos + 4:pos + 4 + size].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None


def check_key_type(identity: os.PathLike) -> str:
    """Refuse a key Google's endpoint would refuse (it answers HTTP 400 for anything but
    ssh-ed25519 and ecdsa), before anything is written."""
    found = key_type(identity)
    if found == "ecdsa" or (found or "").startswith("ecdsa-sha2-nistp"):
        return found
    if found in ACCEPTED_KEY_TYPES:
        return found
    raise BadInput(f"identity file {identity} is {'an ' + found if found else 'of an unknown'} key; "
                   "Colab's SSH endpoint accepts only ssh-ed25519 and ecdsa keys",
                   "Make one with `remotectl keygen` (Ed25519) and use that (the default), or pass "
                   "--identity with an ed25519/ecdsa key.")


# -- finding and vetting `colab` ---------------------------------------------------------
def find_colab(explicit: Optional[str] = None) -> Path:
    """`colab` by absolute path: `explicit`, else $REMOTECTL_COLAB, else the one on PATH."""
    named = explicit or os.environ.get(COLAB_VAR)
    if named:
        found = Path(os.path.abspath(os.path.expanduser(named)))
        if not (found.is_file() and os.access(found, os.X_OK)):
            source = "the colab path given" if explicit else COLAB_VAR
            raise BadInput(f"{source} names {found}, which is not an executable file")
        return found
    on_path = shutil.which("colab")
    if on_path is None:
        raise ColabRouteError("Google's `colab` command is not installed on this computer (not on PATH); "
                              "nothing was written", INSTALL_HINT, kind="missing")
    return Path(os.path.abspath(on_path))


@dataclass
class ColabCli:
    """What `colab` says about itself: its version line and the `ssh` options it has."""

    path: Path
    version: Optional[str] = None
    has_ssh: bool = False
    ssh_options: List[str] = field(default_factory=list)
    problem: Optional[ColabRouteError] = None

    def require(self, gpu: Optional[str] = None) -> ColabCli:
        """Raise the reason this colab cannot carry the route (with `gpu`, it needs `--gpu` too)."""
        if self.problem is not None:
            raise self.problem
        wanted = ["--proxy-mode", "--identity", "--session"] + (["--gpu"] if gpu else [])
        missing = [opt for opt in wanted if opt not in self.ssh_options]
        if missing:
            raise ColabRouteError(
                f"{self.path} (version {self.version or 'unknown'}) is too old: its `colab ssh` has no "
                f"{', '.join(missing)}; nothing was written",
                f"Update it: {REINSTALL}", kind="too-old")
        return self


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, errors="replace")


def inspect_cli(path: os.PathLike, timeout: float = 30.0) -> ColabCli:
    """Ask `colab version` and `colab ssh --help` (no network is needed for either, though
    Google's CLI may run its daily update check first)."""
    cli = ColabCli(Path(path))
    try:
        version = _run([str(path), "version"], timeout)
        match = re.search(r"Version:\s*(\S+)", version.stdout)
        cli.version = match.group(1) if match else None
        help_ = _run([str(path), "ssh", "--help"], timeout)
    except subprocess.TimeoutExpired:
        cli.problem = ColabRouteError(f"{path} did not answer within {timeout:.0f} s", kind="no-answer")
        return cli
    except OSError as exc:
        cli.problem = ColabRouteError(f"cannot run {path}: {exc.strerror or exc}", INSTALL_HINT, kind="missing")
        return cli
    said = help_.stdout + help_.stderr
    if help_.returncode == 2 and "No such command 'ssh'" in said:
        cli.problem = ColabRouteError(
            f"{path} (version {cli.version or 'unknown'}) has no `ssh` subcommand (\"No such command "
            "'ssh'\": PyPI's google-colab-cli 0.6.0 lacks it); nothing was written",
            f"Install the GitHub version over it: {REINSTALL}", kind="too-old")
        return cli
    if help_.returncode != 0 or cli.version is None and "--proxy-mode" not in said:
        first = next((line.strip() for line in said.splitlines() if line.strip()), "no output")
        cli.problem = ColabRouteError(f"{path} does not look like Google's colab CLI "
                                      f"(`colab ssh --help` exited {help_.returncode}: {first[:120]})",
                                      INSTALL_HINT, kind="not-colab")
        return cli
    cli.has_ssh = True
    cli.ssh_options = sorted(set(re.findall(r"--[a-z][a-z-]+", help_.stdout)))
    return cli


# -- the ProxyCommand --------------------------------------------------------------------
def proxy_argv(colab: os.PathLike, session: str, identity: os.PathLike, gpu: Optional[str] = None) -> List[str]:
    """What ssh runs: `<abs colab> ssh --proxy-mode -s SESSION -i KEY [--gpu X]`."""
    argv = [os.path.abspath(os.fspath(colab)), "ssh", "--proxy-mode", "-s", check_session(session),
            "-i", os.path.abspath(os.fspath(identity))]
    if gpu:
        argv += ["--gpu", check_gpu(gpu)]
    return argv


def _posix_quote(text: str) -> str:
    """Single quotes always: nothing inside them is special to sh, bash or zsh (nor to fish, for
    text without backslashes)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def proxy_command(colab: os.PathLike, session: str, identity: os.PathLike, gpu: Optional[str] = None,
                  system: Optional[str] = None) -> str:
    """The ProxyCommand line as OpenSSH on POSIX reads it: the rest of the line verbatim, `%`
    tokens expanded (so a literal `%` is doubled), then `$SHELL -c "exec ..."`."""
    refuse_windows(system)
    argv = proxy_argv(colab, session, identity, gpu)
    for arg in argv:
        if any(ch in arg for ch in "\r\n\0"):
            raise BadInput(f"cannot put a line break or NUL into a ProxyCommand: {arg!r}")
    return " ".join(_posix_quote(arg).replace("%", "%%") for arg in argv)


# -- one connection for everything on this computer --------------------------------------
MAX_CONTROL_PATH = 86  # a socket path holds 104 bytes on macOS; ssh adds 17 while it sets one up


def control_path(managed_dir: os.PathLike, name: str) -> Optional[Path]:
    """Where the entry's shared connection lives, or None when that path is too long for a socket."""
    path = Path(os.path.abspath(os.fspath(managed_dir))) / f"cm-{name}"
    return path if len(path.as_posix().encode()) <= MAX_CONTROL_PATH else None


def control_options(managed_dir: os.PathLike, name: str) -> tuple:
    """`ControlMaster auto` for this host: Google allows one SSH connection per runtime, so VS Code,
    terminals, scp and sftp on this computer share the first one (and no connection lingers after
    the last one closes: `ControlPersist no`). Empty when the socket path would be too long."""
    from remote.client.sshconfig import ssh_path

    path = control_path(managed_dir, name)
    if path is None:
        return ()
    try:
        quoted = ssh_path(path, percent=True)  # ControlPath expands % tokens
    except RemotectlError:
        return ()
    return (("ControlMaster", "auto"), ("ControlPath", quoted), ("ControlPersist", "no"))


def mux_alive(config: os.PathLike, name: str, timeout: float = 10.0) -> bool:
    """Whether a shared connection to `name` is open now (`ssh -O check`)."""
    try:
        out = subprocess.run(["ssh", "-F", os.fspath(config), "-O", "check", name], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


# -- reading its failures ----------------------------------------------------------------
def explain(stderr: str, returncode: Optional[int], session: Optional[str] = None) -> ColabRouteError:
    """One line and the fix for what `colab ssh --proxy-mode` said before it gave up."""
    text = stderr or ""
    low = text.lower()
    of = f"Colab session {session}" if session else "the Colab session"
    from remote.client.untrusted import clean_line

    # colab's stderr can quote the server's reply: shown cleaned, as any remote text
    last = clean_line(next((line.strip() for line in reversed(text.splitlines()) if line.strip()), ""), limit=200)
    if "no such command 'ssh'" in low:
        return ColabRouteError("the colab CLI has no `ssh` subcommand (PyPI's 0.6.0 lacks it)",
                               f"Install the GitHub version: {REINSTALL}", kind="too-old")
    if "http 429" in low or "already-active" in low:
        return ColabRouteError(
            f"{of} is busy (HTTP 429): another SSH connection to that runtime is open",
            "Google allows one at a time: close the other one (a VS Code window or an `ssh` to this host "
            "started elsewhere, or a `colab ssh`), then try again. On this computer, terminals and VS Code "
            "share one connection through the entry.", kind="busy")
    if "http 404" in low or "endpoint not found" in low:
        return ColabRouteError(
            f"the runtime of {of} does not expose SSH (HTTP 404)",
            "SSH is enabled when a runtime is created, and the session's access token also stops working "
            "about an hour after `colab new` (google-colab-cli#106). Start a fresh runtime: "
            f"`colab stop -s {session or 'SESSION'}` (its files are lost), then connect again; the first "
            "connection creates it.", kind="no-ssh")
    if "http 401" in low or "runtime-proxy token" in low:
        return ColabRouteError(
            f"Google refused the access token of {of} (HTTP 401): it has expired",
            f"`colab stop -s {session or 'SESSION'}` (its files are lost), then connect again to create a "
            "fresh runtime.",
            kind="expired")
    if "unsupported key type" in low or "http 400" in low:
        return ColabRouteError("Colab's SSH endpoint refused the key (HTTP 400): it accepts only ssh-ed25519 "
                               "and ecdsa keys", "Use `remotectl keygen`'s Ed25519 key (the default).",
                               kind="bad-key")
    if any(word in low for word in ("not signed in", "not logged in", "sign in", "sign-in", "login",
                                    "authorization code", "oauth", "invalid_grant", "credentials")):
        why = f" (it needs to be, to create Colab session {session})" if session else ""
        return ColabRouteError(f"Google's colab CLI is not signed in{why}",
                               SIGN_IN_FIX[0].upper() + SIGN_IN_FIX[1:] + ".", kind="not-signed-in")
    if "--identity" in low and "not found" in low:
        return ColabRouteError(f"colab cannot read the key: {last}", kind="bad-key")
    detail = f": {last}" if last else ""
    code = "" if returncode is None else f" (exit {returncode})"
    return ColabRouteError(f"`colab ssh --proxy-mode` gave up{code}{detail}",
                           "Run `remotectl doctor` for the Colab route's checks.", kind="failed")


def list_sessions(cli: ColabCli, timeout: float = 30.0) -> List[str]:
    """The Colab session names `colab sessions` shows; ColabRouteError(kind=not-signed-in)."""
    try:
        out = _run([str(cli.path), "sessions"], timeout)
    except subprocess.TimeoutExpired:
        raise ColabRouteError(f"`colab sessions` did not answer within {timeout:.0f} s (network, or a "
                              "sign-in waiting for input)", SIGN_IN_FIX[0].upper() + SIGN_IN_FIX[1:] + ".",
                              kind="not-signed-in") from None
    if out.returncode != 0:
        raise explain(out.stderr + out.stdout, out.returncode)
    names = []
    for line in out.stdout.splitlines():
        match = re.match(r"^\[([^\]]+)\]\s", line) or re.match(r"^\s+(\S+)\s+->\s", line)
        if match and match.group(1) != "?" and not match.group(1).isdigit():
            names.append(match.group(1))
    return names


# -- a socket through the route, for paramiko --------------------------------------------
class ProxySocket:
    """The socket paramiko reads and writes, backed by `colab ssh --proxy-mode`.

    Unlike paramiko.ProxyCommand, EOF reads as EOF (not a spin until the timeout), and what
    colab printed on stderr is kept, so a refused connection becomes `failure()`'s one line.
    """

    def __init__(self, argv: Sequence[str], session: Optional[str] = None) -> None:
        import logging

        # paramiko's transport thread logs a refused banner with a traceback through logging's
        # last-resort handler (stderr); the one line failure() gives is what the user should see.
        paramiko_log = logging.getLogger("paramiko")
        if not paramiko_log.handlers:
            paramiko_log.addHandler(logging.NullHandler())
        self.argv = list(argv)
        self.session = session
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr, bufsize=0, start_new_session=True)
        self.timeout: Optional[float] = None
        self._said: Optional[str] = None  # stderr, kept once closed (paramiko closes us on failure)
        self._stderr_lock = threading.RLock()  # paramiko's transport thread and ours may both close us
        self._hung_up = False  # close() ended colab (not colab giving up by itself)

    def send(self, data: bytes) -> int:
        try:
            self.process.stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):
            raise EOFError("colab ssh --proxy-mode closed its input") from None
        return len(data)

    def recv(self, size: int) -> bytes:
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            import socket

            raise socket.timeout()
        return os.read(self.process.stdout.fileno(), size)

    def settimeout(self, timeout: Optional[float]) -> None:
        self.timeout = timeout

    def stderr_text(self) -> str:
        with self._stderr_lock:
            if self._said is not None:
                return self._said
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")

    def failure(self, wait: float = 2.0) -> Optional[ColabRouteError]:
        """Why the route failed, if colab has exited (waits up to `wait` s for it to do so). None
        while it runs, and when close() hung up on a colab that had said nothing: then the failure
        was on our side (a timeout, a broken handshake), and "colab gave up" would hide it."""
        try:
            code = self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
        said = self.stderr_text()
        if self._hung_up and not said.strip():
            return None
        return explain(said, code, self.session)

    def close(self) -> None:
        """End colab the way OpenSSH does (SIGHUP), then make sure it is gone."""
        if self.process.poll() is None:
            self._hung_up = True
            for sig, grace in ((signal.SIGHUP, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.kill(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        with self._stderr_lock:
            if self._said is None:
                self._said = self.stderr_text()
                self._stderr.close()

    @property
    def closed(self) -> bool:
        return self.process.returncode is not None

    _closed = closed


def banner(argv: Sequence[str], timeout: float, session: Optional[str] = None) -> str:
    """The runtime's SSH banner through the route (a real, brief connection), or the reason
    in one line (ColabRouteError)."""
    sock = ProxySocket(argv, session)
    try:
        sock.settimeout(0.2)
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and len(data) < 256 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(256)
            except OSError:  # socket.timeout: nothing yet
                if sock.process.poll() is not None:
                    break
                continue
            if not chunk:
                break
            data += chunk
        line = data.split(b"\n", 1)[0].decode(errors="replace").strip()
        if line.startswith("SSH-"):
            return line
        failed = sock.failure(wait=1.0)
        if failed is not None:
            raise failed
        raise ColabRouteError(f"no SSH answer through `colab ssh --proxy-mode` within {timeout:.0f} s",
                              "The runtime may still be starting; try again in a minute.", kind="no-answer")
    finally:
        sock.close()


# -- doctor ------------------------------------------------------------------------------
def doctor_findings(name: str, session: str, identity: os.PathLike, colab: Optional[os.PathLike] = None,
                    gpu: Optional[str] = None, timeout: float = 20.0, system: Optional[str] = None,
                    shared: bool = False) -> list:
    """The Colab route's own findings for host `name`: one line each, with the fix.

    `colab` is the path the entry runs (None: find it as connect would). Only a session that
    already exists gets the banner check: `-s NAME` would otherwise create a runtime. With
    `shared` (the entry's connection is open on this computer) it is not dialled again.
    """
    from remote.findings import NOTE, OK, PROBLEM, Finding

    what = f"host {name}"
    try:
        refuse_windows(system)
        path = Path(colab) if colab else find_colab()
    except RemotectlError as exc:
        return [Finding(what, PROBLEM, exc.message, exc.hint)]
    if not (path.is_file() and os.access(path, os.X_OK)):
        return [Finding(what, PROBLEM, f"the colab CLI its entry runs, {path}, is gone",
                        f"{INSTALL}\nthen: remotectl connect --colab {session} --name {name}")]
    cli = inspect_cli(path, timeout=max(timeout, 30.0))
    try:
        cli.require(gpu)
    except ColabRouteError as exc:
        return [Finding("colab CLI", PROBLEM, exc.message.replace("; nothing was written", ""), exc.hint)]
    found = [Finding("colab CLI", OK, f"{path} (version {cli.version or 'unknown'}) has `ssh --proxy-mode`")]
    try:
        sessions = list_sessions(cli, timeout=max(timeout, 30.0))
    except ColabRouteError as exc:
        found.append(Finding(what, PROBLEM, exc.message, exc.hint))
        return found
    if session not in sessions:
        found.append(Finding(what, NOTE, f"Colab session {session} is not running: the next `ssh {name}` "
                             f"creates it{' with a ' + gpu if gpu else ''} (a billable runtime)",
                             f"or start it yourself: colab new -s {session}" + (f" --gpu {gpu}" if gpu else "")))
        return found
    if shared:
        found.append(Finding(what, OK, f"Colab session {session}: a shared connection is open on this "
                             "computer (VS Code or a terminal); everything here rides it"))
        return found
    try:
        line = banner(proxy_argv(path, session, identity, gpu), timeout=max(timeout, 20.0), session=session)
    except ColabRouteError as exc:
        found.append(Finding(what, PROBLEM, exc.message, exc.hint))
    else:
        found.append(Finding(what, OK, f"Colab session {session} answers through `colab ssh` ({line})"))
    return found
