"""`connect --colab SESSION` and `check` for a host on Colab's own route: the flows.

The order is the card's: validate everything (session, --gpu, key type, `colab` itself)
before the first write; write the entry with `StrictHostKeyChecking yes` and no key yet;
the first login, made by remotectl through Google's authenticated `colab ssh` route,
learns the host key and pins it. From then on ssh and paramiko check that pin like any
other. When the runtime behind the same session is recreated (a new host key), `check` or
`connect` learns the new key again, but only through that same ProxyCommand, the one
remotectl wrote for this session, and says so; a changed key on any other route, or under a
ProxyCommand remotectl did not write, is refused as always.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import List, Optional, Sequence

from remote.client import colab_project, colab_route, manage, sshconfig
from remote.client.layout import SshLayout
from remote.client.registry import HostRecord
from remote.client.target import Target
from remote.client.untrusted import clean_line
from remote.errors import RemotectlError

TUNNEL = "colab"
CREATE_TIMEOUT = 300.0  # a first connection to a new session waits for Google to assign a runtime
REPO_VAR = "REMOTECTL_REPO_URL"


@dataclass
class ColabRequest:
    """A validated `connect --colab`: the generic request plus what the Colab route knows."""

    connect: manage.ConnectRequest
    cli: colab_route.ColabCli
    session: str
    gpu: Optional[str]
    exists: Optional[bool]  # whether `colab sessions` lists it; None: could not ask
    warning: Optional[str]  # e.g. not signed in (an existing session still works)
    repo: Optional[str] = None
    push: Optional[str] = None

    @property
    def first_timeout(self) -> float:
        return CREATE_TIMEOUT if self.exists is not True else 60.0


def prepare(layout: SshLayout, session: str, name: str = manage.DEFAULT_NAME, identity: Optional[str] = None,
            gpu: Optional[str] = None, forwards: Sequence[str] = (), path: Optional[str] = None,
            repo: Optional[str] = None, push: Optional[str] = None,
            system: Optional[str] = None) -> ColabRequest:
    """Everything `connect --colab` needs, checked; nothing written (BadInput 2, route errors 1)."""
    colab_route.refuse_windows(system)
    session = colab_route.check_session(session)
    gpu = colab_route.check_gpu(gpu)
    sshconfig.check_name(name)
    ident = manage.check_identity(Path(identity) if identity else layout.default_identity)
    colab_route.check_key_type(ident)
    specs = [sshconfig.parse_forward(f).spec() for f in forwards]
    if path is not None and not path.strip():
        from remote.errors import BadInput

        raise BadInput("--path must not be empty")
    if not repo and not push:
        repo = os.environ.get(REPO_VAR) or None  # the bootstrap cell's REPO_URL
    repo, push, folder = colab_project.args_for(repo, push, path)
    sshconfig.preflight_paths(layout.managed_config, ident, layout.known_hosts)
    cli = colab_route.inspect_cli(colab_route.find_colab()).require(gpu)
    proxy = colab_route.proxy_command(cli.path, session, ident, gpu, system=system)
    exists, warning = _listed(cli, session)
    keep = _kept_pin(layout, name, session)
    target = Target(user=colab_route.USER, host=colab_route.HOSTNAME, port=22, host_key=keep, session=session,
                    tunnel=TUNNEL, path=folder)
    request = manage.ConnectRequest(target, name, ident, specs, folder or manage.DEFAULT_PATH, proxy_command=proxy)
    return ColabRequest(request, cli, session, gpu, exists, warning, repo=repo, push=push)


def _listed(cli: colab_route.ColabCli, session: str):
    """(is SESSION among the account's sessions, a warning) from `colab sessions`."""
    try:
        return session in colab_route.list_sessions(cli), None
    except colab_route.ColabRouteError as exc:
        if exc.kind == "not-signed-in":
            return None, (f"{exc.message}: this session works, but a new one cannot be created until "
                          f"you sign in.\n{exc.hint}")
        return None, f"`colab sessions` failed ({exc.message}); trying the connection anyway"


def _kept_pin(layout: SshLayout, name: str, session: str) -> Optional[str]:
    """The pin to keep: the same host on the same Colab session keeps its key (a new runtime
    is detected, and learned again, by the first login); anything else starts without one."""
    from remote.client import registry

    old = registry.load(layout).find(name)
    if old is None or old.tunnel != TUNNEL or old.session != session:
        return None
    return manage.pinned_key(layout, old)


# -- the route the entry runs ------------------------------------------------------------
def route_argv(record: HostRecord) -> List[str]:
    """The argv of the entry's ProxyCommand, if it is exactly the one remotectl writes for this
    record's Colab session, key and --gpu; RemotectlError otherwise (then nothing is re-learned)."""
    from remote.cloudflared import argv_from_proxy_command

    problem = RemotectlError(
        f"the entry {record.name} does not run the `colab ssh` ProxyCommand remotectl wrote for Colab "
        f"session {record.session}; its host key is not learned through it",
        f"Write it again: remotectl connect --colab {record.session} --name {record.name}")
    if record.tunnel != TUNNEL or not record.proxy_command:
        raise problem
    argv = argv_from_proxy_command(record.proxy_command, record.host, record.port)
    gpu = argv[8] if len(argv) == 9 and argv[7] == "--gpu" else None
    try:
        expected = colab_route.proxy_command(argv[0], record.session, record.identity, gpu)
    except (RemotectlError, IndexError):
        raise problem from None
    if expected != record.proxy_command or argv != colab_route.proxy_argv(argv[0], record.session,
                                                                        record.identity, gpu):
        raise problem
    return argv


def gpu_of(record: HostRecord) -> Optional[str]:
    argv = route_argv(record)
    return argv[8] if len(argv) == 9 else None


# -- check: log in through the route, learn or re-learn the key ----------------------------
def _endpoint(layout: SshLayout, record: HostRecord, pinned: Optional[str], argv: List[str]):
    from remote.client.probe import Endpoint

    return Endpoint(record.host, record.port, record.user, record.identity, pinned, record.proxy_command,
                    sock_factory=partial(colab_route.ProxySocket, argv, record.session))


def probe_over_mux(layout: SshLayout, record: HostRecord, pinned: str, deep: bool, timeout: float):
    """The probe through the shared connection already open (VS Code, a terminal): Google allows
    one connection per runtime, and OpenSSH verified this one against the pin when it opened."""
    import subprocess

    from remote.client import probe

    ssh = colab_project.Ssh(layout.managed_config, record.name, timeout=max(timeout, 120.0))
    start = time.perf_counter()
    out = ssh.run(probe.probe_command(deep))
    total = (time.perf_counter() - start) * 1000
    if out.returncode != 0:
        raise probe.Unreachable(f"the shared connection to {record.name} failed: "
                                f"{clean_line(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode)}")
    report = probe.parse_probe(out.stdout)
    ping = time.perf_counter()
    subprocess.run(ssh.argv("true"), capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    report.rtt_ms = round((time.perf_counter() - ping) * 1000, 1)
    report.connect_ms, report.total_ms = 0.0, round(total, 1)
    report.host_key, report.learned = pinned, False
    return report


def check(layout: SshLayout, record: HostRecord, timeout: float = 15.0, deep: bool = False):
    """`manage.check` for a Colab host: probe through the route (or the shared connection),
    pin a first key, re-learn a recreated runtime's key through the same route."""
    from remote.client import probe

    relearned = None
    try:
        argv = route_argv(record)
        pinned = manage.pinned_key(layout, record)
        if pinned and colab_route.mux_alive(layout.managed_config, record.name):
            report = probe_over_mux(layout, record, pinned, deep, timeout)
        else:
            endpoint = _endpoint(layout, record, pinned, argv)
            try:
                report = probe.probe(endpoint, timeout=timeout, deep=deep)
            except probe.HostKeyMismatch:
                # The runtime behind this session was recreated: a new machine, a new key. Learn
                # it again, through this same Google-authenticated route and nothing else.
                report = probe.probe(replace(endpoint, host_key=None), timeout=timeout, deep=deep)
                relearned = pinned
    except RemotectlError as exc:
        stored = manage.record_check(layout, record.name, error=exc.message)
        return manage.CheckOutcome(stored or record, error=exc)
    stored = manage.record_check(layout, record.name, report=report)
    return manage.CheckOutcome(stored or record, report=report, relearned=relearned)


def bring_project(layout: SshLayout, request: ColabRequest, record: HostRecord):
    """Clone or copy the project onto the runtime (None when neither was asked for)."""
    ssh = colab_project.Ssh(layout.managed_config, record.name, timeout=120.0)
    return colab_project.bring(ssh, repo=request.repo, push=request.push, path=record.path)


# -- doctor ------------------------------------------------------------------------------
def pin_findings(layout: SshLayout, record: HostRecord) -> list:
    """The pin, as doctor sees it for a Colab host: none yet is a note (the first login learns it)."""
    from remote import keys
    from remote.findings import NOTE, OK, Finding

    pinned = manage.pinned_key(layout, record)
    what = f"host {record.name}"
    if pinned is None:
        return [Finding(what, NOTE, f"no host key pinned yet for Colab session {record.session}: ssh refuses "
                        "the host until remotectl's first login through Google's route learns it",
                        f"remotectl check {record.name}")]
    return [Finding(what, OK, f"host key {keys.fingerprint(pinned)} pinned (learned through `colab ssh`)")]


def route_findings(layout: SshLayout, record: HostRecord, timeout: float) -> list:
    """The Colab route's own checks for this host (colab present and new enough, signed in,
    session running, and answering unless busy or without SSH). A shared connection already
    open on this computer (VS Code's) counts as answering: a second one would only get 429."""
    from remote.findings import PROBLEM, Finding

    try:
        argv = route_argv(record)
    except RemotectlError as exc:
        return [Finding(f"host {record.name}", PROBLEM, exc.message, exc.hint)]
    shared = colab_route.mux_alive(layout.managed_config, record.name)
    return colab_route.doctor_findings(record.name, record.session, record.identity, colab=argv[0],
                                       gpu=argv[8] if len(argv) == 9 else None, timeout=timeout,
                                       shared=shared)
