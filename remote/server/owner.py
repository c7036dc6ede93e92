"""Owning one server in this process: `up`'s steps in order, and their undoing on any failure.

Data flows one way: secrets -> keys -> sshd -> tunnel -> a proven login -> card. Whoever
runs these steps *owns* the server: the foreground `up`, the detached supervisor, or the
notebook kernel (pyngrok ends its agent when that Python process exits, so the owner must
live as long as the tunnel). Every process is recorded in children.json before it starts,
so `down` from another process, or the next `up`, finds whatever a crash leaves.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional, Tuple

from remote import card as cards
from remote import keys
from remote.errors import RemotectlError
from remote.server import children, control, login_probe, passwords, persist, publish, state
from remote.server.credentials import Credentials
from remote.server.info import ServerInfo
from remote.server.options import Echo, UpOptions, check_input, unwritable
from remote.server.sshd import Sshd, SshdSettings, ensure_openssh_server, write_files
from remote.server.tunnels import Endpoint, Tunnel, TunnelRequest, make_tunnel

# Set while an owner tears down, so a second SIGTERM/SIGHUP cannot cut the teardown short.
STOPPING = threading.Event()


class Server:
    """The owning side of one running server: sshd, the tunnel, the lock, the records."""

    def __init__(self, options: UpOptions, creds: Credentials, mode: str, echo: Echo) -> None:
        options.validate()
        self.options = options
        self.creds = creds
        self.mode = mode  # "foreground" | "supervisor" | "kernel"
        self.echo = echo
        self.state_dir = Path(options.state_dir or state.default_state_dir())
        self.lock = state.StateLock(self.state_dir)
        self.record: Optional[children.Record] = None
        self.sshd: Optional[Sshd] = None
        self.tunnel: Optional[Tunnel] = None
        self.info: Optional[ServerInfo] = None
        self.settings: Optional[SshdSettings] = None
        self.host_key = ""
        self.publisher: Optional[publish.Publisher] = None
        self.began = time.monotonic()
        self._password_claimed = False
        self._stopped = False
        self._stop_lock = threading.Lock()

    # -- start ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Every check that needs no running process, so bad input fails before anything starts."""
        if self.options.persist and not self.creds.authorized_keys:  # a fresh runtime, no secret
            kept = persist.saved_authorized_keys(Path(self.options.persist))
            if kept:
                self.creds = replace(self.creds, authorized_keys=kept)
                self.echo(f"using the {len(kept)} authorized key(s) kept in {self.options.persist}")
        check_input(self.options, self.creds, self.echo)
        ensure_openssh_server(self.echo)
        self.tunnel = make_tunnel(self.options.tunnel, self._tunnel_request(""))
        self.tunnel.prepare(self.echo)

    def _tunnel_request(self, session: str) -> TunnelRequest:
        return TunnelRequest(state_dir=self.state_dir, ngrok_token=self.creds.ngrok_token,
                             region=self.options.region, bind=self.options.bind,
                             session=session or "remotectl", url=self.options.url,
                             hostname=self.options.hostname, tunnel_token=self.creds.tunnel_token)

    def _remaining(self) -> float:
        return max(1.0, self.options.timeout - (time.monotonic() - self.began))

    def start(self) -> ServerInfo:
        """Run every step; on any failure (or a signal) undo them all and re-raise."""
        try:
            state.prepare(self.state_dir)
            locked = self.lock.acquire()
        except OSError as exc:
            raise unwritable(self.state_dir, exc) from None
        if not locked:
            raise control.already_running(self.state_dir)
        try:
            control.clean_leftovers(self.state_dir, self.echo)
            if self.tunnel is None:
                self.preflight()
            assert self.tunnel is not None
            self.record = children.Record.create(self.state_dir, self.mode)
            session_id = cards.new_session_id()
            self.tunnel.request.session = session_id
            settings = SshdSettings(state_dir=self.state_dir, authorized_keys=self.creds.authorized_keys,
                                    port=self.options.port, bind=self.options.bind,
                                    password_login=bool(self.creds.password))
            if self.creds.password:
                self._password_claimed = True  # claim() records before it changes anything
                passwords.claim(self.state_dir, settings.user, self.creds.password)
            if self.options.persist:
                kept = Path(self.options.persist)
                persist.restore_host_key(kept, self.state_dir)
                persist.keep_authorized_keys(kept, settings.authorized_keys)
            host_key = self.host_key = write_files(settings)
            self.settings = settings
            if self.options.persist:
                self.publisher = publish.Publisher(Path(self.options.persist), self.state_dir / persist.HOST_KEY)
            self.sshd = Sshd(settings, tracker=self.record)
            self.sshd.start(timeout=self._remaining())
            endpoint, took = self._open_proven(self.tunnel, session_id, self._remaining())
            card = cards.Card(user=settings.user, host=endpoint.host, port=endpoint.port,
                              host_key=host_key, session=session_id, tunnel=self.tunnel.kind,
                              path=os.path.abspath(self.options.workdir or os.getcwd()),
                              python=sys.executable if cards.plain_remote_path(sys.executable) else None)
            self.info = self._describe(card, settings, endpoint.url, took)
            state.write_info(self.state_dir, self.info)
            return self.info
        except BaseException:
            self.stop()
            raise

    def _open_proven(self, tunnel: Tunnel, session_id: str, timeout: float) -> Tuple[Endpoint, float]:
        """Open `tunnel`, prove a login through it, publish the record (with --persist); undone on failure."""
        assert self.settings is not None and self.record is not None
        settings = self.settings
        if self.publisher is not None:
            fixed = _fixed_address(self.options)
            tunnel.request.metadata = self.publisher.begin(tunnel.kind, session_id, *fixed)
        endpoint = tunnel.open(_loopback(settings.bind), settings.port, timeout=timeout, tracker=self.record)
        try:
            target = login_probe.Target(host=endpoint.host, port=endpoint.port, user=settings.user,
                                        host_key=self.host_key, proxy=tunnel.probe_route(endpoint))
            took = login_probe.prove(target, self.state_dir / "authorized_keys", settings.authorized_keys,
                                     settings.log_path, timeout=max(10.0, timeout))
            if self.publisher is not None:
                self.publisher.publish(endpoint.host, endpoint.port)
        except BaseException:
            tunnel.close()
            raise
        return endpoint, took

    def reopen_tunnel(self) -> ServerInfo:
        """The tunnel agent died: open a new tunnel (a new address), prove it, publish it.

        What is left of the old agent is stopped first; on failure the new one is stopped too
        (RemotectlError), so the caller may simply try again later. state.json then names the
        new address, card and pids.
        """
        with self._stop_lock:  # a stop() meanwhile waits, then tears down the new tunnel too
            if self._stopped:
                raise RemotectlError("the server is stopping")
            return self._reopen()

    def _reopen(self) -> ServerInfo:
        assert self.info is not None and self.tunnel is not None
        try:
            self.tunnel.close()
        except Exception as exc:  # it is dead already; what is left, down finds by its record
            self.echo(f"warning: tidying the dead tunnel failed: {exc}")
        tunnel = make_tunnel(self.options.tunnel, self._tunnel_request(self.info.session))
        tunnel.prepare(lambda _line: None)
        self.tunnel = tunnel
        endpoint, took = self._open_proven(tunnel, self.info.session, max(10.0, self.options.timeout))
        card = replace(cards.decode(self.info.card), host=endpoint.host, port=endpoint.port)
        self.info = replace(self.info, card=card.encode(), connect_line=cards.connect_line(card),
                            host=endpoint.host, port=endpoint.port, public_url=endpoint.url,
                            pids=self.record.pids() if self.record else {},
                            starts=self.record.starts() if self.record else {},
                            tunnel_info=tunnel.describe(), proof_seconds=round(took, 3),
                            tunnel_restarts=self.info.tunnel_restarts + 1,
                            published=self._published())
        state.write_info(self.state_dir, self.info)
        return self.info

    def _published(self) -> Optional[Dict[str, object]]:
        last = self.publisher.last if self.publisher is not None else None
        if last is None:
            return None
        return {"path": str(self.publisher.path), "seq": last.seq, "at": last.at,
                "host": last.host, "port": last.port}

    def _describe(self, card: cards.Card, settings: SshdSettings, public_url: str,
                  proof_seconds: float) -> ServerInfo:
        assert self.record is not None and self.tunnel is not None
        return ServerInfo(
            card=card.encode(), connect_line=cards.connect_line(card), host=card.host, port=card.port,
            user=card.user, host_key=card.host_key, fingerprint=keys.fingerprint(card.host_key),
            session=card.session, tunnel=card.tunnel, public_url=public_url,
            local_host=settings.bind, local_port=settings.port, state_dir=str(self.state_dir),
            password_login=settings.password_login, authorized_keys=len(settings.authorized_keys),
            mode=self.mode, pid=os.getpid(), pids=self.record.pids(), starts=self.record.starts(),
            tunnel_info=self.tunnel.describe(), persist=self.options.persist,
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ready_seconds=round(time.monotonic() - self.began, 3), proof_seconds=round(proof_seconds, 3),
            published=self._published())

    def republish(self) -> None:
        """Rewrite state.json after a child changed (e.g. a restarted agent): pids and tunnel facts."""
        if self.info is None or self.record is None or self.tunnel is None:
            return
        self.info = replace(self.info, pids=self.record.pids(), starts=self.record.starts(),
                            tunnel_info=self.tunnel.describe())
        state.write_info(self.state_dir, self.info)

    # -- health and stop -----------------------------------------------------------------------
    def problem(self) -> Optional[str]:
        """None while sshd and the tunnel both run; else what died, in words."""
        if self.sshd is None or not self.sshd.alive():
            return "sshd exited"
        if self.tunnel is None or not self.tunnel.alive():
            return f"the {self.tunnel.kind if self.tunnel else '?'} agent exited"
        return None

    def healthy(self) -> bool:
        return self.problem() is None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> Dict[str, int]:
        """Tear everything down (idempotent); returns {what: pid} of what was still running."""
        with self._stop_lock:
            if self._stopped:
                return {}
            self._stopped = True
            STOPPING.set()
            try:
                return self._teardown()
            finally:
                STOPPING.clear()

    def _teardown(self) -> Dict[str, int]:
        stopped: Dict[str, int] = {}
        if self.tunnel is not None:
            try:
                stopped.update(self.tunnel.close())
            except Exception as exc:  # keep tearing down the rest; down finds what is left
                self.echo(f"warning: stopping the tunnel failed: {exc}")
        if self.sshd is not None:
            pid = self.sshd.pid
            if self.sshd.stop() and pid:
                stopped["sshd"] = pid
        if self._password_claimed:
            try:
                passwords.release(self.state_dir)
            except RemotectlError as exc:
                self.echo(f"warning: could not put the previous password back: {exc.message}; "
                          f"`remotectl down --state-dir {self.state_dir}` tries again")
        try:
            if self.info is not None:
                state.clear_state(self.state_dir)
            if self.record is not None:
                left = self.record.running()
                if left:
                    self.echo(f"warning: still running: {', '.join(left)}; run remotectl down "
                              f"--state-dir {self.state_dir}")
                else:
                    self.record.remove()
        except OSError as exc:
            self.echo(f"warning: could not tidy {self.state_dir}: {exc.strerror}")
        self.lock.release()
        return stopped


def _fixed_address(options: UpOptions) -> Tuple[Optional[str], Optional[int]]:
    """The address known before the tunnel opens (`--url`), so ngrok's metadata can name it."""
    if options.tunnel == "ngrok" and options.url:
        host, _, port = options.url.split("://", 1)[-1].rpartition(":")
        return host, int(port)
    return None, None


def _loopback(bind: str) -> str:
    """The address a local client reaches sshd on."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind
