"""Recording a run in the history from its model: its record (:func:`record`) and its
end (:func:`record_end`). Used by the orchestration, by the supervisor wherever it
runs, and by whoever reaps a lost run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runyard.history import RunRecord, RunStatus
from runyard.runs.model import RunEnd, RunRequest, command_argv

if TYPE_CHECKING:
    from runyard.history.store import RunHistory


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
    if end.environment is not None:
        return history.set_status(run_id, final, exit_code=end.exit_code, signal=end.signal, error=end.error,
                                  ended=end.ended, environment=end.environment,
                                  python_version=end.environment.get("python_version"))
    return history.set_status(run_id, final, exit_code=end.exit_code, signal=end.signal, error=end.error,
                              ended=end.ended)


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
            parent_run_id=request.parent_run_id, tags=request.tags or None,
            properties=request.flag_properties() or None, snapshot_id=request.snapshot_id,
            source_dir=request.source_dir, script=request.script or None,
            arguments=request.arguments if request.command is None else command_argv(request.command),
            compute_target=request.compute_target, python_version=request.python_version, **request.git,
            environment=_asked(request.environment),
        )
    except HistoryError:
        return history.get_run(request.run_id)  # made meanwhile by the other side (else: raises NotFound)


def _asked(environment: dict[str, Any] | None) -> dict[str, Any] | None:
    """The environment a run asks for, on its record from the start: a run that never got to
    run in it (its build failed, it was canceled or lost while it built) still says which it
    was, and is run again in it. What it ran with replaces this once it runs (every package)."""
    if not environment or not environment.get("spec"):
        return None
    spec = environment["spec"]
    return {"name": spec.get("name"), "version": environment.get("version"), "spec": spec}


__all__ = ["record", "record_end"]
