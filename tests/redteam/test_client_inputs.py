"""What a user's own machine holds, tried as a fault would leave it: a `~/.ssh/config` that is a
folder or a loop of links, a registry edited by hand, a `--name` with a newline, a card whose
version number is thousands of digits, key and ssh folders that cannot be made. Each is one
`remotectl: error:` line with what to do, the documented exit code, and no file written."""

from __future__ import annotations

import os

import pytest
from _redteam import one_error_line, remotectl, snapshot

from remote import keys
from remote.card import Card

pytestmark = pytest.mark.timeout(120)

CARD = Card(user="root", host="127.0.0.1", port=2222, host_key=keys.bare(keys.generate_ed25519()[1]),
            session="abc").encode()


def _ssh_dir(tmp_path, client_key):
    folder = tmp_path / "dot-ssh"
    folder.mkdir(mode=0o700)
    return folder, ["--ssh-dir", str(folder), "--identity", str(client_key), "--no-check"]


@pytest.mark.parametrize("kind", ["folder", "link-loop"])
def test_a_user_config_ssh_cannot_read_is_refused_before_any_write(kind, tmp_path, client_key):
    folder, args = _ssh_dir(tmp_path, client_key)
    if kind == "folder":
        (folder / "config").mkdir()
    else:
        (folder / "config").symlink_to(folder / "config")
    before = snapshot(folder)
    result = remotectl("connect", CARD, *args)
    assert result.returncode == 1
    assert one_error_line(result).startswith(f"remotectl: error: cannot read {folder / 'config'}: ")
    assert "make it a readable file" in result.stderr
    assert snapshot(folder) == before  # no pin, no managed config, no registry half-written


def test_a_name_with_a_trailing_newline_is_refused_before_any_write(tmp_path, client_key):
    folder, args = _ssh_dir(tmp_path, client_key)
    result = remotectl("connect", CARD, *args, "--name", "colab\n")
    assert result.returncode == 2
    assert one_error_line(result).startswith("remotectl: error: host name 'colab\\n' is not valid")
    assert snapshot(folder) == {}  # known_hosts used to get a line "remotectl.colab" and a broken key line


@pytest.mark.parametrize("token", ["rc" + "9" * 5000 + ".aa.12345678", "rc123456789012.aa.12345678"],
                         ids=["5000-digits", "12-digits"])
def test_a_card_with_an_absurd_version_number_is_a_damaged_card(token, tmp_path, client_key):
    folder, args = _ssh_dir(tmp_path, client_key)
    result = remotectl("connect", token, *args)
    assert result.returncode == 2
    assert one_error_line(result) == ("remotectl: error: the card is damaged: copy the whole "
                                      "`remotectl connect ...` line again")
    assert snapshot(folder) == {}


@pytest.mark.parametrize("text", ['{"version": 1, "hosts": {"colab": {"host": "x"}}}',
                                  '{"version": 1, "hosts": [1]}', '{"version": "1"}', "[]",
                                  '{"version": 1, "hosts": {"c": {"host": "x", "port": "22", "user": "u", '
                                  '"session": "s", "identity": "/k"}}}',
                                  '{"version": 1, "hosts": {"c": {"host": "x\\nHost *", "port": 22, '
                                  '"user": "u", "session": "s", "identity": "/k"}}}'])
def test_a_registry_edited_by_hand_is_explained_not_a_crash(text, tmp_path, client_key):
    folder, args = _ssh_dir(tmp_path, client_key)
    (folder / "remotectl").mkdir(mode=0o700)
    (folder / "remotectl" / "hosts.json").write_text(text)
    before = snapshot(folder)
    for command in (["connect", CARD, *args], ["hosts", "--ssh-dir", str(folder)],
                    ["disconnect", "c", "--ssh-dir", str(folder)]):
        result = remotectl(*command)
        assert result.returncode == 1, (command, result.stderr)
        assert one_error_line(result).startswith(f"remotectl: error: cannot read {folder}/remotectl/hosts.json")
        assert "move it aside" in result.stderr
    after = snapshot(folder)
    after.pop("remotectl/.lock", None)  # the (empty) lock file, taken before reading
    assert after == before


def test_keys_and_ssh_folders_that_cannot_be_made_are_one_line(tmp_path, client_key):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("mine")
    for command in (["keygen", "--path", str(in_the_way / "key")],
                    ["keygen", "--ssh-dir", str(in_the_way / "ssh")],
                    ["connect", CARD, "--ssh-dir", str(in_the_way / "ssh"), "--identity", str(client_key),
                     "--no-check"]):
        result = remotectl(*command)
        assert result.returncode == 1, (command, result.stderr)
        line = one_error_line(result)
        assert str(in_the_way) in line, line
        assert "a folder you can write" in result.stderr
    assert in_the_way.read_text() == "mine" and os.listdir(tmp_path) == ["a-file"]
