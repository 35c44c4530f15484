"""A run's working directory: a snapshot made into an isolated folder, fast.

``materialize(store, snapshot_id, run_dir)`` makes the snapshot's tree in
``run_dir/wd`` and returns a :class:`Workdir`. Whatever the run does there
(write, append, truncate, chmod, delete, rename) never reaches the store, the
snapshot or another run's working directory.

Two methods, chosen per call (``method="auto"``):

``overlay`` (root, Linux overlayfs, a local store on the same filesystem)
    A lower layer of *hardlinks* to the store's blob files is built in
    ``run_dir/layers/lower`` (a few thousand ``link(2)`` calls take tens of
    milliseconds, whatever the file sizes), then an overlay is mounted on
    ``run_dir/wd`` with ``run_dir/layers/upper`` as the writable layer. The
    kernel copies a file up before anything changes it, so the blob behind it
    is never written. A blob is *copied* into the lower layer instead of
    linked when its mode is not the one the manifest asks for (0755 for an
    executable, 0644 otherwise; blobs are stored 0644, so executables are
    copies) and when the same content appears at more than one path of the
    snapshot (linked once, copied after: two paths of a working directory are
    never one inode, so ``shutil.copy(a, b)`` or ``tar`` behave as on a
    restored tree). The fast path checks each blob's type, size and mode; it
    hashes contents only with ``verify=True`` (the copy path always does).

``copy`` (anything else: not root, no overlayfs, a remote store, another filesystem)
    :func:`runyard.snapshot.engine.restore` into ``run_dir/wd``: every blob
    is read, verified against its hash and written with a thread pool.

Layout of ``run_dir`` (a private, per-run folder)::

    wd/             the working directory (an overlay mount point, or a real copy)
    layers/lower/   the read-only layer: hardlinks, copies, empty dirs, symlinks
                    (or, with ``lower_cache``, the snapshot's shared layer there)
    layers/upper/   everything the run wrote
    layers/scratch/ overlayfs' work directory

``Workdir.cleanup()`` unmounts and removes all of it (the supervisor syncs
``./outputs`` before). After a crash, :func:`cleanup_stale` does the same for
a ``run_dir`` whose ``Workdir`` object is gone.

>>> import tempfile
>>> from runyard.workspace import Workspace
>>> src = tempfile.mkdtemp()
>>> _ = open(os.path.join(src, "train.py"), "w").write("print(1)\\n")
>>> ws = Workspace.create(tempfile.mkdtemp())
>>> snap = ws.snapshot(src)
>>> wd = materialize(ws.open_store(), snap.id, os.path.join(tempfile.mkdtemp(), "run-1"))
>>> sorted(os.listdir(wd.path)), wd.method in ("overlay", "copy")
(['train.py'], True)
>>> wd.cleanup()
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from runyard.errors import WorkdirError
from runyard.snapshot import manifest as mf

if TYPE_CHECKING:
    from runyard.store.base import ObjectStore

OVERLAY: Final = "overlay"
COPY: Final = "copy"
Method = Literal["auto", "overlay", "copy"]

WD: Final = "wd"
LAYERS: Final = "layers"
LOWER: Final = "lower"
UPPER: Final = "upper"
WORK: Final = "scratch"  # overlayfs' workdir
_RESTORE_TMP: Final = f".{WD}.runyard-restore-"
"""Prefix of the temporary folder ``engine.restore`` builds next to ``wd``."""
_PROBE: Final = ".overlay-probe-"
_BUILDING: Final = ".building-"

EXEC_MODE: Final = 0o755
FILE_MODE: Final = 0o644
DIR_MODE: Final = 0o755
THREADS: Final = max(2, min(8, os.cpu_count() or 2))

# mount(2) / umount2(2) flags (linux/mount.h)
_MS_NOSUID: Final = 0x2
_MS_NODEV: Final = 0x4
_MNT_DETACH: Final = 0x2
_UMOUNT_NOFOLLOW: Final = 0x8
_OVERLAY_OPTIONS: Final = "index=off,redirect_dir=on,metacopy=off"
"""index=off: hardlinked lower files must not be tied together on copy-up.
redirect_dir=on: a run can rename a directory that came from the snapshot
(without it rename(2) fails with EXDEV). metacopy=off: a chmod copies the
whole file up, so the upper layer never depends on lower data."""


@dataclass
class Workdir:
    """A materialized snapshot. ``path`` is where the run's script runs."""

    path: str
    method: str
    """``"overlay"`` or ``"copy"``."""
    run_dir: str
    snapshot_id: str
    fallback_reason: str | None = None
    """Why the overlay was not used (None when it was, or when ``copy`` was asked for)."""
    files: int = 0
    linked: int = 0
    """Files hardlinked into the lower layer (overlay only)."""
    copied: int = 0
    """Files copied: into the lower layer (overlay) or into ``path`` (copy)."""
    seconds: float = 0.0
    _made_run_dir: bool = field(default=False, init=False, repr=False)
    _lock: int | None = field(default=None, init=False, repr=False)
    """The shared lower layer's lock, held while the overlay uses it."""
    _cleaning: bool = field(default=False, init=False, repr=False)
    _clean: bool = field(default=False, init=False, repr=False)

    def cleanup(self) -> None:
        """Unmount and remove everything ``materialize`` made. Idempotent.

        Safe to call again while a call is in progress (from a signal handler,
        say): the inner call returns at once and the outer one finishes.
        Raises ``WorkdirError`` (and removes nothing below a mount) when
        something under ``run_dir`` cannot be unmounted.
        """
        if self._clean or self._cleaning:
            return
        if os.path.realpath(self.run_dir) != self.run_dir:
            raise WorkdirError(f"'{self.run_dir}' is not where the working directory was made (it, or a folder "
                               "above it, was moved or replaced by a link); nothing was removed through it.")
        self._cleaning = True
        try:
            cleanup_stale(self.run_dir)
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
            if self._made_run_dir:
                try:
                    os.rmdir(self.run_dir)
                except OSError:
                    pass  # the supervisor put something of its own there
            self._clean = True
        finally:
            self._cleaning = False

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# -- the public entry points ------------------------------------------------------


