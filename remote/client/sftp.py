"""A small, strict SFTP (version 3) client over any byte stream: what pull and push speak.

Why not paramiko's SFTPClient: measured on loopback, paramiko's own transport (Python-level
packet handling and crypto calls per 32 KB) moves about half of what `scp` does, and its
SFTP layer over OpenSSH's transport about 0.7-1.0 of it, with 32 KB requests behind one
lock and a prefetch thread. This client asks the server's limits (`limits@openssh.com`),
keeps many large requests in flight from one thread, and never buffers more than it has
asked for, so the stream (normally `ssh -s NAME sftp`, see transport.py) is the only cost.

Strict because the server is untrusted: every length is bounded before it is read, a
reply to a request not asked is a protocol error, a READ answered with more bytes than asked
is refused, and names come back as `str` decoded with surrogateescape (so a byte string that
is not UTF-8 is seen, and refused, by the caller's name check rather than lost).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Dict, Iterator, Optional, Tuple

from remote.client.untrusted import clean_line
from remote.errors import RemotectlError

VERSION = 3
# packet types
INIT, VERSION_REPLY, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = range(11, 21)
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED, EXTENDED_REPLY = 101, 102, 103, 104, 105, 200, 201
# status codes
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE, NO_CONNECTION, CONNECTION_LOST, OP_UNSUPPORTED = range(9)
# attribute flags
A_SIZE, A_UIDGID, A_PERMISSIONS, A_ACMODTIME, A_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000
# open flags
F_READ, F_WRITE, F_APPEND, F_CREAT, F_TRUNC, F_EXCL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20

MAX_PACKET = 1024 * 1024 + 1024  # nothing we ask for is larger: a bigger length is hostile
SAFE_CHUNK = 32 * 1024  # every SFTP server handles this (the draft's minimum is 32768)
MAX_CHUNK = 256 * 1024
IN_FLIGHT_BYTES = 4 * 1024 * 1024  # twice ssh's 2 MB channel window: the link never waits on us
MAX_NAMES_PER_REPLY = 100_000
SLOW_LINK = 16 * 1024  # bytes a second: a reply or write moving this slowly still counts as alive
MAX_EXTENSIONS = 256

S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000


class SftpError(RemotectlError):
    """The server answered a request with an error status (its message is untrusted text)."""

    def __init__(self, code: int, message: str, path: str = "") -> None:
        self.code = code
        text = clean_line(message or _STATUS_WORDS.get(code, f"status {code}"), limit=200)
        super().__init__(f"{path}: {text}" if path else text)


class ProtocolError(RemotectlError):
    """The server broke the SFTP protocol (a bad length, a reply nobody asked for, ...)."""


_STATUS_WORDS = {NO_SUCH_FILE: "no such file", PERMISSION_DENIED: "permission denied",
                 FAILURE: "failure", OP_UNSUPPORTED: "operation not supported",
                 BAD_MESSAGE: "bad message", EOF: "end of file"}


@dataclass
class Attrs:
    """File attributes as SFTP v3 carries them (any field may be missing)."""

    size: Optional[int] = None
    mode: Optional[int] = None  # st_mode, type bits included
    atime: Optional[int] = None
    mtime: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None

    @property
    def kind(self) -> str:
        fmt = (self.mode or 0) & S_IFMT
        return {S_IFDIR: "dir", S_IFREG: "file", S_IFLNK: "link"}.get(fmt, "other")

    @property
    def perm(self) -> Optional[int]:
        return None if self.mode is None else self.mode & 0o7777


def _pack_str(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _path(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def pack_attrs(attrs: Optional[Attrs]) -> bytes:
    if attrs is None:
        return struct.pack(">I", 0)
    flags, body = 0, b""
    if attrs.size is not None:
        flags |= A_SIZE
        body += struct.pack(">Q", attrs.size)
    if attrs.mode is not None:
        flags |= A_PERMISSIONS
        body += struct.pack(">I", attrs.mode & 0xFFFFFFFF)
    if attrs.mtime is not None:
        flags |= A_ACMODTIME
        atime = attrs.atime if attrs.atime is not None else attrs.mtime
        body += struct.pack(">II", int(atime) & 0xFFFFFFFF, int(attrs.mtime) & 0xFFFFFFFF)
    return struct.pack(">I", flags) + body


class _Reader:
    """Bounded reads from one reply body (views, not copies: a DATA reply's bytes are handed
    on as they were read)."""

    def __init__(self, data: bytes, start: int = 0) -> None:
        self.data, self.pos = memoryview(data), start

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("the SFTP server sent a truncated reply")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def string(self) -> memoryview:
        return self.take(self.u32())

    def text(self) -> str:
        return bytes(self.string()).decode("utf-8", "surrogateescape")

    def attrs(self) -> Attrs:
        flags = self.u32()
        a = Attrs()
        if flags & A_SIZE:
            a.size = self.u64()
        if flags & A_UIDGID:
            a.uid, a.gid = self.u32(), self.u32()
        if flags & A_PERMISSIONS:
            a.mode = self.u32()
        if flags & A_ACMODTIME:
            a.atime, a.mtime = self.u32(), self.u32()
        if flags & A_EXTENDED:
            count = self.u32()
            if count > MAX_EXTENSIONS:
                raise ProtocolError("the SFTP server sent too many attribute extensions")
            for _ in range(count):
                self.string()
                self.string()
        return a


class SftpClient:
    """SFTP v3 over `reader`/`writer` (file-like: read(n) returns n bytes or fewer at EOF)."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self._reader, self._writer = reader, writer
        # While a read or write blocks on the stream: when it began, plus a second for every
        # SLOW_LINK bytes it moves (None otherwise), so the link's owner can tell a stalled
        # server from a slow one without a per-chunk loop here.
        self.waiting_since: Optional[float] = None
        self._unflushed = 0  # bytes handed to the writer since its last flush
        self._next_id = 1
        self.extensions: Dict[str, bytes] = {}
        self.read_chunk = SAFE_CHUNK
        self.write_chunk = SAFE_CHUNK

    # -- wire -------------------------------------------------------------------------
    def _read_exact(self, n: int) -> bytes:
        self.waiting_since = time.monotonic() + n / SLOW_LINK
        try:
            data = self._reader.read(n)
        finally:
            self.waiting_since = None
        if data is None or len(data) < n:
            raise EOFError("the SFTP stream closed")
        return data

    def _send(self, kind: int, body: bytes, flush: bool = True, tail: bytes = b"") -> int:
        """One request; `tail` (a WRITE's data) is written after `body` without joining them."""
        rid = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        size = len(body) + len(tail) + 9
        self.waiting_since = time.monotonic() + size / SLOW_LINK
        try:
            self._writer.write(struct.pack(">IBI", size - 4, kind, rid) + body)
            if tail:
                self._writer.write(tail)
        finally:
            self.waiting_since = None
        self._unflushed += size
        if flush:
            self.flush()
        return rid

    def flush(self) -> None:
        self.waiting_since = time.monotonic() + self._unflushed / SLOW_LINK
        try:
            self._writer.flush()
        finally:
            self.waiting_since = None
        self._unflushed = 0

    def _recv(self) -> Tuple[int, int, _Reader]:
        length = struct.unpack(">I", self._read_exact(4))[0]
        if not 5 <= length <= MAX_PACKET:
            raise ProtocolError(f"the SFTP server sent a packet of {length} bytes")
        packet = self._read_exact(length)
        kind, rid = struct.unpack_from(">BI", packet)
        return kind, rid, _Reader(packet, 5)

    def _call(self, kind: int, body: bytes, path: str = "") -> Tuple[int, _Reader]:
        rid = self._send(kind, body)
        got, reply_id, reader = self._recv()
        if reply_id != rid:
            raise ProtocolError(f"the SFTP server answered request {reply_id}, not {rid}")
        if got == STATUS:
            code = reader.u32()
            if code != OK:
                raise SftpError(code, _status_message(reader), path)
        return got, reader

    def _expect(self, want: int, kind: int, body: bytes, path: str = "") -> _Reader:
        got, reader = self._call(kind, body, path)
        if got != want:
            raise ProtocolError(f"the SFTP server sent reply type {got} where {want} belongs")
        return reader

    def _status(self, kind: int, body: bytes, path: str = "") -> None:
        got, _ = self._call(kind, body, path)
        if got != STATUS:
            raise ProtocolError(f"the SFTP server sent reply type {got} where a status belongs")

    # -- session ----------------------------------------------------------------------
    def init(self) -> SftpClient:
        """Say hello; read the server's extensions and, from `limits@openssh.com`, its sizes."""
        self._writer.write(struct.pack(">IBI", 5, INIT, VERSION))
        self._writer.flush()
        length = struct.unpack(">I", self._read_exact(4))[0]
        if not 5 <= length <= 64 * 1024:
            raise ProtocolError("the server did not answer as an SFTP server")
        packet = _Reader(self._read_exact(length))
        if packet.take(1)[0] != VERSION_REPLY:
            raise ProtocolError("the server did not answer as an SFTP server")
        if packet.u32() < VERSION:
            raise ProtocolError("the SFTP server speaks a version older than 3")
        while packet.pos < len(packet.data) and len(self.extensions) < MAX_EXTENSIONS:
            name = bytes(packet.string()).decode("ascii", "replace")
            self.extensions[name] = bytes(packet.string())
        if "limits@openssh.com" in self.extensions:
            self._apply_limits()
        return self

    def _apply_limits(self) -> None:
        try:
            reader = self._expect(EXTENDED_REPLY, EXTENDED, _pack_str(b"limits@openssh.com"))
            _packet, read_len, write_len = reader.u64(), reader.u64(), reader.u64()
        except (SftpError, ProtocolError):
            return
        if read_len:
            self.read_chunk = max(SAFE_CHUNK, min(MAX_CHUNK, read_len))
        if write_len:
            self.write_chunk = max(SAFE_CHUNK, min(MAX_CHUNK, write_len))

    # -- metadata ---------------------------------------------------------------------
    def stat(self, path: str) -> Attrs:
        return self._expect(ATTRS, STAT, _pack_str(_path(path)), path).attrs()

    def lstat(self, path: str) -> Attrs:
        return self._expect(ATTRS, LSTAT, _pack_str(_path(path)), path).attrs()

    def fstat(self, handle: bytes) -> Attrs:
        return self._expect(ATTRS, FSTAT, _pack_str(handle)).attrs()

    def try_lstat(self, path: str) -> Optional[Attrs]:
        try:
            return self.lstat(path)
        except SftpError as exc:
            if exc.code == NO_SUCH_FILE:
                return None
            raise

    def try_stat(self, path: str) -> Optional[Attrs]:
        try:
            return self.stat(path)
        except SftpError as exc:
            if exc.code == NO_SUCH_FILE:
                return None
            raise

    def setstat(self, path: str, attrs: Attrs) -> None:
        self._status(SETSTAT, _pack_str(_path(path)) + pack_attrs(attrs), path)

    def fsetstat(self, handle: bytes, attrs: Attrs) -> None:
        self._status(FSETSTAT, _pack_str(handle) + pack_attrs(attrs))

    def realpath(self, path: str) -> str:
        reader = self._expect(NAME, REALPATH, _pack_str(_path(path)), path)
        if reader.u32() != 1:
            raise ProtocolError("the SFTP server's realpath reply holds more than one name")
        return reader.text()

    def readlink(self, path: str) -> str:
        reader = self._expect(NAME, READLINK, _pack_str(_path(path)), path)
        if reader.u32() != 1:
            raise ProtocolError("the SFTP server's readlink reply holds more than one name")
        return reader.text()

    def symlink(self, target: str, link: str) -> None:
        """Make `link` point at `target` (OpenSSH's order, which every server follows)."""
        self._status(SYMLINK, _pack_str(_path(target)) + _pack_str(_path(link)), link)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._status(MKDIR, _pack_str(_path(path)) + pack_attrs(Attrs(mode=mode)), path)

    def remove(self, path: str) -> None:
        self._status(REMOVE, _pack_str(_path(path)), path)

    def rename(self, old: str, new: str) -> None:
        """Replace `new` with `old` atomically where the server can (posix-rename@openssh.com)."""
        if "posix-rename@openssh.com" in self.extensions:
            self._status(EXTENDED, _pack_str(b"posix-rename@openssh.com") + _pack_str(_path(old))
                         + _pack_str(_path(new)), new)
            return
        if self.try_lstat(new) is not None:
            self.remove(new)
        self._status(RENAME, _pack_str(_path(old)) + _pack_str(_path(new)), new)

    def listdir(self, path: str, limit: int) -> Iterator[Tuple[str, Attrs, str]]:
        """(name, attrs, longname) of each entry, as the server lists them (untrusted)."""
        handle = bytes(self._expect(HANDLE, OPENDIR, _pack_str(_path(path)), path).string())
        seen = 0
        try:
            while True:
                try:
                    reader = self._expect(NAME, READDIR, _pack_str(handle), path)
                except SftpError as exc:
                    if exc.code == EOF:
                        return
                    raise
                count = reader.u32()
                if count > MAX_NAMES_PER_REPLY:
                    raise ProtocolError("the SFTP server listed too many names in one reply")
                for _ in range(count):
                    name, longname, attrs = reader.text(), reader.text(), reader.attrs()
                    seen += 1
                    if seen > limit:
                        raise ProtocolError(f"{path} lists more than {limit} entries")
                    yield name, attrs, longname
        finally:
            self.close(handle)

    # -- files ------------------------------------------------------------------------
    def open(self, path: str, flags: int, attrs: Optional[Attrs] = None) -> bytes:
        return bytes(self._expect(HANDLE, OPEN, _pack_str(_path(path)) + struct.pack(">I", flags)
                                  + pack_attrs(attrs), path).string())

    def close(self, handle: bytes) -> None:
        try:
            self._status(CLOSE, _pack_str(handle))
        except SftpError:
            pass

    def fsync(self, handle: bytes) -> None:
        if "fsync@openssh.com" in self.extensions:
            self._status(EXTENDED, _pack_str(b"fsync@openssh.com") + _pack_str(handle))

    def download(self, handle: bytes, offset: int, end: int, sink: Callable[[memoryview], None],
                 path: str = "") -> int:
        """Read [offset, end) with many requests in flight, handing bytes to `sink` in order.

        A short read (servers may answer less than asked) is asked again for the rest; EOF
        before `end` (the file shrank) stops there. Returns the offset reached.
        """
        chunk = self.read_chunk
        depth = max(1, IN_FLIGHT_BYTES // chunk)
        pending: Dict[int, Tuple[int, int]] = {}  # request id -> (offset, length)
        ready: Dict[int, memoryview] = {}  # offset -> bytes not yet handed on
        asked = done = offset
        eof_at: Optional[int] = None
        try:
            while True:
                while eof_at is None and asked < end and len(pending) < depth:
                    length = min(chunk, end - asked)
                    rid = self._send(READ, _pack_str(handle) + struct.pack(">QI", asked, length), flush=False)
                    pending[rid] = (asked, length)
                    asked += length
                self.flush()
                while done in ready:
                    data = ready.pop(done)
                    sink(data)
                    done += len(data)
                if done >= end or (eof_at is not None and done >= eof_at) or not pending:
                    return done
                kind, rid, reader = self._recv()
                if rid not in pending:
                    raise ProtocolError(f"the SFTP server answered request {rid}, which was not asked")
                at, length = pending.pop(rid)
                if kind == STATUS:
                    code = reader.u32()
                    if code != EOF:
                        raise SftpError(code, _status_message(reader), path)
                    eof_at = at if eof_at is None else min(eof_at, at)
                elif kind == DATA:
                    data = reader.string()
                    if len(data) > length:
                        raise ProtocolError(f"the SFTP server sent {len(data)} bytes where {length} were asked")
                    if not data:
                        eof_at = at if eof_at is None else min(eof_at, at)
                        continue
                    if len(data) < length:  # a short read: ask for the rest of this range
                        rest = self._send(READ, _pack_str(handle) + struct.pack(
                            ">QI", at + len(data), length - len(data)))
                        pending[rest] = (at + len(data), length - len(data))
                    ready[at] = data
                else:
                    raise ProtocolError(f"the SFTP server sent reply type {kind} to a read")
        finally:
            self._drain(pending)

    def upload(self, handle: bytes, offset: int, source: Callable[[int], bytes], path: str = "") -> int:
        """Write what `source(n)` returns (b"" at its end) from `offset`, many writes in flight."""
        chunk = self.write_chunk
        depth = max(1, IN_FLIGHT_BYTES // chunk)
        pending: Dict[int, int] = {}
        at = offset
        finished = False
        while True:
            while not finished and len(pending) < depth:
                data = source(chunk)
                if not data:
                    finished = True
                    break
                rid = self._send(WRITE, _pack_str(handle) + struct.pack(">QI", at, len(data)), flush=False,
                                 tail=data)
                pending[rid] = len(data)
                at += len(data)
            self.flush()
            if not pending:
                return at
            kind, rid, reader = self._recv()
            if rid not in pending or kind != STATUS:
                raise ProtocolError("the SFTP server answered a write out of turn")
            pending.pop(rid)
            code = reader.u32()
            if code != OK:
                self._drain(pending)
                raise SftpError(code, _status_message(reader), path)

    def _drain(self, pending: dict) -> None:
        """Read the replies still owed, so the next request's reply is its own (a dead stream
        has nothing left to read: the error that killed it is the one reported)."""
        try:
            while pending:
                _, rid, _ = self._recv()
                pending.pop(rid, None)
        except (EOFError, OSError, ProtocolError):
            pending.clear()


def _status_message(reader: _Reader) -> str:
    try:
        return reader.text()
    except ProtocolError:
        return ""

