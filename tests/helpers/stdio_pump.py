"""The byte pump of the ProxyCommand stand-ins (`colab ssh --proxy-mode`, `cloudflared access
ssh`): stdin to a socket and the socket to stdout, until either side closes. The stand-ins run
it as executables, where this folder is sys.path[0]."""

from __future__ import annotations

import os
import socket
import threading


def pump_stdio(sock: socket.socket) -> None:
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
    sock.close()
