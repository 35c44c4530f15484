"""The supervisor: one process per run, apart from the script.

It owns the run from Preparing to its end: makes the working directory from
the snapshot, starts the script in a process group of its own, turns its
output into the driver log's lines, mirrors ``./logs``, stores ``./outputs``
and ``./logs`` as files settle (and once more at every kind of exit), beats a
heartbeat into the run history, and records the honest end: Completed, Failed
(with the exit code or signal and the last lines of a traceback) or Canceled.

The run history (SQLAlchemy, the slowest import there is here) is opened in
a background thread while the working directory is made and the script
starts, so a short script does not wait for it. At the end, what the run
produced goes into the store and its end into ``end.json`` in the run's
folder (``runyard run`` exits on it) before the history records them (see
:class:`runyard.runs.RunEnd`).

Cancel arrives as SIGTERM or SIGINT to the supervisor, as a ``cancel`` file in
the run's folder, or as the run's status set to Canceled by someone else: the
script's whole process group gets SIGTERM, a grace period, then SIGKILL.

**Nothing is lost when the supervisor dies.** The script writes its output
to a file itself (:mod:`runyard.agent.capture`); every file stored while the
run goes is in the run's journal before the history has it
(:mod:`runyard.agent.journal`); the supervisor holds the run's marker lock for
as long as it lives (:mod:`runyard.agent.folder`). If it dies, the script dies
with it (a parent-death signal), the lock goes, and whoever reads the run next
salvages what is left on disk, records the end and cleans up
(:mod:`runyard.runs.reaper`).
"""

from __future__ import annotations

import ctypes
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from runyard.agent.channel import ENV as CHANNEL_ENV
from runyard.agent.folder import DRIVER_LOG_ARTIFACT, WORK, RunFolder, boot_id
from runyard.agent.logstream import tail_lines
from runyard.history import Artifact, RunStatus
from runyard.workspace import Workspace

if TYPE_CHECKING:
    from runyard.agent.artifacts import ArtifactRecord, OutputsSync
    from runyard.history.store import RunHistory
    from runyard.runs.model import RunRequest
    from runyard.store.base import ObjectStore

LOWER_CACHE: Final = "lower"
"""Shared, per-snapshot overlay lower layers, in the workspace's cache folder."""
WORK_DIR: Final = WORK
HISTORY_AFTER: Final = 0.3
"""Seconds into the script's run after which the run history is loaded (see _History)."""
HEARTBEAT_EVERY: Final = 2.0
LOGS_EVERY: Final = 0.1
OUTPUTS_EVERY: Final = 1.0
TICK: Final = 0.02
CHANNEL_EVERY: Final = 0.2
"""Seconds between takes of the script's channel into the history."""
DEFAULT_GRACE: Final = 10.0
ENV_GRACE: Final = "RUNYARD_CANCEL_GRACE"

# Resolved now, not in the child between fork and exec, where nothing may be
# imported or looked up.
try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_CHILD_SUBREAPER: Final = 36


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In the script's process: get SIGKILL when the supervisor dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, 9, 0, 0, 0)


def run_folder(ws: Workspace, run_id: str) -> str:
    return os.path.join(ws.runs_dir, run_id)


