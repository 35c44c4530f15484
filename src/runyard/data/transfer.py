"""Moving many files between local folders and a datastore, in parallel.

Object stores answer one small file per round trip, so transfers keep many
requests in flight: the async backends (s3fs, adlfs, gcsfs) run a batch of
puts or gets at once on their event loop; a local datastore copies with a
pool of threads. Work goes in chunks, each retried with backoff when the
service cannot be reached, so a long transfer survives a short outage and a
failure names the datastore and what it was doing.

Downloads land under a temporary name and are renamed when complete and of
the expected size, so a crash never leaves a half file under its real name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from runyard.config import plural
from runyard.data.datastore import DatastoreError, RemoteFile, clean_path, env_count
from runyard.data.listing import base_of, relative_to
from runyard.errors import ConfigError, DataError

if TYPE_CHECKING:
    from runyard._progress import StderrProgress
    from runyard.data.datastore import Datastore

ENV_CONCURRENCY: Final = "RUNYARD_TRANSFER_CONCURRENCY"
CHUNK: Final = 512
"""Files per retried unit of work."""
DEFAULT_CONCURRENCY: Final = 32
LOCAL_THREADS: Final = 16
"""Threads a local datastore (or another filesystem without async requests) copies with;
fewer when ``RUNYARD_TRANSFER_CONCURRENCY`` is lower."""


def concurrency() -> int:
    """Requests in flight at once (``RUNYARD_TRANSFER_CONCURRENCY``, default 32)."""
    return env_count(ENV_CONCURRENCY, DEFAULT_CONCURRENCY)


class Progress:
    """Counts files and bytes; draws a bar on a terminal when asked to."""

    def __init__(self, label: str, show: bool | StderrProgress | None) -> None:
        from runyard._progress import StderrProgress, progress_for_stderr

        self.bar: StderrProgress | None
        if isinstance(show, StderrProgress):
            self.bar = show
        else:
            self.bar = progress_for_stderr(label) if show else None

    def start(self, files: int, nbytes: int) -> None:
        if self.bar:
            self.bar.start(files, nbytes)

    def advance(self, files: int, nbytes: int) -> None:
        if self.bar:
            self.bar.advance(files, nbytes)

    def finish(self) -> None:
        if self.bar:
            self.bar.finish()


# -- upload ------------------------------------------------------------------
def local_tree(src_dir: str) -> list[tuple[str, str]]:
    """(absolute path, relative POSIX path) of every regular file under src_dir; links are not followed."""
    if not os.path.isdir(src_dir):
        raise ConfigError(f"'{src_dir}' is not a folder. Pass the folder whose files to upload.")
    out = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames.sort()
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append((p, os.path.relpath(p, src_dir).replace(os.sep, "/")))
    return out


def upload_tree(ds: Datastore, src_dir: str, target: str, *, overwrite: bool = False,
                progress: bool | StderrProgress | None = False) -> list[str]:
    """Upload every file under ``src_dir`` to ``target/<relative path>`` in ``ds``."""
    pairs = [(p, f"{target}/{rel}" if target else rel) for p, rel in local_tree(src_dir)]
    return put_pairs(ds, pairs, overwrite=overwrite, progress=progress, label=f"upload to {ds.name}")


def upload_paths(ds: Datastore, files: Sequence[str], relative_root: str | None, target: str, *,
                 overwrite: bool = False, progress: bool = False) -> list[str]:
    root = os.path.abspath(relative_root) if relative_root else None
    pairs = []
    for f in files:
        p = os.path.abspath(f)
        if not os.path.isfile(p):
            raise ConfigError(f"'{f}' is not a file. Pass files to upload_files, or a folder to upload.")
        rel = os.path.relpath(p, root) if root else os.path.basename(p)
        if rel.startswith(".."):
            raise ConfigError(f"'{f}' is not under relative_root '{relative_root}'.")
        rel = rel.replace(os.sep, "/")
        pairs.append((p, f"{target}/{rel}" if target else rel))
    return put_pairs(ds, pairs, overwrite=overwrite, progress=progress, label=f"upload to {ds.name}")


def put_pairs(ds: Datastore, pairs: Sequence[tuple[str, str]], *, overwrite: bool,
              progress: bool | StderrProgress | None = False, label: str = "upload") -> list[str]:
    """Upload (local path, datastore path) pairs; with ``overwrite=False`` files
    already in the datastore are left alone (and not counted as written)."""
    pairs = [(local, clean_path(remote)) for local, remote in pairs]
    if not overwrite and pairs:
        present = _existing(ds, [r for _, r in pairs])
        pairs = [(lp, r) for lp, r in pairs if r not in present]
    sizes = {lp: os.path.getsize(lp) for lp, _ in pairs}
    bar = Progress(label, progress)
    bar.start(len(pairs), sum(sizes.values()))
    try:
        if ds.kind == "local":
            _threads(lambda pair: _copy_in(pair[0], os.path.join(ds.root, pair[1])), pairs,
                     lambda pair: bar.advance(1, sizes[pair[0]]), ds, "uploading")
        else:
            for chunk in _chunks(pairs, CHUNK):
                lpaths = [lp for lp, _ in chunk]
                rpaths = [ds.full_path(r) for _, r in chunk]
                ds.call(f"uploading {plural(len(chunk), 'file')}", partial(_in_flight, ds, "put", lpaths, rpaths))
                bar.advance(len(chunk), sum(sizes[lp] for lp in lpaths))
    finally:
        bar.finish()
    return [r for _, r in pairs]


def _in_flight(ds: Datastore, method: str, sources: list[str], targets: list[str]) -> None:
    """``fs.put`` or ``fs.get`` of many files at once: an async backend keeps
    ``concurrency()`` requests in flight on its loop; others get threads."""
    fs = ds.fs
    if getattr(fs, "async_impl", False):
        getattr(fs, method)(sources, targets, batch_size=concurrency())
    else:
        one = getattr(fs, f"{method}_file")
        with ThreadPoolExecutor(max_workers=min(concurrency(), LOCAL_THREADS)) as pool:
            list(pool.map(lambda pair: one(*pair), zip(sources, targets, strict=True)))


def _existing(ds: Datastore, paths: Iterable[str]) -> set[str]:
    """Which of ``paths`` exist in ``ds`` (one listing of their common folder)."""
    paths = list(paths)
    if ds.kind == "local":
        return {p for p in paths if os.path.lexists(os.path.join(ds.root, p))}
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    wanted = set(paths)

    def listing() -> set[str]:
        try:
            found = ds.fs.find(ds.full_path(common), withdirs=False)
        except FileNotFoundError:
            return set()
        return {ds.relative(f) for f in found} & wanted

    return ds.call(f"listing '{common or '/'}'", listing)


def _copy_in(src: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.runyard-{uuid.uuid4().hex[:8]}.part"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        _unlink(tmp)
        raise


# -- download ------------------------------------------------------------------
def download_prefix(ds: Datastore, prefix: str, dest: str, *, overwrite: bool = False,
                    progress: bool | StderrProgress | None = False) -> int:
    """Download every file under ``prefix`` (or the one file it names) into ``dest``."""
    files = ds.list_files(prefix)
    if not files:
        raise DatastoreError(f"Nothing to download: no file at or under '{prefix or '/'}' in datastore "
                             f"'{ds.name}' ({ds.describe()}). See what is there: runyard datastore ls {ds.name}")
    from runyard.errors import UnsafePathError
    from runyard.paths import Under

    base = base_of(prefix, files)
    under = Under(dest, backslash=True)
    plan = []
    for f in files:
        rel = relative_to(base, f.path)
        try:  # every path is checked before anything is written (the listing already refused odd keys)
            target = under.join(rel)
        except UnsafePathError as exc:
            raise UnsafePathError(f"Nothing was downloaded from datastore '{ds.name}' into '{dest}': the file "
                                  f"{rel!r} would be written outside that folder ({exc.reason}). Remove that "
                                  "link, or download into another folder.", name=rel, reason=exc.reason) from None
        if not overwrite and os.path.lexists(target):
            continue
        plan.append((f, target))
    get_files(ds, plan, progress=progress, label=f"download from {ds.name}")
    return len(plan)


def get_files(ds: Datastore, plan: Sequence[tuple[RemoteFile, str]], *,
              progress: bool | StderrProgress | None = False, label: str = "download",
              on_done: Callable[[RemoteFile, str], None] | None = None,
              stop: Callable[[], bool] | None = None) -> None:
    """Download each (file, local path); the local path appears only when complete.

    ``stop`` is asked between files (local) or chunks (services); when it says
    so the download ends with a DataError, leaving only complete files."""
    bar = Progress(label, progress)
    bar.start(len(plan), sum(f.size for f, _ in plan))
    for _, target in plan:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    try:
        if ds.kind == "local":
            def one(item: tuple[RemoteFile, str]) -> None:
                _check_stop(stop)
                f, target = item
                _copy_in(os.path.join(ds.root, f.path), target)
                _check_size(ds, f, target)
                if on_done:
                    on_done(f, target)

            _threads(one, plan, lambda item: bar.advance(1, item[0].size), ds, "downloading")
            return
        for chunk in _chunks(plan, CHUNK):
            _check_stop(stop)
            parts = [f"{target}.runyard-{tag}.part" for _, target in chunk]
            rpaths = [ds.full_path(f.path) for f, _ in chunk]
            try:
                ds.call(f"downloading {plural(len(chunk), 'file')}", partial(_in_flight, ds, "get", rpaths, parts))
                for (f, target), part in zip(chunk, parts, strict=True):
                    _check_size(ds, f, part)
                    os.replace(part, target)
                    if on_done:
                        on_done(f, target)
            finally:
                for part in parts:
                    _unlink(part)
            bar.advance(len(chunk), sum(f.size for f, _ in chunk))
    finally:
        bar.finish()


def _check_size(ds: Datastore, f: RemoteFile, local: str) -> None:
    got = os.path.getsize(local)
    if got != f.size:
        raise DatastoreError(f"'{f.path}' in datastore '{ds.name}' changed while it was downloaded (expected "
                             f"{f.size} bytes, got {got}). Try again once nothing is writing to it.")


# -- helpers ---------------------------------------------------------------------
def _check_stop(stop: Callable[[], bool] | None) -> None:
    if stop is not None and stop():
        raise DataError("stopped: the run was canceled while its data was being downloaded")


def _threads(fn: Callable[[Any], None], items: Sequence[Any], done: Callable[[Any], None], ds: Datastore,
             what: str) -> None:
    with ThreadPoolExecutor(max_workers=min(concurrency(), LOCAL_THREADS)) as pool:
        futures = [(item, pool.submit(fn, item)) for item in items]
        for item, fut in futures:
            try:
                fut.result()
            except (DatastoreError, DataError):
                raise
            except OSError as exc:
                raise DatastoreError(f"{what.capitalize()} failed for datastore '{ds.name}' ({ds.describe()}): "
                                     f"{exc.strerror or exc}: {exc.filename or ''}") from exc
            done(item)


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["download_prefix", "get_files", "local_tree", "put_pairs", "upload_paths", "upload_tree"]
