import os
import stat
import subprocess

import pytest

from remote import keys
from remote.errors import BadInput


def test_keypair_files_and_fingerprint_match_ssh_keygen(tmp_path):
    path = tmp_path / "id"
    public = keys.write_keypair(path, comment="me@laptop")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == public.split()[:2]
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path) + ".pub"],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.split()[1] == keys.fingerprint(public)


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "id"
    first = keys.write_keypair(path)
    with pytest.raises(BadInput, match="already exists"):
        keys.write_keypair(path)
    assert keys.public_from_private(path) == keys.bare(first)
    assert keys.write_keypair(path, force=True) != first


def test_authorized_keys_parsing_rejects_garbage():
    one, two = keys.generate_ed25519("a")[1], keys.generate_ed25519("b")[1]
    assert keys.authorized_keys(f"# mine\n{one}\n\n{two}\n") == [one, two]
    with pytest.raises(BadInput):
        keys.authorized_keys("ssh-ed25519 not-base64!!")
    ktype, blob, _ = keys.parse_public_key(one)
    with pytest.raises(BadInput, match="disagree"):
        keys.parse_public_key(f"ssh-rsa {blob}")
