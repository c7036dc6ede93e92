"""A stand-in for Google's `colab` CLI (google-colab-cli) in tests: Google's cloud is the one part we cannot reach.

It answers what remotectl runs, as the real CLI does where remotectl looks (read from
googlecolab/google-colab-cli: docs/06_ssh_access.md, src/colab_cli/commands/ssh.py and the
commands it calls; written from those facts, not copied):

* `colab version` prints `Version: X`; `colab --help` lists the commands; `colab ssh --help`
  lists `--session/-s`, `--proxy-mode`, `--identity/-i`, `--gpu`, `--tpu`, `--high-mem`, `--rm`.
* `colab ssh --proxy-mode -s NAME -i KEY [--gpu X]` derives KEY's public half with
  `ssh-keygen -y -f KEY` (as the real one does before sending it in its pubkey header), refuses
  anything but ssh-ed25519 / ecdsa (the server's HTTP 400 "unsupported key type"), then
  authorizes that public key on the runtime's sshd (the real runtime authorizes the header's key)
  and bridges stdin/stdout to that sshd, like its WebSocket bridge. A session NAME it does not
  know is created first (needs a signed-in account and a spare runtime, see `pool.json`);
  `--gpu` on an existing session is ignored with its warning line.
* One bridge per runtime at a time: a second connection gets HTTP 429, as the real endpoint
  answers an already-active SSH session.
* `colab sessions` lists the runtimes (`[NAME] ENDPOINT | Hardware: X | Variant: Y`), or fails
  when the account is not signed in.

The "Google side" is a folder the test owns, named by COLAB_STANDIN_HOME:

    runtimes/<NAME>.json  {"port": P, "authorized_keys": PATH, "accelerator": "T4"}: the runtime
                          behind Colab session NAME (a test sshd on 127.0.0.1:P). A recreated
                          runtime is the same file with an sshd holding a new host key.
    pool.json             optional: a spare runtime; the first `-s NEW` takes it (creation)
    signed-in             present: the account is signed in (creating sessions and `sessions` need it)
    mode                  optional one word (or env COLAB_STANDIN_MODE):
                            0.6.0   PyPI's release: no `ssh` subcommand (click: exit 2)
                            busy    every handshake answers HTTP 429
                            no-ssh  every handshake answers HTTP 404 (runtime without SSH)
                            expired every handshake answers HTTP 401 (runtime-proxy token expired)
    version               optional: the version `colab version` prints
    calls.jsonl           appended: one JSON line per invocation ({"argv": [...], "pid": N})
    active/<NAME>.pid     the bridge holding runtime NAME (removed when it ends)

Standard library only (plus the OpenSSH `ssh-keygen`): it runs as a script under the tests'
interpreter; `make_standin(folder)` gives an executable named `colab`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Optional

HOME_ENV = "COLAB_STANDIN_HOME"
MODE_ENV = "COLAB_STANDIN_MODE"
DEFAULT_VERSION = "0.6.1.dev58+g2fd4fdf"
ACCEPTED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
COMMANDS = ("auth", "console", "download", "drivemount", "exec", "help", "install", "log", "ls", "new",
            "pay", "repl", "rm", "sessions", "ssh", "status", "stop", "update", "upload", "url", "version")

MESSAGES = {
    400: ("Server rejected pubkey: unsupported key type. Accepted key types: ssh-ed25519, "
          "ecdsa-sha2-nistp{256,384,521}. RSA keys (ssh-rsa) are NOT accepted. Generate an Ed25519 "
          "key with `ssh-keygen -t ed25519` and re-run (optionally with --identity)."),
    401: ("Authentication failed (HTTP 401): the runtime-proxy token is invalid. The session may "
          "have expired - try `colab new`."),
    404: ("Endpoint not found (HTTP 404): this runtime does not expose the /colab/ssh endpoint. SSH "
          "is enabled at runtime creation, so an older or non-SSH runtime will not have it - run "
          "`colab new` for a fresh runtime with SSH."),
    429: ("Already-active SSH session (HTTP 429): another `colab ssh` is connected to this runtime. "
          "Disconnect it and retry."),
}
SIGN_IN_URL = ("https://accounts.google.com/o/oauth2/auth?response_type=code&client_id=standin"
               "&redirect_uri=https%3A%2F%2Fsdk.cloud.google.com%2Fapplicationdefaultauthcode.html"
               "&scope=openid+https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcolaboratory&token_usage=remote")


def make_standin(folder: os.PathLike, name: str = "colab") -> Path:
    """Write an executable `colab` into `folder` that runs this stand-in."""
    target = Path(folder) / name
    target.write_text("#!/bin/sh\n"
                      f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} \"$@\"\n")
    target.chmod(0o755)
    return target


def add_runtime(home: os.PathLike, name: str, port: int, authorized_keys: os.PathLike,
                accelerator: str = "NONE", spare: bool = False) -> Path:
    """Put a runtime (a test sshd) behind Colab session `name`, or make it the spare one (`spare`)."""
    folder = Path(home)
    target = folder / "pool.json" if spare else folder / "runtimes" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_json(target, {"port": port, "authorized_keys": str(authorized_keys), "accelerator": accelerator,
                         "endpoint": f"gpu-{accelerator.lower()}-s-{uuid.uuid4().hex[:12]}"})
    return target


def calls(home: os.PathLike) -> List[List[str]]:
    """Every argv the stand-in was run with, in order."""
    log = Path(home) / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines() if line.strip()]


# -- the stand-in itself ---------------------------------------------------------------
def _write_json(path: Path, data: Dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _say(message: str) -> None:
    sys.stderr.write(f"[colab] {message}\n")
    sys.stderr.flush()


class Google:
    """The account and its runtimes, as the folder the test owns describes them."""

    def __init__(self, home: Path) -> None:
        self.home = home
        mode_file = home / "mode"
        self.mode = os.environ.get(MODE_ENV) or (mode_file.read_text().strip() if mode_file.exists() else "")

    @property
    def signed_in(self) -> bool:
        return (self.home / "signed-in").exists()

    @property
    def version(self) -> str:
        if self.mode == "0.6.0":
            return "0.6.0"
        path = self.home / "version"
        return path.read_text().strip() if path.exists() else DEFAULT_VERSION

    def runtime(self, name: str) -> Optional[Dict]:
        path = self.home / "runtimes" / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def runtimes(self) -> Dict[str, Dict]:
        folder = self.home / "runtimes"
        found = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            found[path.stem] = json.loads(path.read_text())
        return found

    def create(self, name: str, gpu: Optional[str]) -> Optional[Dict]:
        """Assign the spare runtime to `name` (what `colab new -s NAME --gpu X` does), or None."""
        spare = self.home / "pool.json"
        try:
            data = json.loads(spare.read_text())
        except (OSError, ValueError):
            return None
        # The real CLI maps an unknown --gpu value to A100 without a word; so does this one.
        known = {"t4": "T4", "l4": "L4", "g4": "G4", "a100": "A100", "h100": "H100"}
        data["accelerator"] = known.get(gpu.lower(), "A100") if gpu else "NONE"
        target = self.home / "runtimes" / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_json(target, data)
        spare.unlink()
        return data

    def sign_in_interactively(self) -> bool:
        """The sign-in a command needs when there is no login: a URL, then a code read from stdin."""
        _say("You are not signed in. Visit this URL in any browser, approve access, and paste the "
             f"authorization code here:\n  {SIGN_IN_URL}")
        line = sys.stdin.readline()
        if not line.strip():
            _say("Login failed: no authorization code was entered (stdin closed).")
        else:
            _say("Login failed (InvalidGrantError): (invalid_grant) Malformed auth code.")
        return False


def _usage_error(message: str, usage: str = "colab [OPTIONS] COMMAND [ARGS]...") -> int:
    """What typer (with rich) prints for a usage error; exit code 2."""
    width = max(len(message) + 4, 40)
    sys.stderr.write(f"Usage: {usage}\nTry 'colab -h' for help.\n"
                     f"╭─ Error {'─' * (width - 9)}╮\n"
                     f"│ {message.ljust(width - 3)}│\n"
                     f"╰{'─' * (width - 1)}╯\n")
    return 2


def _flag(argv: List[str], *names: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


SSH_HELP = """\
Usage: colab ssh [OPTIONS]

 Connect to a Colab runtime via SSH.

