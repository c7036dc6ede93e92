"""Which Python an ssh command gets, against the one `up` ran under.

An ssh command runs through the login user's shell, and bash reads `~/.bashrc` even for
`ssh host cmd`. A `conda init`, `pyenv init` or `source venv/bin/activate` there puts another
Python first on PATH, ahead of the PATH the server carried from the notebook; then
`python project/train.py` over ssh (and VS Code's terminal) runs an interpreter without the
notebook's torch. The server hands its own interpreter to ssh sessions as `REMOTECTL_PYTHON`
(sshd's SetEnv, which rc files do not touch), so the probe can compare the two and the
report can name the mismatch, its likely cause and the full path that works.

Everything here comes from the remote machine, so it is untrusted: parsed strictly,
length-capped, and printed with control characters replaced.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

MARK = "@@interp "
NAMES = ("python3", "python")  # what people type over ssh, in the order they are compared
UP = "up"  # the label of the interpreter `up` ran under ($REMOTECTL_PYTHON)
_MAX = 1024

# Runs on each candidate interpreter (kept Python 2 compatible, so an old `python` still
# answers instead of failing to parse). torch's version is read from its files, not imported.
_FACTS_PY = r"""
import json, os, re, sys
r = {"label": sys.argv[1], "path": sys.argv[2], "executable": sys.executable,
     "real": os.path.realpath(sys.executable), "prefix": sys.prefix,
     "version": "%d.%d.%d" % tuple(sys.version_info[:3]), "torch": None}
try:
    import importlib.util
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin:
        text = open(os.path.join(os.path.dirname(spec.origin), "version.py")).read()
        found = re.search(r"^__version__[^=]*=\s*[\x27\x22]([^\x27\x22]+)", text, re.M)
        r["torch"] = found.group(1) if found else "?"
except Exception:
    pass
print("@@interp " + json.dumps(r))
"""


def shell_snippet() -> str:
    """POSIX shell: the facts of `python3`, `python` (as PATH resolves them) and $REMOTECTL_PYTHON."""
    code = base64.b64encode(_FACTS_PY.encode()).decode()
    run = f"-c 'import base64;exec(base64.b64decode(\"{code}\"))'"
    # One that does not run still says so, with its path (a path with a quote just drops the line).
    failed = "printf '@@interp {\"label\": \"%s\", \"path\": \"%s\"}\\n'"
    return (f"for rc_py in {' '.join(NAMES)}; do rc_p=$(command -v $rc_py 2>/dev/null) || continue; "
            f'"$rc_p" {run} $rc_py "$rc_p" 2>/dev/null || {failed} $rc_py "$rc_p"; done; '
            'if [ -n "${REMOTECTL_PYTHON:-}" ]; then '
            f'"$REMOTECTL_PYTHON" {run} {UP} "$REMOTECTL_PYTHON" 2>/dev/null || {failed} {UP} "$REMOTECTL_PYTHON"; fi')


@dataclass(frozen=True)
class Interpreter:
    """One Python as the remote machine described it (untrusted text, already length-capped)."""

    label: str  # "python3", "python" or "up"
    path: Optional[str] = None  # what PATH gave (a shim, a symlink) or $REMOTECTL_PYTHON
    executable: Optional[str] = None  # its sys.executable; None: it did not run
    prefix: Optional[str] = None  # its sys.prefix: one environment (a venv differs from its base)
    real: Optional[str] = None
    version: Optional[str] = None
    torch: Optional[str] = None

    @property
    def runs(self) -> bool:
        return self.executable is not None

    def same_as(self, other: Interpreter) -> bool:
        """One environment: same sys.prefix and the same binary behind any symlink or shim."""
        return self.runs and other.runs and (self.prefix, self.real) == (other.prefix, other.real)

    def describe(self) -> str:
        where = _printable(self.path or self.label)
        if not self.runs:
            return f"{where} (does not run)"
        if self.executable != self.path:  # a shim or a symlink: say what really runs
            where += f" -> {_printable(self.executable or '')}"
        torch = f"torch {_printable(self.torch)}" if self.torch else "no torch"
        return f"{where} (Python {_printable(self.version or '?')}, {torch})"


@dataclass
class Comparison:
    """What `check` reports: the interpreter `up` ran under, and each name that differs from it."""

    up: Optional[Interpreter]
    found: Dict[str, Interpreter]  # name -> the interpreter PATH gives for it over ssh
    differ: List[str]  # names whose interpreter is not `up`'s

    @property
    def ok(self) -> bool:
        return not self.differ

    def as_dict(self) -> Dict[str, Any]:
        return {"up": asdict(self.up) if self.up else None,
                "ssh": {name: asdict(found) for name, found in self.found.items()},
                "differ": list(self.differ), "ok": self.ok}


def parse(output: str) -> Dict[str, Interpreter]:
    """label -> Interpreter, from the probe's output; malformed or foreign lines are ignored."""
    found: Dict[str, Interpreter] = {}
    for line in output.splitlines():
        if not line.startswith(MARK) or len(line) > 8 * _MAX:
            continue
        try:
            data = json.loads(line[len(MARK):])
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("label") not in (*NAMES, UP) or data["label"] in found:
            continue
        fields = {name: _text(data.get(name)) for name in
                  ("path", "executable", "prefix", "real", "version", "torch")}
        found[data["label"]] = Interpreter(label=data["label"], **fields)
    return found


