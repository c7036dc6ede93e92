"""`remotectl doctor --remote`: is this machine ready to be worked on over SSH, and if not, the fix.

Looks at what `up` recorded (sshd and tunnel alive, sshd answering), the GPU as the
session sees it, torch and CUDA as a fresh `python` sees them (the one a VS Code terminal
would run), and the disk under `saved/`. Reads only; changes nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from remote.errors import RemotectlError
from remote.findings import NOTE, OK, PROBLEM, Finding
from remote.server import control, state

MIN_FREE_GB = 1.0  # a few checkpoints of a mid-sized model
LOW_FREE_GB = 5.0

TORCH_PY = ("import json, sys\n"
            "r = {'python': sys.version.split()[0]}\n"
            "try:\n"
            "    import torch\n"
            "    r.update(torch=torch.__version__, cuda_build=torch.version.cuda,\n"
            "             cuda=bool(torch.cuda.is_available()),\n"
            "             devices=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])\n"
            "except Exception as exc:\n"
            "    r['error'] = f'{type(exc).__name__}: {exc}'[:300]\n"
            "print(json.dumps(r))\n")


def server(state_dir: Path) -> List[Finding]:
    """sshd and the tunnel, as `up` recorded them in state.json, checked live."""
    folder = shlex.quote(str(state_dir))
    again = f"remotectl down --state-dir {folder}; then run the bootstrap cell (or `remotectl up`) again"
    try:
        report = control.status(state_dir)
    except RemotectlError as exc:
        return [Finding("server", PROBLEM, exc.message, exc.hint)]
    if not report.get("session"):
        return [Finding("server", PROBLEM, f"no server recorded in {state_dir}",
                        "run the bootstrap cell, or: remotectl up   (--state-dir if you used one)")]
    found = []
    where = f"{report.get('local_host')}:{report.get('local_port')}"
    if report.get("sshd_up"):
        found.append(Finding("sshd", OK, f"answers on {where} (pid {(report.get('pids') or {}).get('sshd')})"))
    else:
        found.append(Finding("sshd", PROBLEM, f"not answering on {where}; see {state_dir / 'sshd.log'}", again))
    kind = report.get("tunnel")
    if report.get("tunnel_up"):
        found.append(Finding("tunnel", OK, f"{kind} {report.get('public_url')}"))
    else:
        log = state_dir / ("ngrok.log" if kind == "ngrok" else "supervisor.log")
        found.append(Finding("tunnel", PROBLEM, f"the {kind} tunnel is down (was {report.get('public_url')}); "
                             f"see {log}", again))
    owner = (report.get("alive") or {}).get("owner")
    if report.get("mode") == "supervisor" and owner is False:
        found.append(Finding("supervisor", PROBLEM, "the background supervisor has exited", again))
    return found


def gpu() -> Finding:
    """The GPU as this session sees it: `nvidia-smi -L`, or why it is not there."""
    smi = shutil.which("nvidia-smi")
    device = any(Path("/dev").glob("nvidia[0-9]*"))
    if not smi:
        if device:
            return Finding("GPU", PROBLEM, "an NVIDIA device exists but `nvidia-smi` is not on this session's "
                           "PATH: the notebook's environment did not reach it",
                           "start the server from the notebook (bootstrap cell or `remotectl up`), which "
                           "carries PATH and LD_LIBRARY_PATH into SSH sessions")
        return Finding("GPU", NOTE, "no NVIDIA GPU here (no nvidia-smi)",
                       "on Colab: Runtime > Change runtime type > a GPU, then run the bootstrap cell again")
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("GPU", PROBLEM, f"nvidia-smi -L failed: {exc}", "restart the runtime")
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not lines:
        why = (out.stderr or out.stdout).strip().splitlines()
        return Finding("GPU", PROBLEM, f"nvidia-smi -L: {why[0] if why else 'no GPU listed'}",
                       "restart the runtime (Runtime > Restart session), or pick a GPU runtime")
    return Finding("GPU", OK, "; ".join(lines))


def torch_cuda(python: Optional[str] = None, timeout: float = 180.0) -> Finding:
    """torch and CUDA as a fresh `python` sees them (importing torch takes seconds)."""
    python = python or shutil.which("python") or shutil.which("python3") or sys.executable
    try:
        out = subprocess.run([python, "-c", TORCH_PY], capture_output=True, text=True, timeout=timeout)
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return Finding("torch", PROBLEM, f"{python} could not report on torch: {exc}",
                       "check that python works in this session: python -c 'import torch'")
    if "torch" not in data:
        return Finding("torch", PROBLEM, f"{python} (Python {data.get('python')}) cannot import torch: "
                       f"{data.get('error')}", "pip install -e '.[train]'   (Colab ships torch already)")
    where = f"torch {data['torch']} on Python {data['python']} ({python})"
    has_gpu = shutil.which("nvidia-smi") is not None
    if data.get("cuda"):
        return Finding("torch", OK, f"{where}: CUDA available ({', '.join(data.get('devices') or [])})")
    if has_gpu:
        build = f"CUDA {data['cuda_build']} build" if data.get("cuda_build") else "a CPU-only build"
        return Finding("torch", PROBLEM, f"{where}: a GPU is present but torch.cuda.is_available() is False "
                       f"({build})", "install a CUDA build of torch matching the driver (see pytorch.org), "
                       "or restart the runtime")
    return Finding("torch", OK, f"{where}: CUDA not available (no GPU here), training runs on the CPU")


def disk(saved: Path) -> Finding:
    """Free space where checkpoints land."""
    probe = saved
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free = usage.free / 1e9
    detail = f"{free:.1f} GB free of {usage.total / 1e9:.0f} GB for {saved}"
    tidy = ("delete old runs under saved/models, set trainer.keep_last in the config, "
            "or keep saved/ on Drive")
    if free < MIN_FREE_GB:
        return Finding("disk", PROBLEM, detail + ": checkpoints may not fit", tidy)
    if free < LOW_FREE_GB:
        return Finding("disk", NOTE, detail + ": getting low", tidy)
    return Finding("disk", OK, detail)


def default_saved() -> Path:
    """`./saved` of the project folder we are in, else the current folder."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "saved").is_dir() and (folder / "project").is_dir():
            return folder / "saved"
    return here / "saved" if (here / "saved").is_dir() else here


def run(state_dir: Optional[str] = None, saved: Optional[str] = None, python: Optional[str] = None) -> List[Finding]:
    """Every remote-side check."""
    folder = state.resolve(state_dir)
    findings = server(folder)
    findings.append(gpu())
    findings.append(torch_cuda(python))
    findings.append(disk(Path(os.path.abspath(saved)) if saved else default_saved()))
    return findings


def has_server(state_dir: Optional[str] = None) -> bool:
    """Whether this machine looks like a remote end (a server was recorded here)."""
    return (state.resolve(state_dir) / state.STATE_FILE).exists()
