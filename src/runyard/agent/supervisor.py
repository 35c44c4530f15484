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
import select
import signal
import subprocess
import sys
import time
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from runyard.agent.channel import ENV as CHANNEL_ENV
from runyard.agent.folder import DRIVER_LOG_ARTIFACT, WORK, RunFolder, boot_id
from runyard.agent.keeping import HistoryLoader, LiveSync, Recorder, append_text, quietly, traceback_tail
from runyard.agent.procs import end_leftovers, signal_group, signal_members
from runyard.history import Artifact, RunStatus
from runyard.workspace import Workspace

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.store.base import ObjectStore

LOWER_CACHE: Final = "lower"
"""Shared, per-snapshot overlay lower layers, in the workspace's cache folder."""
WORK_DIR: Final = WORK
HISTORY_AFTER: Final = 0.3
"""Seconds into the script's run after which the run history is loaded (see HistoryLoader)."""
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
    background = HistoryLoader(ws, request, host)
    store = ws.open_store()
    capture = OutputCapture(folder.raw_output, folder.driver_log, run_id)
    capture.start()
    say = capture.note

    def done(code: int) -> int:
        """The run is over and recorded (or its end is in end.json): let go of it."""
        quietly(lambda: os.unlink(folder.raw_output) if os.path.exists(folder.end) else None)
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
            append_text(folder.supervisor_log, f"runyard: the failure could not be recorded: {inner}\n")
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
            append_text(folder.supervisor_log, f"runyard: the cancel could not be recorded: {exc}\n")
        return done(130)

    def stopping() -> bool:
        return cancel.requested or os.path.exists(folder.cancel)

    def canceled_while_preparing() -> int | None:
        """A cancel that stopped the preparing (data, environment) ends the run Canceled."""
        if not stopping():
            return None
        if not os.path.exists(folder.cancel):  # canceled by a signal: say so where canceled_early looks
            append_text(folder.cancel, "")
        return canceled_early()

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
        data.stop = stopping
        try:
            env.update(data.prepare())
        except Exception as exc:
            problems_early = data.unmount_all()
            data.remove_placed()
            workdir.cleanup()
            if (code := canceled_while_preparing()) is not None:
                return code
            detail = "; ".join([str(exc), *problems_early])
            return fail_early("preparing the run's data failed", RunyardError(detail))
        paths = data.paths()
        arguments = [PLACEHOLDER_RE.sub(lambda m: paths.get(m.group(0), m.group(0)), a) for a in arguments]
    env_record: dict[str, Any] | None = None
    built_now = [False]  # the cache grows only when a run builds: only then is it pruned
    if request.environment:
        from runyard.agent.runenv import build_for_run, client_path, sandbox_binds

        preparing = [data is not None]  # (with data, Preparing is recorded already)

        def building(line: str) -> None:
            """A build's line for the driver log; the run shows Preparing while it builds (a cached
            environment says nothing, and costs no history write)."""
            built_now[0] = True
            if not preparing[0]:
                preparing[0] = True
                background.get().set_status(run_id, RunStatus.PREPARING)
            say(line)

        try:
            built, _held, env_record = build_for_run(  # held in use until this process ends
                ws, request.environment, box, building, stop=stopping)
            client, package = client_path(ws)
        except Exception as exc:
            if data is not None:
                data.unmount_all()
            workdir.cleanup()
            if (code := canceled_while_preparing()) is not None:
                return code
            return fail_early("the run's environment could not be made", exc)
        python = built.python
        variables = env_record["spec"]["variables"]
        env.update(variables)
        # runyard's client first; the environment's own PYTHONPATH and PATH (its variables) are kept after it
        own_pythonpath = variables.get("PYTHONPATH")
        env.update({"PYTHONPATH": os.pathsep.join([client, *([own_pythonpath] if own_pythonpath else [])]),
                    "PATH": path_with(python, variables.get("PATH", os.environ.get("PATH"))),
                    "VIRTUAL_ENV": built.path})
        env.pop("PYTHONHOME", None)
        if box is not None:
            box.binds_ro = sandbox_binds(built, client, package)
            env.update({"HOME": "/tmp", "TMPDIR": "/tmp"})
    elif box is not None:
        from runyard.agent.sandbox import python_for_sandbox

        python, needed, pythonpath = python_for_sandbox(ws.cache_dir)
        box.binds_ro = needed
        if python != sys.executable:  # recorded as what it is: the system's Python, runyard's packages
            from runyard.agent.runenv import sandbox_record

            try:
                env_record = sandbox_record(ws, python)
            except Exception as exc:
                say(f"what the sandbox's Python is could not be told: {exc}")
        env.update({"HOME": "/tmp", "TMPDIR": "/tmp", "PATH": path_with(python, os.environ.get("PATH"))})
        env.pop("PYTHONPATH", None)  # (the caller's folders are not in the sandbox)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
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
        from runyard.agent.sandbox import script_environ

        explicit = ((env_record or {}).get("spec") or {}).get("variables") or {}
        env = script_environ(env, explicit, network=box.network)
        preexec = limits(box, then=_die_with_parent)
    else:
        preexec = _die_with_parent
    upper = os.path.join(folder.work, "layers", "upper") if workdir.method == "overlay" else None
    live = LiveSync(store, wd, folder, shipped_files(store, request.snapshot_id), upper)
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

    recorder = Recorder()

    def ready_history() -> RunHistory | None:
        """The history once loaded (the run marked Running then, off this loop); None before."""
        nonlocal history
        if history is None:
            h = background.ready()
            if h is not None:
                if background.ended_before:
                    cancel.request("canceled before it started")
                else:
                    recorder.submit("running", partial(_record_running, ws, h, run_id, started, wd, command_line_text,
                                                       env_record))
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
                    signal_members(proc.pid, signal.SIGTERM, but=proc.pid)
                else:
                    signal_group(proc.pid, signal.SIGTERM)
            elif now - killed_at >= grace:
                signal_group(proc.pid, signal.SIGKILL)
        if now - last_logs >= LOGS_EVERY:
            last_logs = now
            quietly(live.mirror.scan)
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
    quietly(lambda: folder.write_identity(identity))

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
    end_leftovers(proc.pid, spare={capture.writer.pid} if capture.writer is not None else set())
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
        error = traceback_tail(folder.driver_log) or (
            f"The script was killed by {signal.Signals(sig).name}" if sig
            else f"The script exited with code {exit_code}")
    elif final is RunStatus.CANCELED:
        error = cancel.reason or "canceled"
    if problems:
        error = "\n".join([*([error] if error else []), *problems])
    end = RunEnd(final.value, exit_code, sig, error, started, ended, command_line_text, wd, artifacts, data_records,
                 env_record or _own_record(ws))
    end.write(folder.path)
    try:
        if folder.owns(folder.work):
            workdir.cleanup()
        else:  # the script moved its working directory's folder, or put a link there: follow nothing
            from runyard.agent.workdir import unmount_overlays_below

            unmount_overlays_below(os.path.realpath(folder.path))
            append_text(folder.supervisor_log, f"runyard: {folder.work} was moved or replaced by a link during the "
                    "run; its overlay was unmounted where it was, and nothing was removed through the link\n")
    except Exception as exc:  # what is left is removed by the next reader or runyard gc
        append_text(folder.supervisor_log, f"runyard: removing the working directory failed: {exc}\n")
    quietly(lambda: prune_lower_cache(os.path.join(ws.cache_dir, LOWER_CACHE)))
    if data is not None and data.inputs:
        from runyard.data.materialize import prune_cache

        quietly(lambda: prune_cache(ws))
    if env_record is not None and not env_record.get("user_managed") and built_now[0]:
        from runyard.agent.runenv import prune_envs

        quietly(lambda: prune_envs(ws))  # (this run's own is still held: never removed under it)
    try:
        h = background.get()
        _take_in(h, store, run_id, folder, True)  # what the script reported, all of it, before the end is seen
        record_end(h, run_id, end)
    except Exception:
        append_text(folder.supervisor_log, f"runyard: could not record the end of the run:\n{traceback.format_exc()}")
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
            if item["mode"] != "mount":  # (a mount lets every user in: see runyard.data.fuse)
                writable.append(item["local_path"])
            box.binds_rw.append(item["local_path"])
        for item in data.inputs:
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


