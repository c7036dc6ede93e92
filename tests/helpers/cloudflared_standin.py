"""A stand-in `cloudflared` for tests: Cloudflare's edge is the one part we cannot reach.

It speaks the two commands remotectl uses, faithfully where remotectl looks:

* `tunnel --no-autoupdate --url ssh://localhost:PORT --metrics 127.0.0.1:MPORT` serves the
  metrics endpoints (`/quicktunnel` -> `{"hostname": "<words>.trycloudflare.com"}`, empty
  for the first ~0.3 s as the real one is; `/ready` 503 then 200) and "forwards to the
  sshd". With no edge, forwarding goes through a local registry: it listens on a loopback
  port and writes `<registry>/<hostname>` (JSON `{"port": N, "pid": P}`), removed on exit.
* `access ssh --hostname H` looks H up in the registry and bridges stdin/stdout to that
  port, which is what an ssh `ProxyCommand` needs.
* `tunnel --no-autoupdate --metrics 127.0.0.1:MPORT run` with TUNNEL_TOKEN (or `--token`): a
  named tunnel. Like the real one, the token is base64 JSON `{"a": account, "t": tunnel id,
  "s": secret}`, and the hostname and service (`ssh://localhost:PORT`) come from the tunnel's
  configuration at Cloudflare, played here by the JSON file CLOUDFLARED_STANDIN_ROUTES
  (`{tunnel id: {"hostname": H, "service": "ssh://localhost:PORT", "secret": S}}`); an unknown
  tunnel or a wrong secret is refused as the real one refuses a bad token, and it exits 1.
* `--version` / `version` prints `cloudflared version 2024.11.1 (built ...)`.

Environment: CLOUDFLARED_STANDIN_REGISTRY (folder, required), CLOUDFLARED_STANDIN_MODE
(`no-hostname`: never reports a hostname nor gets ready; `die`: exits at once with an
error line). Tests get an executable named `cloudflared` from `make_standin(folder)`.
Standard library only: it runs as a script under the tests' interpreter.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional

VERSION_LINE = "cloudflared version 2024.11.1 (built 2024-11-18-1241 UTC)"
REGISTRY_ENV = "CLOUDFLARED_STANDIN_REGISTRY"
MODE_ENV = "CLOUDFLARED_STANDIN_MODE"
READY_AFTER_S = 0.3
WORDS = ("amber", "basin", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper",
         "kelp", "lagoon", "meadow", "nectar", "orbit", "prairie", "quartz", "ridge", "summit",
         "tundra", "umbra", "valley", "willow", "yonder", "zephyr")


def make_standin(folder: os.PathLike) -> Path:
    """Write an executable `cloudflared` into `folder` that runs this stand-in."""
    target = Path(folder) / "cloudflared"
    target.write_text("#!/bin/sh\n"
                      f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} \"$@\"\n")
    target.chmod(0o755)
    return target


class _Log:
    def __init__(self, logfile: Optional[str]) -> None:
        self.logfile = logfile

    def __call__(self, level: str, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {level} {message}\n"
        sys.stderr.write(line)
        sys.stderr.flush()
        if self.logfile:
            with open(self.logfile, "a") as handle:
                handle.write(line)


def _flag(argv: List[str], name: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _bridge(client: socket.socket, origin: tuple, log: _Log) -> None:
    try:
        upstream = socket.create_connection(origin, timeout=10)
    except OSError as exc:
        log("ERR", f"Unable to reach the origin service {origin[0]}:{origin[1]}: {exc}")
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _registry() -> Path:
    folder = os.environ.get(REGISTRY_ENV)
    if not folder:
        sys.stderr.write(f"cloudflared stand-in: set {REGISTRY_ENV} to a folder\n")
        sys.exit(2)
    return Path(folder)


ROUTES_ENV = "CLOUDFLARED_STANDIN_ROUTES"


def _named_route(argv: List[str], log: _Log) -> Optional[dict]:
    """The named tunnel's configuration "at Cloudflare" for the token given, or None (refused)."""
    import base64

    token = _flag(argv, "--token") or os.environ.get("TUNNEL_TOKEN", "")
    try:
        fields = json.loads(base64.b64decode(token + "=" * (-len(token) % 4)))
        routes = json.loads(Path(os.environ[ROUTES_ENV]).read_text())
        route = routes[fields["t"]]
        if route.get("secret") != fields["s"]:
            raise KeyError("secret")
    except (ValueError, KeyError, TypeError, OSError):
        log("ERR", "Provided Tunnel token is not valid.")
        return None
    return route


