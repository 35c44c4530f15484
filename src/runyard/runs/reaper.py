"""Runs nobody looks after any more: found cheaply, salvaged, recorded, cleaned up.

A run on this machine is looked after by whoever holds its marker
(``<workspace>/active/<run id>``, see :mod:`runyard.agent.folder`): the process
that prepared it, then its supervisor. When nobody holds it (the supervisor
was killed, crashed, or the machine rebooted), the run is *lost*, at once: no
timeout to wait for, no process id that may have been reused.

Finding lost runs is cheap: :func:`unattended_runs` lists ``active/`` (the
runs not finished, whatever the history holds) and tries one lock on each;
checking one run is one lock. Reaping a lost run happens once, by one reader
(a lock makes a second one wait, then find it done), in this order:

1. what the run started and left running is killed (found by the run id in
   its environment, or a working directory inside the run's folder);
2. what it left on disk is salvaged into the store (:mod:`runyard.agent.salvage`):
   the files of ``./outputs`` and ``./logs`` that the live sync had not taken
   yet, and the driver log, made again from the script's raw output; upload-mode
   declared outputs are uploaded (recorded as ``partial``, never registered);
3. its end is recorded: the one in ``end.json`` when the supervisor got that
   far, else Failed, saying what happened and what was salvaged;
4. its mounts are undone and its working directory removed; its marker goes.

Runs on another machine (a shared workspace) cannot be checked that way: they
are lost when their heartbeat is older than ``LOST_AFTER_REMOTE`` seconds, and
nothing of theirs is touched here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sized
from typing import TYPE_CHECKING, Final

from runyard.agent.folder import PLAN, RunFolder, active_runs
from runyard.errors import NotFoundError, RunError
from runyard.history import RunRecord, RunStatus

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.runs.model import RunEnd, RunRequest
    from runyard.workspace import Workspace

LOST_AFTER_REMOTE: Final = 120.0
"""Seconds without a heartbeat after which a run supervised on another host is lost."""
LOST_AFTER: Final = 15.0
"""The same for a run of this host that has neither a folder nor a marker here (nothing can run it)."""


def unattended_runs(ws: Workspace) -> list[str]:
    """The runs of this machine that nobody looks after (cheap: a lock try per unfinished run)."""
    host = os.uname().nodename
    out = []
    for run_id in active_runs(ws.path):
        try:
            folder = RunFolder.of(ws.path, run_id)
        except RunError:
            continue
        where = folder.marker_info().get("host")
        if where and where != host:
            continue
        if folder.attended() is False:
            out.append(run_id)
    return out


def reap(ws: Workspace, history: RunHistory, run_id: str) -> RunRecord | None:
    """Reap ``run_id`` if nobody looks after it; returns its record then, else None.

    Safe to call for any run at any time: a run that is looked after, or that
    ended properly, is left alone.
    """
    folder = RunFolder.of(ws.path, run_id)
    if not os.path.isdir(folder.path) and not os.path.exists(folder.marker):
        return None  # another host's run, or one whose folder was removed: nothing here to reap
    here = os.uname().nodename
    if folder.marker_info().get("host", here) != here:
        return None  # another machine's run (a shared workspace): its lock means nothing here
    with folder.reaping() as attended:
        if attended:
            return None
        record = _record(history, run_id)
        if record is not None and record.host and record.host != here:
            return None
        if attended is None:  # no marker: it ended properly, or it is older than markers
            if record is not None and record.is_terminal:
                return None
            if record is None and not os.path.exists(folder.request):
                return None
            if not os.path.exists(folder.end) and _old_style_alive(folder, record):
                return None
        _end_processes(folder)
        from runyard.agent.capture import wait_for_writers

        wait_for_writers(run_id)  # the script's output reaches output.raw to its last byte
        request = _request(folder)
        if request is not None and request.run_id != run_id:
            request = None  # not this run's request (the script can write its folder): not trusted
        if record is None:
            if request is None and not _anything_to_keep(folder):
                _remove(folder)  # it never got as far as a request: nothing to record or keep
                return None
            if request is None:
                record = _bare_record(history, run_id)
            else:
                from runyard.runs.ending import record as make_record

                record = make_record(history, request)
        from runyard.runs.ending import record_end
        from runyard.runs.model import RunEnd

        end = RunEnd.read(folder.path)
        if end is None:
            end = _salvage(ws, folder, request, record)
            end.write(folder.path)
        else:
            _recover_artifacts(ws, folder, end)
        if folder.owns(folder.channel):
            from runyard.agent.channel import ingest

            ingest(history, ws.open_store(), run_id, folder.channel)  # what the script reported, all of it
        done = record_end(history, run_id, end)
        _clean_up(ws, folder)
        folder.release()
        return done


def reap_lost(ws: Workspace, history: RunHistory, runs: list[RunRecord] | None = None, *,
              problems: list[str] | None = None) -> list[str]:
    """Reap the lost runs among ``runs`` (default: every unfinished run); returns their ids.

    A run that cannot be reaped now (its history locked, its store unreachable,
    a damaged folder) is left for the next read and said in ``problems``: it
    never stops the others, nor the read that called this.
    """
    reaped: list[str] = []

    def try_reap(run_id: str) -> None:
        try:
            if reap(ws, history, run_id) is not None:
                reaped.append(run_id)
        except Exception as exc:
            if problems is not None:
                problems.append(f"reaping run {run_id} failed: {exc}")

    tried: set[str] = set()
    for _ in range(3):  # reaping a run ends what it started: a run nested in it is lost now too
        ids = unattended_runs(ws) if runs is None else [r.id for r in runs if not r.is_terminal]
        new = [i for i in ids if i not in tried]
        tried.update(new)
        for run_id in new:
            try_reap(run_id)
        if runs is not None or not new:
            break
    candidates = history.find_lost_runs(LOST_AFTER) if runs is None else runs
    here = os.uname().nodename
    now = time.time()
    for run in candidates:
        if run.is_terminal or run.id in reaped:
            continue
        if run.host and run.host != here:
            if now - run.heartbeat <= LOST_AFTER_REMOTE:
                continue
            error = (f"The run was lost: its supervisor (pid {run.supervisor_pid} on {run.host}) sent no heartbeat "
                     f"for {LOST_AFTER_REMOTE:.0f} s.")
        else:
            folder = RunFolder.of(ws.path, run.id)
            if os.path.isdir(folder.path) or os.path.exists(folder.marker):
                if runs is None and run.id not in tried:
                    try_reap(run.id)  # a run from before markers, say
                continue
            if now - run.heartbeat <= LOST_AFTER:
                continue
            error = "The run was lost: its run folder is gone, so nothing runs it."
        try:
            history.set_status(run.id, RunStatus.FAILED, error=error)
            reaped.append(run.id)
        except Exception:  # somebody recorded its end meanwhile
            continue
    return reaped


# -- the steps ---------------------------------------------------------------------------


def _record(history: RunHistory, run_id: str) -> RunRecord | None:
    try:
        return history.get_run(run_id)
    except NotFoundError:
        return None


def _request(folder: RunFolder) -> RunRequest | None:
    from runyard.runs.model import RunRequest

    try:
        return RunRequest.load(folder.path)
    except (OSError, ValueError, TypeError):
        return None


def _anything_to_keep(folder: RunFolder) -> bool:
    return any(os.path.exists(p) for p in (folder.journal, folder.raw_output, folder.work, folder.data))


def _bare_record(history: RunHistory, run_id: str) -> RunRecord:
    """A record for a run whose request is gone or damaged but that left something to keep."""
    from runyard.history import parse_run_id

    parsed = parse_run_id(run_id)
    return history.create_run(parsed[0] if parsed else "default", run_id=run_id, status=RunStatus.QUEUED)


def _old_style_alive(folder: RunFolder, record: RunRecord | None) -> bool:
    """For a run without a marker (made by a runyard before markers): its supervisor's process
    lives, or it may still start (prepared less than ``LOST_AFTER`` seconds ago)."""
    from runyard.compute.local import pid_alive

    if record is not None and record.host and record.host != os.uname().nodename:
        return True  # another machine's: its heartbeat says (reap_lost)
    pid = (record.supervisor_pid if record is not None else None) or folder.read_identity().get("pid")
    if isinstance(pid, int):
        return pid_alive(pid)
    try:
        return time.time() - os.path.getmtime(folder.request) < LOST_AFTER
    except OSError:
        return False


def _end_processes(folder: RunFolder, wait: float = 2.0) -> list[int]:
    """SIGKILL what the run left running: processes with its id in their
    environment or their working directory in its working directory (not this
    process or its parents); wait for them to go. Returns their pids."""
    from runyard.agent.procs import processes_with

    spare = _ancestors()
    below = folder.work if folder.owns(folder.work) else None  # never a folder a planted link leads to
    found = [p for p in processes_with(f"RUNYARD_RUN_ID={folder.run_id}", cwd_below=below) if p not in spare]
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    from runyard.agent.procs import pid_alive

    deadline = time.monotonic() + wait
    while any(pid_alive(p) for p in found) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def _ancestors() -> set[int]:
    pids = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _salvage(ws: Workspace, folder: RunFolder, request: RunRequest | None, record: RunRecord) -> RunEnd:
    """Everything the run left, stored; the end that says what happened."""
    from runyard.agent.salvage import salvage
    from runyard.runs.model import RunEnd

    store = ws.open_store()
    taken = salvage(store, folder, request.snapshot_id if request is not None else record.snapshot_id)
    problems = list(taken.problems)
    data_records: list[dict[str, object]] = []
    if os.path.exists(folder.file(PLAN)):
        data_records, data_problems = _recover_data(ws, folder, taken.working_dir)
        problems.extend(data_problems)
    who = folder.read_identity()
    pid, host = who.get("pid"), who.get("host") or record.host or os.uname().nodename
    exit_code: int | None = None
    sig: int | None = None
    if isinstance(who.get("script_exit"), int):
        code = who["script_exit"]
        exit_code, sig = (code, None) if code >= 0 else (None, -code)
        how = (f"the script had ended (killed by {signal.Signals(sig).name})" if sig
               else f"the script had ended with exit code {exit_code}")
        when = "while it was storing the run's outputs"
    elif isinstance(who.get("script_pid"), int):
        how, when = "the script was stopped with it", "while the script ran"
    elif isinstance(pid, int):
        how, when = "the script never started", "while it prepared the run"
    else:
        how, when = "the script never started", "before it took the run over"
    files = taken.artifacts
    kept = (f"What the run had written was kept: {_count(files, 'file')} of ./outputs, ./logs and the driver log"
            f"{f' ({taken.recovered} taken from its working directory now)' if taken.recovered else ''}."
            if files else "It had written nothing to keep.")
    if isinstance(pid, int):
        error = f"The run was lost: its supervisor (pid {pid} on {host}) stopped {when}; {how}. {kept}"
    else:
        error = (f"The run was lost: the process that started it on {host} stopped before a supervisor took the "
                 f"run over, or its supervisor failed at once; {how}. {kept}")
    last_words = _crash(folder)
    if last_words:
        error += f"\nThe supervisor failed with: {last_words} (the whole traceback is in {folder.supervisor_log})"
    if problems:
        error = "\n".join([error, *problems])
    started = who.get("script_started")
    return RunEnd(RunStatus.FAILED.value, exit_code, sig, error,
                  float(started) if isinstance(started, int | float) else None, time.time(),
                  None, taken.working_dir, files, data_records)


def _crash(folder: RunFolder) -> str | None:
    """The last line of a traceback the supervisor left in its log (it crashed rather than being killed)."""
    from runyard.agent.logstream import tail_lines

    lines = tail_lines(folder.supervisor_log, 40)
    if not any(line.startswith("Traceback (most recent call last):") for line in lines):
        return None
    last = [line for line in lines if line.strip() and not line.startswith(" ")]
    return last[-1].strip() if last else None


def _recover_artifacts(ws: Workspace, folder: RunFolder, end: RunEnd) -> None:
    """An end file lists what was stored; the journal may hold what was stored after it (never, today)."""
    from runyard.agent.journal import read_journal

    have = {a.name for a in end.artifacts}
    end.artifacts.extend(a for a in read_journal(folder.journal) if a.name not in have)


def _recover_data(ws: Workspace, folder: RunFolder, workdir: str | None) -> tuple[list[dict[str, object]],
                                                                                list[str]]:
    """Store the declared outputs the run wrote (as partial: the run failed) and list its data for lineage."""
    from runyard.data.materialize import RunData

    unmount_data(folder)  # a writable mount's helper stores what it holds as it stops
    try:
        data = RunData.load(ws, folder.path, workdir or os.path.join(folder.work, "wd"), lambda _text: None)
        if data is None:
            return [], []
        return data.recover()
    except Exception as exc:
        return [], [f"storing the run's declared outputs failed: {exc}"]


def _clean_up(ws: Workspace, folder: RunFolder) -> None:
    """Undo the run's mounts and remove its working directory and raw output (best effort).

    Nothing is removed or unmounted through a link in the run's folder (the
    script could have planted one): such a part is left for a person to look at.
    """
    from runyard.agent.workdir import cleanup_stale

    unmount_data(folder)
    if folder.owns(folder.work):
        try:
            cleanup_stale(folder.work)
            if os.path.isdir(folder.work):
                os.rmdir(folder.work)
        except Exception:  # what is left, runyard gc removes
            pass
    _unmount_overlays(folder)
    if folder.owns(folder.raw_output):
        try:
            os.unlink(folder.raw_output)
        except OSError:
            pass
    inputs = os.path.join(folder.data, "inputs")
    if folder.owns(inputs) and os.path.isdir(inputs):
        import shutil

        shutil.rmtree(inputs, ignore_errors=True)


def _unmount_overlays(folder: RunFolder) -> None:
    """Unmount the run's own overlays wherever they are in its folder (a script may have moved its
    working directory's folder); nothing outside the run's real folder, nothing but overlays."""
    from runyard.agent.workdir import unmount_overlays_below

    if folder.owns(folder.path):
        try:
            unmount_overlays_below(os.path.realpath(folder.path))
        except Exception:  # best effort: runyard gc says what is left
            pass


def unmount_data(folder: RunFolder) -> list[str]:
    """Unmount the input and output mounts a dead supervisor left (their helpers end then);
    returns what was unmounted.

    Only runyard's own FUSE mounts of this run are touched (their source says
    ``runyard:<run id>.``), whatever ``mounts.txt`` (which the script can
    write) lists: another run's mount, or anybody else's, is left alone.
    """
    from runyard.agent.workdir import mounts_below
    from runyard.data.fuse import mount_source, unmount_stale

    noted: list[str] = []
    if folder.owns(folder.mounts):
        try:
            with open(folder.mounts, encoding="utf-8") as fh:
                noted = [line.rstrip("\n") for line in fh if line.strip()]
        except OSError:
            pass
    if not noted and not os.path.isdir(folder.data):
        return []
    below = mounts_below(os.path.realpath(folder.data)) if folder.owns(folder.data) else []
    done = []
    for mp in [*below, *(m for m in noted if m not in below)]:
        try:
            source = mount_source(mp)
            if source is None or not source.startswith(f"runyard:{folder.run_id}."):
                continue  # not mounted, or not this run's
            unmount_stale(mp)
            done.append(mp)
        except Exception:  # best effort: runyard gc tries again
            pass
    return done


def _remove(folder: RunFolder) -> None:
    import shutil

    unmount_data(folder)
    if folder.owns(folder.path):
        try:
            from runyard.agent.workdir import cleanup_stale

            if folder.owns(folder.work):
                cleanup_stale(folder.work)
            shutil.rmtree(folder.path)
        except Exception:  # runyard gc tries again
            pass
    folder.release()


def _count(items: Sized, word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


__all__ = ["LOST_AFTER", "LOST_AFTER_REMOTE", "reap", "reap_lost", "unattended_runs", "unmount_data"]
