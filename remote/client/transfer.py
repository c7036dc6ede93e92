"""pull/push: copies that follow rsync's rules and treat the remote as untrusted.

Paths, as rsync has them (people already know them):
- a folder SRC lands as DEST/<basename of SRC>, whether DEST exists or not; `SRC/` (or
  `SRC/.`) copies SRC's contents into DEST;
- a file SRC lands in DEST when DEST is a folder (or ends in `/`), else as the file DEST;
- "already there" means the same size and mtime; a finished copy gets the source's mtime
  and mode (without set-id bits; a pull's within the umask), so a second identical run copies nothing;
- symlinks are copied as symlinks when they point inside the tree, never followed.

Safety, because a card can come from anyone and the machine behind it may be hostile:
- every remote name must be one plain path component (untrusted.name_problem); an entry
  that is not, or a symlink leading out of the source tree, is refused with a warning
  naming it, and the rest of the copy completes (the command then exits 1);
- nothing is written through a symlink on the receiving side: every folder on the way is
  checked with lstat, files are opened with O_NOFOLLOW, and symlinks made by the copy are
  checked once more at the end (a chain of links could otherwise lead out);
- a partial copy is `<name>.remotectl.part` beside `<name>.remotectl.part.json`, which
  records the source's size and mtime when the part began: it is continued only while the
  source still has both, else the copy restarts; a source that changes while it is being
  copied is not put in place.
`--verify` also compares SHA-256 on both ends (`sha256sum` on the remote, over the same
connection) and copies again on a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from remote.client import sftp as sf
from remote.client.progress import Progress
from remote.client.untrusted import clean_line, name_problem, shown_name
from remote.errors import BadInput, RemotectlError

PART_SUFFIX = ".remotectl.part"
META_SUFFIX = PART_SUFFIX + ".json"
LINK_TEMP = ".remotectl-link"
MAX_ENTRIES = 2_000_000  # in one copy: a listing that never ends is an attack, not a folder
MAX_DEPTH = 256
MAX_META = 4096
HASH_BATCH_CHARS = 32_000
DIGEST_MARK = "@@sha256"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
BINARY = getattr(os, "O_BINARY", 0)

Warn = Callable[[str], None]


@dataclass
class TransferStats:
    files: int = 0  # copied now (new or changed)
    skipped: int = 0  # already there: same size and mtime (or the same link)
    resumed: int = 0  # continued from a verified part
    bytes: int = 0  # bytes moved now
    links: int = 0  # symlinks made
    verified: int = 0  # files whose SHA-256 matched on both ends (--verify)
    recopied: int = 0  # copied again after a --verify mismatch
    refused: List[str] = field(default_factory=list)  # entries not copied, for safety
    failed: List[str] = field(default_factory=list)  # entries that could not be copied

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def problems(self) -> int:
        return len(self.refused) + len(self.failed)


@dataclass
class Item:
    """One entry of a copy: where it lands (parts under the destination root) and what it is."""

    rel: Tuple[str, ...]
    kind: str  # file | dir | link
    source: str  # remote path (pull) or local path (push)
    size: int = 0
    mtime: Optional[int] = None
    atime: Optional[int] = None
    mode: Optional[int] = None
    target: Optional[str] = None  # a link's (relative, checked) target
    stamp: Optional[int] = None  # push: the local file's st_mtime_ns, for the part record


class Refused(Exception):
    """One entry is not copied (the message says why); the copy goes on."""


def _join(*parts: str) -> str:
    return posixpath.join(*parts) if parts else "."


def _shown_rel(rel: Tuple[str, ...]) -> str:
    return clean_line("/".join(rel), limit=200)


def _is_contents(text: str) -> bool:
    """`SRC/` or `SRC/.`: copy what is inside SRC, not SRC itself."""
    stripped = text.replace("\\", "/") if os.name == "nt" else text
    return len(stripped) > 1 and (stripped.endswith("/") or stripped.endswith("/.") or stripped == ".")


def _last_component(text: str) -> str:
    cleaned = text.replace("\\", "/") if os.name == "nt" else text
    return posixpath.basename(cleaned.rstrip("/")) or "/"


# -- the remote side ------------------------------------------------------------------
class RemotePaths:
    """Where relative remote paths start: the host's folder (the card's), else the login folder."""

    def __init__(self, client: sf.SftpClient, folder: Optional[str]) -> None:
        self.home = client.realpath(".")
        self.base = self.home
        if folder:
            try:
                attrs = client.try_stat(folder)
            except sf.SftpError:
                attrs = None
            if attrs is not None and attrs.kind == "dir":
                self.base = folder

    def resolve(self, text: str) -> str:
        if text in ("~", "~/"):
            path = self.home
        elif text.startswith("~/"):
            path = posixpath.join(self.home, text[2:])
        elif text.startswith("/"):
            path = text
        else:
            path = posixpath.join(self.base, text)
        return posixpath.normpath(path) if path != "/" else "/"


def _link_target_inside(root: str, rel_parent: Tuple[str, ...], target: str) -> Optional[str]:
    """`target` as a relative link that stays inside the tree at `root`, or None if it leaves.

    The check is lexical on the target as listed; what the links made locally resolve to is
    checked once more after they exist (see _check_links).
    """
    if not target or any(ord(c) < 32 or ord(c) == 127 for c in target) or "\\" in target:
        return None
    here = _join(*rel_parent)
    if target.startswith("/"):
        absolute = posixpath.normpath(target)
        root = posixpath.normpath(root)
        if absolute != root and not absolute.startswith(root.rstrip("/") + "/"):
            return None
        inside = posixpath.relpath(absolute, root)
    else:
        inside = posixpath.normpath(posixpath.join(here, target))
    if inside == ".." or inside.startswith("../") or inside.startswith("/"):
        return None
    relative = posixpath.relpath(inside, here)
    if any(p not in ("..", ".") and name_problem(p) for p in relative.split("/")):
        return None
    return relative


def _walk_remote(client: sf.SftpClient, root: str, warn: Warn, stats: TransferStats) -> List[Item]:
    """Every entry under `root` (not following links), with bad names refused one by one."""
    items: List[Item] = []
    stack: List[Tuple[Tuple[str, ...], str]] = [((), root)]
    real_root = client.realpath(root)
    count = 0
    while stack:
        rel, path = stack.pop()
        seen = set()
        for name, attrs, _ in client.listdir(path, limit=MAX_ENTRIES):
            if name in (".", ".."):
                continue
            count += 1
            if count > MAX_ENTRIES:
                raise sf.ProtocolError(f"{clean_line(root)} lists more than {MAX_ENTRIES} entries")
            here = rel + (name,)
            why = name_problem(name) or (f"a name ending in {clean_line(name[name.rfind('.remotectl'):])!r}, "
                                        "which remotectl keeps for its partial copies and links"
                                        if name.endswith((PART_SUFFIX, META_SUFFIX, LINK_TEMP)) else None)
            if why is None and name in seen:
                why = "listed twice in one folder"
            if why:
                _refuse(stats, warn, "/".join(rel + (shown_name(name),)), why)
                continue
            seen.add(name)
            child = posixpath.join(path, name)
            kind = attrs.kind
            if kind == "dir":
                if len(here) > MAX_DEPTH:
                    _refuse(stats, warn, _shown_rel(here), f"nested deeper than {MAX_DEPTH} folders")
                    continue
                items.append(Item(here, "dir", child, mtime=attrs.mtime, atime=attrs.atime, mode=attrs.perm))
                stack.append((here, child))
            elif kind == "file":
                items.append(Item(here, "file", child, size=attrs.size or 0, mtime=attrs.mtime,
                                  atime=attrs.atime, mode=attrs.perm))
            elif kind == "link":
                try:
                    target = client.readlink(child)
                except sf.SftpError as exc:
                    _fail(stats, warn, _shown_rel(here), f"cannot read the link: {exc.message}")
                    continue
                inside = _link_target_inside(real_root, rel, target)
                if inside is None:
                    _refuse(stats, warn, _shown_rel(here),
                            f"a symlink pointing out of the source tree (to {shown_name(target)})")
                    continue
                items.append(Item(here, "link", child, target=inside))
            else:
                warn(f"skipped {_shown_rel(here)}: not a file, folder or symlink")
    return items


def _refuse(stats: TransferStats, warn: Warn, shown: str, why: str) -> None:
    stats.refused.append(shown)
    warn(f"refused {shown}: {why}; nothing written for it")


def _fail(stats: TransferStats, warn: Warn, shown: str, why: str) -> None:
    stats.failed.append(shown)
    warn(f"could not copy {shown}: {why}")


# -- the local side -------------------------------------------------------------------
class LocalTree:
    """Folders under one destination root, made or checked one lstat at a time."""

    def __init__(self, root: Path, root_must_not_be_link: bool) -> None:
        self.root = Path(os.path.abspath(root))
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode) and root_must_not_be_link:
            raise RemotectlError(f"{self.root} is a symlink; remotectl does not write through it",
                                 "Remove the link or pull into another folder.")
        if st is not None and not stat.S_ISDIR(os.stat(self.root).st_mode):
            raise BadInput(f"{self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self._ok = {(): self.root}
        self.made: List[Tuple[str, ...]] = []

    def folder(self, rel: Tuple[str, ...]) -> Path:
        """The folder at `rel`, made if missing; Refused if a link or a file is in the way."""
        if rel in self._ok:
            return self._ok[rel]
        parent = self.folder(rel[:-1])
        path = parent / rel[-1]
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o700)
            self.made.append(rel)
        else:
            if stat.S_ISLNK(st.st_mode):
                raise Refused(f"{path} is a symlink here; nothing is written through it")
            if not stat.S_ISDIR(st.st_mode):
                raise Refused(f"{path} is a file here, where the copy needs a folder")
        self._ok[rel] = path
        return path


def _read_meta_local(meta: Path) -> Optional[dict]:
    try:
        st = os.lstat(meta)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_META:
            return None
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _local_resume_offset(part: Path, meta: Path, record: dict, size: int) -> int:
    """The length of a part worth continuing: its record matches the source now, else 0."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        _unlink_quiet(part)  # our own reserved name, holding something else: not written through
        return 0
    if _read_meta_local(meta) != record or st.st_size > size:
        return 0
    return st.st_size


