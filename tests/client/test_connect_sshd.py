"""Against a real sshd on 127.0.0.1: login with no prompt, pinning, host key change, concurrency,
keygen, plain addresses, SFTP pull/push, and bad input that must leave every file alone."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from _cli import REPO, remotectl, snapshot, ssh, ssh_g

from remote import keys
from remote.card import Card

pytestmark = pytest.mark.timeout(180)


def connect(ssh_dir, identity, card_or_words, *extra, console=False):
    words = [card_or_words] if isinstance(card_or_words, str) else list(card_or_words)
    return remotectl("connect", *words, "--ssh-dir", str(ssh_dir), "--identity", str(identity),
                     *extra, console=console)


def test_connect_checks_and_ssh_logs_in_without_prompt(sshd, ssh_dir, client_key):
    result = connect(ssh_dir, client_key, sshd.card().encode(), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert report["check"]["ok"] is True
    assert report["check"]["host_key"] == sshd.host_public_key
    assert report["check"]["python"] and report["check"]["hostname"]
    assert report["code"] == ["code", "--remote", "ssh-remote+colab", "/content"]
    assert "ok in" in result.stderr

    login = ssh(ssh_dir / "config", "colab", "echo logged-in-as-$(id -un)")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "logged-in-as-root"

    listed = json.loads(remotectl("hosts", "--json", "--ssh-dir", str(ssh_dir)).stdout)
    (host,) = listed["hosts"]
    assert host["name"] == "colab" and host["last_check"]["ok"] is True
    assert host["fingerprint"] == keys.fingerprint(sshd.host_public_key)
    table = remotectl("hosts", "--ssh-dir", str(ssh_dir))
    assert f"root@127.0.0.1:{sshd.port}" in table.stdout and "ok " in table.stdout


@pytest.mark.slow
def test_changed_host_key_is_refused_by_ssh_and_check(sshd, ssh_dir, client_key):
    assert connect(ssh_dir, client_key, sshd.card().encode(), "--no-check").returncode == 0
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0
    pinned = (ssh_dir / "remotectl" / "known_hosts").read_bytes()

    sshd.restart(new_host_key=True)  # same address, another machine (or a man in the middle)
    refused = ssh(ssh_dir / "config", "colab", "true")
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr

    check = remotectl("check", "--ssh-dir", str(ssh_dir), console=True)
    assert check.returncode == 1
    assert check.stderr.startswith("remotectl: error: host key mismatch")
    assert "not the machine the card named" in check.stderr and "Traceback" not in check.stderr
    assert (ssh_dir / "remotectl" / "known_hosts").read_bytes() == pinned  # never re-trusted

    # The new runtime's card (new session) replaces the pin; ssh works again.
    fresh = connect(ssh_dir, client_key, sshd.card(session="second").encode())
    assert fresh.returncode == 0, fresh.stderr
    assert "new host key" in fresh.stdout
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0
    # replaced in place: one line, the host alias's, holding the new key
    assert (ssh_dir / "remotectl" / "known_hosts").read_text() == f"remotectl.colab {sshd.host_public_key}\n"


@pytest.mark.slow
def test_eight_concurrent_connects_all_land(sshd, ssh_dir, client_key):
    procs = [subprocess.Popen(
        [sys.executable, "-m", "remote.cli", "connect", sshd.card(session=f"s{i}").encode(),
         "--name", f"gpu{i}", "--no-check", "--ssh-dir", str(ssh_dir), "--identity", str(client_key)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    text = (ssh_dir / "remotectl" / "config").read_text()
    assert sorted(line.split()[1] for line in text.splitlines() if line.startswith("Host ")) == \
        [f"gpu{i}" for i in range(8)]
    assert len((ssh_dir / "remotectl" / "known_hosts").read_text().splitlines()) == 8
    assert (ssh_dir / "config").read_text().count("# >>> remotectl >>>") == 1
    for i in range(8):
        assert ssh_g(ssh_dir / "config", f"gpu{i}")["hostkeyalias"] == [f"remotectl.gpu{i}"]
    assert ssh(ssh_dir / "config", "gpu5", "true").returncode == 0


@pytest.mark.slow
def test_keygen_key_is_valid_openssh_and_logs_in(sshd, ssh_dir):
    made = remotectl("keygen", "--ssh-dir", str(ssh_dir), console=True)
    assert made.returncode == 0, made.stderr
    private = ssh_dir / "remotectl_ed25519"
    public_line = made.stdout.strip().splitlines()[-1]
    assert "REMOTECTL_AUTHORIZED_KEY" in made.stdout
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True,
                             check=True)
    assert derived.stdout.split()[:2] == public_line.split()[:2]
    assert oct(private.stat().st_mode & 0o777) == "0o600"

    again = remotectl("keygen", "--ssh-dir", str(ssh_dir), console=True)  # "what was my key again?"
    assert again.returncode == 0, again.stderr
    assert "already exists" in again.stdout and again.stdout.strip().splitlines()[-1] == public_line
    assert private.with_name("remotectl_ed25519.pub").read_text().strip() == public_line
    private.with_name("remotectl_ed25519.pub").unlink()  # a lost .pub is derived again
    third = remotectl("keygen", "--ssh-dir", str(ssh_dir), console=True)
    assert third.returncode == 0 and third.stdout.strip().splitlines()[-1].split()[:2] == public_line.split()[:2]

    sshd.authorize(public_line)  # connect's default identity is the keygen key
    result = remotectl("connect", sshd.card().encode(), "--ssh-dir", str(ssh_dir))
    assert result.returncode == 0, result.stderr
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0


@pytest.mark.slow
def test_plain_address_with_host_key_pins_it(sshd, ssh_dir, client_key):
    words = ["ssh", "root@127.0.0.1", "-p", str(sshd.port), "--host-key", sshd.host_public_key]
    result = connect(ssh_dir, client_key, words)
    assert result.returncode == 0, result.stderr
    assert "accept-new" not in result.stderr
    got = ssh_g(ssh_dir / "config", "colab")
    assert got["stricthostkeychecking"] == ["true"] and got["port"] == [str(sshd.port)]
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0
    files = snapshot(ssh_dir / "remotectl")
    again = connect(ssh_dir, client_key, words, "--no-check")
    assert again.returncode == 0 and "Unchanged" in again.stdout
    assert snapshot(ssh_dir / "remotectl") == files


def test_plain_address_without_key_trusts_once_then_pins(sshd, ssh_dir, client_key):
    result = connect(ssh_dir, client_key, f"tcp://127.0.0.1:{sshd.port}")
    assert result.returncode == 0, result.stderr
    assert "accept-new" in result.stderr and "trust" in result.stderr
    assert keys.fingerprint(sshd.host_public_key) in result.stderr  # shown for the user to compare
    got = ssh_g(ssh_dir / "config", "colab")
    assert got["stricthostkeychecking"] == ["true"]  # learned on first use, pinned from then on
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 0

    sshd.restart(new_host_key=True)
    check = remotectl("check", "--quick", "--ssh-dir", str(ssh_dir))
    assert check.returncode == 1 and "host key mismatch" in check.stderr
    assert ssh(ssh_dir / "config", "colab", "true").returncode == 255


def test_unreachable_host_keeps_the_entry_and_says_so(ssh_dir, client_key):
    card = Card(user="root", host="127.0.0.1", port=1, host_key=keys.bare(keys.generate_ed25519()[1]),
                session="gone")
    result = connect(ssh_dir, client_key, card.encode(), "--timeout", "5", console=True)
    assert result.returncode == 1
    assert result.stderr.startswith("remotectl: error: cannot reach 127.0.0.1:1")
    assert "entry stays written" in result.stderr
    assert ssh_g(ssh_dir / "config", "colab")["port"] == ["1"]
    listed = json.loads(remotectl("hosts", "--json", "--ssh-dir", str(ssh_dir)).stdout)
    assert listed["hosts"][0]["last_check"]["ok"] is False


def _raw_card(fields: dict, version: int = 1) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    head = f"rc{version}.{payload}"
    return f"{head}.{hashlib.sha256(head.encode()).hexdigest()[:8]}"


@pytest.mark.parametrize("case", ["damaged", "newer-version", "port-card", "port-plain",
                                  "identity-missing", "identity-is-public", "bad-forward"])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, ssh_dir, client_key, tmp_path):
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_bytes(b"Host *\n  User me\n")
    good = Card(user="root", host="127.0.0.1", port=2222, host_key=keys.bare(keys.generate_ed25519()[1]),
                session="abc").encode()
    identity = str(client_key)
    words = [good]
    extra = []
    if case == "damaged":
        words = [good[:-12] + ("A" if good[-12] != "A" else "B") + good[-11:]]
    elif case == "newer-version":
        words = [_raw_card({"v": 2, "u": "root"}, version=2)]
    elif case == "port-card":
        words = [_raw_card({"v": 1, "u": "root", "h": "127.0.0.1", "p": 70000, "s": "abc",
                            "k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA", "t": "direct"})]
    elif case == "port-plain":
        words = ["root@127.0.0.1", "-p", "70000"]
    elif case == "identity-missing":
        identity = str(tmp_path / "no-such-key")
    elif case == "identity-is-public":
        identity = str(client_key) + ".pub"
    elif case == "bad-forward":
        extra = ["--forward", "tensorboard"]
    before = snapshot(ssh_dir)
    result = remotectl("connect", *words, *extra, "--ssh-dir", str(ssh_dir), "--identity", identity,
                       console=True)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("remotectl: error: ")
    assert "Traceback" not in result.stderr and len(lines) <= 3
    assert result.stdout == ""
    assert snapshot(ssh_dir) == before


def test_pull_and_push_copy_folders_and_skip_what_is_there(sshd, ssh_dir, client_key, tmp_path):
    assert connect(ssh_dir, client_key, sshd.card().encode(), "--no-check").returncode == 0
    remote_dir = tmp_path / "remote-side" / "saved"
    (remote_dir / "models" / "run1").mkdir(parents=True)
    big = os.urandom(3_000_000)
    (remote_dir / "models" / "run1" / "model_best.pth").write_bytes(big)
    (remote_dir / "models" / "run1" / "config.json").write_text('{"name": "x"}')

    home = tmp_path / "home"
    home.mkdir()
    result = remotectl("pull", str(remote_dir), str(home), "--json", "--ssh-dir", str(ssh_dir))
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["files"] == 2 and stats["bytes"] == len(big) + 13 and stats["refused"] == []
    pulled = home / "saved" / "models" / "run1" / "model_best.pth"
    assert pulled.read_bytes() == big

    again = json.loads(remotectl("pull", "colab", str(remote_dir), str(home), "--json",
                                 "--ssh-dir", str(ssh_dir)).stdout)
    assert again["skipped"] == 2 and again["bytes"] == 0 and again["files"] == 0

    upload = tmp_path / "local-data"
    (upload / "sub").mkdir(parents=True)
    (upload / "sub" / "a.bin").write_bytes(os.urandom(500_000))
    target = tmp_path / "remote-side" / "uploads"
    pushed = remotectl("push", str(upload), str(target), "--ssh-dir", str(ssh_dir))
    assert pushed.returncode == 0, pushed.stderr
    assert (target / "local-data" / "sub" / "a.bin").read_bytes() == (upload / "sub" / "a.bin").read_bytes()

    missing = remotectl("pull", str(tmp_path / "nope"), "--ssh-dir", str(ssh_dir))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_relative_paths_start_in_the_cards_folder(sshd, ssh_dir, client_key, tmp_path):
    project = tmp_path / "remote-side" / "content" / "proj"
    (project / "saved" / "models").mkdir(parents=True)
    (project / "saved" / "models" / "ckpt.pth").write_bytes(b"weights")
    card = sshd.card(path=str(project)).encode()
    connected = connect(ssh_dir, client_key, card, "--no-check")
    assert connected.returncode == 0, connected.stderr
    assert f"code --remote ssh-remote+colab {project}" in connected.stderr + connected.stdout
    home = tmp_path / "home"
    home.mkdir()
    pulled = remotectl("pull", "saved/models", str(home), "--ssh-dir", str(ssh_dir))
    assert pulled.returncode == 0, pulled.stderr
    assert (home / "models" / "ckpt.pth").read_bytes() == b"weights"
    (home / "notes.txt").write_text("hi")
    pushed = remotectl("push", str(home / "notes.txt"), "--ssh-dir", str(ssh_dir))
    assert pushed.returncode == 0, pushed.stderr
    assert (project / "notes.txt").read_text() == "hi"  # default REMOTE: the card's folder


def test_open_without_code_explains_how_to_get_it(sshd, ssh_dir, client_key):
    assert connect(ssh_dir, client_key, sshd.card().encode(), "--no-check", "--path", "/work dir").returncode == 0
    env = {"PATH": os.path.dirname(sys.executable)}  # no `code` there
    result = remotectl("open", "--ssh-dir", str(ssh_dir), env=env)
    assert result.returncode == 1
    assert "`code` command is not on PATH" in result.stderr
    assert "code --remote ssh-remote+colab '/work dir'" in result.stderr


def test_disconnect_unknown_name_and_last_one_out(sshd, ssh_dir, client_key):
    assert connect(ssh_dir, client_key, sshd.card().encode(), "--no-check", "--name", "a").returncode == 0
    assert connect(ssh_dir, client_key, sshd.card(session="b").encode(), "--no-check", "--name", "b").returncode == 0
    unknown = remotectl("disconnect", "nope", "--ssh-dir", str(ssh_dir))
    assert unknown.returncode == 2 and "no host named 'nope'" in unknown.stderr
    ambiguous = remotectl("disconnect", "--ssh-dir", str(ssh_dir))
    assert ambiguous.returncode == 2 and "several hosts" in ambiguous.stderr
    assert remotectl("disconnect", "a", "--ssh-dir", str(ssh_dir)).returncode == 0
    assert "# >>> remotectl >>>" in (ssh_dir / "config").read_text()  # b still needs it
    assert remotectl("disconnect", "b", "--ssh-dir", str(ssh_dir)).returncode == 0
    assert not (ssh_dir / "config").exists()  # we created it, so it goes


def test_next_hint_is_a_command_that_works_with_a_non_default_ssh_dir(sshd, ssh_dir, client_key):
    import shlex

    result = connect(ssh_dir, client_key, sshd.card().encode())
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("Next: "))
    command = shlex.split(line[len("Next: "):].split("    or    ")[0])
    assert command[:2] == ["ssh", "-F"]  # plain `ssh colab` would not read this folder
    login = subprocess.run([command[0], "-o", "BatchMode=yes", *command[1:], "echo", "hi"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert login.returncode == 0 and login.stdout.strip() == "hi", login.stderr


def test_commands_are_registered_when_the_package_is_imported(ssh_dir):
    from click.testing import CliRunner

    from remote.cli import cli

    result = CliRunner().invoke(cli, ["hosts", "--ssh-dir", str(ssh_dir)])
    assert result.exit_code == 0 and "No hosts yet" in result.output


def test_connect_help_names_the_real_default_of_path():
    shown = " ".join(remotectl("connect", "--help").stdout.split())
    assert "[default: the card's folder (where `up` ran), else /content]" in shown
