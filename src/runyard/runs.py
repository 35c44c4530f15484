"""Run orchestration: submit a run, start its supervisor, cancel, wait, and
find runs whose supervisor died.

``prepare`` checks what to run and takes the snapshot of its source
directory (a snapshot over its limits leaves no run behind), and writes the
run's request into its folder; ``record`` makes the run's record (Queued);
``launch`` starts its supervisor on the compute target (only ``local`` for
now), which takes it from Preparing to its end. ``submit`` does all three.
``runyard run`` leaves the recording to the supervisor, which forked early and
has the run history loaded by then.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from runyard.errors import RunError
from runyard.history import Artifact, RunRecord, RunStatus

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.workspace import Workspace

LOST_AFTER: Final = 15.0
"""Seconds without a heartbeat after which a run whose supervisor is gone is lost."""
LOST_AFTER_REMOTE: Final = 120.0
"""The same for a supervisor on another host, whose process cannot be checked."""
COMPUTE_TARGETS: Final = ("local",)


@dataclass
class RunSpec:
    """What to run: the SDK's ScriptRunConfig and ``runyard run`` both make one."""

    source_directory: str
    script: str
    arguments: Sequence[str] = ()
    experiment: str = "default"
    compute_target: str = "local"
    max_bytes: int | str | None = None
    max_files: int | str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    snapshot_id: str | None = None
    """Run an existing snapshot (rerun) instead of taking one."""
    git: dict[str, Any] | None = None
    """With ``snapshot_id``: the git state the snapshot was taken at (a rerun's parent's)."""
    inputs: Sequence[Any] = ()
    """DatasetConsumptionConfig objects (their placeholders may be in ``arguments``)."""
    outputs: Sequence[Any] = ()
    """OutputFileDatasetConfig objects."""
    data_plan: dict[str, Any] | None = None
    """A data plan as a run folder keeps it (a rerun's parent's), instead of inputs and outputs."""


