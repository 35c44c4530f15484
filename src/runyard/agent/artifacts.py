"""A run's ``./outputs`` and ``./logs``, synced into the content-addressed store.

:class:`OutputsSync` stores the files of ``WD/outputs`` as blobs while the run
goes (``scan()``, every second or so) and once more at its end
(``scan(final=True)``), and returns records named ``outputs/...``.
:class:`LogsMirror` copies the new bytes of ``WD/logs`` files into a live
mirror every ~100 ms, so other processes can follow them, and stores them as
blobs at the end (``finalize(store)``), named ``logs/...``.

**Stability rule** (``OutputsSync`` while running). A file is stored when two
consecutive scans saw the same (size, mtime, ctime, inode) *and* its ctime is
older than the start of the earlier of the two scans by more than
``CLOCK_SLACK_NS`` (20 ms, above the kernel's timestamp granularity): it was
left alone for a whole scan interval. A file still being written is left for
a later scan; ``scan(final=True)`` stores everything, stable or not. The
ctime condition also makes the stat cache sound on filesystems with coarse
timestamps: once a file is stored under a stat key, any later write gives it
another key, so an unchanged key means unchanged bytes and the file is never
read again. Content addressing means no byte is stored twice (a renamed or
copied file only adds a record).

**What is never read.** Names are POSIX paths below the prefix, built from
directory entries: never ``..``, absolute or empty, never a NUL; a name with a
backslash or that is not UTF-8 is skipped (it cannot be an artifact name).
Directories are opened with ``O_NOFOLLOW`` relative to their parent, and every
file with ``O_NOFOLLOW``; the kernel's own name for the opened file
(``/proc/self/fd``) must be the path expected, so swapping a folder for a
link mid-scan cannot make the agent read outside the working directory. A
**symlink** is never followed out of the working directory: a link to
``/etc/shadow`` uploads nothing and is reported as skipped. A link to a
regular file *inside* the working directory is uploaded with the target's
content under the link's name (``outputs/best.pt -> epoch9.pt`` is what users
expect to find); links to directories are not followed. FIFOs, sockets and
devices are skipped; unreadable files and folders are reported in ``issues``,
never fatal.

>>> import os, tempfile
>>> from runyard.store.local import LocalStore
>>> wd = tempfile.mkdtemp(); os.mkdir(os.path.join(wd, "outputs"))
>>> _ = open(os.path.join(wd, "outputs", "metrics.json"), "w").write("{}")
>>> sync = OutputsSync(LocalStore.open(tempfile.mkdtemp()), wd)
>>> [(r.name, r.size) for r in sync.scan(final=True)]
[('outputs/metrics.json', 2)]
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runyard.errors import ArtifactError
from runyard.paths import name_problem
from runyard.snapshot.walk import file_kind

if TYPE_CHECKING:
    from runyard.store.base import ObjectStore

CLOCK_SLACK_NS: Final = 20_000_000
"""A file whose ctime is this close to a scan's start may still be written."""
SMALL: Final = 1 << 20
"""Files up to this size are read with one read(2) and stored from memory; bigger ones are streamed."""
WINDOW: Final = 4096
"""Bytes of a log's copied part (its head and the end of what was copied) checked before appending."""
MAX_DEPTH: Final = 256
THREADS: Final = max(4, min(8, 2 * (os.cpu_count() or 2)))
"""Reads, hashes and writes overlap in threads (syscalls and blake3 release the GIL)."""
_BATCH_FILES: Final = 256
_BATCH_BYTES: Final = 16 << 20
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

SKIPPED: Final = "skipped"
UNREADABLE: Final = "unreadable"
NOT_MIRRORED: Final = "not-mirrored"

