"""Saying where this server is: the signed endpoint record, for laptops that follow it.

With `up --persist DIR`, each time the tunnel opens (the first start, an agent brought back
after it died) the owner signs a record with the host key (remote/endpoint_record.py) and
writes it to `DIR/endpoint.json`, so a laptop whose folder mirrors DIR (Google Drive for
desktop, Dropbox, a shared disk) finds the new address with `remotectl proxy`. With ngrok,
the endpoint's metadata carries a record too, signed *before* the endpoint exists (ngrok
takes metadata only when it creates one), so it is unbound unless the address is reserved
(`up --url`): the ngrok API then says which address carries it.

One publication = one sequence number: `begin` picks it (and gives the metadata), `publish`
writes the bound record once a login through the new address has been proven.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from remote import endpoint_record as records
from remote import keys
from remote.errors import RemotectlError
from remote.files import atomic_write


class Publisher:
    """The records of one persist folder, signed with the state dir's host key."""

    def __init__(self, persist_dir: Path, host_key_path: Path) -> None:
        self.folder = Path(persist_dir)
        self.host_key_path = Path(host_key_path)
        self.path = self.folder / records.FILE_NAME
        self.last: Optional[records.EndpointRecord] = None
        self._pending: Optional[records.EndpointRecord] = None

    def _pem(self) -> bytes:
        return self.host_key_path.read_bytes()

    def _public(self) -> str:
        return keys.public_from_private(self.host_key_path)

    def previous_seq(self) -> Optional[int]:
        """The sequence number of the record already in the folder, if this host signed it."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        try:
            return records.verify(data, self._public()).seq
        except RemotectlError:  # another identity's, or damaged: ours starts above it by the clock
            return None

    def begin(self, kind: str, session: str, fixed_host: Optional[str] = None,
              fixed_port: Optional[int] = None) -> str:
        """Pick the next sequence number; return the metadata an ngrok endpoint should carry."""
        seq = records.next_seq(max(filter(None, (self.previous_seq(), self.last.seq if self.last else None)),
                                   default=None))
        public = self._public()
        self._pending = records.EndpointRecord(
            fingerprint=keys.fingerprint(public), kind=kind, seq=seq, at=int(time.time()), session=session,
            host=fixed_host, port=fixed_port if fixed_host else None)
        return records.sign(self._pending, self._pem()).strip()

    def publish(self, host: str, port: int) -> records.EndpointRecord:
        """Write the bound record for the address just proven (RemotectlError if the folder refuses)."""
        if self._pending is None:
            raise RuntimeError("publish() without begin()")
        pending = self._pending
        record = records.EndpointRecord(fingerprint=pending.fingerprint, kind=pending.kind, seq=pending.seq,
                                        at=int(time.time()), session=pending.session, host=host, port=port)
        text = records.sign(record, self._pem())
        try:
            atomic_write(self.path, text, mode=0o600)
        except OSError as exc:
            raise RemotectlError(f"could not write the endpoint record {self.path}: {exc.strerror or exc}",
                                 "Laptops that follow this folder will not find the new address; check "
                                 "that the persist folder (Drive) is mounted and writable.") from None
        self.last, self._pending = record, None
        return record
