"""The ``local`` compute target: the run's supervisor is a process on this machine.

Two ways to start it: :func:`launch` runs ``python -m runyard.agent.supervisor``
(any caller), and :class:`Prefork` forks it ahead of time (the ``runyard run``
command, so that the supervisor loads the run history while the command takes
the snapshot). Either way the run is never unattended: the process that
prepared the run holds its marker (:mod:`runyard.agent.folder`) until the
supervisor holds it too, by inheriting the very descriptor (``launch``) or by
saying so through a pipe (``Prefork``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from runyard.agent.folder import RunFolder
from runyard.agent.procs import pid_alive
from runyard.compute.base import Kind
from runyard.errors import ComputeError, RunError

if TYPE_CHECKING:
    from runyard.workspace import Workspace


class LocalKind(Kind):
    """``local``: the supervisor and the script are processes of this machine, the script
    with the user's rights (see :mod:`runyard.compute.base`)."""

    name = "local"

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options:
            raise ComputeError(f"A local target takes no options (got {', '.join(sorted(options))}). For limits, "
                               "no network or another user, add a target of kind sandbox.")
        return {}

    def start(self, ws: Workspace, run_id: str, *, fork: bool = False, claim: int | None = None,
              prefork: Any = None) -> int:
        if isinstance(prefork, Prefork):
            try:
                return prefork.start(ws, run_id)
            finally:
                if claim is not None:
                    os.close(claim)  # the supervisor holds the run now (or it is lost, and the next read says so)
        return launch(ws, run_id, fork=fork, claim=claim)

    def cancel(self, ws: Workspace, run_id: str, pid: int | None = None) -> bool:
        """The ``cancel`` file in the run's folder (its supervisor polls it, from any machine that
        shares the workspace) and SIGTERM to the supervisor when it is alive here."""
        import time

        folder = RunFolder.of(ws.path, run_id)
        os.makedirs(folder.path, exist_ok=True)
        with open(folder.cancel, "w", encoding="utf-8") as fh:
            fh.write(f"{time.time()}\n")
        who = folder.read_identity()
        found = who.get("pid")
        pid = pid or (found if isinstance(found, int) else None)
        if not _here(who):
            return False  # its supervisor is on another machine (a shared workspace): it polls the file
        if pid and folder.attended() and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
                return True
            except ProcessLookupError:
                pass
        return False


def _here(who: dict[str, Any]) -> bool:
    """Whether the supervisor ``who`` (``supervisor.json``) is on this machine, this boot: its pid
    means nothing anywhere else. Unknown (no identity yet) counts as here: only this machine's
    ``runyard run`` has prepared a run whose supervisor has not said who it is."""
    from runyard.agent.folder import boot_id

    host, boot = who.get("host"), who.get("boot_id")
    if host is not None and host != os.uname().nodename:
        return False
    return not boot or not boot_id() or boot == boot_id()


def launch(ws: Workspace, run_id: str, *, fork: bool = False, claim: int | None = None) -> int:
    """Start the run's supervisor, detached from the caller's terminal; returns its pid.

    ``fork=True`` forks this process (fast: the modules are already loaded;
    only for single-threaded callers such as the CLI); otherwise a new
    interpreter runs ``python -m runyard.agent.supervisor``. ``claim`` is the
    run's marker as :func:`runyard.runs.prepare` left it held; it is closed
    here once the supervisor holds the run (or could not be started).
    """
    try:
        if fork:
            return Prefork().start(ws, run_id)
        folder = RunFolder.of(ws.path, run_id)
        os.makedirs(folder.path, exist_ok=True)
        argv = [sys.executable, "-m", "runyard.agent.supervisor", ws.path, run_id]
        if claim is not None:
            argv += ["--lock-fd", str(claim)]  # the same open file: the lock is held across the hand-over
        with open(folder.supervisor_log, "ab") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True, close_fds=True,
                pass_fds=() if claim is None else (claim,),
            )
        return proc.pid
    finally:
        if claim is not None:
            os.close(claim)


