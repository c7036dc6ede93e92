"""The signed endpoint record itself: what verifies, and what is refused (and why, in words)."""

from __future__ import annotations

import base64
import json

import pytest
from _followkit import sign_raw, sign_record

from remote import endpoint_record as records
from remote import keys
from remote.errors import RemotectlError


@pytest.fixture(scope="module")
def host():
    pem, public = keys.generate_ed25519("host")
    return pem, keys.bare(public)


@pytest.fixture(scope="module")
def other():
    pem, public = keys.generate_ed25519("other")
    return pem, keys.bare(public)


def test_a_signed_record_verifies_and_says_where(host):
    pem, public = host
    text = sign_record(pem, "4.tcp.eu.ngrok.io", 17623, seq=42, kind="ngrok", session="abc123", at=1_700_000_000)
    record = records.verify(text, public)
    assert (record.host, record.port, record.kind, record.seq, record.session) == \
        ("4.tcp.eu.ngrok.io", 17623, "ngrok", 42, "abc123")
    assert record.fingerprint == keys.fingerprint(public) and record.bound
    assert record.age_seconds(now=1_700_000_090) == 90
    assert len(text.encode()) < records.MAX_BYTES // 4


def test_another_keys_record_is_forged_and_named(host, other):
    _, public = host
    text = sign_record(other[0], "127.0.0.1", 2222, seq=1)
    with pytest.raises(records.RecordError) as caught:
        records.verify(text, public)
    assert caught.value.why == "forged"
    assert f"signed by another key ({keys.fingerprint(other[1])})" in caught.value.message


def test_a_changed_byte_breaks_the_signature(host):
    pem, public = host
    outer = json.loads(sign_record(pem, "127.0.0.1", 2222, seq=7))
    payload = json.loads(base64.urlsafe_b64decode(outer["payload"] + "=="))
    payload["port"] = 2223  # an attacker's port, same fingerprint, same signature
    outer["payload"] = base64.urlsafe_b64encode(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).rstrip(b"=").decode()
    with pytest.raises(records.RecordError, match="does not verify against the pinned key") as caught:
        records.verify(json.dumps(outer), public)
    assert caught.value.why == "forged"


@pytest.mark.parametrize("text, why", [
    ('{"remotectl_endpoint": 1, "payload": "eyJ2IjoxfQ"}', "unsigned"),
    ('{"remotectl_endpoint": 1, "payload": "eyJ2IjoxfQ", "sig": ""}', "unsigned"),
    ("not json at all", "damaged"),
    ('{"remotectl_endpoint": 1, "payload": "@@@", "sig": "AAAA"}', "damaged"),
    ('["a", "list"]', "damaged"),
    ('{"remotectl_endpoint": 9, "payload": "x", "sig": "y"}', "newer"),
    ('{"payload": "x", "sig": "y"}', "damaged"),
])
def test_what_is_not_a_signed_record(host, text, why):
    with pytest.raises(records.RecordError) as caught:
        records.verify(text, host[1])
    assert caught.value.why == why and isinstance(caught.value, RemotectlError)


def test_far_too_large_is_refused_before_parsing(host):
    with pytest.raises(records.RecordError, match="far larger than a record"):
        records.verify(b" " * (records.MAX_BYTES + 1), host[1])


def _fields(public: str, **changes) -> dict:
    fields = {"v": 1, "fp": keys.fingerprint(public), "kind": "ngrok", "seq": 5, "at": 1_700_000_000,
              "session": "s1", "host": "0.tcp.ngrok.io", "port": 1234}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize("changes, named", [
    ({"host": "-oProxyCommand=touch /tmp/x"}, "host"),
    ({"host": "evil.example;rm -rf"}, "host"),
    ({"host": "a" * 300}, "host"),
    ({"port": 0}, "port"),
    ({"port": "22"}, "port"),
    ({"port": True}, "port"),
    ({"kind": "telnet"}, "tunnel kind"),
    ({"seq": 0}, "sequence number"),
    ({"seq": 2 ** 70}, "sequence number"),
    ({"session": "two words"}, "session"),
    ({"at": -1}, "time"),
])
def test_a_correctly_signed_record_with_a_bad_field_is_refused(host, changes, named):
    pem, public = host
    with pytest.raises(records.RecordError) as caught:
        records.verify(sign_raw(pem, _fields(public, **changes)), public)
    assert caught.value.why == "invalid" and named in caught.value.message


def test_a_record_naming_another_fingerprint_than_its_signer_is_refused(host, other):
    pem, public = host
    with pytest.raises(records.RecordError, match="names another key") as caught:
        records.verify(sign_raw(pem, _fields(public, fp=keys.fingerprint(other[1]))), public)
    assert caught.value.why == "forged"


def test_a_non_canonical_payload_is_refused_even_when_signed(host):
    pem, public = host
    fields = _fields(public)
    payload = json.dumps(fields, indent=1).encode()  # same content, other bytes
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(pem, password=None)
    sig = key.sign(records.CONTEXT + payload)
    text = json.dumps({"remotectl_endpoint": 1,
                       "payload": base64.urlsafe_b64encode(payload).rstrip(b"=").decode(),
                       "sig": base64.urlsafe_b64encode(sig).rstrip(b"=").decode()})
    with pytest.raises(records.RecordError, match="canonical"):
        records.verify(text, public)


def test_a_signature_over_the_bare_payload_does_not_count(host):
    """The signed message starts with remotectl's own context: no other use of the key signs the same bytes."""
    pem, public = host
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(pem, password=None)
    payload = json.dumps(_fields(public), sort_keys=True, separators=(",", ":")).encode()
    text = json.dumps({"remotectl_endpoint": 1,
                       "payload": base64.urlsafe_b64encode(payload).rstrip(b"=").decode(),
                       "sig": base64.urlsafe_b64encode(key.sign(payload)).rstrip(b"=").decode()})
    with pytest.raises(records.RecordError) as caught:
        records.verify(text, public)
    assert caught.value.why == "forged"


def test_an_unbound_record_has_no_address_and_a_non_ed25519_pin_cannot_verify(host):
    pem, public = host
    unbound = records.EndpointRecord(fingerprint=keys.fingerprint(public), kind="ngrok", seq=3, at=1,
                                     session="s")
    record = records.verify(records.sign(unbound, pem), public)
    assert not record.bound and record.host is None and record.port is None
    rsa_like = "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"\x00" * 8).decode()
    with pytest.raises(records.RecordError, match="not an Ed25519 key"):
        records.verify(records.sign(unbound, pem), rsa_like)


def test_sign_refuses_what_a_verifier_would_refuse(host):
    pem, public = host
    bad = records.EndpointRecord(fingerprint=keys.fingerprint(public), kind="ngrok", seq=3, at=1,
                                 session="s", host="bad host", port=22)
    with pytest.raises(records.RecordError):
        records.sign(bad, pem)


def test_sequence_numbers_only_grow():
    assert records.next_seq(None, now=1000.0) == 1_000_000
    assert records.next_seq(5, now=1000.0) == 1_000_000  # a lost folder does not restart the count
    assert records.next_seq(2_000_000, now=1000.0) == 2_000_001  # a clock that went back does not either
