"""The machine behind a card attacks: listings that climb out of DEST, links that lead out,
escape sequences in probe output, file names and error text. The attacker is a paramiko
SSH/SFTP server the tests own (helpers/hostile_sftp.py); the client side is the real CLI
with the real OpenSSH client, as a user runs it."""

from __future__ import annotations

import json
import os

import pytest
from _cli import remotectl, snapshot
from helpers.hostile_sftp import File, Folder, HostileServer, Link

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def hostile(request, client_key) -> HostileServer:
    server = HostileServer(client_key.with_name(client_key.name + ".pub").read_text())
    request.addfinalizer(server.stop)
    return server.start()


def connect(ssh_dir, client_key, server: HostileServer, *extra):
    result = remotectl("connect", server.card().encode(), "--ssh-dir", str(ssh_dir), "--identity",
                       str(client_key), "--name", "evil", *extra)
    return result


def no_raw_controls(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b\x9d\r\x00")


def test_listing_that_climbs_out_is_refused_entry_by_entry(hostile, ssh_dir, client_key, tmp_path):
    osc52 = "evil\x1b]52;c;ZXZpbA==\x07name"
    hostile.tree["/src"] = [
        File("ok.txt", b"fine"),
        File("../escape.txt", b"pwned"),
        File("a/../../x", b"pwned"),
        File("/abs.txt", b"pwned"),
        File("back\\slash", b"pwned"),
        File("nul\x00name", b"pwned"),
        File("C:drive.txt", b"pwned"),
        File(osc52, b"pwned"),
        File("ok.txt", b"second copy under the same name"),
        Link("out", "/etc"),
        Link("up", "../../outside"),
        Link("inside", "ok.txt"),
        Folder("sub"),
    ]
    hostile.tree["/src/sub"] = [File("deep.txt", b"deep", mode=0o600), File("..", b"pwned"),
                                Link("back-to-top", "../ok.txt"), Link("too-far", "../../x")]
    assert connect(ssh_dir, client_key, hostile, "--no-check").returncode == 0
    work = tmp_path / "work"
    dest = work / "dest"
    (work / "neighbour").mkdir(parents=True)
    (work / "neighbour" / "notes.txt").write_text("mine")
    before_outside = snapshot(work)

    result = remotectl("pull", "evil", "/src", str(dest), "--json", "--ssh-dir", str(ssh_dir))
    assert result.returncode == 1, result.stderr
    stats = json.loads(result.stdout)
    assert (dest / "src" / "ok.txt").read_bytes() == b"fine"  # the rest of the copy completed
    assert (dest / "src" / "sub" / "deep.txt").read_bytes() == b"deep"
    assert oct((dest / "src" / "sub" / "deep.txt").stat().st_mode & 0o777) == "0o600"
    assert os.readlink(dest / "src" / "inside") == "ok.txt"
    assert os.readlink(dest / "src" / "sub" / "back-to-top") == "../ok.txt"
    assert len(stats["refused"]) == 11, stats  # the ten below and the second "ok.txt"
    for shown in ("../escape.txt", "a/../../x", "/abs.txt", "back\\\\slash", "nul\\x00name", "C:drive.txt",
                  "evil\\x1b]52", "out", "up", "sub/too-far"):
        assert shown in result.stderr, (shown, result.stderr)
    assert "listed twice" in result.stderr
    assert no_raw_controls(result.stderr + result.stdout)
    assert result.stderr.count("remotectl: error:") == 1 and "Traceback" not in result.stderr

    # Nothing outside DEST changed, and inside DEST only what the copy may write.
    after = snapshot(work)
    assert {k: v for k, v in after.items() if not k.startswith("dest")} == before_outside
    written = sorted(k for k in after if k.startswith("dest"))
    assert written == ["dest", "dest/src", "dest/src/inside", "dest/src/ok.txt", "dest/src/sub",
                       "dest/src/sub/back-to-top", "dest/src/sub/deep.txt"]
    assert not os.path.exists("/abs.txt") and not (tmp_path / "x").exists()

    again = remotectl("pull", "evil", "/src", str(dest), "--json", "--ssh-dir", str(ssh_dir))
    assert again.returncode == 1  # still refusing, still nothing new
    assert json.loads(again.stdout)["files"] == 0 and snapshot(work) == after


def test_links_are_copied_normalised_and_never_lead_out_through_local_links(hostile, ssh_dir, client_key,
                                                                           tmp_path):
    # `a` names its target the long way round; `b` goes through `sub/l`, which on this laptop
    # already is the user's own link to a folder outside DEST.
    hostile.tree["/src"] = [Link("a", "sub/x/../../f"), Link("b", "sub/l/secret"), Folder("sub"), File("f", b"x")]
    hostile.tree["/src/sub"] = []
    assert connect(ssh_dir, client_key, hostile, "--no-check").returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("private")
    dest = tmp_path / "dest"
    (dest / "src" / "sub").mkdir(parents=True)
    (dest / "src" / "sub" / "l").symlink_to(outside)

    result = remotectl("pull", "evil", "/src", str(dest), "--ssh-dir", str(ssh_dir))
    assert result.returncode == 1
    assert os.readlink(dest / "src" / "a") == "f"  # the same place, written plainly
    assert "refused b: a symlink that, with the others, leads out of the tree" in result.stderr
    assert not os.path.lexists(dest / "src" / "b")
    assert (outside / "secret").read_text() == "private" and sorted(os.listdir(outside)) == ["secret"]


def test_probe_and_error_text_reach_the_terminal_escaped(hostile, ssh_dir, client_key, tmp_path):
    clipboard = "\x1b]52;c;ZXZpbA==\x07"
    hostile.exec_output = lambda command: (
        f"@@host box{clipboard}\r\n@@gpu GPU 0: \x1b[2J\x1b]0;title\x07H100\n"
        f'@@py {{"python": "3.11\\u001b[31m", "torch": "2.3\\u009b1m"}}\n').encode()
    result = connect(ssh_dir, client_key, hostile)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert no_raw_controls(out), repr(out)
    assert "box\\x1b]52;c;ZXZpbA==\\x07" in out  # shown, harmlessly

    checked = remotectl("check", "evil", "--json", "--ssh-dir", str(ssh_dir))
    assert checked.returncode == 0 and no_raw_controls(checked.stdout + checked.stderr)
    report = json.loads(checked.stdout)["check"]
    assert "\x1b" not in report["hostname"] and "\x1b" not in report["python"]

    hostile.tree["/src"] = [File("locked.bin", b"x")]
    hostile.denied.append("/src/locked.bin")
    hostile.status_text = f"denied{clipboard}\x1b[2J"
    pulled = remotectl("pull", "evil", "/src", str(tmp_path / "d"), "--ssh-dir", str(ssh_dir))
    assert pulled.returncode == 1
    assert "locked.bin" in pulled.stderr and "denied\\x1b]52" in pulled.stderr
    assert no_raw_controls(pulled.stdout + pulled.stderr)


def test_verify_runs_over_the_same_login_and_a_lying_digest_fails_the_entry(hostile, ssh_dir, client_key,
                                                                           tmp_path):
    import hashlib

    hostile.tree["/src"] = [File("good.bin", b"g" * 1000), File("bad.bin", b"b" * 1000)]
    digests = {"/src/good.bin": hashlib.sha256(b"g" * 1000).hexdigest(), "/src/bad.bin": "0" * 64}

    def answer(command: str) -> bytes:  # the remote's "sha256sum", lying about one file
        names = [p for p in digests if p in command]
        return "".join(f"@@sha256 {i} {digests[n]}\n"  # the numbered lines the command prints
                       for i, n in enumerate(sorted(names, key=command.index))).encode()

    hostile.exec_output = answer
    assert connect(ssh_dir, client_key, hostile, "--no-check").returncode == 0
    before = hostile.connections
    result = remotectl("pull", "evil", "/src", str(tmp_path / "d"), "--verify", "--json", "--ssh-dir", str(ssh_dir))
    assert result.returncode == 1
    stats = json.loads(result.stdout)
    assert stats["verified"] == 1 and stats["recopied"] == 1 and stats["failed"] == ["bad.bin"]
    assert "SHA-256 still differs" in result.stderr
    assert any("sha256sum" in c for c in hostile.commands)
    if os.name == "posix":
        assert hostile.connections - before == 1  # the hashes came over the copy's own login


def test_a_runtime_that_vanishes_mid_copy_is_one_line_and_the_next_run_resumes(hostile, ssh_dir, client_key,
                                                                              tmp_path):
    data = os.urandom(2_000_000)
    hostile.tree["/src"] = [File("ckpt.pth", data)]
    hostile.cut_after = 600_000
    assert connect(ssh_dir, client_key, hostile, "--no-check").returncode == 0
    dest = tmp_path / "d"
    cut = remotectl("pull", "evil", "/src/ckpt.pth", str(dest) + "/", "--ssh-dir", str(ssh_dir), console=True)
    assert cut.returncode == 1, cut.stderr
    errors = [line for line in cut.stderr.splitlines() if line.startswith("remotectl: error:")]
    assert len(errors) == 1 and errors[0].startswith("remotectl: error: the connection to evil closed during")
    assert "Traceback" not in cut.stderr and not (dest / "ckpt.pth").exists()
    hostile.cut_after = None
    again = remotectl("pull", "evil", "/src/ckpt.pth", str(dest) + "/", "--json", "--ssh-dir", str(ssh_dir))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed"] == 1 and (dest / "ckpt.pth").read_bytes() == data
