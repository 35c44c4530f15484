"""FUSE mounts: a run's script sees a dataset or a datastore folder as a plain folder.

A mount is served by a helper process of its own (``python -m runyard.data.fuse
SPEC_FILE``), so a crash in the FUSE layer never takes the run's supervisor with
it, and a mount can outlive the call that made it. The helper rebuilds the
filesystem from a :class:`MountSpec` (fsspec filesystems cannot be pickled
reliably), serves one of two views over it with fusepy, and exits when the
mount is unmounted.

Views (fusepy ``Operations`` objects, usable and testable without a mount):

    ManifestView   read-only, a fixed list of files (a dataset's manifest);
                   answers ``ls``/``stat`` without a single remote call
    PrefixView     the live tree under a prefix of a datastore; read-only, or
                   writable for a run's output in "mount" mode (writes are
                   buffered locally and uploaded when the file is closed)

fusepy (and libfuse 2 under it) is imported only when a view is mounted, so
``import runyard`` stays light and machines without FUSE can still download.

>>> import fsspec
>>> view = ManifestView([("a/b.txt", fsspec.filesystem("memory"), "/nowhere", 3, 0.0)])
>>> view.getattr("/a/b.txt")["st_size"]
3
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import itertools
import json
import logging
import os
import posixpath
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Final

from runyard.errors import MountError, RunyardError

log = logging.getLogger("runyard.data.fuse")

INSTALL_HINT = "Mounting needs fusepy and libfuse 2: pip install 'runyard[fuse]' and apt-get install libfuse2 fuse3"

# How long a listing or a stat answer of a PrefixView is trusted: long enough
# that ``ls -l`` of a big folder costs one listing, short enough that files
# another writer adds show up soon.
DEFAULT_CACHE_TTL = 5.0

# A manifest's files never change, so the kernel may keep their pages and
# attributes: a second epoch over a dataset then reads from memory.
_MANIFEST_KERNEL_OPTIONS: dict[str, Any] = {
    "kernel_cache": True,
    "entry_timeout": 60,
    "attr_timeout": 60,
    "negative_timeout": 60,
}

_SPEC_VERSION = 1


# --------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------


class _Errno(OSError):
    """An error a view raises on purpose, passed to the kernel as it is."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


def _ns(seconds: float) -> int:
    # Views set use_ns: fusepy otherwise warns, and floats lose nanoseconds.
    return int(seconds * 1_000_000_000)


def _file_attrs(size: int, mtime: float, *, writable: bool) -> dict[str, int]:
    t = _ns(mtime)
    return {
        "st_mode": stat.S_IFREG | (0o644 if writable else 0o444),
        "st_nlink": 1,
        "st_size": size,
        # Honest block counts: cp and tar take a file with too few blocks for sparse.
        "st_blocks": (size + 511) // 512,
        "st_mtime": t,
        "st_atime": t,
        "st_ctime": t,
        "st_uid": os.getuid(),
        "st_gid": os.getgid(),
    }


def _dir_attrs(mtime: float, *, writable: bool) -> dict[str, int]:
    t = _ns(mtime)
    return {
        "st_mode": stat.S_IFDIR | (0o755 if writable else 0o555),
        "st_nlink": 2,
        "st_size": 0,
        "st_mtime": t,
        "st_atime": t,
        "st_ctime": t,
        "st_uid": os.getuid(),
        "st_gid": os.getgid(),
    }


# What readdir tells the kernel about each entry: its type only, so that
# ``os.walk`` and ``find`` need not stat every file to tell files from folders.
_TYPE_FILE = {"st_mode": stat.S_IFREG}
_TYPE_DIR = {"st_mode": stat.S_IFDIR}


def _rel(path: str) -> str:
    """The kernel's ``/a/b`` as the view's ``a/b`` (the root is ``""``)."""
    return path.strip("/")


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


def _wants_write(flags: int) -> bool:
    return (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)


class View:
    """What every view shares: fusepy's ``Operations`` protocol, with errors mapped.

    fusepy calls ``view(op, *args)``. Errors of the filesystem become errnos the
    script can act on: FileNotFoundError is ENOENT, PermissionError EACCES, and
    anything unexpected EIO, logged (to the helper's stderr) with the path,
    since the script only sees "Input/output error". Operations a view does not
    define at all (xattrs, locks, ioctl) are never registered with libfuse, so
    the kernel learns once that they are unsupported and stops asking.

    Every write operation answers EROFS here; PrefixView overrides them when
    writable.
    """

    use_ns = True  # times in the attribute dicts are integer nanoseconds

    def __call__(self, op: str, *args: Any) -> Any:
        method = getattr(self, op, None)
        if method is None:
            raise _Errno(errno.ENOSYS)
        try:
            return method(*args)
        except _Errno:
            raise
        except FileNotFoundError:
            raise _Errno(errno.ENOENT) from None
        except PermissionError:
            raise _Errno(errno.EACCES) from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            # Precise answers the script can handle, not I/O failures.
            raise _Errno(exc.errno or errno.EIO) from None
        except Exception as exc:
            where = args[0] if args and isinstance(args[0], str) else "?"
            log.error("%s %r failed: %s: %s", op, where, type(exc).__name__, exc, exc_info=not isinstance(exc, OSError))
            raise _Errno(errno.EIO) from None

    def close(self) -> int:
        """Release what the view holds; the number of writes that could not be saved."""
        return 0

    # Write operations: refused unless a view says otherwise.

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        raise _Errno(errno.EROFS)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        raise _Errno(errno.EROFS)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        raise _Errno(errno.EROFS)

    def mkdir(self, path: str, mode: int) -> None:
        raise _Errno(errno.EROFS)

    def rmdir(self, path: str) -> None:
        raise _Errno(errno.EROFS)

    def unlink(self, path: str) -> None:
        raise _Errno(errno.EROFS)

    def rename(self, old: str, new: str) -> None:
        raise _Errno(errno.EROFS)

    def chmod(self, path: str, mode: int) -> None:
        raise _Errno(errno.EROFS)

    def chown(self, path: str, uid: int, gid: int) -> None:
        raise _Errno(errno.EROFS)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        raise _Errno(errno.EROFS)

    def symlink(self, target: str, source: str) -> None:
        raise _Errno(errno.EROFS)

    def link(self, target: str, source: str) -> None:
        raise _Errno(errno.EROFS)

    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise _Errno(errno.EROFS)