def materialize(
    store: ObjectStore,
    snapshot_id: str,
    run_dir: str | os.PathLike[str],
    *,
    method: Method = "auto",
    verify: bool = False,
    lower_cache: str | os.PathLike[str] | None = None,
) -> Workdir:
    """Make snapshot ``snapshot_id`` an isolated working directory in ``run_dir/wd``.

    ``method="auto"`` uses an overlay mount when it can (see the module
    docstring) and a verified copy otherwise; ``"overlay"`` raises
    ``WorkdirError`` saying why when the overlay cannot be used; ``"copy"``
    always copies. ``run_dir`` is made if needed; ``run_dir/wd`` must not
    exist yet (after a crash, call :func:`cleanup_stale` first).

    The copy always verifies every blob against its hash. The overlay checks
    each blob's type and size only, unless ``verify=True``: then every blob
    is hashed first (reading all its bytes, which the hardlinks otherwise
    never do) and a damaged one hands over to the copy, which reports it.

    With ``lower_cache`` (a folder on the store's filesystem), the overlay's
    lower layer is built once per snapshot there and shared by every run of
    that snapshot: a repeat materialization is a mount. Trim the cache with
    :func:`prune_lower_cache`.
    """
    t0 = time.perf_counter()
    if method not in ("auto", OVERLAY, COPY):
        raise WorkdirError(f"Unknown method {method!r} for a working directory; use 'auto', 'overlay' or 'copy'.")
    given = os.path.abspath(os.fspath(run_dir))
    made_run_dir = not os.path.lexists(given)
    try:
        os.makedirs(given, exist_ok=True)
    except OSError as exc:
        raise WorkdirError(f"Cannot create the run folder '{given}': {exc.strerror}. "
                           "Check the path and its permissions.") from exc
    root = os.path.realpath(given)  # mountinfo shows canonical paths
    wd = os.path.join(root, WD)
    for leftover in (wd, os.path.join(root, LAYERS)):
        if os.path.lexists(leftover):
            raise WorkdirError(
                f"'{leftover}' already exists: a working directory was made in '{root}' before and not "
                "removed. Call runyard.agent.workdir.cleanup_stale on that folder (or use a new one)."
            )
    try:
        result = _materialize(store, snapshot_id, root, method, verify,
                              None if lower_cache is None else os.fspath(lower_cache))
    except BaseException:
        if made_run_dir:
            try:
                os.rmdir(root)
            except OSError:
                pass
        raise
    result._made_run_dir = made_run_dir
    result.seconds = time.perf_counter() - t0
    return result


