"""The pinned cloudflared release: which asset fits this computer, where it is, how to fetch it.

We pin one release and its SHA-256 digests because the binary we fetch then runs as a
ProxyCommand with the user's SSH traffic (and, on the server, next to a root sshd): an
unverified download is never made executable. Platforms whose digest we could not verify
get the package-manager route instead of a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

from remote.errors import RemotectlError
from remote.files import atomic_write, fsync_dir

VERSION = "2024.11.1"
DEFAULT_BASE_URL = f"https://github.com/cloudflare/cloudflared/releases/download/{VERSION}"
BASE_URL_ENV = "REMOTECTL_CLOUDFLARED_BASE_URL"
RELEASE_PAGE = f"https://github.com/cloudflare/cloudflared/releases/tag/{VERSION}"

# (os, arch) -> (asset name, sha256 or None when no digest could be verified)
RELEASE: Dict[Tuple[str, str], Tuple[str, Optional[str]]] = {
    ("linux", "amd64"): ("cloudflared-linux-amd64",
                         "55d789465955ccfffcd61ba72807a2a4495002f7d9b7cc5eadcaa1f93c279d25"),
    ("linux", "386"): ("cloudflared-linux-386",
                       "5761d65fb6fb23ea8e401abe3e471e316ee275f4b054f3ff55fd26a84228d096"),
    ("darwin", "amd64"): ("cloudflared-darwin-amd64.tgz",
                          "f893f1bc9be8e1780a52f78942e64b4825b02a434020d3bf40f1b1fe43b3dcb9"),
    ("darwin", "arm64"): ("cloudflared-darwin-arm64.tgz",
                          "69cc267557352760b3da32f9926eddb9870f9319e17f8ef902c177eab44ba9f7"),
    ("linux", "arm64"): ("cloudflared-linux-arm64", None),
    ("windows", "amd64"): ("cloudflared-windows-amd64.exe", None),
}

_OS_NAMES = {"linux": "linux", "darwin": "darwin", "macos": "darwin", "windows": "windows"}
_ARCH_NAMES = {"x86_64": "amd64", "amd64": "amd64", "x64": "amd64", "aarch64": "arm64",
               "arm64": "arm64", "i386": "386", "i686": "386", "x86": "386", "386": "386"}

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Asset:
    """One downloadable file of the pinned release."""

    os: str
    arch: str
    name: str
    sha256: Optional[str]

    @property
    def is_archive(self) -> bool:
        return self.name.endswith(".tgz")


def _os_name(system: Optional[str]) -> str:
    name = (system or platform.system()).strip().lower()
    return _OS_NAMES.get(name, name)


def binary_name(system: Optional[str] = None) -> str:
    """`cloudflared.exe` on Windows, `cloudflared` elsewhere."""
    return "cloudflared.exe" if _os_name(system) == "windows" else "cloudflared"


def install_hint(system: Optional[str] = None) -> str:
    """Exact commands that install cloudflared on this OS by hand (a few lines)."""
    os_name = _os_name(system)
    if os_name == "windows":
        return ("Install cloudflared with:  winget install --id Cloudflare.cloudflared\n"
                "then open a new terminal so it is on PATH, and run the command again.")
    if os_name == "darwin":
        return ("Install cloudflared with:  brew install cloudflared\n"
                "or let remotectl fetch the pinned, checksum-verified release:  "
                "remotectl install-cloudflared")
    return ("Install cloudflared with Cloudflare's apt repository (Debian/Ubuntu):\n"
            "  curl -fsSL https://pkg.cloudflare.com/cloudflare-main.gpg | "
            "sudo tee /usr/share/keyrings/cloudflare-main.gpg >/dev/null\n"
            "  echo 'deb [signed-by=/usr/share/keyrings/cloudflare-main.gpg] "
            "https://pkg.cloudflare.com/cloudflared any main' | "
            "sudo tee /etc/apt/sources.list.d/cloudflared.list\n"
            "  sudo apt-get update && sudo apt-get install cloudflared\n"
            f"or the .deb/.rpm from {RELEASE_PAGE}, or (amd64/386) the pinned, "
            "checksum-verified release:  remotectl install-cloudflared")


def asset_for(system: Optional[str] = None, machine: Optional[str] = None) -> Asset:
    """The release asset for an OS/CPU as `platform.system()`/`platform.machine()` name them."""
    os_name = _os_name(system)
    raw_arch = (machine or platform.machine()).strip().lower()
    arch = _ARCH_NAMES.get(raw_arch, raw_arch)
    entry = RELEASE.get((os_name, arch))
    if entry is None:
        raise RemotectlError(f"cloudflared {VERSION} has no release for {os_name}/{raw_arch}",
                             hint=install_hint(os_name))
    return Asset(os=os_name, arch=arch, name=entry[0], sha256=entry[1])


def default_install_dir(system: Optional[str] = None) -> Path:
    """Where `remotectl install-cloudflared` keeps the binary on the user's computer."""
    if _os_name(system) == "windows":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "remotectl" / "bin"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "remotectl" / "bin"


def find_cloudflared(extra_dirs: Iterable[PathLike] = ()) -> Optional[Path]:
    """An absolute path to a runnable cloudflared: PATH first, then `extra_dirs` (the caches)."""
    found = shutil.which("cloudflared")
    if found:
        return Path(os.path.abspath(found))  # not resolved: a Homebrew link survives upgrades
    for folder in extra_dirs:
        candidate = Path(folder) / binary_name()
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return Path(os.path.abspath(candidate))
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".installed.json")


