"""`connect --follow DIR` and the ProxyCommand it writes, against a real sshd and the real ssh.

The runtime here is helpers/sshd.py's sshd with a persist folder whose records its own host
key signs (tests/follow/test_follow_up.py runs remotectl's `up` itself). Every refusal must
be one `remotectl: error:` line naming the reason, and leave the laptop's files as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
from _followkit import clean_env, remotectl, remotectl_lines, sign_record, snapshot, ssh

from remote import endpoint_record as records
from remote import keys

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def followed(runtime, laptop):
    done = laptop.connect(runtime.sshd.card(session="rt1").encode(), str(runtime.persist), "colab", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_connect_writes_the_proxy_entry_and_ssh_goes_where_the_record_says(runtime, laptop, followed):
    config = (laptop.ssh_dir / "remotectl" / "config").read_text()
    assert followed["follow"]["source"] == str(runtime.persist)
    assert f"ProxyCommand {followed['proxy_command']}" in config
    assert followed["proxy_command"].startswith("'/") and followed["proxy_command"].endswith(" proxy --ssh-dir "
                                                                                          f"{laptop.ssh_dir} --fdpass colab")
    assert "ProxyUseFdpass yes" in config and "HostKeyAlias remotectl.colab" in config
    assert followed["check"]["ok"], followed  # paramiko, at the address the record named
    assert followed["followed"]["host"] == "127.0.0.1" and followed["followed"]["port"] == runtime.sshd.port
    out = ssh(laptop.ssh_dir, "colab", "echo followed")
    assert out.returncode == 0 and out.stdout.strip() == "followed", out.stderr


@pytest.mark.slow
def test_the_runtime_moves_and_ssh_follows_with_nothing_run_on_the_laptop(runtime, laptop, followed):
    old_port = runtime.sshd.port
    runtime.sshd.stop()
    runtime.sshd.start()  # a new runtime: same key (persist), new address
    assert runtime.sshd.port != old_port
    assert ssh(laptop.ssh_dir, "colab", "true").returncode != 0  # the old record still names the old port
    runtime.publish(seq=101, session="rt2")
    out = ssh(laptop.ssh_dir, "colab", "echo moved")
    assert out.returncode == 0 and out.stdout.strip() == "moved", out.stderr
    check = remotectl("check", "colab", "--quick", "--json", "--ssh-dir", str(laptop.ssh_dir))
    assert check.returncode == 0, check.stderr
    result = json.loads(check.stdout)
    assert result["check"]["ok"] and result["followed"]["port"] == runtime.sshd.port
    assert result["followed"]["seq"] == 101 and result["followed"]["record_age_s"] < 60
    listed = json.loads(remotectl("hosts", "--json", "--ssh-dir", str(laptop.ssh_dir)).stdout)["hosts"][0]
    assert listed["followed"]["port"] == runtime.sshd.port and listed["followed"]["session"] == "rt2"
    human = remotectl("hosts", "--ssh-dir", str(laptop.ssh_dir)).stdout
    assert f"127.0.0.1:{runtime.sshd.port}" in human and "followed" in human and "old" in human


def _refused(laptop, why: str):
    before = snapshot(laptop.ssh_dir)
    out = ssh(laptop.ssh_dir, "colab", "echo should-not-run")
    assert out.returncode == 255 and "should-not-run" not in out.stdout
    lines = remotectl_lines(out.stderr)
    assert len(lines) == 1 and lines[0].startswith("remotectl: error: colab: "), out.stderr
    assert why in lines[0], lines[0]
    assert snapshot(laptop.ssh_dir) == before  # nothing on the laptop changed
    return lines[0]


def test_a_record_signed_by_another_key_is_refused(runtime, laptop, followed):
    other_pem, other_public = keys.generate_ed25519("attacker")
    (runtime.persist / records.FILE_NAME).write_text(
        sign_record(other_pem, "127.0.0.1", runtime.sshd.port + 1, seq=10 ** 15))
    line = _refused(laptop, "signed by another key")
    assert keys.fingerprint(other_public) in line and str(runtime.persist) in line


def test_a_replayed_older_record_is_refused(runtime, laptop, followed):
    assert ssh(laptop.ssh_dir, "colab", "true").returncode == 0  # seq 100 seen
    old = sign_record(runtime.pem, "127.0.0.1", runtime.sshd.port, seq=99)  # genuine, but older
    (runtime.persist / records.FILE_NAME).write_text(old)
    _refused(laptop, "replayed older record (sequence 99, but 100 was already seen)")


def test_a_missing_folder_is_refused(runtime, laptop, followed):
    shutil.rmtree(runtime.persist)
    _refused(laptop, f"the followed folder {runtime.persist} is missing")


def test_a_folder_without_a_record_is_refused(runtime, laptop, followed):
    (runtime.persist / records.FILE_NAME).unlink()
    _refused(laptop, f"no endpoint record in {runtime.persist} yet")


def test_an_unreadable_record_is_refused(runtime, laptop, followed):
    path = runtime.persist / records.FILE_NAME
    path.unlink()
    path.mkdir()  # not a file (root reads through any mode, so a mode would prove nothing)
    _refused(laptop, f"cannot read {path}: not a regular file")
    path.rmdir()
    os.mkfifo(path)  # a pipe nobody writes: reading it must not hang ssh
    _refused(laptop, f"cannot read {path}: not a regular file")


def test_an_unsigned_or_damaged_record_is_refused(runtime, laptop, followed):
    path = runtime.persist / records.FILE_NAME
    outer = json.loads(path.read_text())
    del outer["sig"]
    path.write_text(json.dumps(outer))
    _refused(laptop, "carries no signature")
    path.write_text("\x1b]52;c;aGk=\x07 not a record")  # terminal escapes in it never reach the screen
    line = _refused(laptop, "it is not JSON")
    assert "\x1b" not in line


def test_the_card_must_carry_an_ed25519_key_and_the_folder_must_exist(runtime, laptop, tmp_path):
    before = snapshot(laptop.ssh_dir)
    card = runtime.sshd.card().encode()
    missing = laptop.connect(card, str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "nothing was written" in missing.stderr
    other_pem, _ = keys.generate_ed25519()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / records.FILE_NAME).write_text(sign_record(other_pem, "127.0.0.1", 22, seq=5))
    wrong = laptop.connect(card, str(foreign))
    assert wrong.returncode == 1 and "is not this host's" in wrong.stderr and "Traceback" not in wrong.stderr
    plain = remotectl("connect", f"127.0.0.1:{runtime.sshd.port}", "--follow", str(runtime.persist),
                      "--ssh-dir", str(laptop.ssh_dir), "--identity", str(laptop.identity))
    assert plain.returncode == 2 and "--follow needs the host's key" in plain.stderr
    assert snapshot(laptop.ssh_dir) == before


@pytest.mark.slow
def test_pull_and_push_go_through_the_followed_entry(runtime, laptop, followed, tmp_path):
    local = tmp_path / "upload"
    local.mkdir()
    (local / "data.bin").write_bytes(os.urandom(200_000))
    remote_dir = tmp_path / "remote-side"
    remote_dir.mkdir()
    pushed = remotectl("push", "colab", str(local), str(remote_dir), "--quiet", "--ssh-dir", str(laptop.ssh_dir))
    assert pushed.returncode == 0, pushed.stderr
    assert (remote_dir / "upload" / "data.bin").read_bytes() == (local / "data.bin").read_bytes()
    runtime.sshd.stop()
    runtime.sshd.start()
    runtime.publish(seq=101)  # moved meanwhile: the copy follows, as ssh does
    back = tmp_path / "back"
    pulled = remotectl("pull", "colab", str(remote_dir / "upload"), str(back), "--quiet", "--verify",
                       "--ssh-dir", str(laptop.ssh_dir))
    assert pulled.returncode == 0, pulled.stderr
    assert (back / "upload" / "data.bin").read_bytes() == (local / "data.bin").read_bytes()
    # Without OpenSSH (REMOTECTL_SSH=paramiko) the copy resolves the record itself, with the same checks.
    again = tmp_path / "again"
    pulled = remotectl("pull", "colab", str(remote_dir / "upload"), str(again), "--quiet", "--ssh-dir",
                       str(laptop.ssh_dir), env=clean_env(REMOTECTL_SSH="paramiko"))
    assert pulled.returncode == 0, pulled.stderr
    assert (again / "upload" / "data.bin").read_bytes() == (local / "data.bin").read_bytes()


def test_the_bridge_form_works_without_fd_passing(runtime, laptop, followed):
    """What Windows' ssh runs (no ProxyUseFdpass): the proxy copies between ssh and the socket."""
    command = followed["proxy_command"].replace(" --fdpass", "")
    out = ssh(laptop.ssh_dir, "colab", "head -c 300000 /dev/zero | wc -c", "-o", "ProxyUseFdpass=no",
              "-o", f"ProxyCommand={command}")
    assert out.returncode == 0 and out.stdout.strip() == "300000", out.stderr