def _git_info(source: str) -> dict[str, Any]:
    from runyard.snapshot.walk import find_git_root

    if find_git_root(os.fsencode(os.path.join(source, "x"))) is None:
        return {}
    info: dict[str, Any] = {}
    try:
        out = subprocess.run(
            ["git", "-C", source, "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0:
            lines = out.stdout.split()
            if len(lines) == 2:
                info["git_commit"], info["git_branch"] = lines
        st = subprocess.run(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=30)
        if st.returncode == 0:
            info["git_dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


@dataclass
class RunRequest:
    """A prepared run: its id, its snapshot and what to run. Kept as
    ``request.json`` in the run's folder, where the supervisor reads it."""

    run_id: str
    experiment: str
    snapshot_id: str
    source_dir: str
    script: str
    arguments: list[str]
    compute_target: str = "local"
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    python_version: str = ""
    git: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: str) -> None:
        import json
        from dataclasses import asdict

        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".request.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=1)
        os.replace(tmp, os.path.join(folder, REQUEST_FILE))

    @classmethod
    def load(cls, folder: str) -> RunRequest:
        import json

        with open(os.path.join(folder, REQUEST_FILE), encoding="utf-8") as fh:
            return cls(**json.load(fh))


REQUEST_FILE: Final = "request.json"
END_FILE: Final = "end.json"
"""The run's end as its supervisor saw it, written before the history has it (see :class:`RunEnd`)."""


@dataclass
class RunEnd:
    """How a run ended, kept as ``end.json`` in its folder.

    The supervisor writes it once everything the run produced is in the
    store, then records the same in the run history. ``runyard run`` exits
    on the file; readers of the history wait for the record while the
    supervisor lives, and record it from the file if it died in between.
    """

    status: str
    exit_code: int | None
    signal: int | None
    error: str | None
    started: float | None
    ended: float
    command_line: str | None = None
    working_dir: str | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    """What the run read and wrote (inputs and declared outputs), for lineage and registration."""

    def write(self, folder: str) -> None:
        import json
        from dataclasses import asdict

        tmp = os.path.join(folder, f".{END_FILE}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(asdict(self), fh)
            os.replace(tmp, os.path.join(folder, END_FILE))
        except OSError:
            pass

    @classmethod
    def read(cls, folder: str) -> RunEnd | None:
        import json

        try:
            with open(os.path.join(folder, END_FILE), encoding="utf-8") as fh:
                raw = json.load(fh)
            raw["artifacts"] = [Artifact(**a) for a in raw.get("artifacts", [])]
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def record_end(history: RunHistory, run_id: str, end: RunEnd) -> RunRecord:
    """Record a run's end (its artifacts, then its status) unless it has ended already."""
    run = history.get_run(run_id)
    if end.artifacts:  # kept whatever the status: outputs survive every kind of end
        history.upsert_artifacts(run_id, end.artifacts)
    final = run.status if run.is_terminal else RunStatus(end.status)
    if end.data:  # before the final status: whoever sees Completed finds the registered outputs
        from runyard.data.lineage import record_run_data

        record_run_data(history, run_id, final, end.data)
    if run.is_terminal:
        return run  # e.g. canceled by setting its status
    if end.started is not None and run.status not in (RunStatus.RUNNING, RunStatus.FINALIZING):
        history.set_status(run_id, RunStatus.RUNNING, started=end.started, command_line=end.command_line,
                           working_dir=end.working_dir)
        run = history.get_run(run_id)
    if run.status is RunStatus.RUNNING:
        history.set_status(run_id, RunStatus.FINALIZING)
    return history.set_status(run_id, final, exit_code=end.exit_code, signal=end.signal, error=end.error,
                              ended=end.ended)


def prepare(ws: Workspace, spec: RunSpec) -> RunRequest:
    """Check the spec and take the snapshot; nothing is recorded yet.

    A snapshot that fails (over a limit, unreadable files) raises and leaves
    no run behind, as a failed ``snapshot create`` stores nothing.
    """
    from runyard.history import check_experiment_name, new_run_id

    if spec.compute_target not in COMPUTE_TARGETS:
        raise RunError(f"Unknown compute target '{spec.compute_target}'. Available: {', '.join(COMPUTE_TARGETS)}.")
    check_experiment_name(spec.experiment)
    source = os.path.abspath(spec.source_directory)
    script = spec.script
    if os.path.isabs(script):
        rel = os.path.relpath(script, source)
        if rel == ".." or rel.startswith("../"):
            raise RunError(f"The script '{script}' is not inside the source directory '{source}'. "
                           "Pass a script inside it (relative to it), or another --source-dir.")
        script = rel
    script = os.path.normpath(script).replace(os.sep, "/")
    if spec.snapshot_id is None:
        if os.path.islink(os.path.join(source, script)):
            raise RunError(f"The script '{script}' is a symlink; a snapshot keeps it as a link, so the run would "
                           "execute whatever it points to. Pass the file it points to (inside the source).")
        if not os.path.isfile(os.path.join(source, script)):
            raise RunError(f"There is no script '{script}' in the source directory '{source}'. "
                           "Check the name, or pass --source-dir.")
        from runyard.snapshot.explain import explain

        verdict = explain(source, [script], exclude_dirs=(ws.path,))[0]
        if not verdict.included:
            raise RunError(f"The script '{script}' is excluded from the snapshot of '{source}': {verdict.reason}. "
                           f"See: runyard snapshot explain {source} {script}")
        snapshot_id = ws.snapshot(source, max_bytes=spec.max_bytes, max_files=spec.max_files).id
    else:
        snapshot_id = spec.snapshot_id
    now = time.time()
    run_id = new_run_id(spec.experiment, now=now)
    plan = spec.data_plan
    if plan is not None:
        from runyard.data.lineage import replan

        plan = replan(plan, run_id, spec.experiment)
    elif spec.inputs or spec.outputs:
        from runyard.data.lineage import make_plan

        plan = make_plan(ws, run_id, spec.experiment, spec.inputs, spec.outputs)
    request = RunRequest(
        run_id=run_id, experiment=spec.experiment, snapshot_id=snapshot_id,
        source_dir=source, script=script, arguments=[str(a) for a in spec.arguments],
        compute_target=spec.compute_target, parent_run_id=spec.parent_run_id, tags=dict(spec.tags), created=now,
        python_version=sys.version.split()[0],
        git=_git_info(source) if spec.snapshot_id is None else dict(spec.git or {}),
    )
    folder = os.path.join(ws.runs_dir, request.run_id)
    if plan:
        from runyard.data.lineage import save_plan

        save_plan(folder, plan)
    request.save(folder)
    return request


def record(history: RunHistory, request: RunRequest) -> RunRecord:
    """The run's record, made (Queued) if it is not there yet.

    The supervisor and the script itself (its first metric) may both make it;
    whichever comes second finds it made.
    """
    from runyard.errors import HistoryError, NotFoundError

    try:
        return history.get_run(request.run_id)
    except NotFoundError:
        pass
    try:
        return history.create_run(
            request.experiment, run_id=request.run_id, status=RunStatus.QUEUED, created=request.created,
            parent_run_id=request.parent_run_id, tags=request.tags or None, snapshot_id=request.snapshot_id,
            source_dir=request.source_dir, script=request.script, arguments=request.arguments,
            compute_target=request.compute_target, python_version=request.python_version, **request.git,
        )
    except HistoryError:
        return history.get_run(request.run_id)  # made meanwhile by the other side (else: raises NotFound)


def ensure_recorded(ws: Workspace, run_id: str, history: RunHistory) -> None:
    """Make sure a run prepared by ``runyard run`` has its record, for the
    script's first write (the supervisor may record it a moment later)."""
    from runyard.errors import NotFoundError

    try:
        history.get_run(run_id)
    except NotFoundError:
        folder = os.path.join(ws.runs_dir, run_id)
        if not os.path.exists(os.path.join(folder, REQUEST_FILE)):
            raise
        record(history, RunRequest.load(folder))


def launch(ws: Workspace, run_id: str, *, fork: bool = False) -> int:
    """Start the run's supervisor, detached from the caller's terminal.

    Returns the supervisor's pid. ``fork=True`` forks this process (fast: the
    modules are already loaded; only for single-threaded callers such as the
    CLI); otherwise a new interpreter runs ``python -m runyard.agent.supervisor``.
    """
    if fork:
        return Prefork().start(ws, run_id)
    folder = os.path.join(ws.runs_dir, run_id)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, SUPERVISOR_LOG), "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runyard.agent.supervisor", ws.path, run_id],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True, close_fds=True,
        )
    return proc.pid