def tunnel(argv: List[str]) -> int:
    log = _Log(_flag(argv, "--logfile"))
    mode = os.environ.get(MODE_ENV, "")
    if mode == "die":
        log("ERR", "Couldn't start tunnel error=\"stand-in told to die\"")
        return 1
    url, metrics = _flag(argv, "--url"), _flag(argv, "--metrics")
    named = None
    if "run" in argv:
        named = _named_route(argv, log)
        if named is None:
            return 1
        url = named["service"]
    if not url or "://" not in url or not metrics:
        log("ERR", f"stand-in needs --url ssh://localhost:PORT and --metrics HOST:PORT, got {argv}")
        return 2
    origin_host, _, origin_port = url.split("://", 1)[1].rstrip("/").rpartition(":")
    origin = (origin_host or "localhost", int(origin_port))
    registry = _registry()
    hostname = named["hostname"] if named else "-".join(random.sample(WORDS, 4)) + ".trycloudflare.com"
    connector = str(uuid.uuid4())
    created = threading.Event()  # set once the banner is logged, as the real one does

    def ready() -> bool:
        return created.is_set()

    class Metrics(BaseHTTPRequestHandler):
        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/quicktunnel":
                self._json(200, {"hostname": hostname if ready() else ""})
            elif self.path == "/ready":
                live = 1 if ready() else 0
                self._json(200 if live else 503,
                           {"status": 200 if live else 503, "readyConnections": live,
                            "connectorId": connector})
            else:
                self._json(404, {"error": "not found"})

        def log_message(self, *args) -> None:
            pass

    metrics_host, _, metrics_port = metrics.rpartition(":")
    try:
        server = ThreadingHTTPServer((metrics_host, int(metrics_port)), Metrics)
    except OSError as exc:
        log("ERR", f"failed to bind the metrics server on {metrics}: {exc}")
        return 1
    edge = socket.socket()
    edge.bind(("127.0.0.1", 0))
    edge.listen(16)
    entry = registry / hostname
    if mode != "no-hostname":
        tmp = registry / f".{hostname}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"port": edge.getsockname()[1], "pid": os.getpid()}))
        os.replace(tmp, entry)

    stopping = threading.Event()

    def on_signal(signum, frame) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def accept() -> None:
        while True:
            try:
                client, _ = edge.accept()
            except OSError:
                return
            threading.Thread(target=_bridge, args=(client, origin, log), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    log("INF", "Starting tunnel from its remote configuration" if named else
        "Requesting new quick Tunnel on trycloudflare.com...")
    log("INF", f"Starting metrics server on {metrics}/metrics")
    if mode != "no-hostname":
        stopping.wait(READY_AFTER_S)
        if not named:
            log("INF", "Your quick Tunnel has been created! Visit it at (it may take some time to be "
                       f"reachable): https://{hostname}")
        log("INF", f"Registered tunnel connection connIndex=0 connection={connector} location=test")
        created.set()
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        log("INF", "Initiating graceful shutdown due to signal terminated ...")
        try:
            entry.unlink()
        except FileNotFoundError:
            pass
        edge.close()
        server.shutdown()
    return 0


def access(argv: List[str]) -> int:
    if not argv or argv[0] != "ssh":
        sys.stderr.write("cloudflared stand-in: only `access ssh --hostname H` is supported\n")
        return 2
    hostname = (_flag(argv, "--hostname") or "").lower()
    entry = _registry() / hostname
    try:
        port = json.loads(entry.read_text())["port"]
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"failed to connect to origin: no quick tunnel {hostname!r} ({exc})\n")
        return 1
    sock.settimeout(None)

    from stdio_pump import pump_stdio  # run as the stand-in executable: this folder is sys.path[0]

    pump_stdio(sock)
    return 0


def main(argv: List[str]) -> int:
    if not argv or argv[0] in ("--version", "-v", "version"):
        print(VERSION_LINE)
        return 0
    if argv[0] == "tunnel":
        return tunnel(argv[1:])
    if argv[0] == "access":
        return access(argv[1:])
    sys.stderr.write(f"cloudflared stand-in: unsupported command {argv}\n")
    return 2


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
