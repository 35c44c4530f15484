"""``runyard gc``: remove what crashed runs and writers left behind.

Normally nothing is left: a run's supervisor removes its working directory,
and the next reader of a run whose supervisor died salvages it and cleans up
(:mod:`runyard.runs.reaper`). What can remain after crashes, kills and reboots, and
what :func:`collect` removes:

- runs nobody looks after any more: reaped (outputs, logs and the driver log
  salvaged, the end recorded) before anything of theirs is removed;
- in the folders of runs that are over: working directories (unmounted first),
  data mounts, downloaded input copies, the raw output, temporary files; the
  folder of a run that never got as far as a request, whole;
- in the store (a local folder store): temporary files of writers that died
  (their process is gone and the file is a minute old) or that stopped writing
  an hour ago;
- the shared overlay lower layers no working directory uses (they are a cache,
  made again on demand; one under a mounted overlay is kept), layers whose build
  crashed, and the locks of layers that are gone;
- downloads into the input cache that stopped halfway an hour ago.

Nothing is removed or unmounted through a link in a run's folder (a run's
script can write its folder on the local target), and only runyard's own
mounts of a run are unmounted.

A run that somebody looks after is never touched. ``dry_run=True`` reports
what would be done and does nothing.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from runyard.agent.folder import RunFolder, active_runs
from runyard.errors import RunError

if TYPE_CHECKING:
    from runyard.workspace import Workspace

QUIET_FOR: Final = 60.0
"""A dead writer's temporary file is removed once it is this many seconds old."""
ABANDONED_AFTER: Final = 3600.0
"""Any temporary file untouched this long is removed, whoever wrote it."""
_LEFTOVERS: Final = ("work", "output.raw", os.path.join("data", "inputs"))


@dataclass
class Action:
    """One thing done (or, in a dry run, that would be done)."""

    what: str
    """``reap``, ``unmount`` or ``remove``."""
    path: str
    bytes: int = 0
    detail: str = ""


@dataclass
class GcReport:
    """What :func:`collect` did; ``dry_run`` when it only looked."""

    dry_run: bool
    actions: list[Action] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(a.bytes for a in self.actions)


def collect(ws: Workspace, *, dry_run: bool = False) -> GcReport:
    """Reap lost runs, then remove what crashed runs and writers left (see the module docstring).

    >>> import tempfile
    >>> from runyard.workspace import Workspace
    >>> collect(Workspace.create(tempfile.mkdtemp())).actions
    []
    """
    report = GcReport(dry_run)
    _reap(ws, report)
    _run_folders(ws, report)
    _active_leftovers(ws, report)
    _store_tmp(ws, report)
    _partial_downloads(ws, report)
    _lower_layers(ws, report)
    return report


def _reap(ws: Workspace, report: GcReport) -> None:
    from runyard.runs.reaper import reap, unattended_runs

    lost = unattended_runs(ws)
    if not lost:
        return
    if report.dry_run:
        report.actions.extend(Action("reap", RunFolder.of(ws.path, r).path, detail="nobody looks after it")
                              for r in lost)
        return
    history = ws.open_history()
    try:
        for run_id in lost:
            try:
                rec = reap(ws, history, run_id)
            except Exception as exc:
                report.problems.append(f"reaping run {run_id} failed: {exc}")
                continue
            if rec is not None:
                report.actions.append(Action("reap", RunFolder.of(ws.path, run_id).path,
                                             detail=f"recorded {rec.status.value}"))
    finally:
        history.close()


def _run_folders(ws: Workspace, report: GcReport) -> None:
    from runyard.agent.workdir import cleanup_stale, mounts_below
    from runyard.errors import NotFoundError
    from runyard.runs.reaper import unmount_data

    try:
        names = sorted(os.listdir(ws.runs_dir))
    except FileNotFoundError:
        return
    active = set(active_runs(ws.path))
    history = ws.open_history()
    try:
        for name in names:
            try:
                folder = RunFolder.of(ws.path, name)
            except RunError:
                continue
            if not os.path.isdir(folder.path) or os.path.islink(folder.path) or name in active:
                continue  # not a run's folder, or a run not finished (looked after, or left for the reaper)
            try:
                record = history.get_run(name)
            except NotFoundError:
                record = None
            if record is None and not os.path.exists(folder.request):
                _remove(report, folder.path, "a run that never got as far as a request")
                continue
            if record is None or not record.is_terminal:
                continue  # not recorded, or not over: a run of another machine, or of an older runyard
            mounted = mounts_below(os.path.realpath(folder.path)) if folder.owns(folder.path) else []
            if mounted:
                if report.dry_run:
                    report.actions.extend(Action("unmount", mp) for mp in mounted)
                else:
                    done = unmount_data(folder)
                    if folder.owns(folder.work):
                        try:
                            done += cleanup_stale(folder.work)
                        except Exception as exc:
                            report.problems.append(f"unmounting what run {name} left mounted failed: {exc}")
                    report.actions.extend(Action("unmount", mp) for mp in mounted if mp in done)
                    left = [mp for mp in mounts_below(os.path.realpath(folder.path)) if mp in mounted]
                    if left:
                        report.problems.append(f"{', '.join(left)} of run {name} is still mounted: not runyard's "
                                               "mount of this run, so left alone; unmount it yourself if it is "
                                               "not in use (umount -l PATH)")
            for rel in _LEFTOVERS:
                path = folder.file(rel)
                if os.path.lexists(path):
                    if folder.owns(path):
                        _remove(report, path, "left by a run that is over")
                    else:
                        report.problems.append(f"{path} is a link (the run's script may have made it): not "
                                               "followed; remove it yourself")
            for entry in _listdir(folder.path):
                if entry.startswith(".") and entry.endswith(".tmp") and folder.owns(folder.file(entry)):
                    _remove(report, folder.file(entry), "a temporary file")
    finally:
        history.close()