def _own_record(ws: Workspace) -> dict[str, Any] | None:
    """What runyard's own Python has (None when that cannot be told: the run goes on)."""
    from runyard.agent.runenv import own_record

    try:
        return own_record(ws)
    except Exception:
        return None


def _record_running(ws: Workspace, history: RunHistory, run_id: str, started: float, wd: str, command_line: str,
                    environment: dict[str, Any] | None) -> None:
    """The run is Running, with what it runs with (its environment, or what runyard's Python has)."""
    environment = environment or _own_record(ws)
    if environment is None:
        history.set_status(run_id, RunStatus.RUNNING, started=started, working_dir=wd, command_line=command_line)
        return
    history.set_status(run_id, RunStatus.RUNNING, started=started, working_dir=wd, command_line=command_line,
                       environment=environment, python_version=environment.get("python_version"))


def _take_in(history: RunHistory, store: ObjectStore, run_id: str, folder: RunFolder, whole: bool) -> None:
    """Take the script's channel into the history (a batch, or ``whole``); problems to supervisor.log."""
    from runyard.agent.channel import ingest

    done = ingest(history, store, run_id, folder.channel, until_end=whole)
    for problem in done.problems[:20]:
        append_text(folder.supervisor_log, f"runyard: {problem}\n")


def _beat(history: RunHistory, run_id: str, cancel: _Cancel) -> None:
    """A heartbeat; the status it returns shows a cancel made by setting it."""
    if history.heartbeat(run_id) is RunStatus.CANCELED:
        cancel.request("canceled")


def _store_file(store: ObjectStore, path: str, name: str) -> Artifact:
    digest, size, _ = store.put_file(path)
    return Artifact(name, size, digest, os.path.getmtime(path))


def _grace() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_GRACE, DEFAULT_GRACE)))
    except ValueError:
        return DEFAULT_GRACE


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
