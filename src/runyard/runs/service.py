"""Run orchestration: submit a run, start its supervisor, cancel, wait, and
reap runs whose supervisor died.

``prepare`` checks what to run and takes the snapshot of its source
directory (a snapshot over its limits leaves no run behind), claims the run
(its marker, see :mod:`runyard.agent.folder`) and writes its request into its
folder; ``record`` makes the run's record (Queued); ``launch`` starts its
supervisor on the compute target (only ``local`` for now,
:mod:`runyard.compute.local`), which takes the run over and then takes it from
Preparing to its end. ``submit`` does all three. ``runyard run`` leaves the
recording to the supervisor, which forked early and has the run history loaded
by then. A run nobody looks after any more is reaped by the next reader
(:mod:`runyard.runs.reaper`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from runyard.errors import RunError
from runyard.history import RunRecord, RunStatus
from runyard.runs.ending import record
from runyard.runs.model import (
    REQUEST_FILE,
    RunEnd,
    RunRequest,
    RunSpec,
    exit_code_for,
)

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.workspace import Workspace


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


def prepare(ws: Workspace, spec: RunSpec) -> RunRequest:
    """Check the spec and take the snapshot; nothing is recorded yet.

    A snapshot that fails (over a limit, unreadable files) raises and leaves
    no run behind, as a failed ``snapshot create`` stores nothing.
    """
    from runyard.compute.base import get_target, kind
    from runyard.history import check_experiment_name, new_run_id
    from runyard.history.lite import check_schema

    check_schema(ws.history_location)  # a history the supervisor could not record the run in: said now
    target = get_target(ws, spec.compute_target)
    target_kind = kind(target.kind)
    problem = target_kind.preflight(target, ws)  # before anything is stored: a target that cannot work here says so
    if problem is not None:
        from runyard.errors import ComputeError

        raise ComputeError(f"Runs cannot run on compute target '{target.name}' here: {problem}")
    isolation = target_kind.isolation(target, {} if spec.network is None else {"network": spec.network})
    environment = None
    if spec.environment is not None:  # read and checked now: a bad one stores nothing
        from runyard.environments.registry import resolve

        resolved = resolve(ws, spec.environment)
        if resolved is not None:
            environment = {"spec": resolved[0].to_dict(), "version": resolved[1]}
    check_experiment_name(spec.experiment)
    source = os.path.abspath(spec.source_directory)
    script = spec.script
    command: str | list[str] | None = None
    if spec.command is not None:
        from runyard.agent.scripts import command_line

        if script:
            raise RunError("Give a script (with its arguments) or a command, not both: ScriptRunConfig(command=[...]) "
                           "runs the command as it is.")
        command_line(spec.command)  # refuses an empty one
        command = spec.command if isinstance(spec.command, str) else [str(a) for a in spec.command]
    elif not script:
        raise RunError("Nothing to run: give a script (e.g. 'train.py') or a command (ScriptRunConfig(command=[...])).")
    if command is None and os.path.isabs(script):
        rel = os.path.relpath(script, source)
        if rel == ".." or rel.startswith("../"):
            raise RunError(f"The script '{script}' is not inside the source directory '{source}'. "
                           "Pass a script inside it (relative to it), or another --source-dir.")
        script = rel
    if command is None:
        script = os.path.normpath(script).replace(os.sep, "/")
    if spec.snapshot_id is None and command is None:
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
        from runyard.agent.scripts import runner_for

        runner_for(os.path.join(source, script), script)  # what runyard cannot run is refused before anything is stored
    if spec.snapshot_id is None:
        # With the policy 'refuse', likely secrets raise here and nothing is stored.
        snap = ws.snapshot(source, max_bytes=spec.max_bytes, max_files=spec.max_files, secrets=spec.secrets)
        snapshot_id = snap.id
        secrets, links = snap.secrets, {i.path: i.detail for i in snap.links_outside()}
    else:
        # A rerun takes no snapshot: the one it reuses is checked as it is stored.
        from runyard.config import resolve_secrets_policy
        from runyard.errors import SnapshotSecretsError
        from runyard.snapshot.engine import flagged_in_snapshot
        from runyard.snapshot.report import flagged_message

        snapshot_id = spec.snapshot_id
        secrets, found = flagged_in_snapshot(ws.open_store(), snapshot_id)
        links = dict(found)
        policy = resolve_secrets_policy(spec.secrets, config=ws.config)
        if secrets and policy.refuse:
            raise SnapshotSecretsError(flagged_message(source, secrets, refused=policy, reused_snapshot=snapshot_id),
                                       secrets)
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
        compute_target=target.name, isolation=isolation, parent_run_id=spec.parent_run_id, tags=dict(spec.tags),
        created=now,
        python_version=sys.version.split()[0],
        git=_git_info(source) if spec.snapshot_id is None else dict(spec.git or {}),
        secrets=secrets, links_outside=links, snapshot_reused=spec.snapshot_id is not None, command=command,
        environment=environment,
    )
    from runyard.agent.folder import RunFolder

    folder = RunFolder.of(ws.path, run_id)
    # From here on the run is this process's to look after (see agent.folder): a
    # crash before its supervisor takes over leaves a run the next reader reaps.
    request.claim = folder.claim()
    try:
        if plan:
            from runyard.data.lineage import save_plan

            save_plan(folder.path, plan)
        request.save(folder.path)
    except BaseException:
        folder.release()
        os.close(request.claim)
        request.claim = None
        import shutil

        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    return request


def rerun_spec(ws: Workspace, run_id: str, *, secrets: str | None = None,
               tags: dict[str, str] | None = None) -> RunSpec:
    """What to run to run ``run_id`` again: its snapshot, script and arguments (or command),
    and data, as a new run whose parent it is (``runyard rerun``)."""
    from runyard.agent.folder import RunFolder
    from runyard.data.lineage import load_plan

    old = get_run(ws, run_id)
    folder = RunFolder.of(ws.path, old.id)
    # A run of a command has no script; its record keeps the command as argv (the run's folder,
    # which its script could rewrite, is not asked).
    command = list(old.arguments) if old.script is None and old.arguments else None
    if old.snapshot_id is None or (old.script is None and command is None):
        raise RunError(f"Run {old.id} has no snapshot to run again (it failed before one was taken).")
    git = {"git_commit": old.git_commit, "git_branch": old.git_branch, "git_dirty": old.git_dirty}
    environment = None
    if old.environment and old.environment.get("spec"):  # what it ran with, every package pinned
        from runyard.environments.build import rebuild_spec
        from runyard.environments.spec import EnvSpec

        environment = rebuild_spec(dict(old.environment), EnvSpec.from_dict(old.environment["spec"]))
    # Where it ran: a run of the sandbox is not run again unsandboxed because the workspace's
    # default is local (a target removed since is said by prepare(), and nothing runs).
    return RunSpec(environment=environment, compute_target=old.compute_target or None,
                   source_directory=old.source_dir or ".", script="" if command is not None else (old.script or ""),
                   arguments=[] if command is not None else list(old.arguments), command=command,
                   experiment=old.experiment, parent_run_id=old.id, snapshot_id=old.snapshot_id,
                   git={k: v for k, v in git.items() if v is not None},
                   data_plan=load_plan(folder.path), secrets=secrets, tags=dict(tags or {}))


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


def submit(ws: Workspace, spec: RunSpec) -> RunRecord:
    """Snapshot, record and start a run; returns it (Queued or later).

    Likely secrets (or links leaving the source) in its snapshot are reported
    with ``warnings.warn(..., SecretsWarning)``; with the policy ``refuse`` this
    raises ``SnapshotSecretsError`` and records nothing.
    """
    request = prepare(ws, spec)
    claim, request.claim = request.claim, None
    try:
        message = request.flag_message()
        if message is not None:
            import warnings

            from runyard.errors import SecretsWarning

            warnings.warn(message, SecretsWarning, stacklevel=3)  # at the caller of Experiment.submit
        run = record(ws.open_history(), request)
    except BaseException:
        if claim is not None:
            os.close(claim)  # nobody looks after the run now: the next reader records it as lost
        raise
    start(ws, request, claim=claim)
    return run


def start(ws: Workspace, request: RunRequest, *, claim: int | None = None, fork: bool = False,
          prefork: Any = None) -> int:
    """Start the run's supervisor on its compute target; returns its pid. ``claim`` (the run's
    marker, held) is handed over and closed; ``prefork`` is a supervisor forked ahead of time
    (``runyard run``), used where the target starts supervisors on this machine."""
    from runyard.compute.base import get_target, kind

    return kind(get_target(ws, request.compute_target).kind).start(
        ws, request.run_id, fork=fork, claim=claim, prefork=prefork)


def reap_lost(history: RunHistory, runs: Sequence[RunRecord] | None = None, *,
              ws: Workspace | None = None, problems: list[str] | None = None) -> list[str]:
    """Reap the runs nobody looks after any more (see :mod:`runyard.runs.reaper`); returns their ids.

    Cheap when nothing is lost: a lock try per unfinished run of this machine.
    ``runs`` limits it to those runs. Without ``ws`` nothing is done. A run that
    cannot be reaped now is said in ``problems`` and left for the next read.
    """
    if ws is None:
        return []
    from runyard.runs.reaper import reap_lost as reap_all

    return reap_all(ws, history, None if runs is None else list(runs), problems=problems)


END_RECORD_WAIT: Final = 10.0
"""How long a reader waits for a live supervisor to record an end it has written."""


def get_run(ws: Workspace, run_id: str, history: RunHistory | None = None) -> RunRecord:
    """A run as the history has it, consistent with what ``runyard run`` said.

    A run whose supervisor has written its end but not yet recorded it (a
    moment, normally) is waited for; a run nobody looks after any more (its
    supervisor died) is reaped first: what it left is salvaged and its end
    recorded (:mod:`runyard.runs.reaper`). A run prepared by ``runyard run`` that
    its supervisor has not recorded yet is recorded (Queued) now. ``run_id``
    may be a unique prefix of the id.
    """
    from runyard.agent.folder import RunFolder
    from runyard.errors import NotFoundError

    history = history or ws.open_history()
    run_id = history.resolve_run_id(run_id, missing_ok=True)  # missing: maybe prepared, not yet recorded
    try:
        run: RunRecord | None = history.get_run(run_id)
    except NotFoundError:
        run = None
    folder = RunFolder.of(ws.path, run_id)
    if run is not None and run.is_terminal:
        if os.path.exists(folder.marker):  # (one stat) its end is recorded, but whoever recorded it died
            _finish_reaping(ws, history, run_id)  # before letting go of it: finish the work
        return run
    if run is None and not os.path.exists(folder.request):
        return history.get_run(run_id)  # raises NotFoundError
    if folder.attended():
        if run is None:
            try:
                request = RunRequest.load(folder.path)
            except (OSError, ValueError, TypeError) as exc:
                raise RunError(f"Run {run_id} is starting but its request ({folder.request}) cannot be read: "
                               f"{exc}. Read it again in a moment.") from exc
            return record(history, request)
        deadline = time.monotonic() + END_RECORD_WAIT
        while not run.is_terminal and os.path.exists(folder.end) and time.monotonic() < deadline:
            if not folder.attended():
                break  # it let go: its record is in, or it died (reaped below)
            time.sleep(0.02)  # it has written its end: the record follows in a moment
            run = history.get_run(run_id)
        run = history.get_run(run_id)
        if run.is_terminal or folder.attended():
            return run
    from runyard.runs.reaper import reap, reap_lost

    try:
        reaped = reap(ws, history, run_id)
    except Exception as exc:
        raise RunError(f"Nobody looks after run {run_id} any more (its supervisor is gone), and reaping it failed: "
                       f"{exc}. Its files stay in {folder.path}; try again later, or run: runyard gc") from exc
    if reaped is not None:
        return reaped
    run = history.get_run(run_id)
    if not run.is_terminal and run.host and run.host != os.uname().nodename and reap_lost(ws, history, [run]):
        run = history.get_run(run_id)  # another machine's run whose heartbeat stopped
    return run


def _finish_reaping(ws: Workspace, history: RunHistory, run_id: str) -> None:
    """Unmount, remove and let go of an ended run whose supervisor or reaper died after recording
    its end (a live one, finishing, holds the run and is left to it). Problems wait for the next
    read, or runyard gc."""
    from runyard.runs.reaper import reap

    try:
        reap(ws, history, run_id)
    except Exception:
        pass


def request_cancel(ws: Workspace, run_id: str, pid: int | None = None) -> bool:
    """Ask the run's supervisor to cancel, at once and without the history, the way its compute
    target does (:meth:`runyard.compute.base.Kind.cancel`). Returns whether a live supervisor was told."""
    from runyard.compute.base import kind_of_run

    return kind_of_run(ws, run_id).cancel(ws, run_id, pid)


def cancel(ws: Workspace, run_id: str) -> RunRecord | None:
    """Ask a run to stop: its script's process group gets SIGTERM, a grace
    period (``RUNYARD_CANCEL_GRACE``, default 10 s), then SIGKILL.

    Returns the run's record, or None when its supervisor was told before the
    history has the run (the first moments of ``runyard run``). ``run_id``
    may be a unique prefix of the id.
    """
    from runyard.agent.folder import RunFolder, check_run_id

    check_run_id(run_id)
    if not os.path.isdir(os.path.join(ws.runs_dir, run_id)):  # not a full id whose run folder is here
        run_id = ws.open_history().resolve_run_id(run_id, missing_ok=True)
    folder = RunFolder.of(ws.path, run_id)
    prepared = os.path.exists(folder.request) and RunEnd.read(folder.path) is None
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


def wait(ws: Workspace, run_id: str, *, timeout: float | None = None, poll: float = 0.1) -> RunRecord:
    """Block until the run has ended (or ``timeout`` seconds passed).

    Once a second it checks that somebody still looks after the run (one lock
    try); a run nobody does is reaped and its end returned.
    """
    from runyard.agent.folder import RunFolder

    history = ws.open_history()
    folder = RunFolder.of(ws.path, run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    last_check = time.monotonic()
    while True:
        run = history.get_run(run_id)
        if run.is_terminal:
            return run
        now = time.monotonic()
        if now - last_check >= 1.0:
            last_check = now
            if not folder.attended():
                run = get_run(ws, run_id, history)
                if run.is_terminal:
                    return run
        if deadline is not None and now > deadline:
            return run
        time.sleep(poll)


def runs_filter(where: str | None, statuses: Sequence[str] = (),
                tags: Mapping[str, str | None] | None = None) -> Any:
    """One filter (:mod:`runyard.history.filters`) from a filter's text and the simpler
    ``--status`` (any of them) and ``--tag`` (all of them) options."""
    from runyard.history.filters import And, Compare, Field, Or, parse_filter
    from runyard.history.model import RunStatus, check_key

    parts: list[Any] = []
    if where:
        tree = parse_filter(where)
        if tree is not None:
            parts.append(tree)
    if statuses:
        parts.append(Or(tuple(Compare(Field("status"), "=", RunStatus.parse(s).value) for s in statuses)))
    for key, value in (tags or {}).items():
        check_key(key, "tag")
        parts.append(Compare(Field("tags", key), "notnull") if value is None else
                     Compare(Field("tags", key), "=", value))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def exit_code_of(run: RunRecord) -> int:
    """What ``runyard run`` exits with for an ended run."""
    return exit_code_for(run.status, run.exit_code, run.signal)


def read_end(ws: Workspace, run_id: str) -> RunEnd | None:
    """The run's end as its supervisor wrote it, or None while it goes."""
    return RunEnd.read(os.path.join(ws.runs_dir, run_id))