def _materialize(store: ObjectStore, snapshot_id: str, root: str, method: Method, verify: bool,
                 lower_cache: str | None) -> Workdir:
    from runyard.snapshot.engine import load_manifest

    wd = os.path.join(root, WD)
    manifest = load_manifest(store, snapshot_id)
    result = Workdir(path=wd, method=COPY, run_dir=root, snapshot_id=snapshot_id, files=len(manifest.files))
    reason = None if method == COPY else _overlay_unavailable(store, root)
    if reason is None and method != COPY:
        try:
            result.linked, result.copied, result._lock = _build_overlay(
                store, manifest, snapshot_id, root, verify, lower_cache)
            result.method = OVERLAY
        except _FastPathUnavailable as exc:
            cleanup_stale(root)
            reason = str(exc)
        except BaseException:
            cleanup_stale(root)
            raise
    if result.method != OVERLAY:
        if method == OVERLAY:
            raise WorkdirError(f"Cannot mount an overlay working directory in '{root}': {reason}. "
                               "Use method='auto' or 'copy' to copy the snapshot instead.")
        result.fallback_reason = reason
        _copy(store, snapshot_id, root, wd)
        result.copied = result.files
    return result


def cleanup_stale(run_dir: str | os.PathLike[str]) -> list[str]:
    """Unmount and remove what ``materialize`` left in ``run_dir`` (after a crash).

    Everything mounted at or below ``run_dir`` is unmounted first, deepest
    first (lazily when busy), so nothing is ever deleted through a mount. Then
    ``wd``, ``layers`` and leftovers of an interrupted copy or probe are
    removed; anything else in ``run_dir`` is left alone. Returns what was
    unmounted or removed. Safe to call on a clean or missing folder.
    """
    root = os.path.realpath(os.fspath(run_dir))
    done: list[str] = []
    if not os.path.isdir(root):
        return done
    for mp in mounts_below(root):
        _umount(mp)
        done.append(mp)
    still = mounts_below(root)
    if still:
        raise WorkdirError(f"'{still[0]}' is still mounted after unmounting it; nothing was removed. "
                           f"Unmount it (umount -l '{still[0]}') and call cleanup_stale again.")
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise WorkdirError(f"Cannot list '{root}': {exc.strerror}. Check its permissions.") from exc
    for name in sorted(names):
        if name in (WD, LAYERS) or name.startswith((_RESTORE_TMP, _PROBE)):
            path = os.path.join(root, name)
            _remove_tree(path)
            done.append(path)
    return done


def unmount(target: str) -> None:
    """Unmount ``target`` (lazily when busy); nothing when it is not a mount point."""
    _umount(target)


def unmount_overlays_below(path: str) -> list[str]:
    """Unmount the overlays (and nothing else) mounted at or below ``path``, deepest first;
    returns them. For a run folder whose working directory was moved or replaced by a link."""
    wanted = set(mounts_below(path))
    done: list[str] = []
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return done
    overlays = set()
    for line in lines:
        fields = line.rstrip(b"\n").split(b" ")
        if b"-" in fields[6:] and len(fields) > fields.index(b"-", 6) + 1 \
                and fields[fields.index(b"-", 6) + 1] == b"overlay":
            overlays.add(os.fsdecode(_unescape_mountinfo(fields[4])))
    for mp in sorted(wanted & overlays, key=lambda p: (-p.count("/"), p)):
        _umount(mp)
        done.append(mp)
    return done


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    prefix = path.rstrip("/") + "/"
    found: set[str] = set()
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split(b" ", 5)
                if len(fields) < 5:
                    continue
                mp = os.fsdecode(_unescape_mountinfo(fields[4]))
                if mp == path or mp.startswith(prefix):
                    found.add(mp)
    except FileNotFoundError:  # no /proc: nothing this module mounted can exist
        return []
    return sorted(found, key=lambda p: (-p.count("/"), p))


def overlay_lowers() -> set[str]:
    """The lower layers of the overlays mounted now (a layer in use must stay, even when
    the supervisor that mounted it died and nobody holds its lock)."""
    found: set[str] = set()
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.rstrip(b"\n").split(b" ")
                if b"-" not in fields[6:]:
                    continue
                at = fields.index(b"-", 6)
                if len(fields) < at + 4 or fields[at + 1] != b"overlay":
                    continue
                for option in fields[at + 3].split(b","):
                    if option.startswith(b"lowerdir="):
                        value = _unescape_mountinfo(option[len(b"lowerdir="):])
                        found.update(os.fsdecode(p).replace("\\:", ":") for p in re.split(rb"(?<!\\):", value) if p)
    except FileNotFoundError:
        pass
    return found


