"""A hostile SSH/SFTP server the tests own: it plays the machine behind a malicious card.

Real sshd cannot list a file called `../x` or answer a probe with an escape sequence, so this
paramiko server does, with a real SSH handshake the real OpenSSH client (and paramiko) talk
to. It serves a virtual tree of folders whose listings say whatever the test wants:

    server = HostileServer(public_line_of_the_client_key)
    server.tree["/src"] = [File("ok.txt", b"fine"), File("../escape", b"x"), Link("l", "/etc")]
    server.exec_output = lambda command: b"@@host \\x1b]52;c;ZXZpbA==\\x07\\n"
    server.start(); card = server.card(); ...; server.stop()

Paths inside the tree are looked up as given (no normalisation): what a listing names is
what the client must refuse.
"""

from __future__ import annotations

import io
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import paramiko

from remote import keys
from remote.card import Card


@dataclass
class File:
    name: str
    data: bytes = b""
    mode: int = 0o644
    mtime: int = 1_700_000_000


@dataclass
class Folder:
    name: str
    mode: int = 0o755
    mtime: int = 1_700_000_000


@dataclass
class Link:
    name: str
    target: str


Entry = Union[File, Folder, Link]


def _attrs(entry: Entry) -> paramiko.SFTPAttributes:
    attrs = paramiko.SFTPAttributes()
    attrs.filename = entry.name
    if isinstance(entry, File):
        attrs.st_mode = stat.S_IFREG | entry.mode
        attrs.st_size = len(entry.data)
        attrs.st_mtime = attrs.st_atime = entry.mtime
    elif isinstance(entry, Folder):
        attrs.st_mode = stat.S_IFDIR | entry.mode
        attrs.st_size = 4096
        attrs.st_mtime = attrs.st_atime = entry.mtime
    else:
        attrs.st_mode = stat.S_IFLNK | 0o777
        attrs.st_size = len(entry.target)
        attrs.st_mtime = attrs.st_atime = 1_700_000_000
    attrs.st_uid = attrs.st_gid = 0
    return attrs


class _Handle(paramiko.SFTPHandle):
    def __init__(self, entry: File, hostile: HostileServer) -> None:
        super().__init__()
        self.entry, self.hostile = entry, hostile

    def read(self, offset, length):
        hostile = self.hostile
        hostile.served += length
        if hostile.cut_after is not None and hostile.served > hostile.cut_after:
            for transport in hostile.transports:
                transport.close()  # the runtime vanishes mid-copy
        return self.entry.data[offset:offset + length]

    def stat(self):
        return _attrs(self.entry)

    def chattr(self, attr):
        return paramiko.SFTP_OK


@dataclass
class HostileServer:
    authorized: str  # the one public key line allowed to log in
    tree: Dict[str, List[Entry]] = field(default_factory=dict)  # folder path -> its listing
    exec_output: Callable[[str], bytes] = lambda command: b""
    commands: List[str] = field(default_factory=list)  # every exec request, in order
    env: Dict[str, str] = field(default_factory=dict)  # every variable a client sent
    offered: List[str] = field(default_factory=list)  # every public key a client offered
    denied: List[str] = field(default_factory=list)  # paths whose open() fails
    status_text: Optional[str] = None  # the text of every error reply
    connections: int = 0  # SSH connections accepted
    cut_after: Optional[int] = None  # drop every connection once this many bytes were read

    def __post_init__(self) -> None:
        private, public = keys.generate_ed25519("hostile")
        self.host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(private.decode()))
        self.host_public_key = keys.bare(public)
        self.port = 0
        self._sock: Optional[socket.socket] = None
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()
        self.transports: List[paramiko.Transport] = []
        self.served = 0

    # -- the virtual tree -------------------------------------------------------------
    def lookup(self, path: str) -> Optional[Entry]:
        """The entry at `path` as some listing names it (or a folder that has a listing)."""
        if path in self.tree:
            return Folder(path.rsplit("/", 1)[-1] or "/")
        parent, _, name = path.rpartition("/")
        for entry in self.tree.get(parent or "/", []):
            if entry.name == name:
                return entry
        return None

    def card(self, session: str = "hostile", path: Optional[str] = None) -> Card:
        return Card(user="root", host="127.0.0.1", port=self.port, host_key=self.host_public_key,
                    session=session, path=path)

    # -- serving ----------------------------------------------------------------------
    def start(self) -> HostileServer:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        self.transports.append(transport)
        transport.add_server_key(self.host_key)
        server = self
        transport.set_subsystem_handler("sftp", _HostileSftpServer, _Sftp, server)

        class Interface(paramiko.ServerInterface):
            def get_allowed_auths(self, username):
                return "publickey"

            def check_auth_publickey(self, username, key):
                server.offered.append(f"{key.get_name()} {key.get_base64()}")
                wanted = server.authorized.split()[1]
                return paramiko.AUTH_SUCCESSFUL if key.get_base64() == wanted else paramiko.AUTH_FAILED

            def check_channel_request(self, kind, chanid):
                return paramiko.OPEN_SUCCEEDED if kind == "session" else \
                    paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

            def check_channel_exec_request(self, channel, command):
                text = command.decode("utf-8", "replace")
                server.commands.append(text)
                threading.Thread(target=server._answer, args=(channel, text), daemon=True).start()
                return True

            def check_channel_env_request(self, channel, name, value):
                def text(v):
                    return (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                server.env[text(name)] = text(value)
                return True  # a hostile server takes every variable it is sent

        try:
            transport.start_server(server=Interface())
            while transport.is_active() and not self._stop.is_set():
                time.sleep(0.05)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()

    def _answer(self, channel, command: str) -> None:
        time.sleep(0.05)  # let paramiko send its "exec accepted" reply before the answer
        try:
            channel.sendall(self.exec_output(command))
            channel.send_exit_status(0)
        finally:
            channel.close()


class _Sftp(paramiko.SFTPServerInterface):
    def __init__(self, server_obj, hostile: HostileServer, *args, **kwargs) -> None:
        super().__init__(server_obj, *args, **kwargs)
        self.hostile = hostile

    def canonicalize(self, path):
        return "/" if path in (".", "") else path

    def list_folder(self, path):
        if path not in self.hostile.tree:
            return paramiko.SFTP_NO_SUCH_FILE
        return [_attrs(e) for e in self.hostile.tree[path]]

    def stat(self, path):
        entry = self.hostile.lookup(path)
        while isinstance(entry, Link):  # stat follows, like a server would (inside the tree)
            entry = self.hostile.lookup(entry.target)
        return _attrs(entry) if entry is not None else paramiko.SFTP_NO_SUCH_FILE

    def lstat(self, path):
        entry = self.hostile.lookup(path)
        return _attrs(entry) if entry is not None else paramiko.SFTP_NO_SUCH_FILE

    def readlink(self, path):
        entry = self.hostile.lookup(path)
        return entry.target if isinstance(entry, Link) else paramiko.SFTP_NO_SUCH_FILE

    def open(self, path, flags, attr):
        if path in self.hostile.denied:
            return paramiko.SFTP_PERMISSION_DENIED
        entry = self.hostile.lookup(path)
        if not isinstance(entry, File):
            return paramiko.SFTP_NO_SUCH_FILE
        return _Handle(entry, self.hostile)


class _HostileSftpServer(paramiko.SFTPServer):
    """paramiko's SFTP server, but error replies carry the test's own text (any bytes)."""

    def _send_status(self, request_number, code, desc=None):
        text = getattr(self.server, "hostile", None) and self.server.hostile.status_text
        super()._send_status(request_number, code, text or desc)