def _pull_file(client: sf.SftpClient, tree: LocalTree, item: Item, stats: TransferStats, bar: Progress,
               force: bool = False) -> bool:
    """Copy one remote file into the tree; True when the file is now in place."""
    parent = tree.folder(item.rel[:-1])
    name = item.rel[-1]
    target = parent / name
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise Refused(f"{target} is a symlink here; nothing is written through it")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise Refused(f"{target} is a folder here")
    if st is not None and not force and st.st_size == item.size and item.mtime is not None \
            and int(st.st_mtime) == item.mtime:
        stats.skipped += 1
        bar.update(item.size)
        return True
    part, meta = parent / (name + PART_SUFFIX), parent / (name + META_SUFFIX)
    record = {"v": 1, "source": item.source, "size": item.size, "mtime": item.mtime}
    offset = 0 if force else _local_resume_offset(part, meta, record, item.size)
    if offset:
        stats.resumed += 1
    else:
        _unlink_quiet(part)
        from remote.files import atomic_write

        atomic_write(meta, json.dumps(record), mode=0o600)
    bar.update(offset)
    handle = client.open(item.source, sf.F_READ)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | NOFOLLOW | BINARY, 0o600)
        with open(fd, "wb", buffering=0) as sink:  # replies are 32-256 KB: no buffer to copy into
            sink.seek(offset)
            sink.truncate()

            def take(data) -> None:
                view = memoryview(data)
                while view:
                    view = view[sink.write(view):]
                stats.bytes += len(data)
                bar.update(len(data))

            reached = client.download(handle, offset, item.size, take, path=item.source)
            os.fsync(sink.fileno())
        after = client.fstat(handle)
    finally:
        client.close(handle)
    if reached != item.size or after.size != item.size or after.mtime != item.mtime:
        _unlink_quiet(part)
        _unlink_quiet(meta)
        raise Refused("it changed on the remote while it was being copied; run the pull again")
    if item.mode is not None:
        os.chmod(part, item.mode & 0o777 & ~_umask())
    if item.mtime is not None:
        os.utime(part, (item.atime if item.atime is not None else item.mtime, item.mtime))
    os.replace(part, target)
    _unlink_quiet(meta)
    stats.files += 1
    return True


