"""What `up` tells the user: a short report, then the one line to paste, always last."""

from __future__ import annotations

import shlex
from typing import Any, Dict, List


def logins(info: Dict[str, Any]) -> str:
    ways = []
    count = info.get("authorized_keys") or 0
    if count:
        ways.append(f"key login ({count} key{'s' if count != 1 else ''})")
    if info.get("password_login"):
        ways.append("password login")
    return " + ".join(ways) or "no login"


def up_report(info: Dict[str, Any], detached: bool = False) -> List[str]:
    lines = [
        f"sshd       {info['local_host']}:{info['local_port']}  user {info['user']}, {logins(info)}",
        f"tunnel     {info['tunnel']}  {info['public_url']}",
        f"host key   {info['fingerprint']}",
        f"session    {info['session']}  (ready in {info.get('ready_seconds', 0):.2f} s)",
        f"state dir  {info['state_dir']}",
    ]
    if info.get("python"):
        lines.append(f"python     {info['python']}  (over ssh: $REMOTECTL_PYTHON)")
    if info.get("persist"):
        lines.insert(3, f"persist    {info['persist']}  (same host key on a fresh runtime)")
    if detached:
        lines.append(f"running in the background (supervisor pid {info['pid']}); stop it with: "
                     f"remotectl down --state-dir {shlex.quote(info['state_dir'])}")
    lines.append("On your computer, paste this line:")
    lines.append(info["connect_line"])
    return lines


def status_report(report: Dict[str, Any]) -> List[str]:
    if not report.get("session"):
        lines = [f"not running (state dir {report['state_dir']})"]
    else:
        def yes(flag: bool) -> str:
            return "up" if flag else "DOWN"

        lines = [
            f"server     {'running' if report['running'] else 'NOT running'}  ({report.get('mode')}, pid {report.get('pid')})",
            f"sshd       {yes(report.get('sshd_up', False))}  {report.get('local_host')}:{report.get('local_port')}",
            f"tunnel     {yes(report.get('tunnel_up', False))}  {report.get('tunnel')}  {report.get('public_url')}",
            f"host key   {report.get('fingerprint')}",
            f"session    {report.get('session')}  since {report.get('started_at')}",
            f"state dir  {report['state_dir']}",
        ]
        if report.get("python"):
            lines.append(f"python     {report['python']}  (over ssh: $REMOTECTL_PYTHON)")
    lines.append(f"gpu        {report.get('gpu') or 'none found (no nvidia-smi)'}")
    if report.get("running"):
        lines.append(report["connect_line"])
    return lines
