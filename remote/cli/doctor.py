"""`remotectl doctor`: one screen of findings (ok / problem + fix / note), exit 1 on a problem.

The checks live in remote/client/doctor.py (your computer) and remote/server/doctor.py
(the remote machine); this module picks the side and prints.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import click

from remote.cli.common import emit_json, info, json_option, ssh_dir_option, state_dir_option

LABELS = {"ok": "ok", "problem": "PROBLEM", "note": "note"}


def _sides(remote: bool, state_dir: Optional[str]) -> Tuple[bool, bool]:
    """(user side, remote side): the remote side alone on Colab or with --remote; both when a
    server was recorded here."""
    if remote:
        return False, True
    from remote.server import colab
    from remote.server import doctor as server_doctor

    if colab.in_colab():
        return False, True
    return True, server_doctor.has_server(state_dir)


def _print(title: str, findings: List, as_json: bool) -> None:
    info(title, as_json)
    width = max([len(f.check) for f in findings] + [10])
    for f in findings:
        info(f"  {LABELS[f.status]:<8} {f.check:<{width}}  {f.detail}", as_json)
        if f.fix:
            first, *rest = f.fix.splitlines()
            pad = " " * (13 + width)
            info(f"{pad}fix: {first}", as_json)
            for line in rest:
                info(f"{pad}     {line}", as_json)


@click.command()
@click.option("--remote", is_flag=True,
              help="Check this machine as the remote end (sshd, tunnel, GPU, torch, disk); "
                   "automatic on Colab.")
@click.option("--deep", is_flag=True, help="Log in to each managed host and run the probe.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds to wait for each host's SSH banner.")
@click.option("--saved", type=click.Path(file_okay=False), default=None,
              help="Remote side: the checkpoint folder whose disk is checked [default: ./saved].")
@ssh_dir_option
@state_dir_option
@json_option
def doctor(remote: bool, deep: bool, timeout: float, saved: Optional[str], ssh_dir: Optional[str],
           state_dir: Optional[str], as_json: bool) -> None:
    """Check what the connection needs and say how to fix what is wrong.

    \b
    Your computer: the OpenSSH client, ~/.ssh/config (permissions, where the Include
    line sits), the key, each host's pinned key and whether it answers, VS Code.
    The remote machine (--remote, or when a server runs here): sshd, the tunnel,
    the GPU, torch/CUDA, disk space for saved/.
    Exit code 1 when a problem is found.
    """
    user_side, remote_side = _sides(remote, state_dir)
    result = {"problems": 0}
    if user_side:
        from remote.client import doctor as client_doctor
        from remote.client.layout import layout

        lay = layout(ssh_dir)
        findings = client_doctor.run(lay, timeout=timeout, deep=deep)
        result["user"] = [f.as_dict() for f in findings]
        result["problems"] += sum(f.status == "problem" for f in findings)
        _print(f"Your computer (ssh folder {lay.ssh_dir})", findings, as_json)
    if remote_side:
        from remote.server import doctor as server_doctor
        from remote.server import state

        findings = server_doctor.run(state_dir, saved=saved)
        result["remote"] = [f.as_dict() for f in findings]
        result["problems"] += sum(f.status == "problem" for f in findings)
        _print(f"This machine as the remote end (state dir {state.resolve(state_dir)})", findings, as_json)
    count = result["problems"]
    info(f"{count} problem{'s' if count != 1 else ''} found." if count else "No problems found.", as_json)
    if as_json:
        emit_json(result)
    if count:
        raise SystemExit(1)


COMMANDS = [doctor]
