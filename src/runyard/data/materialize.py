"""Putting a run's data in place before its script starts, and storing its
declared outputs after it ends. The supervisor calls this; it acts on the
run's data plan (:mod:`runyard.data.inputs`).

Downloads go through a cache in the workspace keyed by the file's location
and content fingerprint, so a second run of the same data copies the cached
files locally and starts at once. Each run gets its own copies (never links
to the cache), so what one run does to its input files no other run sees.

A dataset version is checked against its datastores before a run reads it:
data that changed under a version fails the run in Preparing, naming the
files, instead of feeding the script something else than the version says.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from runyard.config import plural
from runyard.data.datastore import Datastore, RemoteFile
from runyard.data.inputs import placeholder
from runyard.data.listing import base_of, has_glob, relative_to
from runyard.errors import DataChangedError, DataError, RunyardError

if TYPE_CHECKING:
    from runyard.data.dataset import DatasetFile, FileDataset
    from runyard.data.fuse import Mount
    from runyard.workspace import Workspace

CACHE_DIR: Final = "data"
MOUNTS_FILE: Final = "mounts.txt"
"""In the run's folder: every mountpoint of the run, one a line, for cleaning up after a dead supervisor."""
DATA_DIR: Final = "data"
"""In the run's folder: default places of inputs (``data/inputs/NAME``) and outputs."""


# -- the download cache -----------------------------------------------------------
def cache_key(ds: Datastore, f: RemoteFile) -> str:
    from runyard.store.base import hash_bytes

    ident = "\0".join([ds.kind, ds.describe(), ds.endpoint, f.path, f.fingerprint, str(f.size)])
    return hash_bytes(ident.encode())


def fetch(ws: Workspace, ds: Datastore, plan: Sequence[tuple[RemoteFile, str]], *,
          progress: Any = False, label: str = "download", stop: Callable[[], bool] | None = None
          ) -> tuple[int, int]:
    """Put each (file, local path) in place through the cache; return (files
    fetched from the datastore, files found in the cache)."""
    root = os.path.join(ws.cache_dir, CACHE_DIR)
    with _cache_lock(root, exclusive=False):  # pruning waits until these files are copied out
        return _fetch(ds, plan, root, progress=progress, label=label, stop=stop)


def _fetch(ds: Datastore, plan: Sequence[tuple[RemoteFile, str]], root: str, *, progress: Any, label: str,
           stop: Callable[[], bool] | None) -> tuple[int, int]:
    from runyard.data.transfer import get_files

    wanted: list[tuple[RemoteFile, str, str]] = []
    missing: list[tuple[RemoteFile, str]] = []
    seen: set[str] = set()
    for f, target in plan:
        key = cache_key(ds, f)
        cached = os.path.join(root, key[:2], key)
        wanted.append((f, cached, target))
        if key in seen:
            continue
        seen.add(key)
        if _cached_intact(cached, f.size):
            _touch(cached)
        else:
            missing.append((f, cached))
    if missing:
        get_files(ds, missing, progress=progress, label=label, on_done=lambda _f, p: _seal(p), stop=stop)
    for _f, cached, target in wanted:
        copy_out(cached, target)
    return len(missing), len(seen) - len(missing)


# Each entry has a stamp of its size and mtime taken when it was downloaded:
# an entry changed since (by hand, or by a process that wrote into the cache)
# no longer matches it and is fetched again.
_STAMP: Final = ".stamp"


DEFAULT_CACHE_MAX: Final = 20 << 30
"""Bytes the download cache may hold before its least recently used files go (``data.cache_max_bytes``)."""


def prune_cache(ws: Workspace, max_bytes: int | None = None) -> tuple[int, int]:
    """Remove the least recently used cached files until the cache holds at
    most ``max_bytes`` (default: the workspace's ``data.cache_max_bytes``,
    else 20 GiB; 0 keeps everything). Runs that link a removed file keep
    their copy. Returns (files removed, bytes freed)."""
    from runyard.config import parse_size

    if max_bytes is None:
        setting = ws.get_setting("data.cache_max_bytes")
        max_bytes = DEFAULT_CACHE_MAX if setting is None else parse_size(setting, "data.cache_max_bytes")
    root = os.path.join(ws.cache_dir, CACHE_DIR)
    if max_bytes <= 0 or not os.path.isdir(root):
        return 0, 0
    with _cache_lock(root, exclusive=True, wait=False) as locked:
        if not locked:  # a run is reading from the cache: prune after a later run
            return 0, 0
        return _prune(root, max_bytes)