def _make_local_link(tree: LocalTree, item: Item, stats: TransferStats) -> Optional[Path]:
    parent = tree.folder(item.rel[:-1])
    path = parent / item.rel[-1]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(path) == item.target:
        stats.skipped += 1
        return path
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise Refused(f"{path} is a folder here")
    temp = parent / (item.rel[-1] + LINK_TEMP)
    _unlink_quiet(temp)
    try:
        os.symlink(item.target, temp)
    except OSError as exc:  # e.g. Windows without the privilege to make links
        raise Refused(f"cannot make a symlink here: {exc.strerror or exc}") from None
    os.replace(temp, path)
    stats.links += 1
    return path


def _check_links(tree: LocalTree, made: Dict[Tuple[str, ...], Path], stats: TransferStats, warn: Warn) -> None:
    """Remove links that resolve outside the tree now that all exist (a chain of links, each
    harmless alone, can lead out); repeat until none does."""
    root = os.path.realpath(tree.root)
    changed = True
    while changed:
        changed = False
        for rel, path in list(made.items()):
            real = os.path.realpath(path)
            if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                _unlink_quiet(path)
                del made[rel]
                stats.links -= 1
                _refuse(stats, warn, _shown_rel(rel), "a symlink that, with the others, leads out of the tree")
                changed = True