SUPERVISOR_LOG: Final = "supervisor.log"


class Prefork:
    """A supervisor forked before its run exists, warming up meanwhile.

    The ``runyard`` command forks it first thing, before parsing its
    arguments, when the command is ``run``: the supervisor loads the run
    history (SQLAlchemy: the slowest import there is) while the command starts
    up and takes the snapshot, then waits for ``start(ws, run_id)``. Closing
    without starting (``abandon()``, or this process exiting) makes it exit.
    Only for single-threaded callers (it forks).
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
        child = os.fork()
        if child == 0:  # pragma: no cover - child; covered by the run tests through its effects
            os.close(self._id_w)
            os.close(pid_r)
            _supervisor_process(id_r, pid_w)
        os.close(id_r)
        os.close(pid_w)
        os.waitpid(child, 0)
        data = os.read(pid_r, 32)
        os.close(pid_r)
        try:
            self.pid = int(data)
        except ValueError:
            os.close(self._id_w)
            raise RunError("The run's supervisor could not be started (fork failed).") from None

    def start(self, ws: Workspace, run_id: str) -> int:
        """Hand the run to the supervisor; returns its pid."""
        os.write(self._id_w, os.fsencode(ws.path) + b"\0" + run_id.encode())
        os.close(self._id_w)
        return self.pid

    def abandon(self) -> None:
        os.close(self._id_w)


def _supervisor_process(id_r: int, pid_w: int) -> None:  # pragma: no cover - forked child
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
        # script has run a moment or at its end (see agent.supervisor._History).
        import runyard.agent.artifacts
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
        log = os.open(os.path.join(ws.runs_dir, run_id, SUPERVISOR_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = supervise(ws, run_id)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def submit(ws: Workspace, spec: RunSpec) -> RunRecord:
    """Snapshot, record and start a run; returns it (Queued or later)."""
    request = prepare(ws, spec)
    run = record(ws.open_history(), request)
    launch(ws, run.id)
    return run


def pid_alive(pid: int | None) -> bool:
    """Whether a local process exists and is not a zombie (dead, not yet reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def is_lost(run: RunRecord, *, now: float | None = None) -> bool:
    """Whether an unfinished run's supervisor is gone."""
    if run.is_terminal:
        return False
    age = (now or time.time()) - run.heartbeat
    if run.host and run.host != os.uname().nodename:
        return age > LOST_AFTER_REMOTE
    if run.supervisor_pid is not None:
        return not pid_alive(run.supervisor_pid)  # its process is gone: lost now
    return age > LOST_AFTER  # no supervisor yet: give it time to start


def reap_lost(history: RunHistory, runs: Sequence[RunRecord] | None = None, *,
              ws: Workspace | None = None) -> list[str]:
    """Mark runs whose supervisor died as Failed; returns their ids.

    Called by everything that reads runs, so no run stays Running forever.
    With ``ws``, what the dead supervisor left mounted or on disk on this host
    (its working directory) is cleaned up too.
    """
    candidates = runs if runs is not None else history.find_lost_runs(LOST_AFTER)
    reaped = []
    for run in candidates:
        if run.is_terminal:
            continue
        folder = os.path.join(ws.runs_dir, run.id) if ws is not None else None
        end = RunEnd.read(folder) if folder is not None else None
        local = not run.host or run.host == os.uname().nodename
        pid = run.supervisor_pid or (_supervisor_pid(folder) if folder is not None else None)
        if end is not None and local and not pid_alive(pid):
            # It ended and wrote so, but died before recording it: record it now.
            try:
                record_end(history, run.id, end)
                reaped.append(run.id)
            except Exception:
                pass
            continue
        if not is_lost(run):
            continue
        who = f"pid {run.supervisor_pid} on {run.host}" if run.supervisor_pid else "never started"
        try:
            history.set_status(run.id, RunStatus.FAILED,
                               error=f"The run was lost: its supervisor ({who}) stopped without recording an end.")
            reaped.append(run.id)
        except Exception:
            continue
        if ws is not None and (not run.host or run.host == os.uname().nodename):
            from runyard.agent.supervisor import WORK_DIR, run_folder
            from runyard.agent.workdir import cleanup_stale

            script = _supervisor_identity(run_folder(ws, run.id)).get("script_pid")
            if isinstance(script, int):
                try:  # what the script started in its group dies with the run
                    os.killpg(script, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

            try:
                cleanup_stale(os.path.join(run_folder(ws, run.id), WORK_DIR))
            except Exception:  # best effort: the status is what matters
                pass
            _unmount_data(run_folder(ws, run.id))
    return reaped


def _unmount_data(folder: str) -> None:
    """Unmount the input and output mounts a dead supervisor left (their helpers end then)."""
    from runyard.agent.workdir import mounts_below
    from runyard.data.materialize import DATA_DIR, MOUNTS_FILE

    noted: list[str] = []
    try:
        with open(os.path.join(folder, MOUNTS_FILE), encoding="utf-8") as fh:
            noted = [line.rstrip("\n") for line in fh if line.strip()]
    except OSError:
        pass
    data = os.path.join(folder, DATA_DIR)
    if not noted and not os.path.isdir(data):
        return
    from runyard.data.fuse import is_mounted, unmount_stale

    below = mounts_below(os.path.realpath(data)) if os.path.isdir(data) else []
    for mp in [*below, *(m for m in noted if m not in below)]:
        try:
            if is_mounted(mp):
                unmount_stale(mp)
        except Exception:  # best effort, as above
            pass


def _record_of(ws: Workspace, run_id: str, history: RunHistory) -> RunRecord:
    """The run's record; for a run ``runyard run`` prepared whose supervisor has
    not recorded it yet, wait for it while the supervisor lives, or record it
    now (from its request and end files) when the supervisor is gone."""
    from runyard.errors import NotFoundError

    try:
        return history.get_run(run_id)
    except NotFoundError:
        folder = os.path.join(ws.runs_dir, run_id)
        if not os.path.exists(os.path.join(folder, REQUEST_FILE)):
            raise
    deadline = time.monotonic() + END_RECORD_WAIT
    while pid_alive(_supervisor_pid(folder)) and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            return history.get_run(run_id)
        except NotFoundError:
            continue
    try:
        return history.get_run(run_id)
    except NotFoundError:
        pass
    record(history, RunRequest.load(folder))
    end = RunEnd.read(folder)
    if end is not None:
        return record_end(history, run_id, end)
    return history.set_status(run_id, RunStatus.FAILED, error="The run was lost: its supervisor stopped before "
                              "recording it.")


END_RECORD_WAIT: Final = 10.0
"""How long a reader waits for a live supervisor to record an end it has written."""


def get_run(ws: Workspace, run_id: str, history: RunHistory | None = None) -> RunRecord:
    """A run as the history has it, consistent with what ``runyard run`` said.

    A run whose supervisor has written its end but not yet recorded it (a
    moment, normally) is waited for; one whose supervisor died is recorded
    from its end file, or marked Failed when there is none.
    """
    history = history or ws.open_history()
    run = _record_of(ws, run_id, history)
    folder = os.path.join(ws.runs_dir, run_id)
    if not run.is_terminal and os.path.exists(os.path.join(folder, END_FILE)):
        pid = run.supervisor_pid or _supervisor_pid(folder)  # the folder knows it before the history does
        deadline = time.monotonic() + END_RECORD_WAIT
        while not run.is_terminal and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
            run = history.get_run(run_id)
    if reap_lost(history, [run], ws=ws):
        run = history.get_run(run_id)
    return run


def request_cancel(ws: Workspace, run_id: str, pid: int | None = None) -> bool:
    """Ask a local run's supervisor to cancel, at once and without the history:
    the ``cancel`` file (which it polls), and SIGTERM to it when it is alive.
    Returns whether a live supervisor was signalled."""
    folder = os.path.join(ws.runs_dir, run_id)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "cancel"), "w", encoding="utf-8") as fh:
        fh.write(f"{time.time()}\n")
    pid = pid or _supervisor_pid(folder)
    if pid and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
            return True
        except ProcessLookupError:
            pass
    return False


