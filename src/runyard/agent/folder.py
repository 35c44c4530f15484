"""A run's folder, every file in it named in one place, and who is in charge of the run.

A run's folder is ``<workspace>/runs/<run id>/``::

    request.json     what to run (written when the run is prepared)
    data.json        the run's data plan (inputs and declared outputs), if it has one
    supervisor.json  who supervises it: pid, host, boot id, the script's pid and exit
    supervisor.log   the supervisor's own stderr
    output.raw       the script's stdout and stderr exactly as written: the script
                     writes this file itself, so nothing it printed is lost when the
                     supervisor dies
    driver_log.txt   the same as lines, ``\\r`` redraws collapsed (what ``runyard logs`` shows)
    artifacts.jsonl  every artifact stored so far, one JSON line each, appended as
                     files settle: the durable record of the live sync
    channel/         what the script reports (metrics, tags, files): log.jsonl, uploads/
    logs/            the live mirror of the working directory's ``./logs``
    cancel           there when a cancel was asked for
    end.json         the run's end as its supervisor saw it
    mounts.txt       data mounts to undo if the supervisor dies
    work/            the working directory (``wd/`` and, on an overlay, its layers)
    data/            downloaded inputs and upload-mode declared outputs

**Who is in charge.** ``<workspace>/active/<run id>`` exists from the moment a
run is prepared until its supervisor has recorded its end and cleaned up.
Whoever is in charge of the run holds a shared ``flock`` on it: the process that
prepares the run, then the supervisor it hands the run to (the hand-over keeps
the lock held throughout). The kernel drops the lock when its holder dies,
whatever kills it (``kill -9``, a crash, a reboot), so "nobody holds the lock"
means exactly "nobody is looking after this run": no pid to be reused, no
heartbeat to wait for. Looks at a marker take turns, through a probe lock
beside it (``active/.<run id>.probe``), which a reaper holds for as long as it
reaps, so a look waits for a reap instead of mistaking it for the supervisor.
Readers list ``active/`` (a handful of entries, whatever
the history holds) and reap the runs nobody holds (:mod:`runyard.runs.reaper`).

>>> import tempfile
>>> ws = tempfile.mkdtemp()
>>> f = RunFolder.of(ws, "exp_1700000000_0123abcd")
>>> f.claim() >= 0, f.attended()
(True, True)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from runyard.errors import RunError

RUNS_DIR: Final = "runs"
ACTIVE_DIR: Final = "active"

CHANNEL: Final = "channel"
REQUEST: Final = "request.json"
PLAN: Final = "data.json"
IDENTITY: Final = "supervisor.json"
SUPERVISOR_LOG: Final = "supervisor.log"
RAW_OUTPUT: Final = "output.raw"
DRIVER_LOG: Final = "driver_log.txt"
JOURNAL: Final = "artifacts.jsonl"
LOGS_MIRROR: Final = "logs"
CANCEL: Final = "cancel"
END: Final = "end.json"
MOUNTS: Final = "mounts.txt"
WORK: Final = "work"
DATA: Final = "data"

DRIVER_LOG_ARTIFACT: Final = "runyard_logs/driver_log.txt"
"""The driver log's artifact name."""
SETTLE: Final = 0.5
"""Seconds a look waits for a dead supervisor's lock to go (see RunFolder._settled)."""


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can name a folder (no separator, no dot name, no NUL), else ``RunError``."""
    if not run_id or "/" in run_id or "\\" in run_id or "\0" in run_id or run_id.startswith("."):
        raise RunError(f"{run_id!r} is not a run id. Run ids look like 'experiment_1700000000_0123abcd'; "
                       "list them with: runyard runs ls")
    return run_id


def boot_id() -> str:
    """This boot of this machine (changes at every reboot), or "" where the kernel does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run's files (no I/O until a method is called)."""

    path: str
    run_id: str
    active_dir: str

    @classmethod
    def of(cls, workspace_path: str, run_id: str) -> RunFolder:
        """The folder of ``run_id`` in the workspace at ``workspace_path``."""
        check_run_id(run_id)
        return cls(os.path.join(workspace_path, RUNS_DIR, run_id), run_id, os.path.join(workspace_path, ACTIVE_DIR))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def channel(self) -> str:
        """The script's channel to runyard (see :mod:`runyard.agent.channel`)."""
        return self.file(CHANNEL)

    @property
    def request(self) -> str:
        return self.file(REQUEST)

    @property
    def end(self) -> str:
        return self.file(END)

    @property
    def cancel(self) -> str:
        return self.file(CANCEL)

    @property
    def identity(self) -> str:
        return self.file(IDENTITY)

    @property
    def supervisor_log(self) -> str:
        return self.file(SUPERVISOR_LOG)

    @property
    def raw_output(self) -> str:
        return self.file(RAW_OUTPUT)

    @property
    def driver_log(self) -> str:
        return self.file(DRIVER_LOG)

    @property
    def journal(self) -> str:
        return self.file(JOURNAL)

    @property
    def logs_mirror(self) -> str:
        return self.file(LOGS_MIRROR)

    @property
    def work(self) -> str:
        return self.file(WORK)

    @property
    def data(self) -> str:
        return self.file(DATA)

    @property
    def mounts(self) -> str:
        return self.file(MOUNTS)

    @property
    def marker(self) -> str:
        """``active/<run id>``: there while the run is not finished; its holders are in charge."""
        return os.path.join(self.active_dir, self.run_id)

    def owns(self, path: str) -> bool:
        """Whether ``path`` (a path in the run's folder) really is in it: neither the folder
        nor any folder between it and ``path`` is a symbolic link.

        The script can write its run folder on the local target: whoever cleans up
        after it checks this before removing or unmounting anything there, so a
        link the script planted (``work -> /``) leads nowhere.
        """
        top = os.path.join(os.path.realpath(os.path.dirname(self.path)), self.run_id)
        if os.path.realpath(self.path) != top:
            return False  # the run's folder itself was swapped for a link
        rel = os.path.relpath(os.path.abspath(path), self.path)
        if rel == ".." or rel.startswith("../"):
            return False
        target = os.path.normpath(os.path.join(top, rel))
        return os.path.realpath(target) == target  # no link on the way, the last part included

    # -- who is in charge --------------------------------------------------------------
    def claim(self) -> int:
        """Make the run's marker and hold it (shared); returns the descriptor to keep open.

        The process that prepares a run claims it; its supervisor claims it too
        (:meth:`hold`) before the preparer lets go, so it is never unattended
        in between.
        """
        os.makedirs(self.active_dir, exist_ok=True)
        try:
            fd = os.open(self.marker, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            made = self._create_locked()
            if made is not None:
                return made
            fd = os.open(self.marker, os.O_RDWR | os.O_CLOEXEC)  # made by another process meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create_locked(self) -> int | None:
        """Make the marker already locked: written and locked under a temporary name, then
        linked into place, so no reader ever sees it unheld. None when it exists already."""
        tmp = os.path.join(self.active_dir, f".{self.run_id}.{os.getpid()}.{os.urandom(4).hex()}.new")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            who = {"host": os.uname().nodename, "boot_id": boot_id(), "created": time.time()}
            os.write(fd, json.dumps(who).encode())
            try:
                os.link(tmp, self.marker)
            except FileExistsError:
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        return fd

    def hold(self) -> int:
        """For the supervisor: hold the marker (made by :meth:`claim`, or now).

        Raises ``RunError`` when the run was reaped meanwhile (its marker was
        removed while this process waited for the lock): it must not run then.
        """
        if not os.path.exists(self.marker) and os.path.exists(self.end):
            raise RunError(f"Run {self.run_id} has ended already (it was reaped, or ran); it is not started again.")
        fd = self.claim()
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            raise RunError(f"Run {self.run_id} was reaped (recorded as lost) before its supervisor could take it.")
        return fd

    def marker_info(self) -> dict[str, Any]:
        """What the marker says about where the run is (host, boot id), or {}."""
        try:
            with open(self.marker, encoding="utf-8") as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def attended(self) -> bool | None:
        """Whether somebody is in charge of the run: True (its lock is held),
        False (its marker is there but nobody holds it), None (no marker: the
        run was finished, or never claimed).

        Lookers take turns (the probe lock), and a run being reaped is waited
        for: a look never mistakes another look, or a reaper, for the run's
        supervisor.
        """
        if not os.path.exists(self.marker):
            return None
        with self._probing():
            return self._settled(lambda: self._probe(keep=False))[0]

    def _settled(self, probe: Callable[[], tuple[bool | None, int | None]]) -> tuple[bool | None, int | None]:
        """``probe()``, again for a moment while the lock is held by a supervisor that is dead:
        a killed process lets go of its locks only once its last thread is gone, a moment after
        its process shows as dead."""
        found = probe()
        deadline = time.monotonic() + SETTLE
        while found[0] is True and self._holder_dead() and time.monotonic() < deadline:
            time.sleep(0.005)
            found = probe()
        return found

    def _holder_dead(self) -> bool:
        """Whether the supervisor that said who it is (on this machine, since its last boot) is dead."""
        from runyard.agent.procs import pid_alive

        who = self.read_identity()
        pid = who.get("pid")
        return (isinstance(pid, int) and who.get("host") == os.uname().nodename
                and who.get("boot_id") == boot_id() and not pid_alive(pid))

    @contextmanager
    def _probing(self) -> Iterator[None]:
        try:
            fd = os.open(self._probe_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            # No active/ folder (nothing is marked), or a workspace this process may only read:
            # a look without taking turns (it cannot reap anyway).
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if not os.path.exists(self.marker):
                try:  # the run is over: its probe lock goes too (a late look may make it again; gc clears)
                    os.unlink(self._probe_lock)
                except OSError:
                    pass
            os.close(fd)

    def _probe(self, *, keep: bool) -> tuple[bool | None, int | None]:
        """(attended, the marker's descriptor locked exclusively if ``keep`` and nobody held it)."""
        try:
            fd = os.open(self.marker, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True, None
            raise
        if keep:
            return False, fd
        os.close(fd)
        return False, None

    @property
    def _probe_lock(self) -> str:
        return os.path.join(self.active_dir, f".{self.run_id}.probe")

    def release(self) -> None:
        """The run is finished: remove its marker (its holder's lock goes with the descriptor)."""
        for path in (self.marker, self._probe_lock):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @contextmanager
    def reaping(self) -> Iterator[bool | None]:
        """Be this run's only reaper for a while.

        Yields :meth:`attended` as it is with the probe lock held, so every
        other look at the run waits until the block ends (and then finds it
        reaped). When it yields False, the marker is held exclusively too: a
        supervisor that comes late waits, then finds the marker gone (:meth:`hold`).
        """
        os.makedirs(self.active_dir, exist_ok=True)
        with self._probing():
            attended, fd = self._settled(lambda: self._probe(keep=True))
            try:
                yield attended
            finally:
                if fd is not None:
                    os.close(fd)

    # -- what the supervisor says about itself -----------------------------------------
    def read_identity(self) -> dict[str, Any]:
        """``supervisor.json``: pid, host, boot id, started, the script's pid and its exit."""
        try:
            with open(self.identity, encoding="utf-8") as fh:
                who = json.load(fh)
        except (OSError, ValueError):
            return {}
        return who if isinstance(who, dict) else {}

    def write_identity(self, who: dict[str, Any]) -> None:
        write_json(self.identity, who)


def write_json(path: str, value: Any, *, indent: int | None = None) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary sibling (a reader never sees half of it).

    The temporary file has a name nobody can guess and is made new (``O_EXCL``,
    ``O_NOFOLLOW``): a link planted in the run's folder under a name runyard
    would use is never written through; the rename replaces a link at ``path``
    itself, never its target.
    """
    data = json.dumps(value, indent=indent).encode()
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def active_runs(workspace_path: str) -> list[str]:
    """The ids of the runs not finished yet (their markers in ``active/``)."""
    try:
        names = os.listdir(os.path.join(workspace_path, ACTIVE_DIR))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith("."))


__all__ = [
    "DRIVER_LOG_ARTIFACT",
    "RunFolder",
    "active_runs",
    "boot_id",
    "check_run_id",
    "write_json",
]