def test_an_address_that_does_not_answer_is_one_line_with_the_records_age(runtime, laptop, followed):
    runtime.sshd.stop()
    out = ssh(laptop.ssh_dir, "colab", "true")
    lines = remotectl_lines(out.stderr)
    assert out.returncode == 255 and len(lines) == 1, out.stderr
    assert f"cannot reach 127.0.0.1:{runtime.sshd.port}" in lines[0] and "is the runtime still up" in lines[0]


def test_followed_state_is_private_and_goes_with_disconnect(runtime, laptop, followed):
    assert ssh(laptop.ssh_dir, "colab", "true").returncode == 0
    state = laptop.ssh_dir / "remotectl" / "followed.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["hosts"]["colab"]["seq"] == 100
    done = remotectl("disconnect", "colab", "--ssh-dir", str(laptop.ssh_dir))
    assert done.returncode == 0, done.stderr
    assert not state.exists()


def test_the_proxy_by_hand_refuses_a_host_that_follows_nothing(runtime, laptop):
    plain = remotectl("connect", runtime.sshd.card().encode(), "--name", "plain", "--no-check",
                      "--ssh-dir", str(laptop.ssh_dir), "--identity", str(laptop.identity))
    assert plain.returncode == 0, plain.stderr
    out = subprocess.run([*__import__("_followkit").CLI, "proxy", "--ssh-dir", str(laptop.ssh_dir), "plain"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "plain does not follow a record" in out.stderr


@pytest.mark.slow
def test_an_ssh_folder_with_spaces_quotes_and_percent_still_proxies(runtime, tmp_path):
    """The ProxyCommand names the ssh folder: ssh expands %-tokens and the shell reads quotes in it."""
    odd = tmp_path / "it's 100% mine"
    odd.mkdir(mode=0o700)
    identity = odd / "id_ed25519"
    runtime.sshd.authorize(keys.write_keypair(identity, comment="odd"))
    ssh_dir = odd / "dot ssh"
    done = remotectl("connect", runtime.sshd.card().encode(), "--follow", str(runtime.persist), "--ssh-dir",
                     str(ssh_dir), "--identity", str(identity), "--json")
    if done.returncode == 2 and "cannot read the path" in done.stderr:
        pytest.fail(f"this OpenSSH refuses the folder itself: {done.stderr}")
    assert done.returncode == 0, done.stderr
    assert "%%" in json.loads(done.stdout)["proxy_command"]
    out = ssh(ssh_dir, "colab", "echo odd-ok")
    assert out.returncode == 0 and out.stdout.strip() == "odd-ok", out.stderr