def _finish_local_dirs(tree: LocalTree, dirs: List[Item]) -> None:
    """Folder modes and mtimes last (writing files into a folder changes its mtime)."""
    for item in sorted(dirs, key=lambda i: len(i.rel), reverse=True):
        path = tree.root.joinpath(*item.rel)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                continue
            if item.mode is not None:
                os.chmod(path, (item.mode & 0o777 & ~_umask()) | 0o700)
            if item.mtime is not None:
                os.utime(path, (item.atime if item.atime is not None else item.mtime, item.mtime))
        except OSError:
            pass


def _umask() -> int:
    """This process's umask: a pulled file keeps its mode (0600 stays 0600) within it, as tar
    extracts for a user, so a remote cannot make files on this laptop writable by others."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sha256_local(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def remote_sha256(run: Callable[[str], bytes], paths: List[str]) -> List[Optional[str]]:
    """SHA-256 of each remote path, in order (None where the remote gave no valid digest)."""
    out: List[Optional[str]] = []
    prelude = ("if command -v sha256sum >/dev/null 2>&1; then h='sha256sum'; "
               "else h='shasum -a 256'; fi; for f in")
    batch: List[str] = []

    def flush() -> None:
        if not batch:
            return
        # Each digest on its own marked, numbered line: what a start-up file prints for every
        # command (`echo Welcome` in ~/.bashrc) must not shift one file's digest onto another.
        command = f"{prelude} {' '.join(shlex.quote(p) for p in batch)}; do " \
                  "d=$($h < \"$f\" 2>/dev/null); printf '%s %d %.64s\\n' " \
                  f"{DIGEST_MARK} \"$i\" \"$d\"; i=$((i+1)); done"
        found: Dict[int, str] = {}
        for line in run("i=0; " + command).decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == DIGEST_MARK and parts[1].isdigit() and len(parts[2]) == 64 \
                    and all(c in "0123456789abcdefABCDEF" for c in parts[2]):
                found.setdefault(int(parts[1]), parts[2].lower())
        out.extend(found.get(i) for i in range(len(batch)))
        batch.clear()

    for path in paths:
        if sum(len(p) + 3 for p in batch) + len(path) > HASH_BATCH_CHARS:
            flush()
        batch.append(path)
    flush()
    return out


# -- pull -----------------------------------------------------------------------------
def pull(client: sf.SftpClient, run: Callable[[str], bytes], source: str, dest: str = ".",
         folder: Optional[str] = None, progress: bool = True, verify: bool = False,
         warn: Optional[Warn] = None) -> TransferStats:
    """Copy remote SOURCE (file or folder) to local DEST by the rules in this module's doc."""
    warn = warn or (lambda message: None)
    stats = TransferStats()
    paths = RemotePaths(client, folder)
    src = paths.resolve(source)
    contents = _is_contents(source)
    attrs = client.try_stat(src)
    if attrs is None:
        raise BadInput(f"remote path {clean_line(source)} does not exist (looked for {clean_line(src)})")
    dest_path = Path(dest)
    dest_is_folder = dest.endswith(("/", os.sep)) or dest_path.is_dir()
    if attrs.kind == "dir":
        base = _last_component(src)
        if not contents and (base == "/" or name_problem(base)):
            raise BadInput(f"cannot name a local folder after {clean_line(source)}: give it as {source.rstrip('/')}/"
                           " to copy what is inside")
        tree = LocalTree(dest_path if contents else dest_path / base, root_must_not_be_link=not contents)
        items = _walk_remote(client, src, warn, stats)
        label = f"pull {clean_line(base)}"
    elif attrs.kind == "file":
        if contents:
            raise BadInput(f"remote {clean_line(source)} is a file, not a folder (drop the trailing '/')")
        name = _last_component(src) if dest_is_folder else dest_path.name
        if name_problem(name):
            raise BadInput(f"cannot name a local file {clean_line(name)!r}")
        tree = LocalTree(dest_path if dest_is_folder else (dest_path.parent if str(dest_path.parent) else Path(".")),
                         root_must_not_be_link=False)
        items = [Item((name,), "file", src, size=attrs.size or 0, mtime=attrs.mtime, atime=attrs.atime,
                      mode=attrs.perm)]
        label = f"pull {clean_line(_last_component(src))}"
    else:
        raise BadInput(f"remote {clean_line(source)} is neither a file nor a folder")
    placed = _copy_items(items, tree, label, progress, _pull_file, client, stats, warn)
    made: Dict[Tuple[str, ...], Path] = {}
    for item in (i for i in items if i.kind == "link"):
        path = _guard(stats, warn, item, _make_local_link, tree, item, stats)
        if path is not None:
            made[item.rel] = path
    _check_links(tree, made, stats, warn)
    if verify and placed:
        _verify_pull(client, run, tree, placed, stats, warn)
    _finish_local_dirs(tree, [i for i in items if i.kind == "dir"])
    return stats