class _Reader:
    """One open file of the source filesystem, opened at the first read.

    Opening lazily keeps ``open`` (and ``stat``-then-``close`` tools) free of
    remote calls; the lock keeps seek+read atomic when the kernel reads one
    handle from several threads (readahead does).
    """

    def __init__(self, fs: Any, full_path: str) -> None:
        self.fs = fs
        self.full_path = full_path
        self.lock = threading.Lock()
        self.file: Any = None

    def read(self, size: int, offset: int) -> bytes:
        with self.lock:
            if self.file is None:
                self.file = self.fs.open(self.full_path, "rb")
            self.file.seek(offset)
            data: bytes = self.file.read(size)
            return data

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class _Handles:
    """File handle numbers for the kernel, and what each one stands for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count(1)
        self._open: dict[int, Any] = {}

    def add(self, obj: Any) -> int:
        with self._lock:
            fh = next(self._next)
            self._open[fh] = obj
            return fh

    def get(self, fh: int) -> Any:
        with self._lock:
            obj = self._open.get(fh)
        if obj is None:
            raise _Errno(errno.EBADF)
        return obj

    def pop(self, fh: int) -> Any:
        with self._lock:
            return self._open.pop(fh, None)

    def drain(self) -> list[Any]:
        with self._lock:
            objs = list(self._open.values())
            self._open.clear()
            return objs


@dataclasses.dataclass(frozen=True)
class _ManifestFile:
    fs: Any
    full_path: str
    size: int
    mtime: float


def _check_rel(rel: str) -> str:
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\0" in rel:
        raise MountError(
            f"manifest path {rel!r} is not a plain relative POSIX path (no leading '/', no '.', '..' or empty parts)"
        )
    return rel


class ManifestView(View):
    """A read-only folder tree made of a fixed list of files.

    Each entry is ``(rel_path, fs, full_path, size, mtime)``: the file appears
    at ``rel_path`` in the mount and is read from ``full_path`` on ``fs``.
    Folders are implied by the paths. ``stat`` and ``ls`` come from the list
    alone, so listing a 20,000-file dataset makes no remote call; a file is
    opened on the filesystem only when it is first read.

    >>> import fsspec
    >>> fs = fsspec.filesystem("memory")
    >>> fs.pipe("/src/x.csv", b"a,b")
    >>> view = ManifestView([("data/x.csv", fs, "/src/x.csv", 3, 0.0)])
    >>> fh = view.open("/data/x.csv", os.O_RDONLY)
    >>> view.read("/data/x.csv", 100, 0, fh)
    b'a,b'
    >>> view.release("/data/x.csv", fh)
    """

    def __init__(self, entries: Iterable[tuple[str, Any, str, int, float]]) -> None:
        self._files: dict[str, _ManifestFile] = {}
        children: dict[str, set[str]] = {"": set()}
        dir_mtime: dict[str, float] = {"": 0.0}  # a folder's time: its newest file's
        for rel, fs, full_path, size, mtime in entries:
            rel = _check_rel(rel)
            if rel in self._files:
                raise MountError(f"manifest path {rel!r} is listed twice")
            mtime = float(mtime)
            self._files[rel] = _ManifestFile(fs, full_path, int(size), mtime)
            child, parent = rel, _parent(rel)
            while True:
                names = children.setdefault(parent, set())
                name = child.rpartition("/")[2]
                known = name in names
                names.add(name)
                if dir_mtime.get(parent, -1.0) < mtime:
                    dir_mtime[parent] = mtime
                    known = False
                # A folder met before with a newer time: its ancestors are done too.
                if known or not parent:
                    break
                child, parent = parent, _parent(parent)
        clash = sorted(set(self._files) & set(children))
        if clash:
            raise MountError(
                f"manifest path {clash[0]!r} is both a file and a folder (object stores allow this; a mount cannot)"
            )
        self._children = {d: sorted(names) for d, names in children.items()}
        self._dir_mtime = dir_mtime
        self._handles = _Handles()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        rel = _rel(path)
        f = self._files.get(rel)
        if f is not None:
            return _file_attrs(f.size, f.mtime, writable=False)
        if rel in self._children:
            return _dir_attrs(self._dir_mtime[rel], writable=False)
        raise _Errno(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        rel = _rel(path)
        names = self._children.get(rel)
        if names is None:
            raise _Errno(errno.ENOTDIR if rel in self._files else errno.ENOENT)
        prefix = f"{rel}/" if rel else ""
        return [".", "..", *((n, _TYPE_FILE if prefix + n in self._files else _TYPE_DIR, 0) for n in names)]

    def open(self, path: str, flags: int) -> int:
        rel = _rel(path)
        f = self._files.get(rel)
        if f is None:
            raise _Errno(errno.EISDIR if rel in self._children else errno.ENOENT)
        if _wants_write(flags):
            raise _Errno(errno.EROFS)
        return self._handles.add(_Reader(f.fs, f.full_path))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        reader: _Reader = self._handles.get(fh)
        return reader.read(size, offset)

    def release(self, path: str, fh: int) -> None:
        reader: _Reader | None = self._handles.pop(fh)
        if reader is not None:
            reader.close()

    def close(self) -> int:
        for reader in self._handles.drain():
            with contextlib.suppress(Exception):
                reader.close()
        return 0


def _mtime_of(info: Mapping[str, Any], default: float) -> float:
    """A modification time from an fsspec info dict; each backend names it differently."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created", "ctime", "creation_time"):
        value = info.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.timestamp()
    return default


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


