"""A stand-in for ngrok's v3 agent, owned by the tests: ngrok's cloud cannot be reached here.

It behaves toward pyngrok (9.x, and 8.x's /api/tunnels) as the real agent does:

    ngrok --version                                 -> "ngrok version 3.22.1"
    ngrok config add-authtoken TOKEN [--config P]   -> writes P, "Authtoken saved to configuration file: P"
    ngrok start --none --log stdout [--config P] [--region R] [--authtoken T]   (or --flag=value)
        logfmt lines on stdout: "starting web service" obj=web addr=127.0.0.1:PORT, then
        "client session established" and "tunnel session started", printed only once the
        HTTP API listens; then serves POST/GET/DELETE /api/endpoints and /api/tunnels, and for
        each TCP endpoint really forwards a public port (on FAKE_NGROK_PUBLIC_HOST, default
        127.0.0.1) to the upstream.

Failure variants, chosen by the authtoken's prefix (so they travel through the real config
file) or by FAKE_NGROK_MODE:
    bad...     / bad-token      the session is refused as the real agent logs it (ERR_NGROK_105,
                                quoting the token, as ngrok does), and the agent exits 1
    burst...                    the same refusal, but the agent has exited before pyngrok reads
                                its first line (a loaded machine); pyngrok stops reading then
    nocard...  / card-required  the session starts, but creating a TCP endpoint answers 502
                                with ERR_NGROK_8013 in the body, as the agent's API does
    silent...  / silent         prints nothing and hangs (pyngrok would wait forever)
    drop                        the endpoint is created, but its public port closes every
                                connection at once (an edge that never reaches the agent)
    FAKE_NGROK_FORWARD_TO=h:p   every public port forwards to h:p instead of the upstream
                                asked for (an address that reaches some other machine)
    FAKE_NGROK_ARGV_LOG=path    appends each invocation's argv (JSON) to that file
    FAKE_NGROK_MODE_FILE=path   the mode, read from that file at each start (when it exists), so a
                                test can make the next agent fail while a server is running

Reserved addresses: an endpoint asked for `url: tcp://HOST:PORT` (v3) or `remote_addr:
HOST:PORT` (v2) gets exactly that port when HOST is the public host (an address this
"account" reserved); any other host is refused with ERR_NGROK_307, as ngrok refuses an
address the account has not reserved. `metadata` is kept and listed with the endpoint.

ngrok's cloud: with FAKE_NGROK_CLOUD_DIR set, each endpoint is also registered there as
`<id>.json`, in the shape the ngrok API's `GET /endpoints` lists (plus the agent's pid, so
the API stand-in, tests/helpers/ngrok_api.py, drops the endpoints of an agent that died, as
ngrok's cloud does when an agent's session ends); removed when the endpoint or agent stops.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

VERSION = "3.22.1"
SESSION_ID = f"ts_{uuid.uuid4().hex[:24]}"
AGENT = None  # the running Agent, for the SIGTERM handler's tidy-up


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")


BURST = False  # "burst..." tokens: the refusal's lines leave in one write, then the agent is gone
HELD: list = []


def log(lvl: str, msg: str, **fields: str) -> None:
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    line = f't={now()} lvl={lvl} msg="{msg}"{extra}\n'
    if BURST:
        HELD.append(line)
        return
    sys.stdout.write(line)
    sys.stdout.flush()


def read_config(path: str) -> dict:
    import yaml

    try:
        with open(path) as handle:
            return yaml.safe_load(handle) or {}
    except FileNotFoundError:
        return {}


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ngrok", "ngrok.yml")


def option(argv: list, name: str):
    """`--name value` or `--name=value`, as the real agent's flag parser takes both."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def add_authtoken(argv: list) -> int:
    rest = [a for a in argv if not a.startswith("--")]
    token = rest[0] if rest else None
    path = option(argv, "--config") or default_config_path()
    if not token:
        print("ERROR:  accepts 1 arg(s), received 0", file=sys.stderr)
        return 1
    import yaml

    config = read_config(path)
    config.setdefault("version", "3")
    config.setdefault("agent", {})["authtoken"] = token
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle)
    print(f"Authtoken saved to configuration file: {path}")
    return 0