def _copy_items(items: List[Item], tree, label: str, progress: bool, copy_file, client: sf.SftpClient,
                stats: TransferStats, warn: Warn) -> List[Item]:
    """Folders first, then the files under one progress bar; the files copied (pull and push alike:
    `copy_file` is _pull_file or _push_file, `tree` the matching confined tree)."""
    files = [i for i in items if i.kind == "file"]
    bar = Progress(sum(i.size for i in files), label, progress)
    placed: List[Item] = []
    try:
        for item in items:
            if item.kind == "dir":
                _guard(stats, warn, item, tree.folder, item.rel)
        for item in files:
            if _guard(stats, warn, item, copy_file, client, tree, item, stats, bar):
                placed.append(item)
    finally:
        bar.close()
    return placed


def _guard(stats: TransferStats, warn: Warn, item: Item, action, *args, **kwargs):
    """Run one entry's step; a Refused or an SFTP error counts against that entry only."""
    try:
        return action(*args, **kwargs)
    except Refused as exc:
        _refuse(stats, warn, _shown_rel(item.rel), str(exc))
    except sf.SftpError as exc:
        _fail(stats, warn, _shown_rel(item.rel), exc.message)
    except ConnectionError:
        raise  # the link itself broke (a pipe to ssh): no later entry can go either
    except OSError as exc:
        _fail(stats, warn, _shown_rel(item.rel), clean_line(exc.strerror or exc))
    return None


