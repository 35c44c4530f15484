"""The supervisor: one process per run, apart from the script.

It owns the run from Preparing to its end: makes the working directory from
the snapshot, starts the script in a process group of its own, writes its
output to the driver log as lines, mirrors ``./logs`` and syncs ``./outputs``
while the script runs and once more at every kind of exit, beats a heartbeat
into the run history, and records the honest end: Completed, Failed (with the
exit code or signal and the last lines of a traceback) or Canceled.

The run history (SQLAlchemy, the slowest import there is here) is opened in
a background thread while the working directory is made and the script
starts, so a short script does not wait for it. At the end, what the run
produced goes into the store and its end into ``end.json`` in the run's
folder (``runyard run`` exits on it) before the history records them (see
:class:`runyard.runs.RunEnd`).

Cancel arrives as SIGTERM or SIGINT to the supervisor, as a ``cancel`` file in
the run's folder, or as the run's status set to Canceled by someone else: the
script's whole process group gets SIGTERM, a grace period, then SIGKILL.

If the supervisor itself dies, the script dies with it (a parent-death
signal), its heartbeat stops, and whoever reads the run next marks it Failed
(:func:`runyard.runs.reap_lost`).
"""

from __future__ import annotations

import ctypes
import json
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

from runyard.agent.logstream import LineLog, tail_lines
from runyard.history import Artifact, RunStatus
from runyard.workspace import Workspace

if TYPE_CHECKING:
    from runyard.agent.artifacts import ArtifactRecord, OutputsSync
    from runyard.history.store import RunHistory
    from runyard.runs import RunRequest
    from runyard.store.base import ObjectStore

DRIVER_LOG: Final = "driver_log.txt"
"""The driver log's file name in the run's folder; its artifact is ``runyard_logs/driver_log.txt``."""
DRIVER_LOG_ARTIFACT: Final = "runyard_logs/driver_log.txt"
LOWER_CACHE: Final = "lower"
"""Shared, per-snapshot overlay lower layers, in the workspace's cache folder."""
WORK_DIR: Final = "work"
"""The working directory's folder (overlay layers or copy) in the run's folder."""
HISTORY_AFTER: Final = 0.3
"""Seconds into the script's run after which the run history is loaded (see _History)."""
HEARTBEAT_EVERY: Final = 2.0
LOGS_EVERY: Final = 0.1
OUTPUTS_EVERY: Final = 1.0
TICK: Final = 0.02
DEFAULT_GRACE: Final = 10.0
ENV_GRACE: Final = "RUNYARD_CANCEL_GRACE"
CANCEL_FILE: Final = "cancel"

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
        from runyard.runs import record

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


