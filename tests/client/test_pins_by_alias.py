"""Pins are keyed by the host alias the laptop chose, never by a card's field: a crafted card
cannot reach another host's pin; `check` trusts known_hosts, not the registry; older pins
(by session) migrate on the next connect; `Colab` and `colab` are one host. Real sshd,
real OpenSSH client, the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import re

import pytest
from _cli import remotectl, ssh, ssh_g
from helpers.sshd import SshServer

from remote import keys
from remote.card import Card
from remote.client import known_hosts, sshconfig
from remote.client.known_hosts import PinStore
from remote.client.layout import layout
from remote.client.registry import HostRecord, Registry
from remote.files import atomic_write

pytestmark = pytest.mark.timeout(180)


def connect(ssh_dir, client_key, card: Card, *extra):
    return remotectl("connect", card.encode(), "--ssh-dir", str(ssh_dir), "--identity", str(client_key), *extra)


def block(config_text: str, name: str) -> str:
    match = re.search(rf"^Host {name}\n(?:    .*\n)+", config_text, re.M)
    assert match, config_text
    return match.group(0)


@pytest.mark.slow
def test_a_card_reusing_a_session_cannot_touch_another_hosts_pin(sshd, ssh_dir, client_key, tmp_path_factory,
                                                               request):
    assert connect(ssh_dir, client_key, sshd.card(session="s1")).returncode == 0
    managed = ssh_dir / "remotectl" / "config"
    pins = ssh_dir / "remotectl" / "known_hosts"
    colab_block = block(managed.read_text(), "colab")
    colab_pin = [line for line in pins.read_text().splitlines() if line.startswith("remotectl.colab ")]

    # Someone else's machine, whose card claims the same session id, pasted as another name.
    other = SshServer(tmp_path_factory.mktemp("other-sshd"))
    request.addfinalizer(other.stop)
    other.authorize(client_key.with_name(client_key.name + ".pub").read_text())
    other.start()
    crafted = other.card(session="s1")
    assert connect(ssh_dir, client_key, crafted, "--name", "other").returncode == 0

    assert block(managed.read_text(), "colab") == colab_block
    assert [line for line in pins.read_text().splitlines() if line.startswith("remotectl.colab ")] == colab_pin
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0
    assert ssh(ssh_dir / "config", "other", "true").returncode == 0
    assert PinStore(pins).lookup("colab") == sshd.host_public_key
    assert PinStore(pins).lookup("other") == other.host_public_key


@pytest.mark.slow
def test_check_verifies_against_the_pin_in_known_hosts_not_the_registry(sshd, ssh_dir, client_key):
    assert connect(ssh_dir, client_key, sshd.card(), "--no-check").returncode == 0
    registry = ssh_dir / "remotectl" / "hosts.json"
    data = json.loads(registry.read_text())
    data["hosts"]["colab"]["host_key"] = keys.bare(keys.generate_ed25519()[1])  # a stale registry copy
    registry.write_text(json.dumps(data))
    assert remotectl("check", "--quick", "--ssh-dir", str(ssh_dir)).returncode == 0  # the pin decides

    PinStore(ssh_dir / "remotectl" / "known_hosts").pin("colab", keys.bare(keys.generate_ed25519()[1]))
    data["hosts"]["colab"]["host_key"] = sshd.host_public_key  # registry "right", pin wrong
    registry.write_text(json.dumps(data))
    refused = remotectl("check", "--quick", "--ssh-dir", str(ssh_dir))
    assert refused.returncode == 1 and "host key mismatch" in refused.stderr
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 255  # and ssh agrees

    (ssh_dir / "remotectl" / "known_hosts").unlink()  # no pin at all: refused, never trusted anew
    gone = remotectl("check", "--quick", "--ssh-dir", str(ssh_dir))
    assert gone.returncode == 1 and "no host key is pinned for colab" in gone.stderr


@pytest.mark.slow
def test_older_session_keyed_pins_migrate_on_the_next_connect(sshd, ssh_dir, client_key):
    """Files as remotectl wrote them before pins were keyed by alias: `remotectl-<session>`."""
    lay = layout(str(ssh_dir))
    lay.ensure_managed_dir()
    record = HostRecord(name="colab", host="127.0.0.1", port=sshd.port, user="root", session="0ld5e55",
                        identity=str(client_key), host_key=sshd.host_public_key)
    legacy = known_hosts.legacy_alias("0ld5e55")
    entry = record.entry(lay)
    old_entry = sshconfig.HostEntry(**{**entry.__dict__, "host_key_alias": legacy})
    atomic_write(lay.managed_config, sshconfig.render_managed([old_entry]))
    atomic_write(lay.known_hosts, f"{legacy} {sshd.host_public_key}\n")
    atomic_write(lay.registry, Registry({"colab": record}).to_json())
    sshconfig.ensure_include(lay.user_config, lay.managed_config)
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0  # the old layout works

    assert remotectl("check", "--quick", "--ssh-dir", str(ssh_dir)).returncode == 0  # before migrating too
    second = Card(user="root", host="127.0.0.1", port=sshd.port, host_key=sshd.host_public_key, session="new")
    assert connect(ssh_dir, client_key, second, "--name", "gpu2", "--no-check").returncode == 0

    assert ssh_g(ssh_dir / "config", "colab")["hostkeyalias"] == ["remotectl.colab"]
    pins = lay.known_hosts.read_text()
    assert legacy not in pins and f"remotectl.colab {sshd.host_public_key}" in pins
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0
    assert remotectl("check", "colab", "--quick", "--ssh-dir", str(ssh_dir)).returncode == 0


def test_host_names_are_one_name_whatever_the_case(sshd, ssh_dir, client_key):
    assert connect(ssh_dir, client_key, sshd.card(), "--name", "Colab", "--no-check").returncode == 0
    again = connect(ssh_dir, client_key, sshd.card(session="later"), "--name", "colab", "--no-check")
    assert again.returncode == 0, again.stderr
    text = (ssh_dir / "remotectl" / "config").read_text()
    assert len(re.findall(r"^Host ", text, re.M)) == 1 and "Host colab" in text
    assert len((ssh_dir / "remotectl" / "known_hosts").read_text().splitlines()) == 1
    # the latest spelling is the entry (OpenSSH matches Host lines by exact case); one pin for both
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0
    listed = json.loads(remotectl("hosts", "--json", "--ssh-dir", str(ssh_dir)).stdout)["hosts"]
    assert [h["name"] for h in listed] == ["colab"]
    assert remotectl("check", "CoLaB", "--quick", "--ssh-dir", str(ssh_dir)).returncode == 0
    assert remotectl("disconnect", "COLAB", "--ssh-dir", str(ssh_dir)).returncode == 0
    assert not (ssh_dir / "remotectl" / "known_hosts").exists()


def test_pin_store_pins_looks_up_and_replaces_in_place(tmp_path):
    path = tmp_path / "known_hosts"
    store = PinStore(path)
    first, second = (keys.bare(keys.generate_ed25519()[1]) for _ in range(2))
    assert store.pin("colab", first) and store.pin("gpu", second)
    assert not store.pin("colab", first)  # same pin: file untouched
    before = path.read_text().splitlines()
    assert store.pin("Colab", second)  # replaced where it stood, other lines byte for byte
    after = path.read_text().splitlines()
    assert after[0] == f"remotectl.colab {second}" and after[1:] == before[1:]
    assert store.lookup("COLAB") == second and store.lookup("nope") is None
    assert store.aliases() == ["colab", "gpu"]
    assert store.unpin("colab") and store.unpin("gpu") and not os.path.exists(path)