╭─ Options ─────────────────────────────────────────────────────────────────╮
│ --session     -s      TEXT  Session name                                   │
│ --proxy-mode                Act as an OpenSSH ProxyCommand-compatible      │
│                             WebSocket-stdio bridge (reads stdin, writes    │
│                             stdout).                                       │
│ --identity    -i      TEXT  SSH private key whose public key is sent in    │
│                             the X-Colab-Ssh-Pubkey header.                 │
│ --gpu                 TEXT  GPU accelerator for a runtime created by this  │
│                             command (T4, L4, G4, H100, A100).              │
│ --tpu                 TEXT  TPU accelerator (v5e1, v6e1).                  │
│ --high-mem                  Request a high-RAM machine shape.              │
│ --rm                        Stop the runtime when the session ends.        │
│ --help        -h            Show this message and exit.                    │
╰───────────────────────────────────────────────────────────────────────────╯
"""


def _public_key(identity: str) -> Optional[str]:
    """KEY's public line via `ssh-keygen -y -f`, as the real CLI derives it; None after saying why."""
    path = os.path.expanduser(identity)
    if not os.path.exists(path):
        _say(f"--identity {path}: file not found.")
        return None
    try:
        out = subprocess.run(["ssh-keygen", "-y", "-f", path], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30, check=True)
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
        _say(f"failed to derive public key from {path}: {exc}")
        return None
    line = out.stdout.strip()
    if not line:
        _say(f"ssh-keygen produced no key for {path}.")
        return None
    return line