_Key = tuple[int, int, int, int]
"""(size, mtime_ns, ctime_ns, inode) of a file."""


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A file of a run stored as a blob: ``outputs/model.pt`` with its size, blake3 digest and mtime."""

    name: str
    size: int
    digest: str
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ArtifactIssue:
    """A path that was not synced.

    ``kind`` is ``"skipped"`` (by rule: a link out, a FIFO, a bad name),
    ``"unreadable"`` (the run's file could not be read) or ``"not-mirrored"``
    (a log's live mirror could not be written: a problem on runyard's side).
    """

    name: str
    kind: str
    reason: str


def check_name(name: str, prefix: str) -> str:
    """Return ``name`` if it is a safe artifact name below ``prefix``, else raise ``ArtifactError``.

    >>> check_name("outputs/model.pt", "outputs")
    'outputs/model.pt'
    >>> check_name("outputs/../etc/passwd", "outputs")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ArtifactError: 'outputs/../etc/passwd' is not a safe artifact name: it has a '..' part. ...
    """
    reason = _name_problem(name)
    if reason is None and not name.startswith(prefix.rstrip("/") + "/"):
        reason = f"it is not below '{prefix}/'"
    if reason is not None:
        raise ArtifactError(f"{name!r} is not a safe artifact name: {reason}. Artifact names are relative "
                            "POSIX paths such as 'outputs/model.pt', without '.', '..' or empty parts.")
    return name


def _name_problem(name: str) -> str | None:
    return name_problem(name)  # (a backslash is refused too: artifact names are POSIX paths)


def _component_problem(part: str) -> str | None:
    """Why a directory entry's name cannot be part of an artifact name (scandir never gives '.', '..', '/' or NUL)."""
    if "\\" in part:
        return "its name has a backslash, which artifact names cannot hold"
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    return None


def _printable(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _key(st: os.stat_result) -> _Key:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


# -- walking a folder without leaving the working directory --------------------------


@dataclass(slots=True)
class _Found:
    name: str
    """The artifact name: ``prefix/rel/path``."""
    path: str
    """The absolute path to read: the file, or the file a link resolves to."""
    key: _Key


class _Moved(Exception):
    """The path was replaced while it was read (or names something else now)."""


class _MirrorFailed(Exception):
    """A log's mirror could not be written."""


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _open_checked(path: str) -> tuple[int, os.stat_result]:
    """Open a regular file at ``path``, which must be where the kernel says it opened it."""
    fd = os.open(path, _READ_FLAGS)
    try:
        if _fd_path(fd) != path:
            raise _Moved(f"it moved while it was opened (now {_fd_path(fd)!r})")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Moved("it is no longer a regular file")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


class _Tree:
    """Lists the regular files below ``top`` (and links to files inside ``boundary``). No I/O until ``walk``."""

    def __init__(self, top: str, prefix: str, boundary: str) -> None:
        problem = _name_problem(prefix)
        if problem is not None:
            raise ArtifactError(f"The artifact prefix {prefix!r} is not usable: {problem}. Use a name like 'outputs'.")
        rel = os.path.relpath(os.path.abspath(top), os.path.abspath(boundary))
        if rel == ".." or rel.startswith("../"):
            raise ArtifactError(f"'{top}' is not inside the working directory '{boundary}'; "
                                "give a folder inside it.")
        self._rel = "" if rel == "." else rel
        self._boundary = boundary
        self.prefix = prefix
        self.top = ""
        self.root = ""

    def resolve(self) -> None:
        if not self.root:
            self.root = os.path.realpath(self._boundary)
            self.top = os.path.join(self.root, self._rel) if self._rel else self.root

    def walk(self) -> tuple[list[_Found], list[ArtifactIssue]]:
        self.resolve()
        files: list[_Found] = []
        issues: list[ArtifactIssue] = []
        try:
            fd = os.open(self.top, _DIR_FLAGS)
        except FileNotFoundError:
            return files, issues  # nothing written there yet
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                reason = f"./{self._rel or '.'} is not a folder (a link or a file); nothing in it is synced"
                issues.append(ArtifactIssue(self.prefix, SKIPPED, reason))
            else:
                issues.append(ArtifactIssue(self.prefix + "/", UNREADABLE, exc.strerror or str(exc)))
            return files, issues
        if _fd_path(fd) != self.top:
            os.close(fd)
            issues.append(ArtifactIssue(self.prefix, SKIPPED, f"./{self._rel} is not where it should be "
                                        "(a folder above it is a link); nothing in it is synced"))
            return files, issues
        self._walk(fd, self.top, self.prefix, 0, files, issues)
        return files, issues

    def _walk(self, fd: int, path: str, name: str, depth: int, files: list[_Found],
              issues: list[ArtifactIssue]) -> None:
        try:
            try:
                with os.scandir(fd) as it:
                    entries = list(it)
            except OSError as exc:
                issues.append(ArtifactIssue(name + "/", UNREADABLE, exc.strerror or str(exc)))
                return
            subdirs: list[str] = []
            for entry in entries:
                n = entry.name
                problem = _component_problem(n)
                if problem is not None:
                    issues.append(ArtifactIssue(_printable(f"{name}/{n}"), SKIPPED, problem))
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(n)
                    elif entry.is_file(follow_symlinks=False):
                        files.append(_Found(f"{name}/{n}", f"{path}/{n}", _key(entry.stat(follow_symlinks=False))))
                    elif entry.is_symlink():
                        self._link(f"{path}/{n}", f"{name}/{n}", files, issues)
                    else:
                        mode = entry.stat(follow_symlinks=False).st_mode
                        issues.append(ArtifactIssue(f"{name}/{n}", SKIPPED, f"it is {file_kind(mode)}, not a file"))
                except FileNotFoundError:
                    continue  # deleted while listed
            for n in subdirs:
                if depth >= MAX_DEPTH:
                    issues.append(ArtifactIssue(f"{name}/{n}/", SKIPPED, f"it is more than {MAX_DEPTH} folders deep"))
                    continue
                try:
                    sub = os.open(n, _DIR_FLAGS, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # replaced while listed; the next scan sees what it is now
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        issues.append(ArtifactIssue(f"{name}/{n}/", UNREADABLE, exc.strerror or str(exc)))
                    continue
                self._walk(sub, f"{path}/{n}", f"{name}/{n}", depth + 1, files, issues)
        finally:
            os.close(fd)

    def _link(self, path: str, name: str, files: list[_Found], issues: list[ArtifactIssue]) -> None:
        try:
            target = os.readlink(path)
        except OSError:
            return  # replaced while listed
        real = os.path.realpath(path)
        if not real.startswith(self.root + "/"):
            issues.append(ArtifactIssue(name, SKIPPED, f"it is a link to {target!r}, outside the working "
                                        "directory; links are not followed out of it"))
            return
        try:
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            issues.append(ArtifactIssue(name, SKIPPED, f"it is a broken link (to {target!r})"))
            return
        if stat.S_ISREG(st.st_mode):
            files.append(_Found(name, real, _key(st)))
        elif stat.S_ISDIR(st.st_mode):
            issues.append(ArtifactIssue(name, SKIPPED, f"it is a link to the folder {target!r}; "
                                        "links to folders are not followed"))
        else:
            issues.append(ArtifactIssue(name, SKIPPED, f"it is a link to {file_kind(st.st_mode)}, not a file"))


def _read_issue(name: str, exc: BaseException) -> ArtifactIssue | None:
    """The issue to report for a failed open/read, or None when the file just moved on."""
    if isinstance(exc, FileNotFoundError | _Moved):
        return None  # it vanished or was replaced: the next scan sees what is there
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return None  # became a link since it was listed
    if isinstance(exc, OSError):
        return ArtifactIssue(name, UNREADABLE, exc.strerror or str(exc))
    raise exc


def _store_fd(store: ObjectStore, fd: int, size: int, whole: bool) -> tuple[str, int]:
    """Store the file open at ``fd``; returns (digest, size stored).

    Small files: one read of ``size + 1`` bytes (a regular file returns less
    only at its end); if it grew, ``whole`` reads on to the end. Big files
    are streamed by the store through ``/proc/self/fd``.
    """
    if size <= SMALL:
        data = os.read(fd, size + 1)
        if len(data) > size and whole:
            parts = [data]
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            data = b"".join(parts)
        digest, _ = store.put_bytes(data)
        return digest, len(data)
    with open(os.dup(fd), "rb", buffering=0) as src:
        digest, n, _ = store.put_reader(src)
    return digest, n


_T = TypeVar("_T")
_R = TypeVar("_R")


def _parallel(items: list[_T], work: Callable[[_T], _R], size: Callable[[_T], int]) -> list[_R]:
    """``[work(i) for i in items]`` in a thread pool, in batches (few futures, balanced bytes)."""
    if len(items) <= 16:
        return [work(i) for i in items]
    batches: list[list[_T]] = []
    cur: list[_T] = []
    nbytes = 0
    for it in sorted(items, key=size, reverse=True):
        cur.append(it)
        nbytes += size(it)
        if len(cur) >= _BATCH_FILES or nbytes >= _BATCH_BYTES:
            batches.append(cur)
            cur, nbytes = [], 0
    if cur:
        batches.append(cur)

    def run(batch: list[_T]) -> list[_R]:
        return [work(i) for i in batch]

    with ThreadPoolExecutor(min(THREADS, len(batches))) as pool:
        return [r for done in pool.map(run, batches) for r in done]


# -- ./outputs ---------------------------------------------------------------------


@dataclass(slots=True)
class _Synced:
    key: _Key | None
    """The stat key the stored bytes belong to; None when unsure (read again next time)."""
    record: ArtifactRecord


class OutputsSync:
    """Syncs ``WD/<prefix>`` into ``store``. Keeps state between scans; not thread-safe.

    ``scan()`` returns the records stored by that scan (a new file, or new
    content under a name); ``records`` holds every record so far (a file
    deleted after it was stored keeps its record, as an uploaded artifact
    does); ``issues`` lists what the last scan skipped or could not read.
    """

    def __init__(self, store: ObjectStore, wd: str | os.PathLike[str], prefix: str = "outputs") -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        wd_path = os.fspath(wd)
        self._tree = _Tree(os.path.join(wd_path, *self.prefix.split("/")), self.prefix, wd_path)
        self._synced: dict[str, _Synced] = {}
        self._seen: dict[str, _Key] = {}
        self._prev_start: int | None = None
        self.issues: list[ArtifactIssue] = []
        self.read_files = 0
        """Files read so far (a file the stat cache vouches for is not read)."""

    @property
    def records(self) -> list[ArtifactRecord]:
        return [s.record for _, s in sorted(self._synced.items())]

    def pin(self) -> None:
        """Resolve the working directory now (before the script can move or relink anything)."""
        self._tree.resolve()

    def key_of(self, name: str) -> _Key | None:
        """The stat key (size, mtime_ns, ctime_ns, inode) the stored bytes of ``name`` belong to, when sure."""
        synced = self._synced.get(name)
        return synced.key if synced is not None else None

    def preload(self, known: dict[str, tuple[_Key, ArtifactRecord]]) -> None:
        """Take these files as stored already while their stat key is unchanged (a journal's records):
        a scan then reads only what changed since, or was never stored."""
        for name, (key, record) in known.items():
            if name.startswith(self.prefix + "/"):
                self._synced[name] = _Synced(key, record)

    def scan(self, final: bool = False) -> list[ArtifactRecord]:
        """Store what is stable (everything, with ``final=True``); return the records stored now."""
        start = time.time_ns()
        found, issues = self._tree.walk()
        seen: dict[str, _Key] = {}
        todo: list[_Found] = []
        prev_seen, prev_start = self._seen, self._prev_start
        for f in found:
            seen[f.name] = f.key
            done = self._synced.get(f.name)
            if done is not None and done.key == f.key:
                continue
            if final or (prev_start is not None and prev_seen.get(f.name) == f.key
                         and f.key[2] < prev_start - CLOCK_SLACK_NS):
                todo.append(f)
        out: list[ArtifactRecord] = []
        for f, rec, key, issue in _parallel(todo, lambda f: self._sync_one(f, final), lambda f: f.key[0]):
            if issue is not None:
                issues.append(issue)
            if rec is None:
                continue
            self.read_files += 1
            old = self._synced.get(f.name)
            self._synced[f.name] = _Synced(key, rec)
            if old is None or old.record.digest != rec.digest or old.record.size != rec.size:
                out.append(rec)
        self._seen, self._prev_start = seen, start
        self.issues = sorted(issues, key=lambda i: i.name)
        return sorted(out, key=lambda r: r.name)

    def _sync_one(self, f: _Found, final: bool) -> tuple[_Found, ArtifactRecord | None, _Key | None,
                                                          ArtifactIssue | None]:
        try:
            fd, st = _open_checked(f.path)
        except (OSError, _Moved) as exc:
            return f, None, None, _read_issue(f.name, exc)
        try:
            before = _key(st)
            if before != f.key and not final:
                return f, None, None, None  # changed since it was listed: not stable
            digest, size = _store_fd(self.store, fd, st.st_size, final)
            after = _key(os.fstat(fd))
        except OSError as exc:
            return f, None, None, _read_issue(f.name, exc)
        finally:
            os.close(fd)
        unchanged = after == before and size == after[0]
        if not unchanged and not final:
            return f, None, None, None  # written to while read: the next scans try again
        return f, ArtifactRecord(f.name, size, digest, after[1]), after if unchanged else None, None


# -- ./logs ------------------------------------------------------------------------


@dataclass(slots=True)
class _Log:
    src: str
    mirror: str
    ino: int
    copied: int = 0
    key: _Key | None = None
    mtime_ns: int = 0
    head: bytes = b""
    tail: bytes = b""
    hasher: Any = field(default=None, repr=False)


class LogsMirror:
    """Mirrors ``wd_logs_dir`` (``WD/logs``) into ``dest_dir`` as it grows; stores it at the end.

    ``scan()`` (every 100-200 ms) appends only the new bytes of each file to
    its mirror and returns the names that got bytes. A file that shrank, got
    another inode, or whose already-copied bytes changed (its first and last
    ``WINDOW`` copied bytes are compared) is copied again from its start: the
    mirror is truncated and rewritten, as ``tail -F`` expects. Hidden files
    are mirrored too. ``finalize(store)`` scans once more, stores every file
    as a blob and returns records named ``logs/...``. Links and names follow
    the rules of the module docstring; links may point anywhere inside
    ``boundary`` (default: the folder holding ``wd_logs_dir``).
    """

    def __init__(self, wd_logs_dir: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *,
                 prefix: str = "logs", boundary: str | os.PathLike[str] | None = None) -> None:
        logs = os.path.abspath(os.fspath(wd_logs_dir))
        self.dest = os.path.realpath(os.fspath(dest_dir))  # canonical now: a link planted later is seen
        self.prefix = prefix.strip("/")
        self._tree = _Tree(logs, self.prefix, os.fspath(boundary) if boundary is not None else os.path.dirname(logs))
        self._logs: dict[str, _Log] = {}
        self._made: set[str] = set()
        self.issues: list[ArtifactIssue] = []
        self.resent = 0
        """How many times a file was copied again from its start (truncated or rewritten)."""

    def pin(self) -> None:
        """Resolve the working directory now (before the script can move or relink anything)."""
        self._tree.resolve()

    def scan(self) -> list[str]:
        """Append new bytes to the mirrors; return the names whose mirror changed."""
        start = time.time_ns()
        found, issues = self._tree.walk()
        changed: list[str] = []
        for f in found:
            log = self._logs.get(f.name)
            if log is not None and log.key == f.key:
                continue
            try:
                if self._pull(f, log, start):
                    changed.append(f.name)
            except _MirrorFailed as exc:
                issues.append(ArtifactIssue(f.name, NOT_MIRRORED, str(exc)))
            except (OSError, _Moved) as exc:
                issue = _read_issue(f.name, exc)
                if issue is not None:
                    issues.append(issue)
        self.issues = sorted(issues, key=lambda i: i.name)
        return changed

    def _mirror_path(self, name: str) -> str:
        return os.path.join(self.dest, *name[len(self.prefix) + 1:].split("/"))

    def _pull(self, f: _Found, known: _Log | None, start: int) -> bool:
        from runyard.store.base import new_hasher

        fd, st = _open_checked(f.path)
        try:
            resend = known is not None and not self._continues(fd, st, known)
            if known is None or resend:
                if resend:
                    self.resent += 1
                log = self._logs[f.name] = _Log(f.path, self._mirror_path(f.name), st.st_ino, hasher=new_hasher())
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            else:
                log = known
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            log.src = f.path
            got = 0
            out = self._open_mirror(log.mirror, flags)
            try:
                while chunk := os.pread(fd, 1 << 20, log.copied):
                    try:
                        _write_all(out, chunk)
                    except OSError as exc:
                        log.key = None
                        raise _MirrorFailed(f"cannot write its mirror {log.mirror}: {exc.strerror}") from exc
                    self._advance(log, chunk)
                    got += len(chunk)
            finally:
                os.close(out)
            after = os.fstat(fd)
            log.mtime_ns = after.st_mtime_ns
            # Trust the stat key only for a file that is quiet now and fully copied.
            quiet = after.st_size == log.copied and after.st_ctime_ns < start - CLOCK_SLACK_NS
            log.key = _key(after) if quiet else None
            return got > 0 or log is not known
        finally:
            os.close(fd)

    def _open_mirror(self, path: str, flags: int) -> int:
        try:
            parent = os.path.dirname(path)
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            if os.path.realpath(parent) != parent:  # a folder on the way was swapped for a link
                raise _MirrorFailed(f"cannot write its mirror {path}: a folder on its way is a link, "
                                    "which is not followed")
            return os.open(path, flags | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise _MirrorFailed(f"cannot write its mirror {path}: {exc.strerror}") from exc

    @staticmethod
    def _continues(fd: int, st: os.stat_result, log: _Log) -> bool:
        """Whether the file still starts with the bytes already copied (so only new bytes are appended)."""
        if st.st_ino != log.ino or st.st_size < log.copied:
            return False
        if log.head and os.pread(fd, len(log.head), 0) != log.head:
            return False
        return not log.tail or os.pread(fd, len(log.tail), log.copied - len(log.tail)) == log.tail

    @staticmethod
    def _advance(log: _Log, chunk: bytes) -> None:
        if len(log.head) < WINDOW:
            log.head += chunk[: WINDOW - len(log.head)]
        log.tail = chunk[-WINDOW:] if len(chunk) >= WINDOW else (log.tail + chunk)[-WINDOW:]
        log.hasher.update(chunk)
        log.copied += len(chunk)

    def finalize(self, store: ObjectStore) -> list[ArtifactRecord]:
        """Scan once more, store every file as a blob, and return their records (sorted by name).

        What is stored is the file as it is now (read once more, so the record
        is exact even if a rewrite escaped the checks), and its mirror is made
        equal to it. A file deleted from ``./logs`` (or no longer readable) is
        stored from its mirror. Problems are added to ``issues``; a
        ``StoreError`` (the store cannot be written) is raised.
        """
        self.scan()
        records: list[ArtifactRecord] = []
        for name, log in sorted(self._logs.items()):
            try:
                rec = self._store_source(store, name, log)
            except (OSError, _Moved):
                rec = None
            if rec is None:
                try:
                    digest, size, _ = store.put_file(log.mirror)
                except OSError as exc:
                    self.issues.append(ArtifactIssue(name, NOT_MIRRORED, f"neither the file nor its mirror "
                                                     f"can be read: {exc.strerror}"))
                    continue
                rec = ArtifactRecord(name, size, digest, log.mtime_ns)
            records.append(rec)
        return records

    def _store_source(self, store: ObjectStore, name: str, log: _Log) -> ArtifactRecord:
        fd, st = _open_checked(log.src)
        try:
            digest, size = _store_fd(store, fd, st.st_size, True)
        finally:
            os.close(fd)
        if size != log.copied or digest != log.hasher.hexdigest():
            self.resent += 1
            try:
                self._pull(_Found(name, log.src, _key(st)), None, time.time_ns())
            except (OSError, _Moved, _MirrorFailed):
                pass  # the record is exact either way; the mirror is a convenience
        return ArtifactRecord(name, size, digest, st.st_mtime_ns)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


__all__ = [
    "NOT_MIRRORED",
    "SKIPPED",
    "UNREADABLE",
    "ArtifactError",
    "ArtifactIssue",
    "ArtifactRecord",
    "LogsMirror",
    "OutputsSync",
    "check_name",
]