class _AttrCache:
    """Stat answers and folder listings of a PrefixView, trusted for ``ttl`` seconds.

    ``None`` records a path known not to exist: Python's imports and shells
    probe many names that are not there, and on an object store each miss
    would otherwise cost a request or two.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._attrs: dict[str, tuple[float, dict[str, int] | None]] = {}
        self._listings: dict[str, tuple[float, frozenset[str]]] = {}

    def attrs(self, rel: str) -> tuple[bool, dict[str, int] | None]:
        with self._lock:
            hit = self._attrs.get(rel)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def listing(self, rel: str) -> frozenset[str] | None:
        with self._lock:
            hit = self._listings.get(rel)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put_attrs(self, rel: str, attrs: dict[str, int] | None) -> None:
        with self._lock:
            self._attrs[rel] = (time.monotonic() + self.ttl, attrs)

    def put_listing(self, rel: str, children: Mapping[str, dict[str, int]]) -> None:
        expires = time.monotonic() + self.ttl
        with self._lock:
            if len(self._attrs) > 200_000:
                self._purge()
            self._listings[rel] = (expires, frozenset(children))
            for name, attrs in children.items():
                self._attrs[f"{rel}/{name}" if rel else name] = (expires, attrs)

    def forget(self, rel: str) -> None:
        """Drop what is known about ``rel``, its listing and its parent's listing."""
        with self._lock:
            self._attrs.pop(rel, None)
            self._listings.pop(rel, None)
            self._listings.pop(_parent(rel), None)

    def _purge(self) -> None:
        now = time.monotonic()
        self._attrs = {k: v for k, v in self._attrs.items() if v[0] >= now}
        self._listings = {k: v for k, v in self._listings.items() if v[0] >= now}


class _Staged:
    """A file being written through a writable PrefixView: a local copy until uploaded.

    Every handle open on the same path shares one staged copy, as two file
    descriptors of one file do; the copy is uploaded when a handle is flushed
    (``close``) and dropped when the last handle is released.
    """

    def __init__(self, rel: str, local_path: str, fd: int, *, remote: bool) -> None:
        self.rel = rel
        self.local_path = local_path
        self.fd = fd
        self.lock = threading.Lock()
        self.dirty = False
        self.remote = remote  # the object exists on the filesystem
        self.unlinked = False  # removed while open: never uploaded again
        self.failed = False  # the last upload failed, the writer got EIO, nothing written since
        self.opens = 0
        self.closed = False