def overlay_available(directory: str | os.PathLike[str]) -> bool:
    """Whether this process can mount an overlay with its upper layer in ``directory``.

    Tried once per filesystem and process (a tiny mount in a temporary folder
    inside ``directory``); the answer is cached.
    """
    return _probe(os.path.realpath(os.fspath(directory))) is None


# -- the overlay --------------------------------------------------------------------


class _FastPathUnavailable(Exception):
    """The overlay cannot be used for this snapshot here; copy instead."""


_probe_lock = threading.Lock()
_probe_cache: dict[int, str | None] = {}
"""Per filesystem (st_dev): None when an overlay mount works, else why not.
A capability of this process and kernel, not run state."""


def _overlay_unavailable(store: ObjectStore, root: str) -> str | None:
    """Why the fast path cannot be used for ``store`` in ``root``, or None."""
    from runyard.store.local import LocalStore

    if not sys.platform.startswith("linux"):
        return "overlayfs needs Linux"
    if not isinstance(store, LocalStore):
        return f"the store at {store.url} is not a local folder"
    try:
        if os.stat(os.path.join(store.root, "blobs")).st_dev != os.stat(root).st_dev:
            return f"the store at {store.root} is on another filesystem than {root} (hardlinks cannot cross)"
    except OSError as exc:
        return f"cannot stat the store's blobs: {exc.strerror}"
    if os.geteuid() != 0:
        return "not running as root (mounting an overlay needs root)"
    return _probe(root)


def _probe(root: str) -> str | None:
    try:
        dev = os.stat(root).st_dev
    except OSError as exc:
        return f"cannot stat {root}: {exc.strerror}"
    with _probe_lock:
        if dev in _probe_cache:
            return _probe_cache[dev]
        base = os.path.join(root, f"{_PROBE}{os.getpid()}-{os.urandom(4).hex()}")
        reason: str | None
        try:
            parts = [os.path.join(base, p) for p in ("l", "u", "w", "m")]
            for p in parts:
                os.makedirs(p)
            os.mkdir(os.path.join(parts[0], "d"))
            _mount_overlay(parts[0], parts[1], parts[2], parts[3])
            try:
                # Without redirect_dir support (no trusted xattrs on the upper
                # filesystem) a run could not rename a folder from the snapshot.
                os.rename(os.path.join(parts[3], "d"), os.path.join(parts[3], "d2"))
                reason = None
            except OSError as exc:
                reason = f"the overlay cannot rename a folder of the snapshot here ({exc.strerror})"
            finally:
                _umount(parts[3])
        except (_FastPathUnavailable, WorkdirError) as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"cannot set up a probe mount: {exc}"
        finally:
            try:
                _remove_tree(base)
            except WorkdirError:
                pass
        _probe_cache[dev] = reason
        return reason


def _build_overlay(store: ObjectStore, manifest: mf.Manifest, snapshot_id: str, root: str, verify: bool,
                   shared: str | None) -> tuple[int, int, int | None]:
    """Build (or reuse) the lower layer and mount the overlay on ``root/wd``;
    returns (linked, copied, the shared layer's lock fd or None)."""
    from runyard.store.base import blob_key

    store_root: str = store.root  # type: ignore[attr-defined]  # a LocalStore, checked by the caller
    if verify:
        digests = sorted({e.hash for e in manifest.entries if e.type == mf.FILE})
        with ThreadPoolExecutor(THREADS) as pool:
            got = list(pool.map(lambda d: _hash_file(os.path.join(store_root, blob_key(d))), digests))
        for d, g in zip(digests, got, strict=True):
            if g != d:
                raise _FastPathUnavailable(f"blob {d[:12]} does not hash to its name")
    layers = os.path.join(root, LAYERS)
    upper, work = (os.path.join(layers, n) for n in (UPPER, WORK))
    wd = os.path.join(root, WD)
    os.mkdir(layers, 0o700)  # nobody but root reaches the links into the store
    for d in (upper, work, wd):
        os.mkdir(d, DIR_MODE)
        os.chmod(d, DIR_MODE)
    if shared is None:
        lower = os.path.join(layers, LOWER)
        os.mkdir(lower, DIR_MODE)
        os.chmod(lower, DIR_MODE)
        linked, copied = _build_lower(store_root, manifest, lower, root)
        lock = None
    else:
        lower, lock, linked, copied = _shared_lower(store_root, manifest, snapshot_id, shared, root)
    try:
        _mount_overlay(lower, upper, work, wd)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    return linked, copied, lock


