"""Removing runs (``runyard runs rm``): chosen by id, or by age and a filter. A run that has
not ended is never removed (cancel it first); the history's record goes first, then the
run's folder (what a crash leaves between the two, ``runyard gc`` removes). The files a run
stored stay in the store, where other runs and snapshots may share them."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runyard.errors import ConfigError, RunError

if TYPE_CHECKING:
    from runyard.history.model import RunRecord
    from runyard.workspace import Workspace

_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds from ``30d``, ``12h``, ``90m``, ``3600s``, ``2w``."""
    m = _AGE.match(text.lower())
    if m is None:
        raise ConfigError(f"'{text}' is not an age: write a number and a unit, e.g. 30d, 12h, 90m, 3600s, 2w.")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass
class Removal:
    removed: list[RunRecord] = field(default_factory=list)
    """Removed (or, for a dry run, that would be)."""
    kept: list[tuple[str, str]] = field(default_factory=list)
    """(run id, why it was not removed)."""


def select_runs(ws: Workspace, run_ids: Sequence[str] = (), *, older_than: float | None = None,
                where: Any = None, experiment: str | None = None) -> list[RunRecord]:
    """The runs ``runs rm`` would act on: those named (unique prefixes too), else every run
    that ended more than ``older_than`` seconds ago and matches ``where``/``experiment``."""
    from runyard.history.filters import And, Compare, Field
    from runyard.history.query import query_runs
    from runyard.runs.service import get_run

    if run_ids:
        if older_than is not None or where is not None or experiment is not None:
            raise RunError("Name runs, or choose them with --older-than/--filter/-e; not both.")
        history = ws.open_history()
        return [get_run(ws, r, history) for r in dict.fromkeys(run_ids)]
    if older_than is None and where is None and experiment is None:
        raise RunError("Say which runs to remove: their ids, or --older-than AGE (with --filter EXPR or -e "
                       "EXPERIMENT to narrow it).")
    parts = [] if where is None else [where]
    if older_than is not None:
        parts.append(Compare(Field("ended"), "<", time.time() - older_than))
    tree = None if not parts else parts[0] if len(parts) == 1 else And(tuple(parts))
    return query_runs(ws.open_history(), filter=tree, experiment=experiment, limit=None).runs


def remove_runs(ws: Workspace, runs: Sequence[RunRecord], *, dry_run: bool = False) -> Removal:
    """Remove ``runs`` that have ended; the others are kept, saying why."""
    from runyard.agent.folder import RunFolder

    out = Removal()
    doomed = []
    for run in runs:
        if not run.is_terminal:
            out.kept.append((run.id, f"it is {run.status.value}: cancel it first (runyard cancel {run.id})"))
            continue
        folder = RunFolder.of(ws.path, run.id)
        if folder.attended():
            out.kept.append((run.id, "its supervisor is still finishing it; try again in a moment"))
            continue
        doomed.append(run)
    if dry_run:
        out.removed = doomed
        return out
    gone = set(ws.open_history().delete_runs([r.id for r in doomed]))
    for run in doomed:
        if run.id not in gone:
            out.kept.append((run.id, "it did not end after all (it changed meanwhile)"))
            continue
        out.removed.append(run)
        path = RunFolder.of(ws.path, run.id).path
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
    return out


__all__ = ["Removal", "parse_age", "remove_runs", "select_runs"]