def _verify_pull(client, run, tree: LocalTree, placed: List[Item], stats: TransferStats, warn: Warn) -> None:
    remote = remote_sha256(run, [i.source for i in placed])
    for item, digest in zip(placed, remote):
        path = tree.root.joinpath(*item.rel)
        if digest is not None and _sha256_local(path) == digest:
            stats.verified += 1
            continue
        if digest is None:
            _fail(stats, warn, _shown_rel(item.rel), "the remote gave no SHA-256 for it (no sha256sum there?)")
            continue
        stats.recopied += 1
        bar = Progress(item.size, f"again {_shown_rel(item.rel)}", False)
        if _guard(stats, warn, item, _pull_file, client, tree, item, stats, bar, force=True):
            again = remote_sha256(run, [item.source])[0]
            if again is not None and _sha256_local(path) == again:
                stats.verified += 1
            else:
                _fail(stats, warn, _shown_rel(item.rel), "SHA-256 still differs after copying it again")


# -- push -----------------------------------------------------------------------------
class RemoteTree:
    """Folders under one remote destination root, made or checked one lstat at a time."""

    def __init__(self, client: sf.SftpClient, root: str, root_must_not_be_link: bool) -> None:
        self.client, self.root = client, root
        attrs = client.try_lstat(root)
        if attrs is not None and attrs.kind == "link":
            if root_must_not_be_link:
                raise RemotectlError(f"remote {clean_line(root)} is a symlink; remotectl does not write "
                                     "through it")
            attrs = client.try_stat(root)
        if attrs is None:
            self._makedirs(root)
        elif attrs.kind != "dir":
            raise BadInput(f"remote {clean_line(root)} exists and is not a folder")
        self._ok = {(): root}

    def _makedirs(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent and parent != path and self.client.try_stat(parent) is None:
            self._makedirs(parent)
        self.client.mkdir(path, 0o755)

    def folder(self, rel: Tuple[str, ...]) -> str:
        if rel in self._ok:
            return self._ok[rel]
        parent = self.folder(rel[:-1])
        path = posixpath.join(parent, rel[-1])
        attrs = self.client.try_lstat(path)
        if attrs is None:
            self.client.mkdir(path, 0o700)
        elif attrs.kind == "link":
            raise Refused(f"remote {clean_line(path)} is a symlink; nothing is written through it")
        elif attrs.kind != "dir":
            raise Refused(f"remote {clean_line(path)} is a file, where the copy needs a folder")
        self._ok[rel] = path
        return path


def _walk_local(root: Path, warn: Warn, stats: TransferStats) -> List[Item]:
    real_root = os.path.realpath(root)
    items: List[Item] = []
    stack: List[Tuple[Tuple[str, ...], Path]] = [((), root)]
    while stack:
        rel, folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            _fail(stats, warn, _shown_rel(rel) or str(folder), clean_line(exc.strerror or exc))
            continue
        for entry in entries:
            here = rel + (entry.name,)
            if entry.name.endswith((PART_SUFFIX, META_SUFFIX, LINK_TEMP)):
                continue  # our own partial copies
            st = entry.stat(follow_symlinks=False)
            if entry.is_symlink():
                target = os.readlink(entry.path)
                real = os.path.realpath(entry.path)
                if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
                    _refuse(stats, warn, _shown_rel(here), "a symlink pointing out of the tree being pushed")
                    continue
                link = os.path.relpath(real, os.path.dirname(os.path.abspath(entry.path))) \
                    if os.path.isabs(target) else target
                items.append(Item(here, "link", entry.path, target=link.replace(os.sep, "/")))
            elif stat.S_ISDIR(st.st_mode):
                items.append(Item(here, "dir", entry.path, mtime=int(st.st_mtime), atime=int(st.st_atime),
                                  mode=stat.S_IMODE(st.st_mode)))
                stack.append((here, Path(entry.path)))
            elif stat.S_ISREG(st.st_mode):
                items.append(Item(here, "file", entry.path, size=st.st_size, mtime=int(st.st_mtime),
                                  atime=int(st.st_atime), mode=stat.S_IMODE(st.st_mode), stamp=st.st_mtime_ns))
            else:
                warn(f"skipped {_shown_rel(here)}: not a file, folder or symlink")
    return items


def _read_meta_remote(client: sf.SftpClient, path: str) -> Optional[dict]:
    attrs = client.try_lstat(path)
    if attrs is None or attrs.kind != "file" or (attrs.size or 0) > MAX_META:
        return None
    handle = client.open(path, sf.F_READ)
    chunks: List[bytes] = []
    try:
        client.download(handle, 0, attrs.size or 0, chunks.append, path=path)
    finally:
        client.close(handle)
    try:
        return json.loads(b"".join(bytes(c) for c in chunks))
    except ValueError:
        return None


def _write_remote(client: sf.SftpClient, path: str, data: bytes) -> None:
    handle = client.open(path, sf.F_WRITE | sf.F_CREAT | sf.F_TRUNC, sf.Attrs(mode=0o600))
    try:
        chunks = [data]
        client.upload(handle, 0, lambda n: chunks.pop() if chunks else b"", path=path)
    finally:
        client.close(handle)


def _push_file(client: sf.SftpClient, tree: RemoteTree, item: Item, stats: TransferStats, bar: Progress,
               force: bool = False) -> bool:
    parent = tree.folder(item.rel[:-1])
    target = posixpath.join(parent, item.rel[-1])
    existing = client.try_lstat(target)
    if existing is not None and existing.kind == "link":
        raise Refused(f"remote {clean_line(target)} is a symlink; nothing is written through it")
    if existing is not None and existing.kind == "dir":
        raise Refused(f"remote {clean_line(target)} is a folder")
    if existing is not None and not force and existing.size == item.size and existing.mtime == item.mtime:
        stats.skipped += 1
        bar.update(item.size)
        return True
    part, meta = target + PART_SUFFIX, target + META_SUFFIX
    record = {"v": 1, "source": os.path.abspath(item.source), "size": item.size, "mtime_ns": item.stamp}
    offset = 0
    part_attrs = None if force else client.try_lstat(part)
    if part_attrs is not None and part_attrs.kind == "file" and (part_attrs.size or 0) <= item.size \
            and _read_meta_remote(client, meta) == record:
        offset = part_attrs.size or 0
    if offset:
        stats.resumed += 1
    else:
        if part_attrs is not None or client.try_lstat(part) is not None:
            client.remove(part)
        _write_remote(client, meta, json.dumps(record).encode())
    bar.update(offset)
    flags = sf.F_WRITE | sf.F_CREAT | (0 if offset else sf.F_TRUNC)
    with open(item.source, "rb") as local:
        local.seek(offset)
        handle = client.open(part, flags, sf.Attrs(mode=0o600))
        try:
            def give(n: int) -> bytes:
                data = local.read(n)
                stats.bytes += len(data)
                bar.update(len(data))
                return data

            reached = client.upload(handle, offset, give, path=part)
            client.fsync(handle)
            client.fsetstat(handle, sf.Attrs(mode=(item.mode or 0o644) & 0o777, atime=item.atime,
                                             mtime=item.mtime))
        finally:
            client.close(handle)
    now = os.stat(item.source)
    if reached != item.size or now.st_size != item.size or now.st_mtime_ns != item.stamp:
        client.remove(part)
        client.remove(meta)
        raise Refused("it changed here while it was being copied; run the push again")
    client.rename(part, target)
    client.remove(meta)
    stats.files += 1
    return True


def _make_remote_link(client: sf.SftpClient, tree: RemoteTree, item: Item, stats: TransferStats) -> None:
    parent = tree.folder(item.rel[:-1])
    path = posixpath.join(parent, item.rel[-1])
    attrs = client.try_lstat(path)
    if attrs is not None and attrs.kind == "link" and client.readlink(path) == item.target:
        stats.skipped += 1
        return
    if attrs is not None and attrs.kind == "dir":
        raise Refused(f"remote {clean_line(path)} is a folder")
    if attrs is not None:
        client.remove(path)
    client.symlink(item.target or ".", path)
    stats.links += 1


def check_local_source(source: str) -> None:
    """BadInput before any login when there is nothing to push."""
    if not os.path.exists(source):
        raise BadInput(f"local path {source} does not exist")


def push(client: sf.SftpClient, run: Callable[[str], bytes], source: str, dest: Optional[str] = None,
         folder: Optional[str] = None, progress: bool = True, verify: bool = False,
         warn: Optional[Warn] = None) -> TransferStats:
    """Copy local SOURCE (file or folder) to remote DEST (default: the host's folder)."""
    warn = warn or (lambda message: None)
    stats = TransferStats()
    check_local_source(source)
    paths = RemotePaths(client, folder)
    src = Path(source)
    contents = _is_contents(source)
    dest_text = dest if dest is not None else "."
    remote_dest = paths.resolve(dest_text)
    dest_is_folder = dest is None or dest_text.endswith("/")
    if src.is_dir():
        base = os.path.basename(os.path.normpath(os.path.abspath(src)))
        root = remote_dest if contents else posixpath.join(remote_dest, base)
        tree = RemoteTree(client, root, root_must_not_be_link=not contents)
        items = _walk_local(src, warn, stats)
        label = f"push {clean_line(base)}"
    elif src.is_file():
        if contents:
            raise BadInput(f"{source} is a file, not a folder (drop the trailing '/')")
        attrs = client.try_stat(remote_dest)
        dest_is_folder = dest_is_folder or (attrs is not None and attrs.kind == "dir")
        name = src.name if dest_is_folder else posixpath.basename(remote_dest)
        tree = RemoteTree(client, remote_dest if dest_is_folder else posixpath.dirname(remote_dest),
                          root_must_not_be_link=False)
        st = os.stat(src)
        items = [Item((name,), "file", str(src), size=st.st_size, mtime=int(st.st_mtime), atime=int(st.st_atime),
                      mode=stat.S_IMODE(st.st_mode), stamp=st.st_mtime_ns)]
        label = f"push {clean_line(src.name)}"
    else:
        raise BadInput(f"{source} is neither a file nor a folder")
    placed = _copy_items(items, tree, label, progress, _push_file, client, stats, warn)
    for item in (i for i in items if i.kind == "link"):
        _guard(stats, warn, item, _make_remote_link, client, tree, item, stats)
    if verify and placed:
        _verify_push(client, run, tree, placed, stats, warn)
    for item in sorted((i for i in items if i.kind == "dir"), key=lambda i: len(i.rel), reverse=True):
        _guard(stats, warn, item, client.setstat, posixpath.join(tree.root, *item.rel),
               sf.Attrs(mode=((item.mode or 0o755) & 0o777) | 0o700, atime=item.atime, mtime=item.mtime))
    return stats


def _verify_push(client, run, tree: RemoteTree, placed: List[Item], stats: TransferStats, warn: Warn) -> None:
    targets = [posixpath.join(tree.root, *i.rel) for i in placed]
    for item, target, digest in zip(placed, targets, remote_sha256(run, targets)):
        if digest is not None and _sha256_local(Path(item.source)) == digest:
            stats.verified += 1
            continue
        if digest is None:
            _fail(stats, warn, _shown_rel(item.rel), "the remote gave no SHA-256 for it (no sha256sum there?)")
            continue
        stats.recopied += 1
        bar = Progress(item.size, "again", False)
        if _guard(stats, warn, item, _push_file, client, tree, item, stats, bar, force=True):
            again = remote_sha256(run, [target])[0]
            if again is not None and _sha256_local(Path(item.source)) == again:
                stats.verified += 1
            else:
                _fail(stats, warn, _shown_rel(item.rel), "SHA-256 still differs after copying it again")