class PrefixView(View):
    """The live tree under ``root`` on ``fs``; writable for a run's output in mount mode.

    Object stores have no real folders: a prefix with objects under it is a
    folder. Listings fill a short-lived attribute cache (see DEFAULT_CACHE_TTL)
    so ``ls -l`` of a big folder is one listing, not one request per file; a
    fresh ``readdir`` always lists again.

    When ``writable``, a file opened for writing is buffered in a local file
    under ``staging_dir`` and uploaded with ``fs.put_file`` when it is closed,
    so the object appears at ``close()`` and a failed upload is the writer's
    EIO. ``mkdir`` makes a folder known to the view (object stores need no
    folder object; on a local filesystem it is made), ``rename`` of a file is
    copy + delete, chmod/chown/utimens are accepted and ignored; links, device
    nodes and renaming non-empty folders are not supported.

    >>> import fsspec
    >>> fs = fsspec.filesystem("memory")
    >>> fs.pipe("/out/old.txt", b"x")
    >>> view = PrefixView(fs, "/out", writable=True)
    >>> fh = view.create("/new.txt", 0o644)
    >>> view.write("/new.txt", b"hello", 0, fh)
    5
    >>> view.flush("/new.txt", fh); view.release("/new.txt", fh)
    >>> fs.cat("/out/new.txt")
    b'hello'
    >>> view.close()
    0
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        *,
        writable: bool = False,
        staging_dir: str | os.PathLike[str] | None = None,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        self.fs = fs
        self.root = fs._strip_protocol(root).rstrip("/")
        self.writable = writable
        self._staging_dir = os.fspath(staging_dir) if staging_dir is not None else None
        self._own_staging = staging_dir is None
        self._local = _is_local(fs)
        self._cache = _AttrCache(cache_ttl)
        self._handles = _Handles()
        self._lock = threading.Lock()  # guards _staged, _pending and opens counts
        self._staged: dict[str, _Staged] = {}
        self._pending: set[str] = set()  # folders made by mkdir that the store cannot hold
        self._inflight = 0
        self._lost = 0  # files dropped with writes that could not be uploaded
        self._idle = threading.Condition(self._lock)
        self._started = time.time()

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else (self.root or "/")

    # ---- reading

    def _staged_at(self, rel: str) -> _Staged | None:
        with self._lock:
            return self._staged.get(rel)

    def _attrs_of(self, info: Mapping[str, Any]) -> dict[str, int]:
        mtime = _mtime_of(info, self._started)
        if info.get("type") == "directory":
            return _dir_attrs(mtime, writable=self.writable)
        return _file_attrs(int(info.get("size") or 0), mtime, writable=self.writable)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        rel = _rel(path)
        if not rel:
            # The mount's root is a folder even before the prefix exists (an
            # output nothing was written to yet).
            return _dir_attrs(self._started, writable=self.writable)
        staged = self._staged_at(rel)
        if staged is not None and not staged.closed:
            with contextlib.suppress(OSError):
                st = os.fstat(staged.fd)
                return _file_attrs(st.st_size, st.st_mtime, writable=True)
        with self._lock:
            if rel in self._pending:
                return _dir_attrs(self._started, writable=True)
        hit, attrs = self._cache.attrs(rel)
        if hit:
            if attrs is None:
                raise _Errno(errno.ENOENT)
            return attrs
        siblings = self._cache.listing(_parent(rel))
        if siblings is not None and rel.rpartition("/")[2] not in siblings:
            raise _Errno(errno.ENOENT)
        full = self._full(rel)
        # Our cache decides freshness; fsspec's own listings cache (s3fs keeps
        # one forever) would hide files added since.
        self.fs.invalidate_cache(full)
        try:
            info = self.fs.info(full)
        except (FileNotFoundError, NotADirectoryError):
            # NotADirectory: the root (always a folder here) is a file there, or
            # under one; in the mount the path simply is not there.
            self._cache.put_attrs(rel, None)
            raise _Errno(errno.ENOENT) from None
        attrs = self._attrs_of(info)
        self._cache.put_attrs(rel, attrs)
        return attrs

    def _list(self, rel: str) -> dict[str, dict[str, int]]:
        """The children of ``rel`` on the filesystem (empty for a folder not there yet)."""
        full = self._full(rel)
        self.fs.invalidate_cache(full)
        try:
            entries = self.fs.ls(full, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                known = not rel or rel in self._pending
            if known:
                return {}
            raise
        me = full.rstrip("/")
        children: dict[str, dict[str, int]] = {}
        for entry in entries:
            name = str(entry["name"]).rstrip("/")
            if name == me:
                if entry.get("type") != "directory":  # ls of a file lists the file
                    raise _Errno(errno.ENOTDIR)
                continue  # an object store's folder placeholder
            children[name.rpartition("/")[2]] = self._attrs_of(entry)
        self._cache.put_listing(rel, children)
        return children

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        rel = _rel(path)
        types = {name: _TYPE_DIR if stat.S_ISDIR(a["st_mode"]) else _TYPE_FILE for name, a in self._list(rel).items()}
        prefix = f"{rel}/" if rel else ""
        with self._lock:
            local = [
                *((p, _TYPE_DIR) for p in self._pending),
                *((r, _TYPE_FILE) for r, s in self._staged.items() if not s.unlinked),
            ]
        for other, kind in local:
            if other.startswith(prefix) and "/" not in other[len(prefix) :]:
                types[other[len(prefix) :]] = kind
        return [".", "..", *((name, types[name], 0) for name in sorted(types))]

    def open(self, path: str, flags: int) -> int:
        rel = _rel(path)
        if _wants_write(flags):
            if not self.writable:
                raise _Errno(errno.EROFS)
            staged = self._stage(rel, fetch=not (flags & os.O_TRUNC))
            if flags & os.O_TRUNC:
                with staged.lock:
                    os.ftruncate(staged.fd, 0)
                    staged.dirty, staged.failed = True, False
            return self._handles.add(staged)
        writing = self._open_staged(rel)
        if writing is not None:  # being written through this mount: read the local copy
            return self._handles.add(writing)
        return self._handles.add(_Reader(self.fs, self._full(rel)))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles.get(fh)
        if isinstance(handle, _Staged):
            return os.pread(handle.fd, size, offset)
        reader: _Reader = handle
        return reader.read(size, offset)

    def flush(self, path: str, fh: int) -> None:
        handle = self._handles.get(fh)
        if isinstance(handle, _Staged):
            with handle.lock:
                self._upload(handle)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        self.flush(path, fh)

    def release(self, path: str, fh: int) -> None:
        handle = self._handles.pop(fh)
        if isinstance(handle, _Reader):
            handle.close()
        elif isinstance(handle, _Staged):
            self._drop(handle)

    def statfs(self, path: str) -> dict[str, int]:
        """Free space is that of the staging folder, where writes wait for upload."""
        if not self.writable:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}
        st = os.statvfs(self._staging())
        return {
            "f_bsize": st.f_bsize,
            "f_frsize": st.f_frsize,
            "f_blocks": st.f_blocks,
            "f_bfree": st.f_bfree,
            "f_bavail": st.f_bavail,
            "f_files": st.f_files,
            "f_ffree": st.f_ffree,
            "f_favail": st.f_favail,
            "f_namemax": 255,
        }

    # ---- staging and upload

    def _staging(self) -> str:
        with self._lock:
            if self._staging_dir is None:
                self._staging_dir = tempfile.mkdtemp(prefix="runyard-fuse-staging-")
            else:
                os.makedirs(self._staging_dir, exist_ok=True)
            return self._staging_dir

    def _new_staged(self, rel: str, *, fetch: bool) -> _Staged:
        fd, local_path = tempfile.mkstemp(prefix="w-", dir=self._staging())
        remote = False
        try:
            if fetch:
                try:
                    self.fs.get_file(self._full(rel), local_path)
                    remote = True
                except FileNotFoundError:
                    pass
            return _Staged(rel, local_path, fd, remote=remote)
        except BaseException:
            os.close(fd)
            os.unlink(local_path)
            raise

    def _open_staged(self, rel: str) -> _Staged | None:
        with self._lock:
            staged = self._staged.get(rel)
            if staged is not None:
                staged.opens += 1
            return staged

    def _stage(self, rel: str, *, fetch: bool) -> _Staged:
        """The staged copy of ``rel`` for one more handle, made (and downloaded) if needed."""
        staged = self._open_staged(rel)
        if staged is not None:
            return staged
        fresh = self._new_staged(rel, fetch=fetch)
        with self._lock:
            raced = self._staged.get(rel)  # staged by another handle while we downloaded
            staged = self._staged.setdefault(rel, fresh)
            staged.opens += 1
        if raced is not None:
            self._discard(fresh)
        return staged

    def _discard(self, staged: _Staged) -> None:
        with staged.lock:
            staged.closed = True
            os.close(staged.fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged.local_path)

    @contextlib.contextmanager
    def _upload_slot(self) -> Iterator[None]:
        with self._lock:
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self._idle.notify_all()

    def _upload(self, staged: _Staged) -> None:
        """Upload a dirty staged file (caller holds its lock); EIO when it fails."""
        if staged.unlinked or not staged.dirty:
            return
        full = self._full(staged.rel)
        try:
            with self._upload_slot():
                if self._local:
                    self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
                self.fs.put_file(staged.local_path, full)
        except Exception as exc:
            log.error("upload of %r to %r failed: %s: %s", "/" + staged.rel, full, type(exc).__name__, exc)
            staged.failed = True
            raise _Errno(errno.EIO) from None
        staged.dirty = staged.failed = False
        staged.remote = True
        st = os.fstat(staged.fd)
        self._cache.forget(staged.rel)
        self._cache.put_attrs(staged.rel, _file_attrs(st.st_size, st.st_mtime, writable=True))

    def _drop(self, staged: _Staged) -> None:
        """One handle of ``staged`` is released; the last one uploads and cleans up."""
        with self._lock:
            staged.opens -= 1
            if staged.opens > 0:
                return
        # close() normally uploaded already (at flush); this catches writes
        # after it, e.g. through a memory map. A failure the writer was told
        # about at close() is not tried (and logged) again.
        with staged.lock:
            try:
                if not staged.failed:
                    self._upload(staged)
            except _Errno:
                pass
            lost = staged.dirty and not staged.unlinked
        with self._lock:
            self._lost += lost
            if staged.opens > 0:  # opened again meanwhile: the new handle owns it
                return
            if self._staged.get(staged.rel) is staged:
                del self._staged[staged.rel]
        self._discard(staged)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        if not self.writable:
            raise _Errno(errno.EROFS)
        rel = _rel(path)
        staged = self._stage(rel, fetch=False)
        with staged.lock:
            os.ftruncate(staged.fd, 0)
            staged.dirty, staged.failed = True, False  # an empty file is an object too (touch)
        return self._handles.add(staged)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if not self.writable:
            raise _Errno(errno.EROFS)
        handle = self._handles.get(fh)
        if not isinstance(handle, _Staged):
            raise _Errno(errno.EBADF)
        with handle.lock:
            n = os.pwrite(handle.fd, data, offset)
            handle.dirty, handle.failed = True, False
        return n

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)
        rel = _rel(path)
        staged = self._open_staged(rel)
        if staged is not None:
            try:
                with staged.lock:
                    os.ftruncate(staged.fd, length)
                    staged.dirty, staged.failed = True, False
            finally:
                self._drop(staged)
            return
        # Not open here: the kernel truncates before an O_TRUNC open, and
        # ``truncate -s`` works on closed files. Rewrite the object.
        temp = self._new_staged(rel, fetch=length > 0)
        try:
            with temp.lock:
                os.ftruncate(temp.fd, length)
                temp.dirty = True
                self._upload(temp)
        finally:
            self._discard(temp)

    def mkdir(self, path: str, mode: int) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)
        rel = _rel(path)
        try:
            self.getattr(path)
        except _Errno:
            pass
        else:
            raise _Errno(errno.EEXIST)
        if self._local:
            self.fs.makedirs(self._full(rel), exist_ok=True)
        else:
            with self._lock:
                self._pending.add(rel)
        self._cache.forget(rel)

    def rmdir(self, path: str) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)
        rel = _rel(path)
        if not rel:
            raise _Errno(errno.EBUSY)
        if not stat.S_ISDIR(self.getattr(path)["st_mode"]):
            raise _Errno(errno.ENOTDIR)
        if len(self.readdir(path, 0)) > 2:
            raise _Errno(errno.ENOTEMPTY)
        with self._lock:
            pending = rel in self._pending
            self._pending.discard(rel)
        if self._local:
            self.fs.rmdir(self._full(rel))
        elif not pending:
            # An empty "folder" on an object store is a placeholder object, if anything.
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._full(rel))
        self._cache.forget(rel)
        self._cache.put_attrs(rel, None)

    def unlink(self, path: str) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)
        rel = _rel(path)
        with self._lock:
            staged = self._staged.pop(rel, None)
            if staged is not None:
                staged.unlinked = True  # open handles keep it; it is never uploaded again
        if staged is None or staged.remote:
            if staged is None and stat.S_ISDIR(self.getattr(path)["st_mode"]):
                raise _Errno(errno.EISDIR)
            self.fs.rm(self._full(rel))
        self._cache.forget(rel)
        self._cache.put_attrs(rel, None)

    def rename(self, old: str, new: str) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)
        src, dst = _rel(old), _rel(new)
        if not src or not dst:
            raise _Errno(errno.EBUSY)
        with self._lock:
            if src in self._pending:
                # A folder only this view knows: rename it and everything under it.
                self._pending = {
                    dst + p[len(src) :] if p == src or p.startswith(src + "/") else p for p in self._pending
                }
                self._forget_both(src, dst)
                return
            staged = self._staged.pop(src, None)
            if staged is not None:
                replaced = self._staged.pop(dst, None)
                if replaced is not None:
                    replaced.unlinked = True
                staged.rel = dst
                self._staged[dst] = staged
        if staged is not None:
            with staged.lock:
                if staged.remote:
                    self._move(src, dst)
        elif stat.S_ISDIR(self.getattr(old)["st_mode"]):
            # Renaming a folder on an object store is a copy of every object:
            # EXDEV makes mv(1) and shutil.move do it file by file instead.
            raise _Errno(errno.EXDEV)
        else:
            self._move(src, dst)
        self._forget_both(src, dst)

    def _move(self, src: str, dst: str) -> None:
        target = self._full(dst)
        if self._local:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self.fs.mv(self._full(src), target)

    def _forget_both(self, src: str, dst: str) -> None:
        self._cache.forget(src)
        self._cache.put_attrs(src, None)
        self._cache.forget(dst)

    def chmod(self, path: str, mode: int) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)

    def chown(self, path: str, uid: int, gid: int) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        if not self.writable:
            raise _Errno(errno.EROFS)

    def symlink(self, target: str, source: str) -> None:
        raise _Errno(errno.ENOTSUP if self.writable else errno.EROFS)

    def link(self, target: str, source: str) -> None:
        raise _Errno(errno.ENOTSUP if self.writable else errno.EROFS)

    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise _Errno(errno.ENOTSUP if self.writable else errno.EROFS)

    def close(self) -> int:
        """Wait for uploads in flight, upload what is still dirty, drop the staging files.

        Called when the mount is gone: the kernel may drop a last ``release``
        it had not sent yet, so whatever was written and not uploaded is
        uploaded here. Returns how many files could not be saved, here or
        before (their writers got EIO at close).
        """
        with self._lock:
            while self._inflight:
                self._idle.wait()
            staged_files = list(self._staged.values())
            self._staged.clear()
        failures = 0
        for handle in self._handles.drain():
            if isinstance(handle, _Reader):
                with contextlib.suppress(Exception):
                    handle.close()
            elif handle not in staged_files and not handle.closed:
                staged_files.append(handle)
        for staged in staged_files:
            if staged.closed:
                continue
            with staged.lock:
                try:
                    self._upload(staged)
                except _Errno:
                    failures += 1
            self._discard(staged)
        if self._own_staging and self._staging_dir is not None:
            shutil.rmtree(self._staging_dir, ignore_errors=True)
        return failures + self._lost


# --------------------------------------------------------------------------
# What a mount serves
# --------------------------------------------------------------------------


def _filesystem_source(fs: Any, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"protocol", "storage_options"}`` from which the helper rebuilds ``fs``."""
    if isinstance(fs, str):
        protocol, options = fs, dict(storage_options or {})
    else:
        if storage_options is not None:
            raise TypeError("storage_options go with a protocol name, not with a filesystem object")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        options = dict(getattr(fs, "storage_options", {}) or {})
    if protocol == "memory":
        raise MountError(
            "a memory:// filesystem lives inside this process; a mount's helper process cannot see it "
            "(mount a local folder or an object store)"
        )
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise MountError(
            f"the storage options of the {protocol!r} filesystem cannot be passed to the mount helper "
            f"(they must be JSON: strings, numbers, lists, dicts): {exc}"
        ) from exc
    return {"protocol": protocol, "storage_options": options}