@contextlib.contextmanager
def _cache_lock(root: str, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Runs fetching from the cache share it; pruning needs it alone (flock on ``root/.lock``)."""
    os.makedirs(root, exist_ok=True)
    fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _prune(root: str, max_bytes: int) -> tuple[int, int]:
    entries = []
    total = 0
    for sub in os.scandir(root):
        if not sub.is_dir(follow_symlinks=False):
            continue
        for e in os.scandir(sub.path):
            if e.name.endswith(_STAMP) or ".runyard-" in e.name:
                continue
            try:
                size = e.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            try:
                used = os.stat(e.path + _STAMP).st_mtime
            except OSError:
                used = 0.0  # never stamped: an interrupted download, first to go
            entries.append((used, size, e.path))
            total += size
    removed = freed = 0
    for _used, size, path in sorted(entries):
        if total <= max_bytes:
            break
        for p in (path, path + _STAMP):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        total -= size
        removed += 1
        freed += size
    return removed, freed


def _touch(path: str) -> None:
    """Mark a cache entry used now (its stamp's mtime orders the pruning)."""
    try:
        os.utime(path + _STAMP)
    except OSError:
        pass


def _seal(path: str) -> None:
    os.chmod(path, 0o444)
    st = os.stat(path)
    with open(path + _STAMP, "w", encoding="ascii") as fh:
        fh.write(f"{st.st_size} {st.st_mtime_ns}\n")


def _cached_intact(path: str, size: int) -> bool:
    try:
        st = os.stat(path)
        with open(path + _STAMP, encoding="ascii") as fh:
            stamp = fh.read().split()
    except OSError:  # missing, or never stamped (an interrupted download)
        return False
    return st.st_size == size and stamp == [str(st.st_size), str(st.st_mtime_ns)]


def copy_out(src: str, dest: str) -> None:
    """A run's (or a download's) own copy of a cached file.

    Not a hard link: a link shares the cache's inode, and a script running as
    root (or one that chmods its input) would change what another run reading
    the same data sees at that moment. The kernel copies it (copy_file_range
    or sendfile), from the page cache when the data was just used.
    """
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        os.unlink(dest)
    shutil.copyfile(src, dest)


# -- datasets ---------------------------------------------------------------------
def check_unchanged(ws: Workspace, sources: Sequence[Any], files: Sequence[DatasetFile], label: str,
                    say: Callable[[str], None] | None = None) -> None:
    """Refuse a version whose recorded files changed or went away at their datastore.

    Files added since (matching its globs) are not part of the version and
    do not stop anything; they are mentioned."""
    from runyard.data.dataset import Source, changes_of

    srcs = [s if isinstance(s, Source) else Source(**s) for s in sources]
    changes = changes_of(ws, srcs, files)
    if changes.changed or changes.removed:
        raise DataChangedError(
            f"The data of {label} changed since it was registered: {changes.summary()}. Reading it now would not "
            "give what the version recorded. Register the data again as a new version (runyard dataset register "
            "NAME --from ...) and use that one.")
    if changes.added and say is not None:
        say(f"{label}: {changes.summary()} since it was registered; those files are not part of it")


def download_dataset(ws: Workspace, dataset: FileDataset, target: str, *, overwrite: bool = False,
                     progress: Any = False) -> list[str]:
    label = f"dataset '{dataset.name}' version {dataset.version}" if dataset.name else "the dataset"
    check_records(dataset.files, label)
    check_unchanged(ws, dataset.sources, dataset.files, label)
    return _download_files(ws, dataset.files, target, overwrite=overwrite, progress=progress, label=label)


def check_records(files: Sequence[DatasetFile], label: str) -> None:
    """Refuse a version whose recorded file list holds a name that is not a
    plain relative path (``../x``) where the file goes, or where it is read
    from in its datastore: runyard never records one, so the record was
    damaged or written by something else. Nothing is read or written then."""
    from runyard.errors import UnsafePathError
    from runyard.paths import name_problem

    todo = ("The record in the run history is damaged or was not written by runyard; nothing was downloaded. "
            "Register the data again as a new version (runyard dataset register NAME --from ...) and use that one.")
    for f in files:
        problem = name_problem(f.rel, backslash=True)
        if problem is not None:
            raise UnsafePathError(f"The record of {label} holds a file named {f.rel!r}, which is not a plain "
                                  f"relative path ({problem}). {todo}", name=f.rel, reason=problem)
        problem = name_problem(f.path, backslash=True)
        if problem is not None:
            raise UnsafePathError(f"The record of {label} puts its file {f.rel!r} at {f.path!r} in datastore "
                                  f"'{f.datastore}', which is not a path inside the datastore ({problem}). {todo}",
                                  name=f.path, reason=problem)


def _download_files(ws: Workspace, files: Sequence[DatasetFile], target: str, *, overwrite: bool,
                    progress: Any, say: Callable[[str], None] | None = None,
                    stop: Callable[[], bool] | None = None, label: str = "the dataset") -> list[str]:
    from runyard.errors import UnsafePathError
    from runyard.paths import Under

    check_records(files, label)
    under = Under(target, backslash=True)
    by_store: dict[str, list[tuple[RemoteFile, str]]] = {}
    written = []
    for f in files:
        try:
            under.join(f.rel)  # every path is checked before anything is written
        except UnsafePathError as exc:
            raise UnsafePathError(f"Cannot download {label} into '{target}': {exc.reason}; its file {f.rel!r} "
                                  "would be written through it, outside the folder. Remove that link, or download "
                                  "into another folder; nothing was downloaded.", name=f.rel, reason=exc.reason
                                  ) from None
        dest = os.path.join(target, *f.rel.split("/"))
        if not overwrite and os.path.lexists(dest):
            raise DataError(f"'{dest}' already exists. Download into an empty folder, or pass overwrite=True "
                            "(--overwrite).")
        by_store.setdefault(f.datastore, []).append((RemoteFile(f.path, f.size, f.fingerprint, f.mtime), dest))
        written.append(dest)
    os.makedirs(target, exist_ok=True)
    for name, plan in by_store.items():
        got, hit = fetch(ws, Datastore.get(ws, name), plan, progress=progress, label=f"download from {name}",
                         stop=stop)
        if say:
            say(f"{plural(len(plan), 'file')} from datastore '{name}' ({hit} from the cache, {got} downloaded)")
    return written


# -- a run's data ---------------------------------------------------------------------
def local_path(folder: str, workdir: str, item: dict[str, Any], kind: str) -> str:
    """Where an input or output is for the script: ``path_on_compute`` (relative
    to the working directory unless absolute), else ``<run folder>/data/<kind>/<name>``."""
    where = str(item.get("path_on_compute") or "")
    if not where:
        return os.path.join(folder, DATA_DIR, kind, str(item["name"]))
    if os.path.isabs(where):
        return os.path.normpath(where)
    path = os.path.normpath(os.path.join(workdir, where))
    if not (path + "/").startswith(workdir.rstrip("/") + "/"):
        raise DataError(f"path_on_compute '{where}' of '{item['name']}' leaves the working directory; give a "
                        "path inside it, or an absolute path.")
    return path


@dataclass
class RunData:
    """The data side of one run, in its supervisor."""

    ws: Workspace
    folder: str
    workdir: str
    plan: dict[str, Any]
    say: Callable[[str], None]
    mounts: list[Mount] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    stop: Callable[[], bool] | None = None
    """Asked during long downloads: True ends them (the run was canceled)."""
    placed: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, ws: Workspace, folder: str, workdir: str, say: Callable[[str], None]) -> RunData | None:
        from runyard.data.lineage import load_plan

        plan = load_plan(folder)
        return cls(ws, folder, workdir, plan, say) if plan else None

    def local_path(self, item: dict[str, Any], kind: str) -> str:
        path = local_path(self.folder, self.workdir, item, kind)
        where = str(item.get("path_on_compute") or "")
        if where and not os.path.isabs(where):
            # The text stays inside; a link in the snapshot must not take it out.
            real_wd = os.path.realpath(self.workdir)
            probe = path
            while not os.path.lexists(probe) and probe != self.workdir:
                probe = os.path.dirname(probe)
            if not (os.path.realpath(probe) + "/").startswith(real_wd.rstrip("/") + "/"):
                raise DataError(f"path_on_compute '{where}' of '{item['name']}' leads out of the working "
                                "directory through a symbolic link in the snapshot; give a path without links, "
                                "or an absolute path.")
        self.placed.append(path)
        return path

    def remove_placed(self) -> None:
        """Remove the input and output folders this run made in its own folder (a failed Preparing)."""
        for path in self.placed:
            self._remove_local(path)

    # -- before the script ----------------------------------------------------------
    def prepare(self) -> dict[str, str]:
        """Inputs in place and outputs ready; returns the environment to add.

        Raises DataError (or a DatastoreError) on anything that stops the run."""
        env: dict[str, str] = {}
        for item in self.plan.get("outputs", []):  # checked first: cheap, and fails before any download
            path = self._prepare_output(item)
            env[f"RUNYARD_OUTPUT_{item['name']}"] = path
        for item in self.plan.get("inputs", []):
            path = self._prepare_input(item)
            env[f"RUNYARD_INPUT_{item['name']}"] = path
        return env

    def paths(self) -> dict[str, str]:
        """placeholder -> local path, for the script's arguments."""
        out = {placeholder("inputs", i["name"]): i["local_path"] for i in self.inputs}
        out.update({placeholder("outputs", o["name"]): o["local_path"] for o in self.outputs})
        return out

    def _prepare_input(self, item: dict[str, Any]) -> str:
        from runyard.data.dataset import DatasetFile

        name = item["name"]
        target = self.local_path(item, "inputs")
        mode = item["mode"]
        record = {"name": name, "mode": mode, "kind": item["kind"], "dataset": item.get("dataset"),
                  "version": item.get("version"), "datastore": item.get("datastore"), "path": item.get("path"),
                  "local_path": target}
        if item["kind"] == "dataset":
            files = [DatasetFile.from_row(r) for r in item["files"]]
            label = (f"dataset '{item['dataset']}' version {item['version']}" if item.get("dataset")
                     else f"input '{name}'")
            check_records(files, label)
            check_unchanged(self.ws, item["sources"], files, label, self.say)
            stores = sorted({f.datastore for f in files})
            if mode == "mount" and len(stores) > 1:
                self.say(f"input '{name}' spans datastores {', '.join(stores)}; a mount shows one datastore, "
                         "so it is downloaded instead")
            if mode == "mount" and len(stores) == 1 and self._can_mount(name):
                ds = Datastore.get(self.ws, stores[0])
                manifest = tuple((f.rel, ds.full_path(f.path), f.size, f.mtime or 0.0) for f in files)
                self._mount(ds, target, name, manifest=manifest)
            else:
                record["mode"] = "download"
                self._fresh(target)
                _download_files(self.ws, files, target, overwrite=True, progress=False, say=self.say,
                                stop=self.stop, label=f"{label} (input '{name}')")
            record["files"], record["bytes"] = len(files), sum(f.size for f in files)
        else:
            ds = Datastore.get(self.ws, item["datastore"])
            found = ds.list_files(item["path"])
            if not found:
                raise DataError(f"Input '{name}': nothing at '{item['path']}' in datastore '{ds.name}' "
                                f"({ds.describe()}). Check the path: runyard datastore ls {ds.name}")
            base = base_of(item["path"], found)
            if mode == "mount" and self._can_mount(name):
                if has_glob(item["path"]) or base != item["path"]:  # a glob or one file: exactly what matched
                    manifest = tuple((relative_to(base, f.path), ds.full_path(f.path), f.size, f.mtime or 0.0)
                                     for f in found)
                    self._mount(ds, target, name, manifest=manifest)
                else:  # a folder: live, as the datastore has it
                    self._mount(ds, target, name, root=ds.full_path(item["path"]))
                record["files"], record["bytes"] = len(found), sum(f.size for f in found)
            else:
                record["mode"] = "download"
                self._fresh(target)
                from runyard.paths import Under

                under = Under(target, backslash=True)  # the listing refused odd keys; checked again here
                plan = [(f, under.join(relative_to(base, f.path))) for f in found]
                _got, hit = fetch(self.ws, ds, plan, stop=self.stop)
                self.say(f"input '{name}': {plural(len(found), 'file')} from {ds.name}:{item['path']} "
                         f"({hit} from the cache)")
                record["files"], record["bytes"] = len(found), sum(f.size for f in found)
        self.inputs.append(record)
        return target

    def _can_mount(self, name: str) -> bool:
        from runyard.data.fuse import fuse_available

        reason = fuse_available()
        if reason is not None:
            self.say(f"input '{name}' cannot be mounted here ({reason}); it is downloaded instead")
            return False
        return True

    def _mount(self, ds: Datastore, target: str, label: str, *, root: str | None = None,
               manifest: tuple[tuple[str, str, int, float], ...] | None = None, writable: bool = False) -> None:
        from runyard.data.fuse import MountSpec, mount

        self._fresh(target)
        staging = os.path.join(self.folder, DATA_DIR, "staging", label) if writable else None
        if staging:
            os.makedirs(staging, exist_ok=True)
        # The run's id leads the label (the mount's source is runyard:<run id>.<...>): whoever
        # cleans up after a dead supervisor unmounts only what is this run's.
        spec = MountSpec(mountpoint=target, filesystem=ds.filesystem_spec(),
                         label=f"{os.path.basename(self.folder)}.{ds.name}-{label}",
                         writable=writable, root=root, manifest=manifest, staging_dir=staging)
        try:
            # Noted first, so that whoever finds this run's supervisor dead unmounts it (runs.reap_lost).
            with open(os.path.join(self.folder, MOUNTS_FILE), "a", encoding="utf-8") as fh:
                fh.write(target + "\n")
            self.mounts.append(mount(spec))
        except RunyardError as exc:
            raise DataError(ds.redact(f"Mounting '{label}' from datastore '{ds.name}' failed: {exc}")) from None

    @staticmethod
    def _fresh(target: str) -> None:
        if os.path.isdir(target) and not os.path.islink(target):
            if os.listdir(target):
                raise DataError(f"'{target}' is not empty; an input or output needs an empty or new folder.")
        elif os.path.lexists(target):
            raise DataError(f"'{target}' exists and is not a folder; an input or output needs a folder there.")
        os.makedirs(target, exist_ok=True)

    def _prepare_output(self, item: dict[str, Any]) -> str:
        name = item["name"]
        ds = Datastore.get(self.ws, item["datastore"])
        dest = item["path"]
        if not item.get("overwrite"):
            there = ds.list_files(dest)
            if there:
                raise DataError(f"Output path already exist: {ds.name}:{dest} ({plural(len(there), 'file')}, e.g. "
                                f"'{there[0].path}'). Pick another destination, remove those files, or allow "
                                f"overwriting (as_upload(overwrite=True), or runyard run --overwrite-output {name}).")
        target = self.local_path(item, "outputs")
        record = {"name": name, "mode": item["mode"], "datastore": ds.name, "path": dest, "local_path": target,
                  "register": item.get("register"), "globs": item.get("source_globs")}
        if item["mode"] == "mount":
            from runyard.data.fuse import fuse_available

            reason = fuse_available()
            if reason is None:
                self._mount(ds, target, name, root=ds.full_path(dest), writable=True)
            else:
                self.say(f"output '{name}' cannot be mounted here ({reason}); it is uploaded at the end instead")
                record["mode"] = "upload"
                self._fresh(target)
        else:
            self._fresh(target)
        # Where the folder really is now: the script could swap it for a link before the upload.
        record["real_path"] = os.path.realpath(target)
        self.outputs.append(record)
        return target

    # -- after the script -------------------------------------------------------------
    def unmount_all(self) -> list[str]:
        problems = []
        for m in reversed(self.mounts):
            try:
                m.unmount()
            except Exception as exc:
                problems.append(f"unmounting {getattr(m, 'mountpoint', '?')} failed: {exc}")
        self.mounts.clear()
        return problems

    def finish(self, *, listed_whole: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
        """Unmount, upload the outputs (whatever the run's end), list what each
        output holds; return the lineage records for the end file and problems.

        ``listed_whole``: an output is everything at its destination, not only
        what this call uploaded (a reaper finishing what another one began)."""
        problems = self.unmount_all()
        records: list[dict[str, Any]] = []
        for rec in self.inputs:
            records.append({"direction": "input", **{k: v for k, v in rec.items() if k != "local_path"},
                            "detail": {"local_path": rec["local_path"], "files": rec.get("files"),
                                       "bytes": rec.get("bytes")}})
        for rec in self.outputs:
            out = {"direction": "output", "name": rec["name"], "mode": rec["mode"], "datastore": rec["datastore"],
                   "path": rec["path"], "register": rec["register"], "files": [], "error": None}
            try:
                ds = Datastore.get(self.ws, rec["datastore"])
                written = self._upload(ds, rec) if rec["mode"] == "upload" else None
                listed = ds.list_files(rec["path"])
                if written is not None and not listed_whole:  # files older runs left there are not this output
                    listed = [f for f in listed if f.path in written]
                base = rec["path"]
                out["files"] = [[relative_to(base, f.path), ds.name, f.path, f.size, f.fingerprint, f.mtime]
                                for f in listed]
            except Exception as exc:
                out["error"] = str(exc)
                kept = f"; its files are kept in {rec['local_path']}" if rec["mode"] == "upload" else ""
                problems.append(f"storing output '{rec['name']}' failed: {exc}{kept}")
            else:
                self._remove_local(rec["local_path"])  # stored at its destination: no second copy on this disk
            records.append(out)
        for rec in self.inputs:
            if rec["mode"] == "download":
                self._remove_local(rec["local_path"])  # links to the cache, or copies
        return records, problems

    def recover(self) -> tuple[list[dict[str, Any]], list[str]]:
        """What :meth:`finish` does, for a run whose supervisor died: from the plan
        alone, upload what each upload-mode output's folder holds (and what a
        mount-mode output's folder holds, if it was never mounted) and list
        every input and output for lineage. Unmount the run's mounts first."""
        problems: list[str] = []
        for item in self.plan.get("outputs", []):
            target = local_path(self.folder, self.workdir, item, "outputs")
            inside = [os.path.join(self.folder, DATA_DIR), self.workdir]
            if not any((target + os.sep).startswith(p + os.sep) and _no_link_below(p, target) for p in inside):
                # The plan is in the run's folder, which the script could rewrite: a folder
                # elsewhere is not read on its word. It stays where it is.
                problems.append(f"output '{item['name']}' was not stored: its folder {target} is outside the "
                                "run's folders; its files are there")
                continue
            mode = item["mode"]
            if mode == "mount" and os.path.isdir(target) and os.listdir(target):
                mode = "upload"  # FUSE was not available: the script wrote a plain folder
            self.outputs.append({"name": item["name"], "mode": mode, "datastore": item["datastore"],
                                 "path": item["path"], "local_path": target, "register": item.get("register"),
                                 "globs": item.get("source_globs")})
        for item in self.plan.get("inputs", []):
            self.inputs.append({"name": item["name"], "mode": item["mode"], "kind": item["kind"],
                                "dataset": item.get("dataset"), "version": item.get("version"),
                                "datastore": item.get("datastore"), "path": item.get("path"),
                                "local_path": local_path(self.folder, self.workdir, item, "inputs")})
        records, more = self.finish(listed_whole=True)
        return records, problems + more

    def _remove_local(self, path: str) -> None:
        """Remove a run's own data folder (never one the user named with an absolute path_on_compute,
        nor one reached through a link planted in the run's folder)."""
        own = os.path.join(self.folder, DATA_DIR) + os.sep
        if (path + os.sep).startswith(own) and os.path.isdir(path) and not os.path.ismount(path) \
                and _no_link_below(self.folder, path):
            shutil.rmtree(path, ignore_errors=True)

    def _upload(self, ds: Datastore, rec: dict[str, Any]) -> set[str]:
        """Upload an output's local folder; return the datastore paths it holds."""
        from runyard.data.transfer import local_tree, put_pairs

        local = rec["local_path"]
        real = os.path.realpath(local)
        if os.path.islink(local) or real != rec.get("real_path", real):
            # Uploading what the link leads to would copy files from outside the output's folder.
            raise DataError(f"the folder of output '{rec['name']}' ({local}) was replaced by a symbolic link to "
                            f"'{real}' while the run went, so nothing of this output was stored: runyard uploads "
                            "only files inside the output's own folder. Write the files into that folder itself "
                            "(copy them there rather than linking the folder)")
        if not os.path.isdir(local):
            return set()
        globs = rec.get("globs")
        pairs = []
        odd = []
        for path, rel in local_tree(local):
            if globs and not any(fnmatch.fnmatchcase(rel, g) for g in globs):
                continue
            if "\\" in rel:
                odd.append(rel)
            pairs.append((path, f"{rec['path']}/{rel}"))
        if odd:  # object stores (and runyard's paths) read \ as /: two files could become one
            raise DataError(f"{plural(len(odd), 'file')} of output '{rec['name']}' have a backslash in their "
                            f"name ({', '.join(repr(o) for o in odd[:3])}), which datastores read as a folder "
                            "separator. Rename them; nothing of this output was stored")
        written = put_pairs(ds, pairs, overwrite=True, label=f"output {rec['name']}") if pairs else []
        self.say(f"output '{rec['name']}': {plural(len(pairs), 'file')} to {ds.name}:{rec['path']}")
        return set(written)


def _no_link_below(top: str, path: str) -> bool:
    """Whether nothing between ``top`` and ``path`` (included) is a symbolic link."""
    rel = os.path.relpath(path, top)
    if rel == ".." or rel.startswith(".." + os.sep):
        return False
    return os.path.realpath(path) == os.path.join(os.path.realpath(top), rel) if rel != "." else True


__all__ = ["RunData", "cache_key", "copy_out", "download_dataset", "fetch", "local_path", "prune_cache"]
