"""`remotectl proxy NAME`: the ProxyCommand of a followed host (`connect --follow`).

ssh runs it for every connection (`ssh NAME`, VS Code, pull/push): it asks follow.py where
NAME is now (the newest record that verifies against the pinned key), connects there, and
gets out of the way:

- `--fdpass` (POSIX, the entry says `ProxyUseFdpass yes`): the connected socket is handed to
  ssh over its stdout (SCM_RIGHTS) and the proxy exits, so no byte passes through Python;
- otherwise it bridges stdin/stdout to the socket until either side closes (Windows, and
  anyone running it by hand);
- a host now behind cloudflared: `cloudflared access ssh --hostname H` takes the proxy's
  place (with --fdpass, on one end of a socket pair whose other end goes to ssh).

OpenSSH still checks the host key under HostKeyAlias: the proxy only chooses where to dial.
A failure is one line on stderr (`remotectl: error: ...`, the reason and the source) and
exit 1; nothing on this computer changes. It runs on every connection, so it imports only
what it needs (no click: see remote/launcher.py); speed is measured by scripts/bench_connect.py.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import List, Optional, Sequence

from remote.errors import BadInput, RemotectlError

USAGE = "usage: remotectl proxy [--ssh-dir DIR] [--fdpass] NAME"
CONNECT_TIMEOUT = 20.0


def parse(argv: Sequence[str]):
    """(name, ssh_dir, fdpass) from argv; BadInput otherwise (no click here: this runs per connection)."""
    ssh_dir: Optional[str] = os.environ.get("REMOTECTL_SSH_DIR") or None
    fdpass = False
    names: List[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            raise BadInput(USAGE)
        if arg == "--fdpass":
            fdpass = True
        elif arg == "--ssh-dir" and args:
            ssh_dir = args.pop(0)
        elif arg.startswith("--ssh-dir="):
            ssh_dir = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise BadInput(f"unknown option {arg!r}; {USAGE}")
        else:
            names.append(arg)
    if len(names) != 1:
        raise BadInput(USAGE)
    return names[0], ssh_dir, fdpass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the proxy; errors become one line on stderr (ssh shows it) and a non-zero exit."""
    try:
        name, ssh_dir, fdpass = parse(sys.argv[1:] if argv is None else argv)
        return run(name, ssh_dir, fdpass)
    except RemotectlError as exc:
        _say(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _say(message: str) -> None:
    from remote.client.untrusted import clean_line

    line = clean_line(message.strip().splitlines()[0] if message.strip() else "failed", limit=600)
    try:
        os.write(2, f"remotectl: error: {line}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def run(name: str, ssh_dir: Optional[str], fdpass: bool) -> int:
    from remote.client import follow

    lay = follow.paths(ssh_dir)
    followed = follow.load(lay, name)
    resolved = follow.resolve(lay, followed)
    if resolved.kind == "cloudflared":
        argv = [str(follow.cloudflared_path(followed.cloudflared)), "access", "ssh", "--hostname", resolved.host]
        follow.remember(lay, followed, resolved)
        return _cloudflared(argv, fdpass)
    sock = _dial(name, resolved, followed.source)
    follow.remember(lay, followed, resolved)
    if fdpass:
        _pass(sock)
        return 0
    return _bridge(sock)


def _dial(name: str, resolved, source: str) -> socket.socket:
    from remote.client.follow import source_label

    host = resolved.host.strip("[]")
    try:
        sock = socket.create_connection((host, resolved.port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        import time

        age = max(0, int(time.time() - resolved.at))
        raise RemotectlError(f"{name}: cannot reach {resolved.host}:{resolved.port}, the address in the record "
                             f"from {source_label(source)} ({_age(age)} old, runtime {resolved.session}): "
                             f"{exc.strerror or exc}; is the runtime still up (or its new record not synced yet)?") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pass(sock: socket.socket) -> None:
    """Hand the connected socket to ssh (ProxyUseFdpass): one byte with the descriptor attached."""
    try:
        channel = socket.socket(fileno=os.dup(1))
    except OSError:
        raise RemotectlError("--fdpass needs ssh's ProxyUseFdpass (stdout is not a socket)") from None
    try:
        socket.send_fds(channel, [b"\0"], [sock.fileno()])
    except OSError as exc:
        raise RemotectlError(f"could not hand the connection to ssh: {exc.strerror or exc}") from None
    finally:
        channel.close()
        sock.close()


def _bridge(sock: socket.socket) -> int:
    """stdin -> socket and socket -> stdout until the server closes (portable: threads, no select)."""
    import threading

    def upstream() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        pass
    finally:
        sock.close()
    return 0


def _cloudflared(argv: List[str], fdpass: bool) -> int:
    import subprocess

    if not fdpass:
        try:
            return subprocess.call(argv)  # its stdin/stdout are ours: ssh's pipes
        except OSError as exc:
            raise RemotectlError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    ours, theirs = socket.socketpair()
    try:
        subprocess.Popen(argv, stdin=theirs, stdout=theirs, start_new_session=True, close_fds=True)
    except OSError as exc:
        raise RemotectlError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    finally:
        theirs.close()
    _pass(ours)  # cloudflared lives on, talking to ssh through the pair, until ssh closes its end
    return 0