class Forward:
    """A public port that forwards each connection to the upstream, both ways."""

    def __init__(self, public_host: str, upstream: tuple, drop: bool = False, port: int = 0) -> None:
        self.upstream = upstream
        self.drop = drop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((public_host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.drop:
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


NOT_RESERVED = (
    "You must reserve an address for your account before it can be used. Failed to create the address "
    "{addr} for the account ac_2standin in region us. (Hint: Did you reserve the address in this region?)"
    "\\r\\n\\r\\nReserve an address on your dashboard: https://dashboard.ngrok.com/tcp-addresses"
    "\\r\\n\\r\\nERR_NGROK_307\\r\\n")

CARD_REQUIRED = (
    "You must add a credit or debit card before you can use TCP endpoints on a free account. "
    "We require a valid card as a security measure to prevent abuse. Your card will not be "
    "charged.\\r\\n\\r\\nAdd a card here: https://dashboard.ngrok.com/settings#id-verification"
    "\\r\\n\\r\\nERR_NGROK_8013\\r\\n")


def parse_upstream(url: str) -> tuple:
    url = url.split("://", 1)[-1]
    if ":" not in url:
        return ("127.0.0.1", int(url))
    host, port = url.rsplit(":", 1)
    return ("127.0.0.1" if host in ("localhost", "") else host, int(port))


class Agent:
    def __init__(self, mode: str, public_host: str) -> None:
        self.mode = mode
        self.public_host = public_host
        self.endpoints: dict = {}
        self.forwards: dict = {}
        self.lock = threading.Lock()

    def create(self, body: dict, api: str):
        name = body.get("name") or f"ep-{uuid.uuid4()}"
        if api == "endpoints":
            upstream_url = (body.get("upstream") or {}).get("url", "80")
            scheme, _, wanted = (body.get("url") or "http://").partition("://")
        else:
            upstream_url = str(body.get("addr", "80"))
            scheme = body.get("proto", "http")
            wanted = body.get("remote_addr") or ""
        if scheme != "tcp":
            return 400, {"error_code": 102, "status_code": 400, "msg": "invalid tunnel configuration",
                         "details": {"err": "the stand-in only serves TCP endpoints"}}
        if self.mode == "card-required":
            log("eror", "failed to start tunnel", obj="tunnels", err=f'"{CARD_REQUIRED}"')
            return 502, {"error_code": 102, "status_code": 502, "msg": "failed to start tunnel",
                         "details": {"err": CARD_REQUIRED.replace("\\r", "\r").replace("\\n", "\n")}}
        reserved_port = 0
        if wanted:
            host, _, port = wanted.rpartition(":")
            if host != self.public_host or not port.isdigit():
                err = NOT_RESERVED.format(addr=wanted)
                log("eror", "failed to start tunnel", obj="tunnels", err=f'"{err}"')
                return 502, {"error_code": 102, "status_code": 502, "msg": "failed to start tunnel",
                             "details": {"err": err.replace("\\r", "\r").replace("\\n", "\n")}}
            reserved_port = int(port)
        elsewhere = os.environ.get("FAKE_NGROK_FORWARD_TO")
        try:
            forward = Forward(self.public_host, parse_upstream(elsewhere or upstream_url),
                              drop=self.mode == "drop", port=reserved_port)
        except OSError as exc:
            return 502, {"error_code": 102, "status_code": 502, "msg": "failed to start tunnel",
                         "details": {"err": f"the address {wanted} is in use: {exc}"}}
        public = f"tcp://{self.public_host}:{forward.port}"
        record = {
            "id": f"ep_{uuid.uuid4().hex[:24]}", "name": name, "uri": f"/api/{api}/{quote(name, safe='')}",
            "url": public, "public_url": public, "proto": "tcp",
            "upstream": {"url": upstream_url, "protocol": "tcp"},
            "config": {"addr": upstream_url, "inspect": False},
            "metrics": {"conns": {"count": 0, "gauge": 0, "rate1": 0, "rate5": 0, "rate15": 0,
                                  "p50": 0, "p90": 0, "p95": 0, "p99": 0}},
        }
        if body.get("metadata"):
            record["metadata"] = str(body["metadata"])
        if api == "endpoints":
            record.pop("public_url")
        else:
            record.pop("url")
        with self.lock:
            self.endpoints[name] = record
            self.forwards[name] = forward
        self.register(record, public, upstream_url)
        log("info", "started tunnel", obj="tunnels", name=name, addr=f"//{upstream_url}", url=public)
        return 201, record

    def delete(self, name: str) -> int:
        with self.lock:
            forward = self.forwards.pop(name, None)
            record = self.endpoints.pop(name, None)
        if forward:
            forward.close()
        if record:
            self.unregister(record)
        return 204 if record else 404

    # -- ngrok's cloud: what its API lists ----------------------------------------------------
    @staticmethod
    def cloud_dir():
        return os.environ.get("FAKE_NGROK_CLOUD_DIR")

    def register(self, record: dict, public: str, upstream_url: str) -> None:
        folder = self.cloud_dir()
        if not folder:
            return
        hostport = public.split("://", 1)[1]
        host, _, port = hostport.rpartition(":")
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ep_id = record["id"]
        listed = {"id": ep_id, "region": "us", "created_at": stamp, "updated_at": stamp,
                  "public_url": public, "proto": "tcp", "scheme": "tcp", "hostport": hostport,
                  "host": host, "port": int(port), "type": "agent", "metadata": record.get("metadata", ""),
                  "description": "", "upstream_url": upstream_url, "upstream_protocol": "tcp", "url": public,
                  "tunnel": {"id": "tn_" + ep_id[3:], "uri": f"https://api.ngrok.com/tunnels/tn_{ep_id[3:]}"},
                  "tunnel_session": {"id": SESSION_ID, "uri": f"https://api.ngrok.com/tunnel_sessions/{SESSION_ID}"},
                  "uri": f"https://api.ngrok.com/endpoints/{ep_id}", "name": record["name"],
                  "pooling_enabled": False, "agent_pid": os.getpid()}
        tmp = os.path.join(folder, f".{ep_id}.tmp")
        with open(tmp, "w") as handle:
            json.dump(listed, handle)
        os.replace(tmp, os.path.join(folder, f"{ep_id}.json"))

    def unregister(self, record: dict) -> None:
        folder = self.cloud_dir()
        if folder:
            try:
                os.unlink(os.path.join(folder, f"{record['id']}.json"))
            except FileNotFoundError:
                pass

    def unregister_all(self) -> None:
        with self.lock:
            records = list(self.endpoints.values())
        for record in records:
            self.unregister(record)


def make_handler(agent: Agent):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep stdout for logfmt lines only
            pass

        def _send(self, code: int, body=None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            # A name may hold "/" and ":" (pyngrok names tunnels "tcp-<addr>-<uuid>"): it is
            # everything after /api/<kind>/, percent-decoded.
            path = self.path.split("?")[0]
            for api in ("endpoints", "tunnels"):
                prefix = f"/api/{api}"
                if path.rstrip("/") == prefix:
                    return api, None
                if path.startswith(prefix + "/"):
                    return api, unquote(path[len(prefix) + 1:])
            return None, None

        def do_GET(self) -> None:
            api, name = self._route()
            if api is None:
                return self._send(404, {"error_code": 100, "status_code": 404, "msg": "not found"})
            with agent.lock:
                items = [self._shape(r, api) for r in agent.endpoints.values()]
            if name is None:
                return self._send(200, {api: items, "uri": f"/api/{api}"})
            match = [r for r in items if r["name"] == name]
            return self._send(200, match[0]) if match else self._send(404, {"status_code": 404, "msg": "not found"})

        @staticmethod
        def _shape(record: dict, api: str) -> dict:
            record = dict(record)
            public = record.pop("url", None) or record.pop("public_url", None)
            record["url" if api == "endpoints" else "public_url"] = public
            record["uri"] = f"/api/{api}/{quote(record['name'], safe='')}"
            return record

        def do_POST(self) -> None:
            api, name = self._route()
            if api is None or name is not None:
                return self._send(404, {"status_code": 404, "msg": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._send(400, {"status_code": 400, "msg": "invalid JSON"})
            code, reply = agent.create(body, api)
            self._send(code, reply)

        def do_DELETE(self) -> None:
            api, name = self._route()
            if api is None or name is None:
                return self._send(404, {"status_code": 404, "msg": "not found"})
            code = agent.delete(name)
            self._send(code, None if code == 204 else {"status_code": 404, "msg": "not found"})

    return Handler


def _mode_from_file() -> str:
    """FAKE_NGROK_MODE_FILE: a mode a test may change while a server runs (a token revoked meanwhile)."""
    path = os.environ.get("FAKE_NGROK_MODE_FILE")
    try:
        return open(path).read().strip() if path else ""
    except OSError:
        return ""


def start(argv: list) -> int:
    config_path = option(argv, "--config") or default_config_path()
    config = read_config(config_path)
    token = option(argv, "--authtoken") or (config.get("agent") or {}).get("authtoken") \
        or os.environ.get("NGROK_AUTHTOKEN") or ""
    mode = os.environ.get("FAKE_NGROK_MODE") or _mode_from_file() or next(
        (m for prefix, m in (("bad", "bad-token"), ("burst", "bad-token"), ("nocard", "card-required"),
                             ("silent", "silent"))
         if token.startswith(prefix)), "ok")
    global BURST
    BURST = token.startswith("burst")
    if BURST:  # the agent pyngrok started is gone before its first line; a child says why
        parent = os.getpid()
        if os.fork():
            os._exit(1)
        while os.getppid() == parent:
            time.sleep(0.01)
    if mode == "silent":
        while True:
            time.sleep(3600)
    log("info", "open config file", path=config_path, err="nil")
    global AGENT
    agent = AGENT = Agent(mode, os.environ.get("FAKE_NGROK_PUBLIC_HOST", "127.0.0.1"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(agent))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log("info", "starting web service", obj="web", addr=f"127.0.0.1:{server.server_address[1]}",
        allow_hosts="[]")
    if not token or mode == "bad-token":
        err = ("authentication failed: The authtoken you specified does not look like a proper ngrok "
               f"tunnel authtoken.\\nYour authtoken: {token}\\nInstructions to install your authtoken "
               "are on your ngrok dashboard:\\nhttps://dashboard.ngrok.com/get-started/your-authtoken"
               "\\r\\n\\r\\nERR_NGROK_105\\r\\n")
        if not token:
            err = ("authentication failed: Usage of ngrok requires a verified account and authtoken."
                   "\\r\\n\\r\\nERR_NGROK_4018\\r\\n")
        log("eror", "failed to reconnect session", obj="tunnels.session", obj2="csess",
            id=uuid.uuid4().hex[:12], err=f'"{err}"')
        log("eror", "session closing", obj="tunnels.session", err=f'"{err}"')
        log("info", "received stop request", obj="app", stopReq='"{err:<nil> restart:false}"')
        if BURST:  # as an agent that dies at once: its last lines are still in the pipe
            os.write(sys.stdout.fileno(), "".join(HELD).encode())
            os._exit(1)
        return 1
    log("info", "client session established", obj="tunnels.session")
    log("info", "tunnel session started", obj="tunnels.session")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def main(argv: list) -> int:
    record = os.environ.get("FAKE_NGROK_ARGV_LOG")
    if record:
        with open(record, "a") as handle:
            handle.write(json.dumps(argv) + "\n")
    if not argv or argv[0] in ("--version", "version", "-v"):
        print(f"ngrok version {VERSION}")
        return 0
    if argv[:2] == ["config", "add-authtoken"]:
        return add_authtoken(argv[2:])
    if argv[0] == "start":
        return start(argv[1:])
    print(f"ERROR:  unknown command {argv[0]!r} for \"ngrok\"", file=sys.stderr)
    return 1


if __name__ == "__main__":
    import signal

    def _stop(*_args) -> None:
        if AGENT is not None:  # an agent that stops ends its session: ngrok's cloud lists its endpoints no more
            AGENT.unregister_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    sys.exit(main(sys.argv[1:]))
