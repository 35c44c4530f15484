"""Runs side by side (``runyard runs compare``, the web UI's compare page): what each ran
(script, arguments, snapshot, environment, target), how it ended, its tags, properties
and the last value of every metric, with the rows that differ marked; and for two runs,
which files of their snapshots differ."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from runyard.errors import RunError

if TYPE_CHECKING:
    from runyard.history.model import RunRecord
    from runyard.workspace import Workspace

MAX_RUNS: Final = 200


@dataclass
class Row:
    label: str
    values: list[Any]

    @property
    def differs(self) -> bool:
        first = self.values[0]
        return any(v != first for v in self.values[1:])


@dataclass
class Comparison:
    runs: list[RunRecord]
    rows: list[Row] = field(default_factory=list)
    snapshot_changes: list[tuple[str, str]] | None = None
    """For two runs of different snapshots: (A/D/M/X/T, path) from the first to the second."""


def compare_runs(ws: Workspace, run_ids: Sequence[str]) -> Comparison:
    """Compare 2 to 200 runs (unique prefixes of ids are fine)."""
    from runyard.runs.service import get_run

    if not 2 <= len(run_ids) <= MAX_RUNS:
        raise RunError(f"Compare 2 to {MAX_RUNS} runs (got {len(run_ids)}).")
    history = ws.open_history()
    runs = [get_run(ws, r, history) for r in run_ids]
    seen: set[str] = set()
    for r in runs:
        if r.id in seen:
            raise RunError(f"Run {r.id} is named twice; name each run once.")
        seen.add(r.id)
    rows = [Row(label, [pick(r) for r in runs]) for label, pick in _FIELDS]
    envs = [dict(r.environment or {}) for r in runs]
    rows.append(Row("environment", [_env_name(e) for e in envs]))
    rows.append(Row("python", [e.get("python_version") for e in envs]))
    packages = [dict(p.split("==", 1) for p in e.get("packages") or () if "==" in p) for e in envs]
    for name in sorted(set().union(*packages)):
        row = Row(f"package {name}", [p.get(name) for p in packages])
        if row.differs:
            rows.append(row)
    for kind in ("tags", "properties"):
        maps = [dict(getattr(r, kind)) for r in runs]
        for key in sorted(set().union(*maps)):
            rows.append(Row(f"{kind}.{key}", [m.get(key) for m in maps]))
    from runyard.history.query import last_values

    last = last_values(history, [r.id for r in runs])
    metrics = [last[r.id] for r in runs]
    for name in sorted(set().union(*metrics)):
        rows.append(Row(f"metrics.{name}", [m.get(name) for m in metrics]))
    changes = None
    if len(runs) == 2 and runs[0].snapshot_id and runs[1].snapshot_id and runs[0].snapshot_id != runs[1].snapshot_id:
        from runyard.snapshot.engine import diff, load_manifest

        store = ws.open_store()
        try:
            a, b = (load_manifest(store, str(r.snapshot_id)) for r in runs)
            changes = [(c.status, c.path) for c in diff(a, b)]
        except Exception as exc:  # a snapshot removed since: the rest still compares
            changes = [("?", f"the snapshots cannot be compared: {exc}")]
    return Comparison(runs, rows, changes)


def _env_name(env: dict[str, Any]) -> str | None:
    if not env:
        return None
    if env.get("name"):
        return f"{env['name']}:{env.get('version') or '-'}"
    return "runyard's Python"


_FIELDS: list[tuple[str, Any]] = [
    ("experiment", lambda r: r.experiment),
    ("status", lambda r: r.status.value),
    ("script", lambda r: r.script),
    ("arguments", lambda r: " ".join(r.arguments)),
    ("snapshot", lambda r: (r.snapshot_id or "")[:12] or None),
    ("target", lambda r: r.compute_target),
    ("exit code", lambda r: r.exit_code),
    ("duration", lambda r: None if r.duration is None else round(r.duration, 3)),
    ("git", lambda r: None if not r.git_commit else f"{r.git_commit[:12]}{' (dirty)' if r.git_dirty else ''}"),
    ("rerun of", lambda r: r.parent_run_id),
]

__all__ = ["MAX_RUNS", "Comparison", "Row", "compare_runs"]
