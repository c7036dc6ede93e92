"""The notebook's environment, carried into SSH sessions.

A notebook kernel sees the GPU through variables (PATH with the CUDA tools,
LD_LIBRARY_PATH with the driver's libraries, CUDA_*/NVIDIA_*/COLAB_*); an SSH
session starts from sshd's bare defaults and so "loses" the GPU. We hand the
kernel's values to our sshd with `SetEnv` in its private config rather than
`PermitUserEnvironment` + `~/.ssh/environment`: SetEnv is scoped to our sshd
alone, touches no file in the user's home, and gives logged-in users no way to
inject LD_PRELOAD-style variables (the reason OpenSSH disables
PermitUserEnvironment by default). SetEnv needs OpenSSH >= 7.8 (2018).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Dict, Mapping, Optional

CARRIED_NAMES = frozenset({
    "PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
})
CARRIED_PREFIXES = (
    "CUDA_", "NVIDIA_", "COLAB_", "TF_", "XLA_", "TPU_", "JAX_", "NCCL_", "CUDNN_", "TORCH_",
    "PYTORCH_", "HF_", "KAGGLE_", "LD_", "OMP_", "MKL_", "REMOTECTL_ENV_",
)
# Names that look like credentials stay home, even under a carried prefix (HF_TOKEN, KAGGLE_KEY).
_SECRETISH = re.compile(r"TOKEN|SECRET|PASSW|KEY|CREDENTIAL|AUTH|COOKIE", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def carried_environment(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The variables of `environ` (default: this process) that SSH sessions should see."""
    environ = os.environ if environ is None else environ
    carried = {}
    for name, value in environ.items():
        if not _NAME.match(name) or _SECRETISH.search(name):
            continue
        if "\n" in value or "\r" in value or "\0" in value:
            continue  # sshd_config is line-based: such a value cannot be written faithfully
        if name in CARRIED_NAMES or name.startswith(CARRIED_PREFIXES):
            carried[name] = value
    return carried


def quote_setenv(name: str, value: str) -> str:
    """One `"NAME=value"` argument as sshd's argv_split reads it (backslash escapes in quotes)."""
    escaped = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def setenv_directive(env: Mapping[str, str]) -> str:
    """A single `SetEnv` line: sshd keeps only the first SetEnv directive it reads."""
    if not env:
        return ""
    return "SetEnv " + " ".join(quote_setenv(k, env[k]) for k in sorted(env))


def session_environment() -> Dict[str, str]:
    """What our sshd sets: the carried variables, plus REMOTECTL_PYTHON, the interpreter `up` runs
    under, so an ssh session whose rc files put another Python first still finds this one."""
    env = carried_environment()
    if sys.executable:
        env["REMOTECTL_PYTHON"] = sys.executable
    return env