class Prefork:
    """A supervisor forked before its run exists, warming up meanwhile.

    The ``runyard`` command forks it first thing, before parsing its
    arguments, when the command is ``run``: the supervisor loads its modules
    while the command starts up and takes the snapshot, then waits for
    ``start(ws, run_id)``. Closing without starting (``abandon()``, or this
    process exiting) makes it exit. Only for single-threaded callers (it forks).
    """

    def __init__(self) -> None:
        db_module = sys.modules.get("runyard.history.db")
        if db_module is not None:  # (not imported: nothing is open, and importing it costs)
            # No SQLite connection may cross the fork. A history dropped without
            # close() can leave its connection in a reference cycle, still open
            # and out of dispose_all's sight: collected now, in this process.
            # Left for the child's collector, closing it there would drop the
            # child's own locks on the database (POSIX locks are per process),
            # and two writers would then corrupt it.
            import gc

            gc.collect()
            db_module.dispose_all()
        id_r, self._id_w = os.pipe()
        pid_r, pid_w = os.pipe()
        self._ack_r, ack_w = os.pipe()
        for fd in (self._id_w, self._ack_r):
            os.set_inheritable(fd, False)
        child = os.fork()
        if child == 0:  # pragma: no cover - child; covered by the run tests through its effects
            os.close(self._id_w)
            os.close(self._ack_r)
            os.close(pid_r)
            _supervisor_process(id_r, pid_w, ack_w)
        os.close(id_r)
        os.close(pid_w)
        os.close(ack_w)
        os.waitpid(child, 0)
        data = os.read(pid_r, 32)
        os.close(pid_r)
        try:
            self.pid = int(data)
        except ValueError:
            self.abandon()
            raise RunError("The run's supervisor could not be started (fork failed).") from None

    def start(self, ws: Workspace, run_id: str) -> int:
        """Hand the run to the supervisor; returns its pid once it holds the run."""
        try:
            os.write(self._id_w, os.fsencode(ws.path) + b"\0" + run_id.encode())
        finally:
            os.close(self._id_w)
        try:
            ack = os.read(self._ack_r, 1)
        finally:
            os.close(self._ack_r)
        if ack != b"1":
            raise RunError(f"The supervisor of run {run_id} stopped before it took the run; see "
                           f"{RunFolder.of(ws.path, run_id).supervisor_log}. The next read of the run records it "
                           "as lost.")
        return self.pid

    def abandon(self) -> None:
        for fd in (self._id_w, self._ack_r):
            try:
                os.close(fd)
            except OSError:
                pass


def _supervisor_process(id_r: int, pid_w: int, ack_w: int) -> None:  # pragma: no cover - forked child
    """The forked side of :class:`Prefork`: never returns."""
    code = 1
    # A cancel may come before supervise() installs its handlers: it must not
    # kill us unrecorded; the cancel file it also leaves is checked before
    # anything runs.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.setsid()
        grandchild = os.fork()
        if grandchild:
            os.write(pid_w, str(grandchild).encode())
            os._exit(0)
        os.close(pid_w)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        # Warm up while the caller starts and takes the snapshot. The run
        # history (SQLAlchemy) is loaded later, by the supervisor, once the
        # script has run a moment or at its end (see agent.keeping.HistoryLoader).
        import runyard.agent.artifacts
        import runyard.agent.capture
        import runyard.agent.workdir  # noqa: F401
        from runyard.agent.supervisor import supervise
        from runyard.workspace import Workspace

        chunks = []
        while chunk := os.read(id_r, 4096):
            chunks.append(chunk)
        os.close(id_r)
        if not chunks:
            code = 0  # abandoned: the run was never made
            return
        ws_path, _, raw_id = b"".join(chunks).partition(b"\0")
        ws, run_id = Workspace(os.fsdecode(ws_path)), raw_id.decode()
        folder = RunFolder.of(ws.path, run_id)
        log = os.open(folder.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        lock = folder.hold()
        os.write(ack_w, b"1")  # the caller may let go of the run now
        os.close(ack_w)
        code = supervise(ws, run_id, lock_fd=lock)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


__all__ = ["LocalKind", "Prefork", "launch", "pid_alive"]
