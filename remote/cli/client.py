"""Client-side commands (`keygen`, `connect`, ...): they run on the user's computer.

Parsing and printing only; the flows live in `remote.client.manage`. Library modules are
imported inside the commands so `remotectl --help` stays cheap (no paramiko there).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence, Tuple

import click

from remote.cli.common import emit_json, info, json_option, ssh_dir_option, warn

TIMEOUT_HELP = "Seconds to wait for the host at each step."
GPUS = ("T4", "L4", "A100", "H100", "G4")  # remote.client.colab_route.GPUS (not imported at start-up)


def _layout(ssh_dir: Optional[str]):
    from remote.client.layout import layout

    return layout(ssh_dir)


_warn = warn


def _ago(stamp: Optional[str]) -> str:
    if not stamp:
        return "never"
    try:
        then = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return stamp
    seconds = max(0, int(time.time() - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


# -- keygen ---------------------------------------------------------------------------
@click.command()
@click.option("--path", type=click.Path(dir_okay=False), default=None,
              help="Private key file [default: <ssh-dir>/remotectl_ed25519].")
@click.option("--force", is_flag=True, help="Replace an existing key (the old one stops working).")
@click.option("--comment", default=None, help="Comment at the end of the public line.")
@ssh_dir_option
@json_option
def keygen(path: Optional[str], force: bool, comment: Optional[str], ssh_dir: Optional[str],
           as_json: bool) -> None:
    """Make the Ed25519 key pair remotectl logs in with (again: show its public line)."""
    import getpass
    import socket
    from pathlib import Path

    from remote import keys
    from remote.client.identity import ensure_keypair

    lay = _layout(ssh_dir)
    target = Path(path).absolute() if path else lay.default_identity
    if not path and not lay.ssh_dir.exists():
        lay.ensure_managed_dir()
    if comment is None:
        comment = f"remotectl {getpass.getuser()}@{socket.gethostname()}"
    pair = ensure_keypair(target, comment, force=force)
    public = pair.public
    if as_json:
        emit_json({"private_key": str(target), "public_key_file": f"{target}.pub", "created": pair.created,
                   "public_key": public, "fingerprint": keys.fingerprint(public),
                   "secret_name": "REMOTECTL_AUTHORIZED_KEY"})
        return
    if pair.created:
        info(f"Wrote {target} (private, 0600) and {target}.pub.")
    else:
        info(f"{target} already exists (kept; --force makes a new one). Its public line:")
    info("Store this line in Colab's Secrets panel as REMOTECTL_AUTHORIZED_KEY (notebook access on);")
    info("on another server, add it to ~/.ssh/authorized_keys. `remotectl connect` uses this key.")
    info("")
    info(public)


# -- connect --------------------------------------------------------------------------
@click.command()
@click.argument("card", nargs=-1, required=False)
@click.option("--colab", "colab_session", default=None, metavar="SESSION",
              help="No card: Colab's own SSH, Google's `colab ssh --proxy-mode -s SESSION` (colab from "
                   "$REMOTECTL_COLAB or PATH). The first connection creates a missing session.")
@click.option("--gpu", type=click.Choice(GPUS, case_sensitive=False), default=None,
              help="--colab: the accelerator when the first connection creates the session.")
@click.option("--repo", default=None, metavar="URL",
              help="--colab: clone this repository on the runtime unless it is there "
                   "[default: $REMOTECTL_REPO_URL].")
@click.option("--push", "push_dir", default=None, metavar="DIR",
              help="--colab: copy this local folder (what git would carry) to the runtime.")
@click.option("--name", default="colab", show_default=True, help="Host alias: `ssh NAME`.")
@click.option("--identity", default=None, help="Private key [default: <ssh-dir>/remotectl_ed25519].")
@click.option("--forward", "forwards", multiple=True, metavar="PORT|L:R",
              help="LocalForward, e.g. 6006 (TensorBoard). Repeatable.")
@click.option("--host-key", default=None, help="Plain address only: the host's public key to pin.")
@click.option("-p", "--port", type=int, default=None, help="Plain address only: the port.")
@click.option("-l", "--user", default=None, help="Plain address only: the user [default: root].")
@click.option("--no-check", is_flag=True, help="Write the entry without connecting.")
@click.option("--deep", is_flag=True,
              help="Import torch remotely to ask torch.cuda.is_available() (takes seconds).")
@click.option("--open", "open_code", is_flag=True, help="Then open VS Code on the remote folder.")
@click.option("--path", default=None,
              help="Remote folder for VS Code, pull and push [default: the card's folder (where `up` "
                   "ran), else /content].")
@click.option("--timeout", type=float, default=15.0, show_default=True, help=TIMEOUT_HELP)
@click.option("--cloudflared", "cloudflared", default=None, metavar="PATH",
              help="cloudflared cards: the cloudflared to run [default: $REMOTECTL_CLOUDFLARED, PATH, "
                   "or the one `remotectl install-cloudflared` installed].")
@click.option("--follow", "follow", default=None, metavar="DIR|ngrok",
              help="Follow the runtime to new addresses: DIR is this computer's copy of the server's "
                   "--persist folder (e.g. Google Drive for desktop), or `ngrok` (the ngrok API, key from "
                   "NGROK_API_KEY); each ssh then reads its signed record (`remotectl proxy`).")
@ssh_dir_option
@json_option
def connect(card: Tuple[str, ...], colab_session: Optional[str], gpu: Optional[str], repo: Optional[str],
            push_dir: Optional[str], name: str, identity: Optional[str], forwards: Sequence[str],
            host_key: Optional[str], port: Optional[int], user: Optional[str], no_check: bool,
            deep: bool, open_code: bool, path: Optional[str], timeout: float,
            cloudflared: Optional[str], follow: Optional[str], ssh_dir: Optional[str], as_json: bool) -> None:
    """Pin the host key, write the ssh entry, check the link.

    CARD is the `remotectl connect rc1....` line the remote side printed, or a plain
    address: HOST:PORT, tcp://HOST:PORT, root@HOST -p PORT (with --host-key to pin).
    Or no card: --colab SESSION, Colab's own SSH through Google's `colab` CLI.
    """
    from remote import keys
    from remote.client import manage, vscode
    from remote.errors import BadInput

    lay = _layout(ssh_dir)
    colab = None
    if colab_session is not None:
        from remote.client import colab_connect

        if card or host_key or port or user or cloudflared or follow:
            raise BadInput("--colab SESSION takes no card, address, --host-key, --port, --user, --cloudflared "
                           "or --follow")
        colab = colab_connect.prepare(lay, colab_session, name=name, identity=identity, gpu=gpu,
                                      forwards=forwards, path=path, repo=repo, push=push_dir)
        req = colab.connect
        if colab.exists is False:
            info(f"Colab session {colab.session} is not running: the first connection creates it"
                 f"{' with a ' + colab.gpu if colab.gpu else ''} (this can take a few minutes).", as_json)
        timeout = max(timeout, colab.first_timeout)
    elif gpu or repo or push_dir:
        raise BadInput("--gpu, --repo and --push are for --colab SESSION")
    elif not card:
        raise BadInput("nothing to connect to: give the card (`rc1....`), HOST:PORT, or --colab SESSION")
    else:
        req = manage.prepare_connect(lay, card, name=name, identity=identity, forwards=forwards,
                                     path=path, host_key=host_key, port=port, user=user,
                                     cloudflared=cloudflared, follow=follow)
        for note in req.notes:
            _warn(note)
    if not no_check:  # load paramiko (~0.3 s) while the files are written and fsynced
        # (only after validation: exiting while a daemon thread imports aborts the interpreter)
        import threading

        threading.Thread(target=__import__, args=("paramiko",), daemon=True).start()
    if not req.target.host_key and colab is None:
        _warn("no host key given, so the first connection will trust whatever key answers "
              "(StrictHostKeyChecking accept-new).\n"
              "Someone between you and the host at that moment would be trusted; pass --host-key "
              "or use the card. Each such connect forgets the key pinned under this name first, so "
              "a reused ngrok address never meets an old machine's key.")
    applied = manage.apply_connect(lay, req)
    record = applied.record
    for warning in applied.warnings:
        _warn(warning)
    result = {"name": record.name, "host": record.host, "port": record.port, "user": record.user,
              "alias": record.alias, "change": applied.change, "path": record.path,
              "tunnel": record.tunnel, "proxy_command": record.proxy_command, "follow": record.follow,
              "fingerprint": keys.fingerprint(record.host_key) if record.host_key else None,
              "config": str(lay.managed_config), "known_hosts": str(lay.known_hosts),
              "include": _include_json(applied.include), "check": None,
              "code": vscode.command(record.name, record.path)}
    _say_written(applied, lay, as_json)
    error = None
    if not no_check:
        error = _check(lay, record.name, timeout, result, as_json, deep=deep, after_connect=True)
    if colab is not None:
        result["colab"] = {"session": colab.session, "gpu": colab.gpu, "existed": colab.exists,
                           "cli": str(colab.cli.path), "cli_version": colab.cli.version, "project": None}
        if no_check:
            info(f"  No key pinned yet: `remotectl check {record.name}` learns it through Google's route "
                 "(ssh refuses the host until then).", as_json)
    if error is None and colab is not None:
        if colab.warning:  # said once the login worked; a failed one explains itself
            _warn(colab.warning)
        if not no_check:
            error = _bring_project(lay, colab, record, result, as_json)
    if error is None:
        info(f"Next: {lay.ssh_command(record.name)}    or    {vscode.shell_line(record.name, record.path)}",
             as_json)
        if not lay.is_default:
            info(f"  (this ssh folder is not the one plain `ssh` and VS Code read: set VS Code's "
                 f"remote.SSH.configFile to {lay.user_config})", as_json)
        if open_code:
            vscode.open_remote(record.name, record.path)
            info("Opening VS Code...", as_json)
    if as_json:
        emit_json(result)
    if error is not None:
        raise error


def _bring_project(lay, colab, record, result: dict, as_json: bool):
    """Clone or copy the project onto the runtime; the error to raise, or None."""
    from remote.client import colab_connect
    from remote.errors import RemotectlError

    try:
        seeded = colab_connect.bring_project(lay, colab, record)
    except RemotectlError as exc:
        return type(exc)(exc.message, (exc.hint + "\n" if exc.hint else "") +
                         "The entry stays written; `remotectl push` or the same connect again brings it.")
    if seeded is None:
        info(f"  No project brought: add --repo URL (cloned on the runtime) or --push DIR to put it in "
             f"{record.path}.", as_json)
        return None
    result["colab"]["project"] = {"how": seeded.how, "path": seeded.path, "files": seeded.files}
    info(seeded.line(), as_json)
    return None


def _include_json(change) -> Optional[dict]:
    if change is None:
        return None
    return {"status": change.status, "path": str(change.path), "line": change.line}


def _say_written(applied, lay, as_json: bool) -> None:
    record = applied.record
    verbs = {"new": "Added", "unchanged": "Unchanged:", "address-updated": "Updated the address of",
             "key-replaced": "Replaced (new host key)", "updated": "Updated"}
    info(f"{verbs.get(applied.change, 'Wrote')} Host {record.name} -> {record.endpoint} "
         f"in {lay.managed_config}", as_json)
    if applied.change == "address-updated":
        info(f"  recognised: same host key, address updated (pin {record.alias} kept, "
             "known_hosts unchanged).", as_json)
    if record.follow:
        from remote.client.follow import source_label

        info(f"  following {source_label(record.follow['source'])}: each connection goes where the newest "
             f"record signed by its pinned key says (ProxyCommand {record.proxy_command})", as_json)
    elif record.tunnel == "colab":
        info(f"  Colab session {record.session}, through Google's `colab ssh`: "
             f"ProxyCommand {record.proxy_command}", as_json)
    elif record.proxy_command:
        info(f"  through ProxyCommand {record.proxy_command}", as_json)
    if record.host_key:
        from remote import keys

        info(f"Pinned host key {keys.fingerprint(record.host_key)} as {record.alias}.", as_json)
    inc = applied.include
    if inc is not None and inc.status in ("added", "updated"):
        backup = "" if inc.created else f" (backup: {inc.path}.remotectl.bak)"
        info(f"Added the Include line at the top of {inc.path}{backup}.", as_json)


def _check(lay, name: str, timeout: float, result: dict, as_json: bool, deep: bool = False,
           after_connect: bool = False):
    """Probe and report; return the error to raise (after the JSON is out), or None."""
    from remote import keys
    from remote.client import manage

    outcome = manage.check(lay, name, timeout=timeout, deep=deep)
    exc = outcome.error
    if exc is not None:
        result["check"] = {"ok": False, "error": exc.message}
        if after_connect:
            hint = (exc.hint + "\n" if exc.hint else "") + \
                f"The entry stays written; run `remotectl check {name}` once the host is up."
            return type(exc)(exc.message, hint)
        return exc
    report = outcome.report
    result["check"] = {"ok": True, **report.as_dict()}
    if outcome.record.tunnel == "colab" and report.learned:
        # Trust on first use, on Google's authenticated route only (README: Security model).
        new = keys.fingerprint(report.host_key)
        result["check"]["relearned_from"] = keys.fingerprint(outcome.relearned) if outcome.relearned else None
        if outcome.relearned and keys.bare(outcome.relearned) != keys.bare(report.host_key):
            info(f"Re-learned the host key of Colab session {outcome.record.session} through Google's "
                 f"`colab ssh` route: the runtime was recreated ({keys.fingerprint(outcome.relearned)} -> "
                 f"{new}); files on the old runtime are gone.", as_json)
        else:
            info(f"Pinned host key {new} as {outcome.record.alias}, learned on the first login through "
                 "Google's `colab ssh` route.", as_json)
    elif report.learned:
        _warn(f"pinned the key the host presented on first use: {keys.fingerprint(report.host_key)}\n"
              "Compare it with the server's (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`); "
              "a different key from now on is refused.")
    info(f"{name}: ok in {report.total_ms / 1000:.2f} s (round trip {report.rtt_ms:.0f} ms)", as_json)
    followed = _followed(lay, outcome.record)
    if followed is not None:
        result["followed"] = followed
        info(f"  {_followed_text(followed)}", as_json)
    info(f"  {report.summary()}", as_json)
    if report.interpreter and report.interpreter.get("advice"):  # ssh's python is not `up`'s
        _warn(report.interpreter["advice"])
    return None


def _followed(lay, record) -> Optional[dict]:
    """A followed host's last address and its record's age (None when it follows nothing)."""
    if not getattr(record, "follow", None):
        return None
    from remote.client import follow

    return follow.describe(lay, record.name, record.follow.get("source", "?"))


def _followed_text(followed: dict, with_address: bool = True) -> str:
    """`followed HOST:PORT from DIR (record 5m old)`, or what is known before the first connection."""
    from remote.client.follow import source_label

    where = source_label(followed["source"])
    if not followed.get("resolved"):
        return f"follows {where}; not resolved yet"
    age = followed.get("record_age_s")
    shown = _ago(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - age))).replace(" ago", "") \
        if age is not None else "?"
    address = f" {followed['host']}:{followed['port']}" if with_address else ""
    return f"followed{address} from {where} (record {shown} old)"


# -- check, hosts, disconnect ---------------------------------------------------------
@click.command()
@click.argument("name", required=False)
@click.option("--timeout", type=float, default=15.0, show_default=True, help=TIMEOUT_HELP)
@click.option("--quick", is_flag=True, help="Do not import torch remotely (read its version from files).")
@ssh_dir_option
@json_option
def check(name: Optional[str], timeout: float, quick: bool, ssh_dir: Optional[str], as_json: bool) -> None:
    """Connect with the pinned key and report the remote machine (GPU, python, torch.cuda)."""
    from remote.client import manage

    lay = _layout(ssh_dir)
    record = manage.get_record(lay, name)
    result = {"name": record.name, "host": record.host, "port": record.port, "check": None}
    error = _check(lay, record.name, timeout, result, as_json, deep=not quick)
    if as_json:
        emit_json(result)
    if error is not None:
        raise error


@click.command()
@ssh_dir_option
@json_option
def hosts(ssh_dir: Optional[str], as_json: bool) -> None:
    """List the hosts remotectl manages: endpoint, pinned key, age, last check."""
    from remote import keys
    from remote.client import registry

    lay = _layout(ssh_dir)
    reg = registry.load(lay)
    if as_json:
        emit_json({"config": str(lay.managed_config),
                   "hosts": [{"name": r.name, **r.to_dict(), "alias": r.alias,
                              "fingerprint": keys.fingerprint(r.host_key) if r.host_key else None,
                              "followed": _followed(lay, r)}
                             for r in reg.hosts.values()]})
        return
    if not reg.hosts:
        info("No hosts yet: run `remotectl connect <card>`.")
        return
    rows = [("NAME", "ENDPOINT", "AGE", "LAST CHECK")]
    for r in sorted(reg.hosts.values(), key=lambda r: r.name):
        last = r.last_check or {}
        if not last:
            checked = "never"
        elif last.get("ok"):
            checked = f"ok {_ago(last.get('at'))} (rtt {last.get('rtt_ms') or 0:.0f} ms)"
        else:
            checked = f"failed {_ago(last.get('at'))}: {last.get('error')}"
        followed = _followed(lay, r)
        endpoint = r.endpoint
        if followed and followed.get("resolved"):
            endpoint = f"{r.user}@{followed['host']}:{followed['port']}, {_followed_text(followed, False)}"
        elif followed:
            endpoint = f"{r.endpoint}, {_followed_text(followed)}"
        rows.append((r.name, endpoint, _ago(r.created).replace(" ago", ""), checked))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        info("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])


@click.command()
@click.argument("name", required=False)
@ssh_dir_option
@json_option
def disconnect(name: Optional[str], ssh_dir: Optional[str], as_json: bool) -> None:
    """Remove a host's entry and pinned key (the last one also removes the Include line)."""
    from remote.client import manage

    lay = _layout(ssh_dir)
    applied = manage.disconnect(lay, name)
    for warning in applied.warnings:
        _warn(warning)
    inc = applied.include
    if as_json:
        emit_json({"name": applied.record.name, "removed": True, "include": _include_json(inc)})
        return
    info(f"Removed Host {applied.record.name} and its pinned key {applied.record.alias}.")
    if inc is not None and inc.status == "removed":
        info(f"No hosts left: removed the Include line from {inc.path}.")