@dataclasses.dataclass(frozen=True)
class MountSpec:
    """Everything the helper process needs to serve one mount, as JSON.

    ``filesystem`` is ``{"protocol": ..., "storage_options": {...}}`` and is
    rebuilt in the helper with ``fsspec.filesystem(protocol, **storage_options)``.
    Exactly one of ``root`` (a PrefixView of that folder or prefix) and
    ``manifest`` (a ManifestView of ``[rel_path, full_path, size, mtime]``
    entries) is set. Storage options may hold credentials: :func:`mount` writes
    the spec with mode 0600 and the helper deletes it as soon as it has read it.

    >>> spec = MountSpec.for_prefix("/mnt/out", "file", "/data/out", writable=True, label="out")
    >>> MountSpec.from_json(spec.to_json()) == spec
    True
    """

    mountpoint: str
    filesystem: dict[str, Any] = dataclasses.field(repr=False)  # its options may hold secrets
    label: str = "data"
    writable: bool = False
    root: str | None = None
    manifest: tuple[tuple[str, str, int, float], ...] | None = dataclasses.field(default=None, repr=False)
    staging_dir: str | None = None
    cache_ttl: float = DEFAULT_CACHE_TTL

    def __post_init__(self) -> None:
        if not os.path.isabs(self.mountpoint):
            raise MountError(f"the mountpoint must be an absolute path, not {self.mountpoint!r}")
        if not isinstance(self.filesystem.get("protocol"), str):
            raise MountError(f"the mount's filesystem has no protocol (keys: {sorted(self.filesystem)})")
        if (self.root is None) == (self.manifest is None):
            raise MountError("a mount serves either a root folder or a manifest, exactly one of them")
        if self.writable and self.manifest is not None:
            raise MountError("a manifest mount is read-only; mount a root folder to write")

    @classmethod
    def for_prefix(
        cls,
        mountpoint: str | os.PathLike[str],
        fs: Any,
        root: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        writable: bool = False,
        label: str = "data",
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> MountSpec:
        """Mount the live folder ``root`` of ``fs`` (an fsspec filesystem or a protocol name)."""
        return cls(
            mountpoint=os.path.abspath(mountpoint),
            filesystem=_filesystem_source(fs, storage_options),
            label=label,
            writable=writable,
            root=root,
            cache_ttl=cache_ttl,
        )

    @classmethod
    def for_manifest(
        cls,
        mountpoint: str | os.PathLike[str],
        fs: Any,
        entries: Iterable[tuple[str, str, int, float]],
        *,
        storage_options: Mapping[str, Any] | None = None,
        label: str = "data",
    ) -> MountSpec:
        """Mount the files ``(rel_path, full_path, size, mtime)`` of ``fs`` read-only.

        The paths are checked here, so a bad manifest fails before a process starts.
        """
        manifest = tuple((str(r), str(p), int(s), float(m)) for r, p, s, m in entries)
        ManifestView((rel, None, full, size, mtime) for rel, full, size, mtime in manifest)
        return cls(
            mountpoint=os.path.abspath(mountpoint),
            filesystem=_filesystem_source(fs, storage_options),
            label=label,
            manifest=manifest,
        )

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["version"] = _SPEC_VERSION
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MountSpec:
        data = json.loads(text)
        if data.pop("version", None) != _SPEC_VERSION:
            raise MountError("the mount spec was written by another version of runyard")
        if data.get("manifest") is not None:
            data["manifest"] = tuple((r, p, int(s), float(m)) for r, p, s, m in data["manifest"])
        return cls(**data)

    def view(self, fs: Any) -> View:
        """The view this spec describes, over ``fs`` (built from ``filesystem``)."""
        if self.manifest is not None:
            return ManifestView((rel, fs, full, size, mtime) for rel, full, size, mtime in self.manifest)
        assert self.root is not None
        return PrefixView(fs, self.root, writable=self.writable, staging_dir=self.staging_dir, cache_ttl=self.cache_ttl)


# --------------------------------------------------------------------------
# Is FUSE usable here?
# --------------------------------------------------------------------------


def _load_fusepy() -> ModuleType:
    """fusepy, imported now: it loads libfuse.so.2 the moment it is imported."""
    try:
        module = importlib.import_module("fuse")
    except ImportError as exc:
        raise MountError(f"{INSTALL_HINT} (fusepy is not installed: {exc})") from exc
    except OSError as exc:  # fusepy raises EnvironmentError("Unable to find libfuse")
        raise MountError(f"{INSTALL_HINT} (libfuse.so.2 cannot be loaded: {exc})") from exc
    if not hasattr(module, "FUSE"):
        raise MountError(f"{INSTALL_HINT} (the 'fuse' module at {module.__file__} is not fusepy)")
    return module


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        pass
    return True  # cannot tell: let the mount itself say


def _fusermount() -> str | None:
    """libfuse 2 runs ``fusermount`` for unprivileged mounts and for auto_unmount."""
    return shutil.which("fusermount") or (os.path.exists("/bin/fusermount") and "/bin/fusermount") or None


ENV_NO_FUSE: Final = "RUNYARD_NO_FUSE"
"""Set (to anything but 0) to never mount: mounted inputs are downloaded, mounted outputs uploaded at the end."""


def fuse_available() -> str | None:
    """``None`` when a FUSE mount can work here, else why not and what to do.

    Callers fall back to downloading, with this message.

    >>> reason = fuse_available()
    >>> reason is None or isinstance(reason, str)
    True
    """
    if os.environ.get(ENV_NO_FUSE, "").strip() not in ("", "0"):
        return f"{ENV_NO_FUSE} is set"
    if not sys.platform.startswith("linux"):
        return f"FUSE mounts work on Linux only (this is {sys.platform}); the data will be downloaded instead"
    if not os.path.exists("/dev/fuse"):
        return (
            "there is no /dev/fuse: load the kernel's fuse module (modprobe fuse), or in a container "
            "start it with --device /dev/fuse --cap-add SYS_ADMIN"
        )
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse cannot be opened for reading and writing by this user: check its permissions"
    try:
        _load_fusepy()
    except MountError as exc:
        return str(exc)
    if os.geteuid() == 0:
        if not _has_cap_sys_admin():
            return "mounting needs CAP_SYS_ADMIN: start the container with --cap-add SYS_ADMIN --device /dev/fuse"
    elif _fusermount() is None:
        return "mounting as a user other than root needs fusermount: apt-get install fuse3"
    return None


def _allow_other() -> bool:
    """Whether other users (a run's script may run as one) may be let in."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf", encoding="utf-8") as f:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def _fuse_options(spec: MountSpec) -> dict[str, Any]:
    label = "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.label) or "data"
    options: dict[str, Any] = {
        "foreground": True,
        "nothreads": False,
        "ro": not spec.writable,
        "default_permissions": False,
        "fsname": f"runyard:{label}",
        "subtype": "runyard",
    }
    if _allow_other():
        options["allow_other"] = True
    if _fusermount() is not None:
        # A watchdog fusermount unmounts when the helper dies, even by SIGKILL,
        # so a dead helper leaves no "Transport endpoint is not connected".
        options["auto_unmount"] = True
    if spec.manifest is not None:
        options.update(_MANIFEST_KERNEL_OPTIONS)
    return options


# --------------------------------------------------------------------------
# Mounting and unmounting
# --------------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    # Spaces, tabs, newlines and backslashes are written as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _canonical(path: str | os.PathLike[str]) -> str:
    # Resolve the parent only: stat of a dead mount fails with ENOTCONN.
    p = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))


def _mount_type(path: str | os.PathLike[str]) -> str | None:
    """The filesystem type mounted at ``path`` (the topmost), or None.

    ``os.path.ismount`` says False for a mount whose helper died (its stat
    fails), so this reads the kernel's mount table instead.
    """
    target = _canonical(path)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                # id parent dev root MOUNTPOINT options [optional...] - FSTYPE source superoptions
                fields = line.split(" ")
                if len(fields) > 7 and _unescape_mountinfo(fields[4]) == target and "-" in fields[6:]:
                    found = fields[fields.index("-", 6) + 1]
    except OSError:
        return "unknown" if os.path.ismount(target) else None
    return found


def mount_type(path: str | os.PathLike[str]) -> str | None:
    """The filesystem type mounted at ``path`` (``overlay``, ``fuse.runyard``...), or None."""
    return _mount_type(path)


def mount_source(path: str | os.PathLike[str]) -> str | None:
    """The source field of what is mounted at ``path`` (the topmost), or None; a runyard
    mount's is ``runyard:<label>``."""
    target = _canonical(path)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.rstrip("\n").split(" ")
                if len(fields) > 8 and _unescape_mountinfo(fields[4]) == target and "-" in fields[6:]:
                    found = _unescape_mountinfo(fields[fields.index("-", 6) + 2])
    except OSError:
        return None
    return found


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether something is mounted at ``path``, alive or dead."""
    return _mount_type(path) is not None


def _unmount_commands(path: str, *, lazy: bool) -> list[list[str]]:
    commands: list[list[str]] = []
    seen: set[str] = set()
    for prog in ("fusermount3", "fusermount"):
        exe = shutil.which(prog)
        if exe and os.path.realpath(exe) not in seen:
            seen.add(os.path.realpath(exe))
            commands.append([exe, "-uz" if lazy else "-u", path])
    umount = shutil.which("umount")
    if umount and os.geteuid() == 0:
        commands.append([umount, "-l", path] if lazy else [umount, path])
    return commands


def _run_unmount(path: str, *, lazy: bool) -> str:
    """Try each unmount command until the mount is gone; what the last one said."""
    said = "no fusermount3, fusermount or umount found"
    for command in _unmount_commands(path, lazy=lazy):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            said = f"{command[0]}: {exc}"
            continue
        if done.returncode == 0 or not is_mounted(path):
            return ""
        said = (done.stderr or done.stdout).strip() or f"{command[0]} exited with {done.returncode}"
    return said


def unmount_stale(path: str | os.PathLike[str]) -> None:
    """Lazily unmount ``path``, e.g. a mount whose helper died; nothing if not mounted.

    A dead mount makes every access to the folder fail with "Transport
    endpoint is not connected"; afterwards it is an ordinary folder again.

    >>> unmount_stale("/nonexistent/never/mounted")
    """
    target = _canonical(path)
    kind = _mount_type(target)
    if kind is None:
        return
    if not kind.startswith("fuse"):
        # Never pull away somebody's disk because a run's cleanup named its folder.
        raise MountError(f"{target!r} is a {kind} mount, not a FUSE mount of runyard's; leaving it alone")
    said = _run_unmount(target, lazy=True)
    if is_mounted(target):
        raise MountError(f"cannot unmount {target!r}: {said}; try: umount -l {target!r} (as root)")


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace").strip()


class Mount:
    """A live mount and its helper process; made by :func:`mount`.

    Use it as a context manager, or call :meth:`unmount` (safe to call twice).
    """

    def __init__(
        self, spec: MountSpec, process: subprocess.Popen[bytes], state_dir: Path, *, own_state_dir: bool
    ) -> None:
        self.spec = spec
        self.process = process
        self.state_dir = state_dir
        self.log_path = state_dir / "helper.log"
        self._own_state_dir = own_state_dir
        self._done = False

    @property
    def mountpoint(self) -> Path:
        return Path(self.spec.mountpoint)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_mounted(self) -> bool:
        return is_mounted(self.spec.mountpoint)

    def unmount(self, *, timeout: float = 30.0) -> None:
        """Unmount, wait for the helper to finish its uploads and exit, clean up.

        A busy mount (a process still has a file open there) is detached
        lazily; the helper then serves the open files until they are closed or
        ``timeout`` passes, when it is terminated. For a writable mount,
        MountError says when the helper could not save everything.
        """
        if self._done:
            return
        self._done = True
        mp = self.spec.mountpoint
        said = ""
        if is_mounted(mp) and _run_unmount(mp, lazy=False):
            said = _run_unmount(mp, lazy=True)
        code = self._wait(timeout)
        log_tail = _tail(self.log_path)
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if is_mounted(mp):
            raise MountError(f"cannot unmount {mp!r}: {said}; try: umount -l {mp!r} (as root)")
        if self.spec.writable and code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise MountError(
                f"the helper of the writable mount at {mp!r} {how}; files written there may not all be saved:\n"
                f"{log_tail}"
            )

    def _wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.process.terminate()  # libfuse unmounts on SIGTERM
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> Mount:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unmount()

    def __repr__(self) -> str:
        return f"<Mount {self.spec.label!r} at {self.spec.mountpoint!r} pid={self.pid}>"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _helper_env() -> dict[str, str]:
    """The environment for the helper, able to import this very runyard."""
    import runyard

    env = dict(os.environ)
    src = str(Path(runyard.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def mount(spec: MountSpec, *, timeout: float = 30.0, state_dir: str | os.PathLike[str] | None = None) -> Mount:
    """Mount ``spec`` with a helper process; return once the folder answers.

    The mountpoint is made if missing and must be empty. The spec (0600), the
    helper's log and a writable mount's staging folder go in ``state_dir``, by
    default a private temporary folder removed at unmount (not next to the
    mountpoint, which is often inside a run's outputs).

    >>> import tempfile, fsspec
    >>> if fuse_available() is None:
    ...     src, mp = tempfile.mkdtemp(), tempfile.mkdtemp()
    ...     with mount(MountSpec.for_prefix(mp, fsspec.filesystem("file"), src)) as m:
    ...         os.listdir(mp)
    ... else:
    ...     print([])
    []
    """
    reason = fuse_available()
    if reason is not None:
        raise MountError(f"cannot mount {spec.label!r} at {spec.mountpoint!r}: {reason}")
    mp = Path(spec.mountpoint)
    if is_mounted(mp):
        raise MountError(
            f"{str(mp)!r} is already a mount point; unmount it first "
            "(runyard.data.fuse.unmount_stale for one whose helper died)"
        )
    try:
        mp.mkdir(parents=True, exist_ok=True)
        if any(mp.iterdir()):
            raise MountError(
                f"the mountpoint {str(mp)!r} is not empty: a mount would hide its files; use an empty folder"
            )
    except OSError as exc:
        raise MountError(f"cannot use {str(mp)!r} as a mountpoint: {exc}") from exc

    own = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="runyard-mount-")) if state_dir is None else Path(state_dir)
    try:
        state.mkdir(parents=True, exist_ok=True)
        if spec.writable and spec.staging_dir is None:
            spec = dataclasses.replace(spec, staging_dir=str(state / "staging"))
        spec_file = state / f"spec-{os.getpid()}-{time.monotonic_ns()}.json"
        _write_private(spec_file, spec.to_json())
        log_file = open(state / "helper.log", "ab")  # noqa: SIM115 - handed to the child
    except OSError as exc:
        if own:
            shutil.rmtree(state, ignore_errors=True)
        raise MountError(f"cannot prepare the mount's state folder {str(state)!r}: {exc}") from exc
    with log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "runyard.data.fuse", str(spec_file)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd="/",
            env=_helper_env(),
            # Its own session: a Ctrl-C meant for the run must not pull the
            # folder away before the run's own cleanup unmounts it.
            start_new_session=True,
        )
    handle = Mount(spec, process, state, own_state_dir=own)
    try:
        _wait_mounted(handle, timeout)
    except BaseException:
        handle._done = True
        if process.poll() is None:
            process.kill()
            process.wait()
        unmount_stale(mp)
        if own:
            shutil.rmtree(state, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            spec_file.unlink()
    return handle


def _wait_mounted(handle: Mount, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    mp = handle.spec.mountpoint
    delay = 0.005
    while True:
        code = handle.process.poll()
        if code is not None:
            raise MountError(
                f"mounting {handle.spec.label!r} at {mp!r} failed: the helper exited with code {code}:\n"
                f"{_tail(handle.log_path) or '(it wrote nothing)'}"
            )
        # The mount table first: stat of the folder would wait for the helper.
        if is_mounted(mp) and os.path.ismount(mp):
            return
        if time.monotonic() > deadline:
            raise MountError(
                f"mounting {handle.spec.label!r} at {mp!r} took longer than {timeout:g} s; the helper said:\n"
                f"{_tail(handle.log_path) or '(nothing)'}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


# --------------------------------------------------------------------------
# The helper process
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The helper: ``python -m runyard.data.fuse SPEC_FILE``; serves until unmounted.

    Exit codes: 0 unmounted cleanly, 1 some writes could not be saved or
    libfuse could not mount, 2 the spec or the filesystem is unusable.
    """
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s runyard-fuse[%(process)d] %(levelname)s %(message)s"
    )
    if len(args) != 1:
        log.error("usage: python -m runyard.data.fuse SPEC_FILE")
        return 2
    try:
        # Read, then delete at once: the spec may carry credentials.
        with open(args[0], encoding="utf-8") as f:
            text = f.read()
        os.unlink(args[0])
        spec = MountSpec.from_json(text)
    except (OSError, ValueError, TypeError, RunyardError) as exc:
        log.error("cannot read the mount spec %r: %s", args[0], exc)
        return 2
    protocol = spec.filesystem["protocol"]
    try:
        import fsspec

        fs = fsspec.filesystem(protocol, **spec.filesystem.get("storage_options", {}))
    except Exception as exc:
        log.error("cannot open the %r filesystem: %s: %s", protocol, type(exc).__name__, exc)
        return 2
    try:
        view = spec.view(fs)
        fusepy = _load_fusepy()
    except RunyardError as exc:
        log.error("%s", exc)
        return 2
    options = _fuse_options(spec)
    shown = ",".join(k if v is True else f"{k}={v}" for k, v in options.items() if v is not False)
    log.info("serving %s at %s (%s)", spec.label, spec.mountpoint, shown)
    status = 0
    try:
        fusepy.FUSE(view, spec.mountpoint, **options)
    except RuntimeError as exc:
        log.error("libfuse could not mount %r (its message is above): %s", spec.mountpoint, exc)
        status = 1
    finally:
        failures = view.close()
    if failures:
        log.error("%d written file(s) could not be uploaded", failures)
        return 1
    log.info("unmounted %s", spec.mountpoint)
    return status


if __name__ == "__main__":
    sys.exit(main())
