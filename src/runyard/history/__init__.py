"""Run history: experiments, runs and their statuses, metrics, tags,
properties and the artifact index, in SQLite (``<workspace>/history.db``) or
any PostgreSQL database.

Importing this package does not import SQLAlchemy; :class:`RunHistory`,
:class:`Database` and :func:`migrate` load it when first used.

>>> import os, tempfile
>>> from runyard.history import RunHistory, migrate
>>> path = os.path.join(tempfile.mkdtemp(), "history.db")
>>> migrate(path)                      # what `runyard init` does
[1, 2]
>>> with RunHistory.open(path) as history:
...     run = history.create_run("demo", status="Running")
...     history.set_status(run.id, "Completed").status.value
'Completed'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runyard.errors import HistoryError, PropertyConflictError, SchemaVersionError, StatusTransitionError
from runyard.history.model import (
    ACTIVE_STATUSES,
    HISTORY_FILE,
    METRIC_KINDS,
    NAME_PATTERN,
    TRANSITIONS,
    Artifact,
    Experiment,
    MetricInput,
    MetricKind,
    MetricPoint,
    MetricValue,
    RunFields,
    RunRecord,
    RunStatus,
    can_transition,
    check_experiment_name,
    default_location,
    new_run_id,
    parse_run_id,
)

if TYPE_CHECKING:
    from runyard.history.db import Database
    from runyard.history.migrations import migrate
    from runyard.history.store import RunHistory

# Names whose modules import SQLAlchemy: loaded on first access.
_LAZY = {
    "Database": "runyard.history.db",
    "migrate": "runyard.history.migrations",
    "RunHistory": "runyard.history.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runyard.history' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        if exc.name != "sqlalchemy":
            raise
        raise HistoryError(
            "The run history needs SQLAlchemy 2. Install it with: pip install 'sqlalchemy>=2.0'"
        ) from exc
    globals()[name] = value
    return value


__all__ = [
    "ACTIVE_STATUSES",
    "HISTORY_FILE",
    "METRIC_KINDS",
    "NAME_PATTERN",
    "TRANSITIONS",
    "Artifact",
    "Database",
    "Experiment",
    "HistoryError",
    "MetricInput",
    "MetricKind",
    "MetricPoint",
    "MetricValue",
    "PropertyConflictError",
    "RunFields",
    "RunHistory",
    "RunRecord",
    "RunStatus",
    "SchemaVersionError",
    "StatusTransitionError",
    "can_transition",
    "check_experiment_name",
    "default_location",
    "migrate",
    "new_run_id",
    "parse_run_id",
]
