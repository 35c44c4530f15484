"""Taking, restoring and comparing snapshots.

``take_snapshot`` walks the source once, checks the limits on that walk before
anything is stored, reads only the files the stat cache cannot vouch for,
stores new blobs, then stores the manifest; the snapshot id is the manifest's
hash. ``restore`` makes the tree again, byte for byte, in an empty folder.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

from runyard.config import Limits, SecretsPolicy, plural
from runyard.errors import SnapshotError, SnapshotSecretsError
from runyard.snapshot import manifest as mf
from runyard.snapshot import statcache
from runyard.snapshot.report import (
    flagged_message,
    largest_files,
    likely_secrets,
    limit_error,
    link_leaves,
)
from runyard.snapshot.walk import (
    CHANGED,
    LINK_OUTSIDE,
    UNREADABLE,
    VANISHED,
    FileEntry,
    Issue,
    walk,
)
from runyard.store.base import ObjectStore

THREADS: Final = max(2, min(8, os.cpu_count() or 2))


class Progress(Protocol):
    """Receives progress while files are read and stored."""

    def start(self, files: int, nbytes: int) -> None: ...
    def advance(self, files: int, nbytes: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class SnapshotResult:
    """What ``take_snapshot`` did. ``id`` is the snapshot id."""

    id: str
    source: str
    files: int
    links: int
    empty_dirs: int
    total_bytes: int
    read_files: int
    """Files read and hashed (the rest came from the stat cache)."""
    new_blobs: int
    new_bytes: int
    limits: Limits
    issues: list[Issue] = field(default_factory=list)
    largest: list[tuple[str, int]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def links_outside(self) -> list[Issue]:
        """Links that leave the source directory (kept as links)."""
        return [i for i in self.issues if i.kind == LINK_OUTSIDE]

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["issues"] = [asdict(i) for i in self.issues]
        d["largest"] = [{"path": p, "size": s} for p, s in self.largest]
        return d


def _hash_one(store: ObjectStore, root: str, f: FileEntry) -> tuple[FileEntry, str, int, bool, Issue | None]:
    path = os.path.join(root, f.path)
    try:
        digest, size, new = store.put_file(path)
    except FileNotFoundError:
        return f, "", 0, False, Issue(VANISHED, f.path, "it vanished before it could be read")
    except PermissionError as exc:
        return f, "", 0, False, Issue(UNREADABLE, f.path, exc.strerror or "permission denied")
    except IsADirectoryError:
        return f, "", 0, False, Issue(CHANGED, f.path, "it became a directory while the snapshot was taken")
    except OSError as exc:  # reading the source (the store's own failures are StoreError, not OSError)
        if exc.errno in (errno.ELOOP, errno.EINVAL):  # swapped for a link, FIFO or socket since the walk
            return f, "", 0, False, Issue(CHANGED, f.path, "it stopped being a regular file while the snapshot "
                                          "was taken; it is left out")
        if exc.errno == errno.ENAMETOOLONG:
            return f, "", 0, False, Issue(UNREADABLE, f.path, "the path is too long for this system; shorten it or "
                                          "leave it out with .amlignore")
        return f, "", 0, False, Issue(UNREADABLE, f.path, exc.strerror or str(exc))
    issue = None
    try:
        s = os.stat(path, follow_symlinks=False)
        if s.st_size != size or s.st_mtime_ns != f.mtime_ns or size != f.size:
            issue = Issue(CHANGED, f.path, "it changed while it was read; the snapshot holds the bytes as read")
    except OSError:
        issue = Issue(CHANGED, f.path, "it vanished after it was read; the snapshot holds the bytes as read")
    return f, digest, size, new, issue


def take_snapshot(
    source: str | os.PathLike[str],
    store: ObjectStore,
    *,
    limits: Limits | None = None,
    cache_dir: str | None = None,
    exclude_dirs: tuple[str, ...] = (),
    progress: Progress | None = None,
    secrets_policy: SecretsPolicy | None = None,
) -> SnapshotResult:
    """Snapshot ``source`` into ``store``. Raises ``SnapshotLimitError`` (nothing
    stored) when over a limit, ``SnapshotSecretsError`` (nothing stored) when the
    tree holds likely secrets and ``secrets_policy`` refuses them, and
    ``SnapshotError`` naming every unreadable path."""
    t0 = time.perf_counter()
    started_ns = time.time_ns()
    limits = limits or Limits()
    src = os.path.abspath(os.fspath(source))
    w = walk(src, exclude_dirs=exclude_dirs)
    errors = w.errors
    if errors:
        raise SnapshotError(_errors_message(src, errors))
    regular = [f for f in w.files if not f.is_link]
    over = limit_error(src, w.files, limits)
    if over is not None:
        raise over
    # Checked on the walk, before a blob is written: a refused tree stores nothing.
    secrets = likely_secrets(f.path for f in w.files)
    if secrets and secrets_policy is not None and secrets_policy.refuse:
        raise SnapshotSecretsError(flagged_message(src, secrets, refused=secrets_policy), secrets)

    # Keyed by the store and its generation: a store that lost blobs starts afresh.
    cpath = statcache.cache_path(cache_dir, src, f"{store.store_id}.{store.generation()}") if cache_dir else None
    cached = statcache.load(cpath) if cpath else {}
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    todo: list[FileEntry] = []
    for f in regular:
        hit = cached.get(f.path)
        if hit is not None and hit[0] == (f.size, f.mtime_ns, f.ctime_ns, f.ino, f.executable):
            digests[f.path] = hit[1]
            sizes[f.path] = f.size
        else:
            todo.append(f)

    issues = list(w.issues)
    new_blobs = new_bytes = 0
    failed: list[Issue] = []
    changed: set[str] = set()
    if todo:
        if progress is not None:
            progress.start(len(todo), sum(f.size for f in todo))
        from concurrent.futures import ThreadPoolExecutor

        # Biggest first, so the two ends of the pool finish together.
        todo.sort(key=lambda f: -f.size)
        with ThreadPoolExecutor(THREADS) as pool:
            for f, digest, size, new, issue in pool.map(lambda f: _hash_one(store, src, f), todo):
                if progress is not None:
                    progress.advance(1, f.size)
                if issue is not None:
                    if issue.kind == UNREADABLE:
                        failed.append(issue)
                        continue
                    issues.append(issue)
                    if not digest:  # vanished, or no longer a file: not in the snapshot
                        continue
                    changed.add(f.path)
                digests[f.path] = digest
                sizes[f.path] = size
                if new:
                    new_blobs += 1
                    new_bytes += size
        if progress is not None:
            progress.finish()
    if failed:
        raise SnapshotError(_errors_message(src, failed))

    entries: list[mf.Entry] = []
    for f in w.files:
        if f.is_link:
            entries.append(mf.Entry(f.path, mf.LINK, target=f.target))
        elif f.path in digests:
            entries.append(mf.Entry(f.path, mf.FILE, sizes[f.path], f.executable, digests[f.path]))
    entries.extend(mf.Entry(d, mf.DIR) for d in w.empty_dirs)
    manifest = mf.build(entries)
    nfiles = len(digests)
    nlinks = len(w.files) - len(regular)
    data = manifest.encode()
    snapshot_id, _ = store.put_bytes(data)
    if not store.has_snapshot_record(snapshot_id):
        store.put_snapshot_record(
            snapshot_id,
            {
                "id": snapshot_id,
                "source": src,
                "host": os.uname().nodename,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": nfiles,
                "links": nlinks,
                "empty_dirs": len(w.empty_dirs),
                "bytes": manifest.total_bytes,
                "runyard": _version(),
                "python": sys.version.split()[0],
            },
        )
    if cpath is not None and (todo or len(cached) != len(regular)):
        keep: dict[str, tuple[statcache.Key, str]] = {}
        for f in regular:
            if f.path in digests and f.path not in changed:
                keep[f.path] = ((f.size, f.mtime_ns, f.ctime_ns, f.ino, f.executable), digests[f.path])
        statcache.save(cpath, keep, started_ns)

    return SnapshotResult(
        id=snapshot_id,
        source=src,
        files=nfiles,
        links=nlinks,
        empty_dirs=len(w.empty_dirs),
        total_bytes=manifest.total_bytes,
        read_files=len(todo),
        new_blobs=new_blobs,
        new_bytes=new_bytes,
        limits=limits,
        issues=issues,
        largest=[(f.path, f.size) for f in largest_files(regular)],
        secrets=secrets,
        seconds=time.perf_counter() - t0,
    )


def _version() -> str:
    from runyard import __version__

    return __version__


def _errors_message(src: str, errors: list[Issue]) -> str:
    lines = [f"Cannot take a snapshot of {src}: {plural(len(errors), 'path')} cannot be read."]
    for e in errors[:20]:
        lines.append(f"  {e.path}: {e.detail}")
    if len(errors) > 20:
        lines.append(f"  ... and {len(errors) - 20} more")
    lines.append("Make them readable (chmod), or leave them out with a line in .amlignore; "
                 "check with: runyard snapshot explain PATH")
    return "\n".join(lines)


# -- reading snapshots ----------------------------------------------------------


def load_manifest(store: ObjectStore, snapshot_id: str) -> mf.Manifest:
    """The verified manifest of a snapshot."""
    return mf.parse(store.get_bytes(snapshot_id), snapshot_id)


def flagged_in_snapshot(store: ObjectStore, snapshot_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Likely secrets and links leaving the source in a stored snapshot (for a
    rerun, which takes no new snapshot): ``(paths, [(link, "-> target")])``."""
    manifest = load_manifest(store, snapshot_id)
    secrets = likely_secrets(e.path for e in manifest.entries if e.type != mf.DIR)
    links = [(e.path, f"-> {e.target}") for e in manifest.entries
             if e.type == mf.LINK and link_leaves(e.path, e.target)]
    return secrets, links