def cancel(ws: Workspace, run_id: str) -> RunRecord | None:
    """Ask a run to stop: its script's process group gets SIGTERM, a grace
    period (``RUNYARD_CANCEL_GRACE``, default 10 s), then SIGKILL.

    Returns the run's record, or None when its supervisor was told before the
    history has the run (the first moments of ``runyard run``).
    """
    folder = os.path.join(ws.runs_dir, run_id)
    prepared = os.path.exists(os.path.join(folder, REQUEST_FILE)) and RunEnd.read(folder) is None
    if prepared and request_cancel(ws, run_id):  # a live local supervisor: it records the cancel itself
        return None
    history = ws.open_history()
    run = get_run(ws, run_id, history)
    if run.is_terminal:
        return run
    local = not run.host or run.host == os.uname().nodename
    if not local:
        request_cancel(ws, run_id)  # a shared workspace: the supervisor polls the file
        return history.get_run(run_id)
    if request_cancel(ws, run_id, run.supervisor_pid):
        return history.get_run(run_id)
    # No supervisor (yet, or any more): nothing runs, so it is canceled now;
    # a supervisor starting later finds the status and does not run the script.
    return history.set_status(run_id, RunStatus.CANCELED, error="canceled before it started")


def _supervisor_identity(folder: str) -> dict[str, Any]:
    """What the supervisor wrote about itself: pid, host, and the script's pid."""
    import json

    try:
        with open(os.path.join(folder, "supervisor.json"), encoding="utf-8") as fh:
            who = json.load(fh)
    except (OSError, ValueError):
        return {}
    return who if isinstance(who, dict) else {}