def _default_public_key() -> Optional[str]:
    ssh_dir = Path(os.path.expanduser("~/.ssh"))
    for name in ("id_ed25519.pub", "id_ecdsa.pub"):
        if (ssh_dir / name).exists():
            return (ssh_dir / name).read_text().strip()
    _say("no SSH public key found in ~/.ssh/. Run `ssh-keygen -t ed25519` to generate one, or pass --identity.")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _claim(google: Google, name: str) -> Optional[Path]:
    """The runtime's one SSH slot, or None when another bridge holds it (HTTP 429)."""
    folder = google.home / "active"
    folder.mkdir(exist_ok=True)
    slot = folder / f"{name}.pid"
    for _ in range(2):
        try:
            fd = os.open(slot, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                holder = int(slot.read_text().strip() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and _pid_alive(holder):
                return None
            try:  # a bridge that died without cleaning up: its slot is free
                slot.unlink()
            except FileNotFoundError:
                pass
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return slot
    return None


def _bridge(port: int, slot: Path) -> int:
    """stdin -> the runtime's sshd -> stdout, until either side closes."""
    def release(*_args) -> None:
        try:
            slot.unlink()
        except FileNotFoundError:
            pass

    def on_signal(signum, frame) -> None:  # OpenSSH ends a ProxyCommand with SIGHUP
        release()
        os._exit(0)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        release()
        _say("Bad gateway (HTTP 502): the runtime's local sshd is unreachable. The runtime may be "
             f"unhealthy; try `colab status`, then `colab stop` + `colab new`. ({exc})")
        return 1
    sock.settimeout(None)

    from stdio_pump import pump_stdio  # run as the stand-in executable: this folder is sys.path[0]

    pump_stdio(sock)
    release()
    return 0


def ssh(google: Google, argv: List[str]) -> int:
    if "--help" in argv or "-h" in argv:
        sys.stdout.write(SSH_HELP)
        return 0
    known = {"-s", "--session", "-i", "--identity", "--gpu", "--tpu"}
    flags = {"--proxy-mode", "--rm", "--high-mem"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in known:
            i += 1 if "=" in arg else 2
        elif arg in flags:
            i += 1
        else:
            return _usage_error(f"No such option: {arg}", "colab ssh [OPTIONS]")
    if "--proxy-mode" not in argv:
        _say("the stand-in only plays --proxy-mode (an interactive shell needs a terminal).")
        return 2
    session = _flag(argv, "-s", "--session")
    identity = _flag(argv, "-i", "--identity")
    gpu = _flag(argv, "--gpu")
    if not session:
        runtimes = google.runtimes()
        if len(runtimes) != 1:
            _say("several sessions are active; pick one with -s." if runtimes else
                 "no active session; pass -s NAME to create one.")
            return 2
        session = next(iter(runtimes))
    runtime = google.runtime(session)
    created = False
    if runtime is None:
        if not google.signed_in and not google.sign_in_interactively():
            return 1
        _say(f"Creating runtime '{session}'...")  # the real CLI routes this to stderr too
        runtime = google.create(session, gpu)
        if runtime is None:
            _say(f"Backend rejected the assignment for '{session}': no runtime available (stand-in pool empty).")
            return 1
        _say("Session READY.")
        created = True
    if gpu and not created:
        _say("--gpu/--tpu/--high-mem ignored: only applies to a created runtime.")
    public = _public_key(identity) if identity else _default_public_key()
    if public is None:
        return 2
    status = {"busy": 429, "no-ssh": 404, "expired": 401}.get(google.mode)
    if status is None and public.split()[0] not in ACCEPTED_KEY_TYPES:
        status = 400
    slot = None
    if status is None:
        slot = _claim(google, session)
        if slot is None:
            status = 429
    if status is not None:
        _say(MESSAGES[status])
        return 1
    # The runtime authorizes exactly the key this connection presented (its pubkey header).
    keys_file = Path(runtime["authorized_keys"])
    tmp = keys_file.with_name(f".{keys_file.name}.{os.getpid()}.tmp")
    tmp.write_text(public + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, keys_file)
    return _bridge(int(runtime["port"]), slot)


def sessions(google: Google) -> int:
    if not google.signed_in and not google.sign_in_interactively():
        return 1
    runtimes = google.runtimes()
    if not runtimes:
        print("[colab] No active sessions found on server.")
        return 0
    for name, data in runtimes.items():
        accelerator = data.get("accelerator", "NONE")
        hardware = "CPU" if accelerator == "NONE" else accelerator
        variant = "DEFAULT" if accelerator == "NONE" else "GPU"
        print(f"[{name}] {data.get('endpoint', '?')} | Hardware: {hardware} | Variant: {variant}")
    return 0


def main(argv: List[str]) -> int:
    folder = os.environ.get(HOME_ENV)
    if not folder:
        sys.stderr.write(f"colab stand-in: set {HOME_ENV} to the test's folder\n")
        return 2
    google = Google(Path(folder))
    with open(google.home / "calls.jsonl", "a") as log:
        log.write(json.dumps({"argv": argv, "pid": os.getpid()}) + "\n")
    commands = [c for c in COMMANDS if not (c == "ssh" and google.mode == "0.6.0")]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("Usage: colab [OPTIONS] COMMAND [ARGS]...\n\n Colab CLI\n\nCommands:")
        for command in commands:
            print(f"  {command}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in commands:
        return _usage_error(f"No such command '{command}'.")
    if command == "version":
        print(f"Version: {google.version}")
        return 0
    if command == "ssh":
        return ssh(google, rest)
    if command == "sessions":
        return sessions(google)
    _say(f"the stand-in does not play `colab {command}`.")
    return 2


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
