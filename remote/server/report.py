"""What `up` and `status` tell the user: short reports, the line to paste always last."""

from __future__ import annotations

import shlex
from typing import Any, Dict, List

from remote.server.info import ServerInfo


def logins(info: ServerInfo) -> str:
    ways = []
    count = info.authorized_keys
    if count:
        ways.append(f"key login ({count} key{'s' if count != 1 else ''})")
    if info.password_login:
        ways.append("password login")
    return " + ".join(ways) or "no login"


def up_report(info: ServerInfo, detached: bool = False) -> List[str]:
    lines = [
        f"sshd       {info.local_host}:{info.local_port}  user {info.user}, {logins(info)}",
        f"tunnel     {info.tunnel}  {info.public_url}",
        f"host key   {info.fingerprint}",
        f"proven     a one-use key logged in through {info.public_url} in {info.proof_seconds:.2f} s",
        f"session    {info.session}  (ready in {info.ready_seconds:.2f} s)",
        f"state dir  {info.state_dir}",
    ]
    if info.python:
        lines.append(f"python     {info.python}  (over ssh: $REMOTECTL_PYTHON)")
    if info.persist:
        lines.insert(3, f"persist    {info.persist}  (same host key on a fresh runtime)")
    if info.published:
        lines.insert(4, f"published  {info.published['path']}  (signed record #{info.published['seq']}: "
                        "`remotectl connect <card> --follow <your copy of that folder>` follows new addresses)")
    if detached:
        lines.append(f"running in the background (supervisor pid {info.pid}); stop it with: "
                     f"remotectl down --state-dir {shlex.quote(info.state_dir)}")
    lines.append("On your computer, paste this line:")
    lines.append(info.connect_line)
    return lines


def status_report(report: Dict[str, Any]) -> List[str]:
    what = report["state"]
    folder = report["state_dir"]
    live = report.get("live") or {}
    runs = ", ".join(f"{name} (pid {pid})" for name, pid in live.items())
    if what == "not running":
        lines = [f"not running (state dir {folder})"]
    elif what == "starting":
        lines = [f"starting: {runs}; run status again in a moment (state dir {folder})"]
    elif what == "broken":
        lines = [f"BROKEN: not serving, but {runs} still run{'s' if len(live) == 1 else ''}",
                 f"           stop them with: {report.get('fix')}"]
    else:
        lines = [f"server     running  ({report.get('mode')}, pid {report.get('pid')})"]
    if report.get("session") and what != "not running":
        def yes(flag: bool) -> str:
            return "up" if flag else "DOWN"

        lines += [
            f"sshd       {yes(report.get('sshd_up', False))}  {report.get('local_host')}:{report.get('local_port')}",
            f"tunnel     {yes(report.get('tunnel_up', False))}  {report.get('tunnel')}  {report.get('public_url')}",
            f"host key   {report.get('fingerprint')}",
            f"session    {report.get('session')}  since {report.get('started_at')}",
            f"state dir  {folder}",
        ]
        if report.get("python"):
            lines.append(f"python     {report['python']}  (over ssh: $REMOTECTL_PYTHON)")
        if report.get("tunnel_restarts"):
            lines.append(f"restarts   the tunnel agent was brought back {report['tunnel_restarts']} time(s)")
        if report.get("published"):
            lines.append(f"published  {report['published']['path']}  (record #{report['published']['seq']})")
    if report.get("problem"):
        lines.append(f"note       {report['problem']}")
    lines.append(f"gpu        {report.get('gpu') or 'none found (no nvidia-smi)'}")
    if what == "running":
        lines.append(report["connect_line"])
    return lines