def _cached(dest: Path, asset: Asset, expected: str) -> bool:
    """True when `dest` is the very file an earlier install() verified for this asset."""
    try:
        record = json.loads(_marker(dest).read_text())
        return (dest.is_file() and record.get("asset") == asset.name
                and record.get("asset_sha256") == expected
                and record.get("binary_sha256") == _sha256_file(dest))
    except (OSError, ValueError, AttributeError):
        return False


class _Progress:
    """`downloading ...: 12.0/37.5 MB (32%)` on stderr; redraws on a terminal, few lines otherwise."""

    def __init__(self, label: str, total: Optional[int]) -> None:
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self.shown_step = -1
        self.shown_text = ""
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        mb = f"{done / 1e6:.1f}" + (f"/{self.total / 1e6:.1f} MB" if self.total else " MB")
        pct = int(100 * done / self.total) if self.total else None
        text = f"downloading {self.label}: {mb}" + (f" ({pct}%)" if pct is not None else "")
        if self.tty:
            now = time.monotonic()
            if final or now - self.last > 0.2:
                self.last = now
                sys.stderr.write("\r" + text + ("\n" if final else ""))
                sys.stderr.flush()
            return
        step = (pct // 25) if pct is not None else 0
        if (final or step > self.shown_step) and text != self.shown_text:
            self.shown_step, self.shown_text = step, text
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def _download(url: str, into: Path, label: str, hint: str) -> str:
    """Stream `url` into the open-for-us file `into`; return the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(into, "wb") as out:
            length = response.headers.get("Content-Length")
            progress = _Progress(label, int(length) if length and length.isdigit() else None)
            done = 0
            progress.update(0)
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                progress.update(done)
            progress.update(done, final=True)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        raise RemotectlError(f"could not download cloudflared from {url}: HTTP {exc.code} {exc.reason}",
                             hint=hint) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RemotectlError(f"could not download cloudflared from {url}: {reason}", hint=hint) from None
    return digest.hexdigest()


def _extract_binary(archive: Path, into: Path) -> None:
    """Copy the `cloudflared` member of a release .tgz into `into` (no other member is touched)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next((m for m in tar.getmembers()
                           if m.isfile() and Path(m.name).name == "cloudflared"), None)
            if member is None:
                raise RemotectlError(f"the cloudflared archive {archive.name} holds no cloudflared binary")
            source = tar.extractfile(member)
            with source, open(into, "wb") as out:
                shutil.copyfileobj(source, out)
                out.flush()
                os.fsync(out.fileno())
    except (tarfile.TarError, OSError) as exc:
        raise RemotectlError(f"could not unpack the cloudflared archive: {exc}") from None


def install(dest_dir: PathLike, base_url: Optional[str] = None,
            checksums: Optional[Mapping[str, str]] = None, system: Optional[str] = None,
            machine: Optional[str] = None) -> Path:
    """Fetch the pinned cloudflared into `dest_dir` (checksum first, then chmod and rename).

    A second call finds the verified file and downloads nothing. `checksums` maps asset
    names to digests and replaces the pinned ones (tests and mirrors of other builds);
    `base_url` (else env REMOTECTL_CLOUDFLARED_BASE_URL) is the folder holding the assets.
    """
    asset = asset_for(system, machine)
    hint = install_hint(asset.os)
    expected = (checksums or {}).get(asset.name, asset.sha256 if checksums is None else None)
    if not expected:
        raise RemotectlError(
            f"remotectl has no verified checksum for cloudflared {VERSION} on {asset.os}/{asset.arch},"
            " so it will not download an unverified binary", hint=hint)
    expected = expected.lower()
    folder = Path(dest_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / binary_name(asset.os)
    if _cached(dest, asset, expected):
        return Path(os.path.abspath(dest))

    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/") + "/" + asset.name
    temps = []
    try:
        fd, download = tempfile.mkstemp(prefix=".cloudflared.", suffix=".part", dir=folder)
        os.close(fd)
        temps.append(Path(download))
        actual = _download(url, Path(download), f"cloudflared {VERSION} ({asset.name})", hint)
        if actual != expected:
            raise RemotectlError(
                f"checksum mismatch for {asset.name}: expected sha256 {expected}, got {actual};"
                " the download was discarded",
                hint=f"The file at {url} is not the release remotectl pins. Try again later, or:\n{hint}")
        binary = Path(download)
        if asset.is_archive:
            fd, unpacked = tempfile.mkstemp(prefix=".cloudflared.", suffix=".bin", dir=folder)
            os.close(fd)
            temps.append(Path(unpacked))
            _extract_binary(Path(download), Path(unpacked))
            binary = Path(unpacked)
        os.chmod(binary, 0o755)
        os.replace(binary, dest)
        fsync_dir(folder)
        record = {"version": VERSION, "asset": asset.name, "asset_sha256": expected,
                  "binary_sha256": _sha256_file(dest), "url": url}
        atomic_write(_marker(dest), json.dumps(record, indent=2) + "\n", mode=0o644)
    finally:
        for temp in temps:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
    return Path(os.path.abspath(dest))