def _shared_lower(store_root: str, manifest: mf.Manifest, snapshot_id: str, cache: str,
                  root: str) -> tuple[str, int, int, int]:
    """The snapshot's lower layer in the shared cache, built once for all runs.

    Returns (lower, lock fd, linked, copied). The caller holds a shared lock
    on ``<id>.lock`` for as long as its overlay uses the layer, so
    :func:`prune_lower_cache` never removes a layer in use. A layer is built
    in a temporary folder and renamed into place, so a half-built one is never
    seen; two runs building the same one at once keep the first.
    """
    import fcntl

    os.makedirs(cache, 0o700, exist_ok=True)
    lock = os.open(os.path.join(cache, f"{snapshot_id}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)
        final = os.path.join(cache, snapshot_id)
        if os.path.isdir(final):
            os.utime(final)  # most recently used: kept longest by prune_lower_cache
            return final, lock, 0, 0
        tmp = os.path.join(cache, f"{_BUILDING}{snapshot_id[:16]}-{os.getpid()}-{threading.get_ident()}")
        os.mkdir(tmp, DIR_MODE)
        os.chmod(tmp, DIR_MODE)
        try:
            linked, copied = _build_lower(store_root, manifest, tmp, root)
            os.rename(tmp, final)
        except OSError as exc:
            _remove_tree(tmp)
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not os.path.isdir(final):
                raise
            return final, lock, 0, 0  # built by another run meanwhile
        except BaseException:
            _remove_tree(tmp)
            raise
        return final, lock, linked, copied
    except BaseException:
        os.close(lock)
        raise


def prune_lower_cache(cache: str | os.PathLike[str], keep: int = 8) -> list[str]:
    """Remove all but the ``keep`` most recently used shared lower layers that
    no mounted working directory uses; returns what was removed."""
    import fcntl

    root = os.fspath(cache)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    layers = [n for n in names if len(n) == 64 and os.path.isdir(os.path.join(root, n))]
    layers.sort(key=lambda n: os.path.getmtime(os.path.join(root, n)), reverse=True)
    removed = []
    in_use = overlay_lowers() if layers[keep:] else set()
    for name in layers[keep:]:
        if os.path.join(root, name) in in_use:
            continue  # under a mounted overlay whose supervisor died (its lock went with it)
        lock = os.open(os.path.join(root, f"{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            continue  # in use by a running working directory
        try:
            _remove_tree(os.path.join(root, name))
            removed.append(name)
        finally:
            os.close(lock)  # the lock file stays: unlinking it could let two runs lock different files
    stale = time.time() - 3600
    for name in names:
        path = os.path.join(root, name)
        if name.startswith(_BUILDING) and os.path.getmtime(path) < stale:
            _remove_tree(path)  # left by a build that crashed
            removed.append(name)
    return removed


def _build_lower(store_root: str, manifest: mf.Manifest, lower: str, root: str) -> tuple[int, int]:
    """Fill ``lower`` with the snapshot's tree: hardlinks to blobs where the
    mode allows, copies otherwise; returns (linked, copied)."""
    from runyard.store.base import blob_key

    # Directories, parents before children (a prefix sorts first).
    dirs: set[str] = set()
    for e in manifest.entries:
        d = e.path if e.type == mf.DIR else os.path.dirname(e.path)
        while d and d not in dirs:
            dirs.add(d)
            d = os.path.dirname(d)
    for d in sorted(dirs):
        p = os.path.join(lower, d)
        os.mkdir(p, DIR_MODE)
        os.chmod(p, DIR_MODE)  # whatever the umask: as restore's tree with umask 022

    linked = 0
    copies: list[tuple[str, str, int, int]] = []
    seen: set[str] = set()
    for e in manifest.entries:
        if e.type == mf.LINK:
            os.symlink(e.target, os.path.join(lower, e.path))
            continue
        if e.type != mf.FILE:
            continue
        src = os.path.join(store_root, blob_key(e.hash))
        dst = os.path.join(lower, e.path)
        want = EXEC_MODE if e.executable else FILE_MODE
        try:
            st = os.stat(src, follow_symlinks=False)
        except FileNotFoundError:
            raise _FastPathUnavailable(f"blob {e.hash[:12]} of {e.path!r} is missing") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            # The verified copy path reports it (and quarantines a corrupt blob).
            raise _FastPathUnavailable(f"blob {e.hash[:12]} of {e.path!r} is not the size the manifest says")
        if stat.S_IMODE(st.st_mode) != want or e.hash in seen:
            copies.append((src, dst, want, e.size))
            continue
        seen.add(e.hash)
        try:
            os.link(src, dst)
            linked += 1
        except OSError as exc:
            if exc.errno == errno.EMLINK:  # the blob has the filesystem's maximum of links
                copies.append((src, dst, want, e.size))
            elif exc.errno in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):
                raise _FastPathUnavailable(f"cannot hardlink the store's blobs into {root}: {exc.strerror}") from exc
            else:
                raise
    if len(copies) > 8:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda c: _copy_blob(*c), copies))
    else:
        for c in copies:
            _copy_blob(*c)
    return linked, len(copies)


def _hash_file(path: str) -> str:
    """The blake3 digest of a file, or "" when it cannot be read."""
    from runyard.store.base import new_hasher

    h = new_hasher()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
    except OSError:
        return ""
    digest: str = h.hexdigest()
    return digest


def _copy_blob(src: str, dst: str, mode: int, size: int) -> None:
    """Copy a blob file in the kernel (copy_file_range) to a new file with ``mode``."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            done = 0
            while done < size:
                try:
                    n = os.copy_file_range(fin, fout, size - done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    n = os.sendfile(fout, fin, done, size - done)
                if n == 0:
                    break
                done += n
            if done != size:
                raise _FastPathUnavailable(f"blob {os.path.basename(src)[:10]} is shorter than the manifest says")
            os.fchmod(fout, mode)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _escape_option(path: str) -> str:
    # overlayfs splits options on ',' and lower dirs on ':'; a backslash escapes both.
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _mount_overlay(lower: str, upper: str, work: str, target: str) -> None:
    """mount(2) an overlay (ctypes: 1.3 ms, against 3+ ms for the mount command)."""
    opts = (f"lowerdir={_escape_option(lower)},upperdir={_escape_option(upper)},"
            f"workdir={_escape_option(work)},{_OVERLAY_OPTIONS}")
    data = os.fsencode(opts)
    if len(data) >= 4096:
        raise _FastPathUnavailable("the run folder's path is too long for overlay mount options")
    rc = _c().mount(b"overlay", os.fsencode(target), b"overlay", _MS_NOSUID | _MS_NODEV, data)
    if rc != 0:
        err = _errno()
        raise _FastPathUnavailable(f"mounting an overlay failed: {os.strerror(err)}")


def _umount(target: str) -> None:
    """Unmount ``target``; lazily (detached) when it is busy, say a process still has its cwd there."""
    path = os.fsencode(target)
    libc = _c()
    if libc.umount2(path, _UMOUNT_NOFOLLOW) == 0:
        return
    err = _errno()
    if err == errno.EBUSY and libc.umount2(path, _UMOUNT_NOFOLLOW | _MNT_DETACH) == 0:
        return
    if err == errno.EBUSY:
        err = _errno()
    if err == errno.EINVAL:  # not a mount point (any more)
        return
    raise WorkdirError(f"Cannot unmount '{target}': {os.strerror(err)}. Unmount it as root "
                       f"(umount -l '{target}') and call cleanup_stale on its run folder again.")


_MOUNTINFO_ESCAPE: Final = re.compile(rb"\\([0-7]{3})")


def _unescape_mountinfo(field: bytes) -> bytes:
    return _MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)


# -- the copy and removal -----------------------------------------------------------


def _copy(store: ObjectStore, snapshot_id: str, root: str, wd: str) -> None:
    from runyard.snapshot.engine import restore

    try:
        restore(store, snapshot_id, wd)
    except BaseException:
        cleanup_stale(root)
        raise


def _remove_tree(path: str) -> None:
    """Remove ``path`` (a file or folder), even where a run took away its own write permission."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass  # a run made a folder read-only (as root this never happens)
    except OSError as exc:
        raise WorkdirError(f"Cannot remove '{path}': {exc}. Remove it by hand.") from exc
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise WorkdirError(f"Cannot remove '{path}': {exc}. Remove it by hand.") from exc


__all__ = [
    "COPY",
    "OVERLAY",
    "Workdir",
    "WorkdirError",
    "cleanup_stale",
    "materialize",
    "mounts_below",
    "overlay_available",
    "overlay_lowers",
    "unmount",
    "unmount_overlays_below",
]
