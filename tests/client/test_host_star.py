"""A user's `Host *` (SendEnv AWS_*, IdentityFile ~/.ssh/id_work) and remotectl's hosts.

remotectl's own logins (connect's probe, check, pull, push) read only remotectl's config, so
the machine behind a card gets no variable and no other key from them. Plain `ssh NAME` and
VS Code read the user's whole config, where OpenSSH adds SendEnv and IdentityFile up (an
entry cannot take them back): there `doctor` names the line and how to scope it. The
attacker that records what it is sent is the tests' hostile server.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from _cli import remotectl
from helpers.hostile_sftp import File, HostileServer

from remote import keys

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def hostile(request, client_key) -> HostileServer:
    server = HostileServer(client_key.with_name(client_key.name + ".pub").read_text())
    request.addfinalizer(server.stop)
    return server.start()


def test_host_star_env_and_keys_reach_no_remotectl_login_and_doctor_names_them(hostile, ssh_dir, client_key,
                                                                                 tmp_path):
    work_key = tmp_path / "id_work"
    work_public = keys.write_keypair(work_key, "work")
    ssh_dir.mkdir(mode=0o700)
    config = ssh_dir / "config"
    config.write_text(f"Host *\n    SendEnv AWS_*\n    IdentityFile {work_key}\n")
    config.chmod(0o600)
    env = {"AWS_SECRET_ACCESS_KEY": "do-not-send", "REMOTECTL_SSH_DIR": str(ssh_dir)}
    ours = " ".join(keys.bare(client_key.with_name(client_key.name + ".pub").read_text()).split())
    hostile.exec_output = lambda command: b"@@host evil\n"
    hostile.tree["/src"] = [File("a.txt", b"a")]

    connected = remotectl("connect", hostile.card().encode(), "--name", "evil", "--identity", str(client_key),
                          env=env)
    assert connected.returncode == 0, connected.stderr
    pulled = remotectl("pull", "evil", "/src", str(tmp_path / "got"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert hostile.env == {} and set(hostile.offered) == {ours}  # probe and pull: nothing else

    # Plain ssh reads the user's `Host *`: OpenSSH sends the variable. doctor must say so.
    leaked = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "evil", "true"],
                            env=dict(os.environ, **env), capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert leaked.returncode == 0, leaked.stderr
    assert hostile.env.get("AWS_SECRET_ACCESS_KEY") == "do-not-send"

    report = remotectl("doctor", "--json", env=env)
    assert report.returncode == 1
    found = [f for f in json.loads(report.stdout)["user"] if f["check"] == "host evil"]
    sendenv = next(f for f in found if "AWS_*" in f["detail"])
    # (lines 1-3 are remotectl's Include block, at the top)
    assert sendenv["status"] == "problem" and "line 5: `SendEnv AWS_*` under `Host *` (line 4)" in sendenv["detail"]
    assert "`Host * !evil`" in sendenv["fix"]
    identity = next(f for f in found if str(work_key) in f["detail"])
    assert identity["status"] == "note" and "line 6" in identity["detail"]

    # The fix, applied: nothing reaches the host from plain ssh either.
    config.write_text(config.read_text().replace("Host *\n", "Host * !evil\n"))
    hostile.env.clear()
    hostile.offered.clear()
    again = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "evil", "true"],
                           env=dict(os.environ, **env), capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and hostile.env == {} and work_public.split()[1] not in " ".join(hostile.offered)
    fixed = json.loads(remotectl("doctor", "--json", env=env).stdout)
    assert not [f for f in fixed["user"] if f["check"] == "host evil" and "AWS_*" in f["detail"]]