# -- pull, push, open -----------------------------------------------------------------
def _transfer_done(verb: str, stats, dest: str, as_json: bool) -> None:
    if as_json:
        emit_json({"verb": verb, "dest": dest, **stats.as_dict()})
    else:
        links = f", {stats.links} link(s)" if stats.links else ""
        checked = f", {stats.verified} verified" if stats.verified else ""
        info(f"{verb}: {stats.files} file(s), {stats.bytes / 1e6:.1f} MB copied, "
             f"{stats.skipped} already there, {stats.resumed} resumed{links}{checked} -> {dest}")
    if stats.problems:
        from remote.errors import RemotectlError

        raise RemotectlError(f"{stats.problems} entr{'y was' if stats.problems == 1 else 'ies were'} not "
                             f"copied (see the warnings above); everything else was",
                             "Refused entries are ones the remote named unsafely; run the same "
                             "command again for the others.")


def _transfer_options(func):
    """The options pull and push share (they differ only in direction)."""
    for option in (json_option, ssh_dir_option, click.option("--quiet", is_flag=True, help="No progress output."),
                   click.option("--verify", is_flag=True,
                                help="Also compare SHA-256 with the remote (sha256sum there) and copy "
                                     "again on a mismatch."),
                   click.option("--timeout", type=float, default=15.0, show_default=True, help=TIMEOUT_HELP)):
        func = option(func)
    return func