@dataclass
class RestoreResult:
    dest: str
    files: int
    links: int
    dirs: int
    bytes: int


def restore(store: ObjectStore, snapshot_id: str, dest: str | os.PathLike[str]) -> RestoreResult:
    """Make the snapshot's tree in ``dest`` (new, or an empty directory).

    The tree is built in a temporary folder first (beside a new ``dest``,
    inside an existing one, which keeps its owner and mode) and moved into
    place only when complete, so a failure (a missing or corrupt blob, a full
    disk) leaves ``dest`` as it was.
    """
    manifest = load_manifest(store, snapshot_id)
    target = os.path.abspath(os.fspath(dest))
    existing = os.path.lexists(target)
    if existing:
        if os.path.islink(target):
            raise SnapshotError(f"Cannot restore into '{target}': it is a symlink. Give the folder it points to, "
                                "or a new or empty folder.")
        if not os.path.isdir(target):
            raise SnapshotError(f"Cannot restore into '{target}': it exists and is not a directory. "
                                "Give a new or empty folder.")
        if os.listdir(target):
            raise SnapshotError(f"Cannot restore into '{target}': it is not empty. Give a new or empty folder.")
    import shutil

    parent = os.path.dirname(target)
    tag = f".runyard-restore-{os.urandom(4).hex()}"
    tmp = os.path.join(target, tag) if existing else os.path.join(parent, f".{os.path.basename(target)}{tag}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(tmp, 0o755)
    except OSError as exc:
        raise SnapshotError(f"Cannot restore into '{target}': {exc.strerror} ({exc.filename}).") from exc
    try:
        _build_tree(store, manifest, tmp, snapshot_id)
        if not existing:
            os.rename(tmp, target)
        else:
            _move_into(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise SnapshotError(f"Cannot restore into '{target}': {exc.strerror} ({exc.filename}). "
                                "Nothing was left there.") from exc
        raise
    return RestoreResult(
        dest=target,
        files=len(manifest.files),
        links=sum(1 for e in manifest.entries if e.type == mf.LINK),
        dirs=sum(1 for e in manifest.entries if e.type == mf.DIR),
        bytes=manifest.total_bytes,
    )


def _build_tree(store: ObjectStore, manifest: mf.Manifest, root: str, snapshot_id: str = "") -> None:
    from concurrent.futures import ThreadPoolExecutor

    from runyard.errors import BlobNotFoundError, CorruptBlobError
    from runyard.paths import Under

    # parse() already refused unsafe paths and paths below a link; joining
    # through Under checks again where the files land (root is a new folder,
    # and links are made last, so nothing is written through one).
    under = Under(root, backslash=True)
    where = {e.path: under.join(e.path) for e in manifest.entries}
    made: set[str] = set()
    for e in manifest.entries:
        d = e.path if e.type == mf.DIR else os.path.dirname(e.path)
        if d and d not in made:
            os.makedirs(where[d] if d in where else under.join(d), exist_ok=True)
            made.add(d)

    def write(e: mf.Entry) -> None:
        try:
            store.write_to(e.hash, where[e.path], 0o755 if e.executable else 0o644)
        except (BlobNotFoundError, CorruptBlobError) as exc:  # say which file of which snapshot
            err = type(exc)(f"'{e.path}' of snapshot {snapshot_id[:12] or '?'} cannot be restored. {exc}")
            if isinstance(exc, CorruptBlobError) and isinstance(err, CorruptBlobError):
                err.digest, err.quarantined = exc.digest, exc.quarantined
            raise err from exc

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(write, manifest.files))
    for e in manifest.entries:
        if e.type == mf.LINK:
            os.symlink(e.target, where[e.path])


def _move_into(tmp: str, target: str) -> None:
    """Move the complete tree in ``tmp`` (inside ``target``) up into ``target``;
    undo the moves if one fails."""
    moved: list[str] = []
    try:
        for name in os.listdir(tmp):
            os.rename(os.path.join(tmp, name), os.path.join(target, name))
            moved.append(name)
    except OSError:
        for name in moved:
            os.rename(os.path.join(target, name), os.path.join(tmp, name))
        raise
    os.rmdir(tmp)


@dataclass(frozen=True, slots=True)
class Change:
    status: str
    """A added, D deleted, M content changed, X mode changed, T type changed."""
    path: str


def diff(a: mf.Manifest, b: mf.Manifest) -> list[Change]:
    """What changed from snapshot ``a`` to snapshot ``b``, sorted by path."""
    pa, pb = a.by_path(), b.by_path()
    out: list[Change] = []
    for path in sorted(pa.keys() | pb.keys(), key=str.encode):
        ea, eb = pa.get(path), pb.get(path)
        if ea is None:
            out.append(Change("A", path))
        elif eb is None:
            out.append(Change("D", path))
        elif ea.type != eb.type:
            out.append(Change("T", path))
        elif ea.hash != eb.hash or ea.target != eb.target:
            out.append(Change("M", path))
        elif ea.executable != eb.executable:
            out.append(Change("X", path))
    return out