def supervise(ws: Workspace, run_id: str) -> int:
    """Run ``run_id`` to its end; return the code ``runyard run`` exits with.

    The exit code is the script's, 128 + N when signal N ended it, and 130
    when the run was canceled.
    """
    from runyard.agent.artifacts import LogsMirror, OutputsSync
    from runyard.agent.workdir import materialize, prune_lower_cache
    from runyard.data.inputs import PLACEHOLDER_RE
    from runyard.data.materialize import RunData
    from runyard.errors import RunyardError
    from runyard.runs import RunEnd, RunRequest, exit_code_for, record_end

    folder = run_folder(ws, run_id)
    request = RunRequest.load(folder)
    log_path = os.path.join(folder, DRIVER_LOG)
    host = os.uname().nodename
    _write_identity(folder, {"pid": os.getpid(), "host": host, "started": time.time()})
    if _PRCTL is not None:
        # Orphans of the script (a daemon it started) become our children, so
        # that nothing it started outlives the run.
        _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    cancel = _Cancel()

    def on_signal(signum: int, _frame: object) -> None:
        cancel.request(f"canceled ({signal.Signals(signum).name} to the supervisor)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    background = _History(ws, request, host)
    store = ws.open_store()
    log = LineLog(log_path)

    def fail_early(what: str, exc: BaseException) -> int:
        message = f"{what}: {exc}"
        log.feed(f"runyard: {message}\n".encode())
        log.close()
        try:
            background.get().set_status(run_id, RunStatus.FAILED, error=message)
        except Exception as inner:
            _append(log_path, f"runyard: the failure could not be recorded: {inner}\n")
        RunEnd(RunStatus.FAILED.value, None, None, message, None, time.time()).write(folder)
        return 1

    def canceled_early() -> int | None:
        """Before anything runs: a cancel that came first ends the run here."""
        if not os.path.exists(os.path.join(folder, CANCEL_FILE)) and not (
                background.done() and background.ended_before):
            return None
        log.close()
        reason = "canceled before it started"
        try:
            h = background.get()
            if not h.get_run(run_id).is_terminal:
                h.set_status(run_id, RunStatus.CANCELED, error=reason)
        except Exception as exc:
            _append(log_path, f"runyard: the cancel could not be recorded: {exc}\n")
        RunEnd(RunStatus.CANCELED.value, None, None, reason, None, time.time()).write(folder)
        return 130

    if (code := canceled_early()) is not None:
        return code
    try:
        workdir = materialize(store, request.snapshot_id, os.path.join(folder, WORK_DIR),
                              lower_cache=os.path.join(ws.cache_dir, LOWER_CACHE))
    except Exception as exc:  # any failure to prepare is the run's failure, recorded
        return fail_early("preparing the working directory failed", exc)

    wd = workdir.path
    outputs_dir = os.path.join(wd, "outputs")
    logs_dir = os.path.join(wd, "logs")
    os.makedirs(outputs_dir, exist_ok=True)
    os.makedirs(logs_dir, exist_ok=True)
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
    })
    arguments = list(request.arguments)
    data: RunData | None = None

    def say(text: str) -> None:
        """A line of runyard's own in the driver log (also once the script's output is closed)."""
        if log.closed:
            _append(log_path, f"runyard: {text}\n")
        else:
            log.feed(f"runyard: {text}\n".encode())

    try:
        data = RunData.load(ws, folder, wd, say)
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
        cancel_file = os.path.join(folder, CANCEL_FILE)
        data.stop = lambda: cancel.requested or os.path.exists(cancel_file)
        try:
            env.update(data.prepare())
        except Exception as exc:
            problems_early = data.unmount_all()
            data.remove_placed()
            workdir.cleanup()
            if data.stop():
                if not os.path.exists(cancel_file):  # canceled by a signal: say so where canceled_early looks
                    _append(cancel_file, "")
                if (code := canceled_early()) is not None:
                    return code
            detail = "; ".join([str(exc), *problems_early])
            return fail_early("preparing the run's data failed", RunyardError(detail))
        paths = data.paths()
        arguments = [PLACEHOLDER_RE.sub(lambda m: paths.get(m.group(0), m.group(0)), a) for a in arguments]
    command = [sys.executable, request.script, *arguments]
    outputs = OutputsSync(store, wd, prefix="outputs")
    logs = LogsMirror(logs_dir, os.path.join(folder, "logs"))
    if (code := canceled_early()) is not None:
        if data is not None:
            data.unmount_all()
        workdir.cleanup()
        return code
    started = time.time()
    try:
        proc = subprocess.Popen(
            command, cwd=wd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        if data is not None:
            data.unmount_all()
        workdir.cleanup()
        return fail_early(f"the script could not be started ({command[0]})", exc)

    _write_identity(folder, {"pid": os.getpid(), "host": host, "started": started, "script_pid": proc.pid})
    command_line = " ".join(command)
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
                                                       working_dir=wd, command_line=command_line))
                history = h
        return history

    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()

    def pump() -> None:
        while True:
            try:
                chunk = os.read(out_fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            log.feed(chunk)

    pumper = threading.Thread(target=pump, name="runyard-log-pump", daemon=True)
    pumper.start()

    # Woken the moment the script exits (a pidfd), else every TICK.
    try:
        exited = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        exited = None
    grace = _grace()
    script_start = time.monotonic()
    killed_at: float | None = None
    last_beat = last_out = last_logs = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            break
        now = time.monotonic()
        if os.path.exists(os.path.join(folder, CANCEL_FILE)):
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
        if cancel.requested:
            if killed_at is None:
                killed_at = now
                _signal_group(proc.pid, signal.SIGTERM)
            elif now - killed_at >= grace:
                _signal_group(proc.pid, signal.SIGKILL)
        if now - last_logs >= LOGS_EVERY:
            last_logs = now
            _quietly(logs.scan)
        if now - last_out >= OUTPUTS_EVERY:
            last_out = now
            if _store_outputs(outputs) and history is not None:
                recorder.submit("outputs", partial(history.upsert_artifacts, run_id, _as_artifacts(outputs.records)))
        if exited is None:
            time.sleep(TICK)
        else:
            select.select([exited], [], [], TICK)
    if exited is not None:
        os.close(exited)

    # The script has ended: its end is decided now (a cancel arriving while
    # its outputs are synced does not change it).
    if unrecordable is not None:
        final = RunStatus.FAILED
    else:
        final = RunStatus.CANCELED if cancel.requested else (RunStatus.COMPLETED if code == 0 else RunStatus.FAILED)
    if history is not None:
        recorder.submit("finalizing", partial(history.set_status, run_id, RunStatus.FINALIZING))
    recorder.stop()  # what is queued is written; record_end below waits for it
    # Whatever it left behind goes too: its process group, and any process it
    # started that escaped the group (reparented to us, the subreaper).
    _end_leftovers(proc.pid)
    pumper.join(timeout=1.0)
    if pumper.is_alive():  # something outside our reach holds the pipe: stop reading it
        _quietly(proc.stdout.close)
        pumper.join(timeout=1.0)
    log.close()

    # Everything the run produced goes into the store first (no history
    # needed), then the end file, which `runyard run` waits for, then the
    # history. Should this process die between the two, whoever reads the run
    # next records the end from the file (runyard.runs.reap_lost).
    ended = time.time()
    problems: list[str] = []
    artifacts: list[Artifact] = []
    def all_outputs() -> list[ArtifactRecord]:
        outputs.scan(final=True)
        return outputs.records

    steps: list[tuple[str, Callable[[], Iterable[ArtifactRecord]]]] = [
        ("outputs", all_outputs),
        ("logs", lambda: logs.finalize(store)),
    ]
    for what, step in steps:
        try:
            artifacts.extend(_as_artifacts(step()))
        except Exception as exc:  # recorded on the run; the other steps still run
            problems.append(f"syncing {what} failed: {exc}")
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
        artifacts.append(_store_file(store, log_path, DRIVER_LOG_ARTIFACT))
    except Exception as exc:
        problems.append(f"storing the driver log failed: {exc}")
    try:
        workdir.cleanup()
    except Exception as exc:  # what is left is cleaned up by the next reader (cleanup_stale)
        problems.append(f"removing the working directory failed: {exc}")
    _quietly(lambda: prune_lower_cache(os.path.join(ws.cache_dir, LOWER_CACHE)))
    if data is not None and data.inputs:
        from runyard.data.materialize import prune_cache

        _quietly(lambda: prune_cache(ws))

    exit_code = code if code >= 0 else None
    sig = -code if code < 0 else None
    error: str | None = None
    if unrecordable is not None:
        error = f"The run could not be recorded: {unrecordable}"
    elif final is RunStatus.FAILED and not data_failed:
        error = _traceback_tail(log_path) or (
            f"The script was killed by {signal.Signals(sig).name}" if sig
            else f"The script exited with code {exit_code}")
    elif final is RunStatus.CANCELED:
        error = cancel.reason or "canceled"
    if problems:
        error = "\n".join([*([error] if error else []), *problems])
    end = RunEnd(final.value, exit_code, sig, error, started, ended, command_line, wd, artifacts, data_records)
    end.write(folder)
    try:
        record_end(background.get(), run_id, end)
    except Exception:
        _append(log_path, f"runyard: could not record the end of the run:\n{traceback.format_exc()}")
    return exit_code_for(final, exit_code, sig)


def _beat(history: RunHistory, run_id: str, cancel: _Cancel) -> None:
    """A heartbeat; the status it returns shows a cancel made by setting it."""
    if history.heartbeat(run_id) is RunStatus.CANCELED:
        cancel.request("canceled")


def _store_outputs(outputs: OutputsSync) -> bool:
    """Store the outputs that are stable now; whether anything new was stored."""
    try:
        return bool(outputs.scan(final=False))
    except Exception:  # a sync hiccup is retried on the next tick
        return False


def _as_artifacts(records: Iterable[ArtifactRecord]) -> list[Artifact]:
    return [Artifact(r.name, r.size, r.digest, r.mtime_ns / 1e9 if r.mtime_ns else None) for r in records]


def _store_file(store: ObjectStore, path: str, name: str) -> Artifact:
    digest, size, _ = store.put_file(path)
    return Artifact(name, size, digest, os.path.getmtime(path))


def _end_leftovers(pgid: int, grace: float = 1.0) -> None:
    """SIGTERM the script's process group and our other children, wait up to
    ``grace`` seconds, then SIGKILL whatever is left; reap them all."""

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
            if fields[1].decode() == me and fields[0] not in (b"Z", b"X"):
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


def _write_identity(folder: str, who: dict[str, Any]) -> None:
    tmp = os.path.join(folder, ".supervisor.json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(who, fh)
    os.replace(tmp, os.path.join(folder, "supervisor.json"))


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
    """``python -m runyard.agent.supervisor WORKSPACE RUN_ID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m runyard.agent.supervisor WORKSPACE RUN_ID", file=sys.stderr)
        return 2
    return supervise(Workspace(args[0]), args[1])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