def _active_leftovers(ws: Workspace, report: GcReport) -> None:
    """In ``active/``: probe locks of runs that are over, and markers a crash left half made."""
    import fcntl

    from runyard.agent.folder import ACTIVE_DIR

    active = os.path.join(ws.path, ACTIVE_DIR)
    now = time.time()
    for entry in _listdir(active):
        path = os.path.join(active, entry)
        if entry.startswith(".") and entry.endswith(".probe"):
            if os.path.exists(os.path.join(active, entry[1:-len(".probe")])):
                continue  # its run is not over
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _remove(report, path, "the probe lock of a run that is over")
            except OSError:
                pass  # somebody is looking right now
            finally:
                os.close(fd)
        elif entry.startswith(".") and entry.endswith(".new"):
            try:
                if now - os.lstat(path).st_mtime > QUIET_FOR:
                    _remove(report, path, "a marker whose making stopped")
            except OSError:
                continue


def _partial_downloads(ws: Workspace, report: GcReport) -> None:
    """Downloads into the input cache that stopped halfway (``*.runyard-*.part``), an hour quiet."""
    from runyard.data.materialize import CACHE_DIR

    root = os.path.join(ws.cache_dir, CACHE_DIR)
    now = time.time()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if ".runyard-" in name and name.endswith(".part"):
                path = os.path.join(dirpath, name)
                try:
                    quiet = now - os.lstat(path).st_mtime
                except OSError:
                    continue
                if quiet > ABANDONED_AFTER:
                    _remove(report, path, "a download that stopped halfway")


def _store_tmp(ws: Workspace, report: GcReport) -> None:
    if "://" in ws.store_url and not ws.store_url.startswith("file://"):
        return  # an object store: its tmp/ keys are cleaned by the service's lifecycle rules, not here
    root = ws.store_url.removeprefix("file://")
    tmp = os.path.join(root, "tmp")
    now = time.time()
    for entry in _listdir(tmp):
        path = os.path.join(tmp, entry)
        try:
            age = now - os.lstat(path).st_mtime
        except OSError:
            continue
        pid = _pid_in(entry, sep=".")
        if age > ABANDONED_AFTER or (age > QUIET_FOR and pid is not None and not _alive(pid)):
            _remove(report, path, "a temporary file of a writer that stopped")


def _lower_layers(ws: Workspace, report: GcReport) -> None:
    import fcntl

    from runyard.agent.supervisor import LOWER_CACHE
    from runyard.agent.workdir import overlay_lowers

    cache = os.path.join(ws.cache_dir, LOWER_CACHE)
    now = time.time()
    in_use = overlay_lowers()
    for entry in _listdir(cache):
        path = os.path.join(cache, entry)
        if entry.startswith(".building-"):
            pid = _pid_in(entry.removeprefix(".building-"), sep="-")
            try:
                age = now - os.lstat(path).st_mtime
            except OSError:
                continue
            if age > ABANDONED_AFTER or (age > QUIET_FOR and pid is not None and not _alive(pid)):
                _remove(report, path, "a layer whose build stopped")
            continue
        if entry.endswith(".lock") and len(entry) == 69 and not os.path.exists(path[:-5]):
            _remove_lock(report, path)  # a lock with no layer left: nobody waits on it
            continue
        if len(entry) != 64 or not os.path.isdir(path):
            continue
        if path in in_use:
            continue  # under a mounted overlay (a run whose supervisor died, not reaped yet)
        lock = os.open(os.path.join(cache, f"{entry}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a running working directory uses it
            _remove(report, path, "a snapshot layer no run uses")
        finally:
            os.close(lock)


def _remove_lock(report: GcReport, path: str) -> None:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return  # somebody is building or using the layer right now
    try:
        _remove(report, path, "the lock of a layer that is gone")
    finally:
        os.close(fd)


def _remove(report: GcReport, path: str, why: str) -> None:
    size = _size(path)
    report.actions.append(Action("remove", path, size, why))
    if report.dry_run:
        return
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            from runyard.agent.workdir import cleanup_stale, mounts_below

            if mounts_below(os.path.realpath(path)):
                cleanup_stale(os.path.dirname(path) if os.path.basename(path) == "work" else path)
            if os.path.lexists(path):
                _rmtree(path)
        else:
            os.unlink(path)
    except Exception as exc:
        report.problems.append(f"removing {path} failed: {exc}")


def _rmtree(path: str) -> None:
    def unlock(func: object, p: str, _exc: object) -> None:
        os.chmod(os.path.dirname(p), 0o700)  # a run may have taken away its own write permission
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
            shutil.rmtree(p)
        else:
            os.unlink(p)

    shutil.rmtree(path, onerror=unlock)


def _size(path: str) -> int:
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_size
    total = 0
    dev = st.st_dev
    for dirpath, dirnames, filenames in os.walk(path):
        try:
            if os.lstat(dirpath).st_dev != dev:  # a mount below: not ours to count
                dirnames[:] = []
                continue
        except OSError:
            continue
        for n in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _pid_in(name: str, *, sep: str) -> int | None:
    """The writer's pid in a temporary file's name (the first all-digit part after the first)."""
    parts = name.split(sep)
    for part in parts[1:]:
        if part.isdigit():
            return int(part)
    return None


def _alive(pid: int) -> bool:
    from runyard.compute.local import pid_alive

    return pid_alive(pid)


__all__ = ["Action", "GcReport", "collect"]