def compare(found: Dict[str, Interpreter]) -> Optional[Comparison]:
    """None when the server did not say which Python it runs (an older server, a plain sshd)."""
    up = found.get(UP)
    if up is None:
        return None
    names = {name: found[name] for name in NAMES if name in found}
    differ = [name for name, other in names.items() if not other.same_as(up)]
    if not names:
        differ = list(NAMES)  # no Python on PATH at all over ssh
    return Comparison(up=up, found=names, differ=differ)


def advice(comparison: Optional[Comparison]) -> Optional[str]:
    """The warning to print when ssh commands get another Python, or None when all is well."""
    if comparison is None or comparison.ok or comparison.up is None:
        return None
    up = comparison.up
    if not up.runs:
        return (f"the Python the server ran under, {_printable(up.path or '?')}, does not run "
                "over ssh; was it removed? Start the server again (the bootstrap cell).")
    if comparison.found:
        first = f"over ssh, {_which(comparison)}: not the Python the server ran under, {up.describe()}."
    else:
        first = f"over ssh, neither `python3` nor `python` is on PATH; the server ran under {up.describe()}."
    full = shlex.quote(_printable(up.executable or ""))
    folder = shlex.quote(_printable((up.executable or "").rsplit("/", 1)[0] or "/"))
    return "\n".join([
        first,
        "Likely cause: a shell start-up file on the remote machine (~/.bashrc, ~/.profile: `conda init`, "
        f"`pyenv init`, an `activate` line) puts another Python first on PATH for ssh sessions{_tool(comparison)}.",
        f"Fix: run the full path, e.g. `{full} project/train.py -c project/config.json` "
        "(ssh sessions also have it as $REMOTECTL_PYTHON); in VS Code choose it with "
        f"\"Python: Select Interpreter\"; or end that start-up file with `export PATH={folder}:$PATH`.",
    ])


def _which(comparison: Comparison) -> str:
    """"`python3` is A; `python` is B", or "`python3` and `python` are A" when both are one."""
    first = comparison.found[comparison.differ[0]]
    if len(comparison.differ) > 1 and all(comparison.found[n].same_as(first) for n in comparison.differ):
        return " and ".join(f"`{n}`" for n in comparison.differ) + f" are {first.describe()}"
    return "; ".join(f"`{n}` is {comparison.found[n].describe()}" for n in comparison.differ)


def _tool(comparison: Comparison) -> str:
    """Name the usual suspect when the path gives it away."""
    paths = " ".join(f"{i.path} {i.executable}" for n, i in comparison.found.items() if n in comparison.differ)
    for marker, tool in (("/.pyenv/", "pyenv init"), ("conda", "conda init"), ("/envs/", "conda init")):
        if marker in paths:
            return f" (here the path points at `{tool}`)"
    return ""


def report(output: str) -> Optional[Dict[str, Any]]:
    """The probe's JSON field: the comparison plus the warning text (None: nothing to compare)."""
    comparison = compare(parse(output))
    if comparison is None:
        return None
    return {**comparison.as_dict(), "advice": advice(comparison)}


def _text(value: Any) -> Optional[str]:
    return value[:_MAX] if isinstance(value, str) and value else None


def _printable(text: str) -> str:
    """Remote text for a terminal: control characters (escape sequences included) replaced."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", text)