def _transfer(verb: str, args: Tuple[str, ...], timeout: float, quiet: bool, verify: bool,
              ssh_dir: Optional[str], as_json: bool) -> None:
    """Copy SOURCE to DEST over the written entry (rsync's rules; see remote/client/transfer.py)."""
    from remote.client import manage, transfer
    from remote.client.transport import SshLink

    lay = _layout(ssh_dir)
    record, source, dest = manage.split_transfer_args(lay, args, verb)
    copy = transfer.pull if verb == "pull" else transfer.push
    if verb == "push":
        transfer.check_local_source(source)
    with SshLink(lay, record, timeout=timeout, commands=verify) as link:
        stats = copy(link.sftp, link.run, source, dest if verb == "push" else (dest or "."),
                     folder=record.path, progress=not (quiet or as_json), verify=verify, warn=_warn)
    _transfer_done(verb, stats, dest or ("." if verb == "pull" else record.path), as_json)


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[NAME] REMOTE [LOCAL]")
@_transfer_options
def pull(args: Tuple[str, ...], timeout: float, quiet: bool, verify: bool, ssh_dir: Optional[str],
         as_json: bool) -> None:
    """Download a remote file or folder such as saved/models, resuming partial copies.

    \b
    As rsync: `pull saved/models ~/runs` makes ~/runs/models; `pull saved/models/ ~/runs`
    copies what is inside. Relative remote paths start in the host's folder. Files already
    there (same size and mtime) are skipped, so running it again copies only what changed.
    """
    _transfer("pull", args, timeout, quiet, verify, ssh_dir, as_json)


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[NAME] LOCAL [REMOTE]")
@_transfer_options
def push(args: Tuple[str, ...], timeout: float, quiet: bool, verify: bool, ssh_dir: Optional[str],
         as_json: bool) -> None:
    """Upload a local file or folder to the remote (default: the host's folder, as for `open`).

    \b
    As rsync: `push data` makes <folder>/data there; `push data/ data` copies what is inside.
    """
    _transfer("push", args, timeout, quiet, verify, ssh_dir, as_json)


@click.command(name="open")
@click.argument("name", required=False)
@click.option("--path", default=None, help="Remote folder [default: the one given to connect].")
@ssh_dir_option
def open_(name: Optional[str], path: Optional[str], ssh_dir: Optional[str]) -> None:
    """Open VS Code (Remote-SSH) on the host's folder."""
    from remote.client import manage, vscode

    record = manage.get_record(_layout(ssh_dir), name)
    vscode.open_remote(record.name, path or record.path)
    info(f"Opening {vscode.shell_line(record.name, path or record.path)}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[--ssh-dir DIR] [--fdpass] NAME")
def proxy(args: Tuple[str, ...]) -> None:
    """The ProxyCommand of a followed host (`connect --follow`): dial where its newest
    signed record says, as ssh's connection (run by ssh, not by hand)."""
    import sys

    from remote.client import proxy as proxying

    sys.exit(proxying.main(list(args)))


COMMANDS = [keygen, connect, disconnect, check, hosts, pull, push, open_, proxy]
