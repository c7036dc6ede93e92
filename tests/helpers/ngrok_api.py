"""A stand-in for ngrok's cloud API (https://api.ngrok.com), owned by the tests.

It serves what `remotectl proxy` asks of the real one, the way the real one answers:

    GET /endpoints[?limit=N&before_id=ID]
        headers required: `Authorization: Bearer <API key>` and `Ngrok-Version: 2`
        -> {"endpoints": [...], "uri": "https://api.ngrok.com/endpoints", "next_page_uri": ...}

Missing or unreadable credentials answer 401 with ERR_NGROK_200 / 201, a wrong key 401
with ERR_NGROK_203, a missing version header 400 with ERR_NGROK_218, all in the API's error
shape (`error_code`, `status_code`, `msg`, `details.operation_id`). Pages hold `limit`
endpoints (default 100, as ngrok's maximum), newest first; `next_page_uri` names the next.

The endpoints are the ones the agent stand-ins (fake_ngrok.py) registered in the cloud folder
(FAKE_NGROK_CLOUD_DIR), as the real cloud lists what agents opened; an endpoint whose agent
died is not listed (ngrok drops a session's endpoints when it ends). `next_page_uri` and
`uri` name this server's own base URL so a client may follow them.

    api = NgrokApi(cloud_dir, api_key).start(); ...; api.stop()
    api.url -> "http://127.0.0.1:PORT" (set REMOTECTL_NGROK_API_URL to it); api.requests: what came in
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional
from urllib.parse import parse_qs, urlsplit

MAX_LIMIT = 100


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class NgrokApi:
    def __init__(self, cloud_dir: Path, api_key: str) -> None:
        self.cloud_dir = Path(cloud_dir)
        self.cloud_dir.mkdir(parents=True, exist_ok=True)
        self.api_key = api_key
        self.requests: List[dict] = []
        self.extra: List[dict] = []  # endpoints a test adds as they are (someone else's, forged, ...)
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def endpoints(self) -> List[dict]:
        """What the cloud lists now: live agents' endpoints and the test's extras, newest first."""
        found = []
        for path in self.cloud_dir.glob("ep_*.json"):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _alive(entry.pop("agent_pid", None)):
                found.append(entry)
        found += [dict(e) for e in self.extra]
        return sorted(found, key=lambda e: (e.get("created_at", ""), e["id"]), reverse=True)

    def start(self) -> NgrokApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, msg: str) -> None:
                self._send(status, {"error_code": code, "status_code": status, "msg": msg,
                                    "details": {"operation_id": f"op_{uuid.uuid4().hex[:24]}"}})

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                api.requests.append({"path": self.path, "headers": dict(self.headers.items())})
                auth = self.headers.get("Authorization")
                if not auth:
                    return self._error(401, "ERR_NGROK_200", "The ngrok API requires that you set the "
                                       "Authorization header for authentication.")
                scheme, _, key = auth.partition(" ")
                if scheme.lower() not in ("bearer", "basic") or not key:
                    return self._error(401, "ERR_NGROK_201", "The ngrok API requires that you use Basic or "
                                       "Bearer authentication via the Authorization header.")
                if key != api.api_key:
                    return self._error(401, "ERR_NGROK_203", "The API authentication you specified is "
                                       "properly formed, but it is invalid.")
                if not self.headers.get("Ngrok-Version"):
                    return self._error(400, "ERR_NGROK_218", "Your request has not specified an API "
                                       "version. Include the version you wish to use in the Ngrok-Version "
                                       "header. Supported versions: 2.")
                if self.headers.get("Ngrok-Version") != "2":
                    return self._error(400, "ERR_NGROK_219", "Unsupported API version.")
                if parts.path.rstrip("/") != "/endpoints":
                    return self._error(404, "ERR_NGROK_404", "Not found.")
                query = parse_qs(parts.query)
                try:
                    limit = min(MAX_LIMIT, int(query.get("limit", [MAX_LIMIT])[0]))
                except ValueError:
                    return self._error(400, "ERR_NGROK_400", "limit must be a number.")
                listed = api.endpoints()
                before = query.get("before_id", [None])[0]
                if before:
                    ids = [e["id"] for e in listed]
                    listed = listed[ids.index(before) + 1:] if before in ids else []
                page, rest = listed[:limit], listed[limit:]
                next_uri = f"{api.url}/endpoints?limit={limit}&before_id={page[-1]['id']}" if rest else None
                self._send(200, {"endpoints": page, "uri": f"{api.url}/endpoints", "next_page_uri": next_uri})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def endpoint_shape(public_url: str, metadata: str, ep_id: Optional[str] = None) -> dict:
    """An endpoint as the API lists it (for a test's `extra`: another account's, a forged one)."""
    ep_id = ep_id or f"ep_{uuid.uuid4().hex[:24]}"
    hostport = public_url.split("://", 1)[1]
    host, _, port = hostport.rpartition(":")
    return {"id": ep_id, "region": "us", "created_at": "2099-01-01T00:00:00Z", "updated_at": "2099-01-01T00:00:00Z",
            "public_url": public_url, "proto": "tcp", "scheme": "tcp", "hostport": hostport, "host": host,
            "port": int(port), "type": "agent", "metadata": metadata, "uri": f"https://api.ngrok.com/endpoints/{ep_id}",
            "tunnel_session": {"id": "ts_other", "uri": "https://api.ngrok.com/tunnel_sessions/ts_other"}}