def _supervisor_pid(folder: str) -> int | None:
    pid = _supervisor_identity(folder).get("pid")
    return pid if isinstance(pid, int) else None


def wait(ws: Workspace, run_id: str, *, timeout: float | None = None, poll: float = 0.1) -> RunRecord:
    """Block until the run has ended (or ``timeout`` seconds passed)."""
    history = ws.open_history()
    deadline = None if timeout is None else time.monotonic() + timeout
    last_reap = 0.0
    while True:
        run = history.get_run(run_id)
        if run.is_terminal:
            return run
        now = time.monotonic()
        if now - last_reap > 5.0:
            last_reap = now
            if reap_lost(history, [run], ws=ws):
                return history.get_run(run_id)
        if deadline is not None and now > deadline:
            return run
        time.sleep(poll)


def exit_code_for(status: RunStatus, exit_code: int | None, sig: int | None) -> int:
    """What ``runyard run`` exits with: the script's code, 128+N for signal N, 130 if canceled."""
    if status is RunStatus.COMPLETED:
        return 0
    if status is RunStatus.CANCELED:
        return 130
    if sig:
        return 128 + sig
    return exit_code if exit_code else 1


def exit_code_of(run: RunRecord) -> int:
    """What ``runyard run`` exits with for an ended run."""
    return exit_code_for(run.status, run.exit_code, run.signal)


def read_end(ws: Workspace, run_id: str) -> RunEnd | None:
    """The run's end as its supervisor wrote it, or None while it goes."""
    return RunEnd.read(os.path.join(ws.runs_dir, run_id))
