"""Runs: what to run and how it ended (:mod:`.model`), recording them
(:mod:`.ending`), the orchestration that prepares, starts, cancels, waits for and
reads runs (:mod:`.service`), and the reaping of runs nobody looks after any
more (:mod:`.reaper`). The names below are the package's API; modules below the
orchestration (the supervisor, the compute targets) import only ``model`` and
``ending``.
"""

from __future__ import annotations

from runyard.compute.local import Prefork, launch, pid_alive
from runyard.runs.ending import record, record_end
from runyard.runs.model import (
    END_FILE,
    LINKS_OUTSIDE_PROPERTY,
    REQUEST_FILE,
    SECRETS_PROPERTY,
    RunEnd,
    RunRequest,
    RunSpec,
    exit_code_for,
)
from runyard.runs.service import (
    END_RECORD_WAIT,
    cancel,
    ensure_recorded,
    exit_code_of,
    get_run,
    prepare,
    read_end,
    reap_lost,
    request_cancel,
    rerun_spec,
    runs_filter,
    start,
    submit,
    wait,
)

__all__ = [
    "END_FILE",
    "END_RECORD_WAIT",
    "LINKS_OUTSIDE_PROPERTY",
    "REQUEST_FILE",
    "SECRETS_PROPERTY",
    "Prefork",
    "RunEnd",
    "RunRequest",
    "RunSpec",
    "cancel",
    "ensure_recorded",
    "exit_code_for",
    "exit_code_of",
    "get_run",
    "launch",
    "pid_alive",
    "prepare",
    "read_end",
    "reap_lost",
    "record",
    "record_end",
    "request_cancel",
    "rerun_spec",
    "runs_filter",
    "start",
    "submit",
    "wait",
]