class _Cancel:
    """Why a run is being stopped, set from a signal handler or a poll."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def request(self, reason: str) -> None:
        if not self.requested:
            self.requested = True
            self.reason = reason


class _Recorder:
    """History writes off the supervise loop, in order, on one thread: a busy
    or locked database must not delay a cancel, the logs or the kill grace.

    A kind of write already waiting is not queued again (a heartbeat, say).
    Failures are left for the next write: the end is recorded by
    ``record_end``, which also waits for this queue (``stop``).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="runyard-recorder", daemon=True)
        self._thread.start()

    def submit(self, kind: str, write: Callable[[], Any]) -> None:
        with self._lock:
            if kind in self._pending:
                return
            self._pending.add(kind)
        self._queue.put((kind, write))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, write = item
            with self._lock:
                self._pending.discard(kind)
            _quietly(write)

    def stop(self, timeout: float = 60.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class _History:
    """The run history, opened (and the run recorded) in a background thread.

    Loading it is the slowest import there is here (SQLAlchemy, ~0.2 s of
    CPU). It starts once the script has run for ``HISTORY_AFTER`` seconds, or
    at the end: a short script then never shares the interpreter with that
    import, and its end is in the store and the end file before the history
    is even loaded (readers wait for the record meanwhile).
    """

    def __init__(self, ws: Workspace, request: RunRequest, host: str) -> None:
        self._ws, self._request, self._host = ws, request, host
        self.history: RunHistory | None = None
        self.error: BaseException | None = None
        self.ended_before = False
        """The run was ended (canceled) before its supervisor could record it."""
        self._thread = threading.Thread(target=self._open, name="runyard-history", daemon=True)
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self._thread.start()

    def _open(self) -> None:
        from runyard.runs.ending import record

        try:
            history = self._ws.open_history()
            if record(history, self._request).is_terminal:
                self.ended_before = True
            else:
                history.set_status(self._request.run_id, RunStatus.PREPARING, supervisor_pid=os.getpid(),
                                   host=self._host)
            self.history = history
        except BaseException as exc:  # reported by get()
            self.error = exc

    def get(self) -> RunHistory:
        """The history, waiting for it; raises when it cannot be used."""
        self.start()
        self._thread.join()
        if self.history is None:
            raise RuntimeError(f"the run history cannot be used: {self.error}") from self.error
        return self.history

    def done(self) -> bool:
        return self.started and not self._thread.is_alive()

    def ready(self) -> RunHistory | None:
        """The history if it is loaded by now (None while loading or not started); raises when it failed."""
        if not self.done():
            return None
        return self.get()


def _traceback_tail(log_path: str, n: int = 20) -> str | None:
    marker = "Traceback (most recent call last):"
    lines = tail_lines(log_path, 200)
    for i in range(len(lines) - 1, -1, -1):
        at = lines[i].find(marker)
        if at >= 0:  # a traceback may follow output that did not end its line
            return "\n".join([lines[i][at:], *lines[i + 1:]][-n:])
    return None


class _LiveSync:
    """``./outputs`` and ``./logs`` stored as files settle; each file stored is
    recorded at once in the run's journal and, off the supervise loop, in the
    history (see :mod:`runyard.agent.journal`)."""

    def __init__(self, store: ObjectStore, wd: str, folder: RunFolder, shipped: dict[str, str],
                 upper: str | None = None) -> None:
        from runyard.agent.artifacts import LogsMirror, OutputsSync
        from runyard.agent.journal import ArtifactJournal

        self.store = store
        self.wd = wd
        self.folder = folder
        self.upper = upper
        """The overlay's upper layer (what the run wrote), when the working directory is an overlay."""
        self.outputs = OutputsSync(store, wd, prefix="outputs")
        self.logs = OutputsSync(store, wd, prefix="logs")
        self.mirror = LogsMirror(os.path.join(wd, "logs"), folder.logs_mirror)
        for sync in (self.outputs, self.logs, self.mirror):
            sync.pin()  # where the files are is fixed now, before the script runs: a link planted later is seen
        self.journal = ArtifactJournal(folder.journal)
        self._shipped = shipped
        self._pending: list[Artifact] = []
        self._lock = threading.Lock()
        self.problems: list[str] = []

    def own(self, records: Iterable[ArtifactRecord]) -> list[Artifact]:
        """The records of files the run wrote (not those that came unchanged with the snapshot)."""
        from runyard.agent.salvage import own_artifacts

        return own_artifacts(list(records), self._shipped)

    def note(self, artifacts: list[Artifact], sync: OutputsSync | None = None) -> None:
        """Record stored files: in the journal now (with the stat key ``sync``
        stored each under), in the history with the next flush."""
        if not artifacts:
            return
        keys = {a.name: sync.key_of(a.name) for a in artifacts} if sync is not None else None
        try:
            self.journal.add(artifacts, keys)
        except OSError as exc:  # the history still gets them; the reaper re-reads the working directory
            self.problems.append(f"the artifact journal could not be written: {exc}")
        with self._lock:
            self._pending.extend(artifacts)

    def settle(self) -> bool:
        """Store what settled since the last call; whether anything new was stored."""
        stored = False
        for sync in (self.outputs, self.logs):
            try:
                own = self.own(sync.scan(final=False))
            except Exception:  # a sync hiccup is retried on the next tick
                continue
            self.note(own, sync)
            stored = stored or bool(own)
        return stored

    def flush(self, history: RunHistory, run_id: str) -> None:
        """Write the records noted so far to the history (on the recorder's thread)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            history.upsert_artifacts(run_id, batch)
        except BaseException:
            with self._lock:  # tried again with the next flush (and recorded with the end anyway)
                self._pending[:0] = batch
            raise

    def final(self) -> tuple[list[Artifact], list[str]]:
        """Everything, stable or not, once the script has ended; (all artifacts, problems)."""
        artifacts: list[Artifact] = []
        problems: list[str] = []
        try:
            self.note(self.own(self.outputs.scan(final=True)), self.outputs)
        except Exception as exc:  # recorded on the run; the logs are still stored
            problems.append(f"syncing outputs failed: {exc}")
        artifacts.extend(self.own(self.outputs.records))
        try:
            logs = self.own(self.mirror.finalize(self.store))
        except Exception as exc:
            problems.append(f"syncing logs failed: {exc}")
        else:
            self.note(logs)
            artifacts.extend(logs)
        if (self.upper is not None and self.folder.owns(self.upper) and os.path.isdir(self.upper)
                and not os.path.ismount(self.wd)):
            # Unmounted under the run (by hand, say): what the run wrote is in the upper layer.
            from runyard.agent.artifacts import OutputsSync

            problems.append("the working directory was unmounted before the run ended; its outputs and logs "
                            "were taken from the overlay's upper layer")
            found = {a.name: a for a in artifacts}
            for prefix in ("outputs", "logs"):
                sync = OutputsSync(self.store, self.upper, prefix=prefix)
                try:
                    sync.scan(final=True)
                except Exception as exc:
                    problems.append(f"syncing {prefix} from the upper layer failed: {exc}")
                    continue
                own = self.own(sync.records)
                self.note(own)
                found.update((a.name, a) for a in own)
            artifacts = [found[n] for n in sorted(found)]
        return artifacts, problems


def supervise(ws: Workspace, run_id: str, *, lock_fd: int | None = None) -> int:
    """Run ``run_id`` to its end; return the code ``runyard run`` exits with.

    The exit code is the script's, 128 + N when signal N ended it, and 130
    when the run was canceled. ``lock_fd`` is the run's marker as the process
    that prepared the run handed it over, held already; without it the
    supervisor takes the marker itself (see :mod:`runyard.agent.folder`).
    """
    from runyard.agent.capture import OutputCapture
    from runyard.agent.salvage import shipped_files
    from runyard.agent.scripts import command_for, command_line, path_with, runner_for
    from runyard.agent.workdir import materialize, prune_lower_cache
    from runyard.data.inputs import PLACEHOLDER_RE
    from runyard.data.materialize import RunData
    from runyard.errors import RunyardError
    from runyard.runs.ending import record_end
    from runyard.runs.model import RunEnd, RunRequest, exit_code_for

    folder = RunFolder.of(ws.path, run_id)
    if lock_fd is None:
        lock_fd = folder.hold()
    else:
        os.set_inheritable(lock_fd, False)  # the script must not keep the run "attended" after we die
    request = RunRequest.load(folder.path)
    host = os.uname().nodename
    identity: dict[str, Any] = {"pid": os.getpid(), "host": host, "boot_id": boot_id(), "started": time.time()}
    folder.write_identity(identity)
    if _PRCTL is not None:
        # Orphans of the script (a daemon it started) become our children, so
        # that nothing it started outlives the run.
        _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    cancel = _Cancel()

    def on_signal(signum: int, _frame: object) -> None:
        cancel.request(f"canceled ({signal.Signals(signum).name} to the supervisor)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    box = None
    if request.isolation:
        from runyard.agent.sandbox import Sandbox

        box = Sandbox.from_isolation(request.isolation)
    background = _History(ws, request, host)
    store = ws.open_store()
    capture = OutputCapture(folder.raw_output, folder.driver_log, run_id)
    capture.start()
    say = capture.note

    def done(code: int) -> int:
        """The run is over and recorded (or its end is in end.json): let go of it."""
        _quietly(lambda: os.unlink(folder.raw_output) if os.path.exists(folder.end) else None)
        folder.release()
        os.close(lock_fd)
        return code

    def fail_early(what: str, exc: BaseException) -> int:
        message = f"{what}: {exc}"
        say(message)
        capture.close()
        end = RunEnd(RunStatus.FAILED.value, None, None, message, None, time.time())
        end.write(folder.path)
        try:
            record_end(background.get(), run_id, end)
        except Exception as inner:
            _append(folder.supervisor_log, f"runyard: the failure could not be recorded: {inner}\n")
        return done(1)

    def canceled_early() -> int | None:
        """Before anything runs: a cancel that came first ends the run here."""
        if not os.path.exists(folder.cancel) and not (background.done() and background.ended_before):
            return None
        capture.close()
        reason = "canceled before it started"
        end = RunEnd(RunStatus.CANCELED.value, None, None, reason, None, time.time())
        end.write(folder.path)
        try:
            record_end(background.get(), run_id, end)
        except Exception as exc:
            _append(folder.supervisor_log, f"runyard: the cancel could not be recorded: {exc}\n")
        return done(130)

    if (code := canceled_early()) is not None:
        return code
    try:
        # A sandboxed script runs as another user: its working directory is a copy made its own.
        workdir = materialize(store, request.snapshot_id, folder.work, method="copy" if box else "auto",
                              lower_cache=os.path.join(ws.cache_dir, LOWER_CACHE))
    except Exception as exc:  # any failure to prepare is the run's failure, recorded
        return fail_early("preparing the working directory failed", exc)

    wd = workdir.path
    outputs_dir = os.path.join(wd, "outputs")
    logs_dir = os.path.join(wd, "logs")
    os.makedirs(outputs_dir, exist_ok=True)
    os.makedirs(logs_dir, exist_ok=True)
    python = sys.executable
    # Another run's inputs and outputs (runyard run started inside a run) are not this run's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_INPUT_", "RUNYARD_OUTPUT_"))}
    env.update({
        "RUNYARD_RUN_ID": run_id,
        "RUNYARD_EXPERIMENT": request.experiment,
        "RUNYARD_WORKSPACE": ws.path,
        "RUNYARD_SNAPSHOT_ID": request.snapshot_id,
        "RUNYARD_OUTPUTS_DIR": outputs_dir,
        "RUNYARD_LOGS_DIR": logs_dir,
        "PYTHONUNBUFFERED": "1",
        "PATH": path_with(python, os.environ.get("PATH")),
        CHANNEL_ENV: folder.channel,
    })
    os.makedirs(folder.channel, exist_ok=True)
    arguments = list(request.arguments)
    data: RunData | None = None

    try:
        data = RunData.load(ws, folder.path, wd, say)
    except Exception as exc:
        workdir.cleanup()
        return fail_early("reading the run's data plan failed", exc)
    if data is not None:
        # Inputs can take a while (downloads, mounts): the run shows Preparing
        # meanwhile, and a failure here is the run's, recorded before any script runs.
        try:
            background.get().set_status(run_id, RunStatus.PREPARING)
        except Exception as exc:
            workdir.cleanup()
            return fail_early("the run could not be recorded", exc)
        data.stop = lambda: cancel.requested or os.path.exists(folder.cancel)
        try:
            env.update(data.prepare())
        except Exception as exc:
            problems_early = data.unmount_all()
            data.remove_placed()
            workdir.cleanup()
            if data.stop():
                if not os.path.exists(folder.cancel):  # canceled by a signal: say so where canceled_early looks
                    _append(folder.cancel, "")
                if (code := canceled_early()) is not None:
                    return code
            detail = "; ".join([str(exc), *problems_early])
            return fail_early("preparing the run's data failed", RunyardError(detail))
        paths = data.paths()
        arguments = [PLACEHOLDER_RE.sub(lambda m: paths.get(m.group(0), m.group(0)), a) for a in arguments]
    if box is not None:
        from runyard.agent.sandbox import python_for_sandbox

        python, needed, pythonpath = python_for_sandbox()
        box.binds_ro = needed
        env.update({"PYTHONPATH": pythonpath, "HOME": "/tmp", "TMPDIR": "/tmp",
                    "PATH": path_with(python, os.environ.get("PATH"))})
        # RUNYARD_WORKSPACE stays (for what the script prints): the workspace is not in the sandbox,
        # and the script reports through its channel.
    try:
        if request.command:
            whole = request.command
            if data is not None:  # ${{inputs.NAME}} / ${{outputs.NAME}} in a command too
                sub = data.paths()
                fill = partial(PLACEHOLDER_RE.sub, lambda m: sub.get(m.group(0), m.group(0)))
                whole = fill(whole) if isinstance(whole, str) else [fill(a) for a in whole]
            command = command_line(whole)
        else:
            command = command_for(runner_for(os.path.join(wd, request.script), request.script), request.script,
                                  arguments, python)
    except RunyardError as exc:
        if data is not None:
            data.unmount_all()
        workdir.cleanup()
        return fail_early("the script cannot be run", exc)
    if box is not None:
        try:
            _sandbox_paths(box, wd, folder, data)
        except Exception as exc:
            if data is not None:
                data.unmount_all()
            workdir.cleanup()
            return fail_early("the sandbox cannot be made", exc)
        from runyard.agent.sandbox import bwrap_argv, limits

        say(f"sandbox: {box.describe_limits()}")
        command = bwrap_argv(box, command, wd)
        preexec = limits(box, then=_die_with_parent)
    else:
        preexec = _die_with_parent
    upper = os.path.join(folder.work, "layers", "upper") if workdir.method == "overlay" else None
    live = _LiveSync(store, wd, folder, shipped_files(store, request.snapshot_id), upper)
    if (code := canceled_early()) is not None:
        if data is not None:
            data.unmount_all()
        workdir.cleanup()
        return code
    started = time.time()
    try:
        out = capture.script_output()
        try:
            proc = subprocess.Popen(
                command, cwd=wd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, preexec_fn=preexec,
            )
        finally:
            os.close(out)  # the script's end of the pipe is the script's alone
    except OSError as exc:
        if data is not None:
            data.unmount_all()
        workdir.cleanup()
        return fail_early(f"the script could not be started ({command[0]})", exc)

    identity.update(script_pid=proc.pid, script_started=started)
    folder.write_identity(identity)
    import shlex

    command_line_text = shlex.join(command)
    history: RunHistory | None = None
    unrecordable: Exception | None = None

    recorder = _Recorder()

    def ready_history() -> RunHistory | None:
        """The history once loaded (the run marked Running then, off this loop); None before."""
        nonlocal history
        if history is None:
            h = background.ready()
            if h is not None:
                if background.ended_before:
                    cancel.request("canceled before it started")
                else:
                    recorder.submit("running", partial(h.set_status, run_id, RunStatus.RUNNING, started=started,
                                                       working_dir=wd, command_line=command_line_text))
                history = h
        return history

    # Woken the moment the script exits (a pidfd), else every TICK.
    try:
        exited = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        exited = None
    grace = _grace()
    timed_out = False
    script_start = time.monotonic()
    killed_at: float | None = None
    last_beat = last_out = last_logs = last_channel = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            break
        now = time.monotonic()
        if os.path.exists(folder.cancel):
            cancel.request("canceled (runyard cancel)")
        if not background.started and now - script_start >= HISTORY_AFTER:
            background.start()
        if history is None and unrecordable is None:
            try:
                ready_history()
            except Exception as exc:  # a run that cannot be recorded must not go on unrecorded
                unrecordable = exc
                cancel.request(f"the run could not be recorded: {exc}")
        if history is not None and now - last_beat >= HEARTBEAT_EVERY:
            last_beat = now
            recorder.submit("heartbeat", partial(_beat, history, run_id, cancel))
        if box is not None and box.time and not timed_out and now - script_start > box.time:
            timed_out = True
            cancel.request(f"the run went on longer than its time limit ({box.time:g} s of wall time)")
        if cancel.requested:
            if killed_at is None:
                killed_at = now
                if box is not None:  # not bubblewrap itself: it would end the sandbox at once, no grace
                    _signal_members(proc.pid, signal.SIGTERM, but=proc.pid)
                else:
                    _signal_group(proc.pid, signal.SIGTERM)
            elif now - killed_at >= grace:
                _signal_group(proc.pid, signal.SIGKILL)
        if now - last_logs >= LOGS_EVERY:
            last_logs = now
            _quietly(live.mirror.scan)
        if now - last_out >= OUTPUTS_EVERY:
            last_out = now
            live.settle()
        if history is not None:
            recorder.submit("artifacts", partial(live.flush, history, run_id))
            if now - last_channel >= CHANNEL_EVERY:
                last_channel = now
                recorder.submit("channel", partial(_take_in, history, store, run_id, folder, False))
        if exited is None:
            time.sleep(TICK)
        else:
            select.select([exited], [], [], TICK)
    if exited is not None:
        os.close(exited)
    identity.update(script_exit=code, script_ended=time.time())
    _quietly(lambda: folder.write_identity(identity))

    # The script has ended: its end is decided now (a cancel arriving while
    # its outputs are synced does not change it).
    if unrecordable is not None or timed_out:
        final = RunStatus.FAILED
    else:
        final = RunStatus.CANCELED if cancel.requested else (RunStatus.COMPLETED if code == 0 else RunStatus.FAILED)
    if history is not None:
        recorder.submit("finalizing", partial(history.set_status, run_id, RunStatus.FINALIZING))
    recorder.stop()  # what is queued is written; record_end below waits for it
    # Whatever it left behind goes too: its process group, and any process it
    # started that escaped the group (reparented to us, the subreaper).
    _end_leftovers(proc.pid, spare={capture.writer.pid} if capture.writer is not None else set())
    capture.close()

    # Everything the run produced goes into the store and the journal first
    # (no history needed), then the end file, which `runyard run` waits for,
    # then the history. Should this process die anywhere in between, whoever
    # reads the run next salvages what is left and records the end
    # (runyard.reaper).
    ended = time.time()
    artifacts, problems = live.final()
    data_records: list[dict[str, Any]] = []
    data_failed = False
    if data is not None:  # declared outputs are stored whatever the end; registered only if it completed
        try:
            data_records, data_problems = data.finish()
        except Exception as exc:
            data_problems = [f"storing the run's declared outputs failed: {exc}"]
        problems.extend(data_problems)
        if data_problems and final is RunStatus.COMPLETED:
            final = RunStatus.FAILED  # its declared data did not all land: not a success to build on
            data_failed = True
    try:
        driver_log = _store_file(store, folder.driver_log, DRIVER_LOG_ARTIFACT)
        live.note([driver_log])
        artifacts.append(driver_log)
    except Exception as exc:
        problems.append(f"storing the driver log failed: {exc}")
    problems.extend(live.problems)
    live.journal.close()

    if box is not None and 128 < code <= 128 + 64:
        code = -(code - 128)  # bubblewrap exits 128+N when signal N killed the script, as a shell does
    exit_code = code if code >= 0 else None
    sig = -code if code < 0 else None
    error: str | None = None
    if unrecordable is not None:
        error = f"The run could not be recorded: {unrecordable}"
    elif timed_out:
        error = cancel.reason
    elif final is RunStatus.FAILED and not data_failed:
        error = _traceback_tail(folder.driver_log) or (
            f"The script was killed by {signal.Signals(sig).name}" if sig
            else f"The script exited with code {exit_code}")
    elif final is RunStatus.CANCELED:
        error = cancel.reason or "canceled"
    if problems:
        error = "\n".join([*([error] if error else []), *problems])
    end = RunEnd(final.value, exit_code, sig, error, started, ended, command_line_text, wd, artifacts, data_records)
    end.write(folder.path)
    try:
        if folder.owns(folder.work):
            workdir.cleanup()
        else:  # the script moved its working directory's folder, or put a link there: follow nothing
            from runyard.agent.workdir import unmount_overlays_below

            unmount_overlays_below(os.path.realpath(folder.path))
            _append(folder.supervisor_log, f"runyard: {folder.work} was moved or replaced by a link during the "
                    "run; its overlay was unmounted where it was, and nothing was removed through the link\n")
    except Exception as exc:  # what is left is removed by the next reader or runyard gc
        _append(folder.supervisor_log, f"runyard: removing the working directory failed: {exc}\n")
    _quietly(lambda: prune_lower_cache(os.path.join(ws.cache_dir, LOWER_CACHE)))
    if data is not None and data.inputs:
        from runyard.data.materialize import prune_cache

        _quietly(lambda: prune_cache(ws))
    try:
        h = background.get()
        _take_in(h, store, run_id, folder, True)  # what the script reported, all of it, before the end is seen
        record_end(h, run_id, end)
    except Exception:
        _append(folder.supervisor_log, f"runyard: could not record the end of the run:\n{traceback.format_exc()}")
    return done(exit_code_for(final, exit_code, sig))


def _sandbox_paths(box: Any, wd: str, folder: RunFolder, data: Any) -> None:
    """What the sandboxed script may write is made its user's; what it reads and writes beside its
    working directory is bound in; every folder must be reachable by that user."""
    from runyard.agent.sandbox import hand_over, reachable
    from runyard.errors import RunError

    readable = [folder.channel]
    writable = [wd, folder.channel]
    if data is not None:
        for item in data.outputs:
            if item["mode"] != "mount":
                writable.append(item["local_path"])
                box.binds_rw.append(item["local_path"])
        for item in data.inputs:
            if item["mode"] == "mount":
                raise RunError(f"input '{item['name']}' is mounted (FUSE), which the sandbox's user cannot read; "
                               "give it as a download (@download, .as_download()) on a sandbox target")
            box.binds_ro.append(item["local_path"])
            readable.append(item["local_path"])
    hand_over(writable, box.uid, box.gid)
    box.binds_rw.append(folder.channel)
    for path in [*box.binds_ro, *box.binds_rw, wd, *readable]:
        if not reachable(path):
            raise RunError(f"the sandbox's user (uid {box.uid}) cannot reach {path}: a folder above it is closed "
                           "to other users. Open it (chmod o+x on that folder), move the workspace, or name "
                           "another user for the target (runyard compute add NAME --kind sandbox --user USER "
                           "--replace)")


def _take_in(history: RunHistory, store: ObjectStore, run_id: str, folder: RunFolder, whole: bool) -> None:
    """Take the script's channel into the history (a batch, or ``whole``); problems to supervisor.log."""
    from runyard.agent.channel import ingest

    done = ingest(history, store, run_id, folder.channel, until_end=whole)
    for problem in done.problems[:20]:
        _append(folder.supervisor_log, f"runyard: {problem}\n")


def _beat(history: RunHistory, run_id: str, cancel: _Cancel) -> None:
    """A heartbeat; the status it returns shows a cancel made by setting it."""
    if history.heartbeat(run_id) is RunStatus.CANCELED:
        cancel.request("canceled")


def _store_file(store: ObjectStore, path: str, name: str) -> Artifact:
    digest, size, _ = store.put_file(path)
    return Artifact(name, size, digest, os.path.getmtime(path))


def _end_leftovers(pgid: int, grace: float = 1.0, spare: set[int] | frozenset[int] = frozenset()) -> None:
    """SIGTERM the script's process group and our other children (but ``spare``,
    the output's writer), wait up to ``grace`` seconds, then SIGKILL whatever is
    left; reap them all (the writer is waited for by its owner)."""

    def children() -> list[int]:
        me = str(os.getpid())
        out: list[int] = []
        try:
            names = os.listdir("/proc")
        except OSError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1].decode() == me and fields[0] not in (b"Z", b"X") and int(name) not in spare:
                out.append(int(name))
        return out

    def signal_all(sig: int) -> bool:
        alive = False
        try:
            os.killpg(pgid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
        for pid in children():
            try:
                os.kill(pid, sig)
                alive = True
            except ProcessLookupError:
                pass
        return alive

    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    if signal_all(signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap()
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                if not children():
                    break
            time.sleep(0.02)
        signal_all(signal.SIGKILL)
    reap()


def _signal_members(pgid: int, sig: int, *, but: int) -> None:
    """Signal every process of group ``pgid`` but ``but`` (in every PID namespace below ours)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == but:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == pgid:
                os.kill(int(name), sig)
        except (OSError, IndexError, ValueError):
            continue


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _grace() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_GRACE, DEFAULT_GRACE)))
    except ValueError:
        return DEFAULT_GRACE


def _quietly(step: Callable[[], Any]) -> None:
    try:
        step()
    except Exception:  # a sync hiccup is retried on the next tick
        pass


def _append(path: str, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m runyard.agent.supervisor WORKSPACE RUN_ID [--lock-fd N]``.

    ``--lock-fd`` is the run's marker, held by the process that started this
    one and passed down (see :mod:`runyard.agent.folder`).
    """
    args = sys.argv[1:] if argv is None else argv
    lock_fd: int | None = None
    if len(args) == 4 and args[2] == "--lock-fd" and args[3].isdigit():
        lock_fd = int(args[3])
        args = args[:2]
    if len(args) != 2:
        print("usage: python -m runyard.agent.supervisor WORKSPACE RUN_ID [--lock-fd N]", file=sys.stderr)
        return 2
    return supervise(Workspace(args[0]), args[1], lock_fd=lock_fd)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
