"""A loopback TCP relay that carries at most `rate` bytes per second each way: a slow network
the tests own, so a copy is still running when a test interrupts it (no race with a fast disk).

    link = SlowLink(target_port=sshd.port, rate=2_000_000).start()
    card = Card(..., port=link.port, ...); ...; link.stop()
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import List


class SlowLink:
    def __init__(self, target_port: int, rate: float) -> None:
        self.target_port, self.rate = target_port, rate
        self.port = 0
        self._stop = threading.Event()
        self._sock = None
        self._threads: List[threading.Thread] = []

    def start(self) -> SlowLink:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                conn.close()
                continue
            for sock in (conn, upstream):
                sock.settimeout(None)
            self._spawn(self._pump, conn, upstream)
            self._spawn(self._pump, upstream, conn)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        start, sent = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                if not select.select([src], [], [], 0.2)[0]:
                    continue
                data = src.recv(16384)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                ahead = sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        except (OSError, ValueError):  # the other direction closed both sockets
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
