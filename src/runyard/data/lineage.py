"""A run's data plan (what it reads and writes, fixed at submit) and its
lineage (what it read and wrote, recorded at its end).

Declared outputs are registered as dataset versions here, and only for a run
that completed: a failed or canceled run's output stays where it was written
and is recorded on the run as ``partial``, never registered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runyard.history import RunStatus

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.workspace import Workspace

STATE_READ = "read"
STATE_REGISTERED = "registered"
STATE_STORED = "stored"
STATE_PARTIAL = "partial"
STATE_FAILED = "failed"
STATE_EMPTY = "empty"


def make_plan(ws: Workspace, run_id: str, experiment: str, inputs: Sequence[Any],
              outputs: Sequence[Any]) -> dict[str, Any]:
    """The plan of a run about to be submitted: checks every name and
    destination now, so that a mistake fails the submit, not the run."""
    from runyard.data.inputs import DatasetConsumptionConfig, OutputFileDatasetConfig

    plan: dict[str, Any] = {"inputs": [], "outputs": []}
    for item in inputs:
        if not isinstance(item, DatasetConsumptionConfig):
            raise TypeError(f"not a run input: {item!r}")
        plan["inputs"].append(item.plan(ws))
    for out in outputs:
        if not isinstance(out, OutputFileDatasetConfig):
            raise TypeError(f"not a run output: {out!r}")
        plan["outputs"].append(out.plan(ws, run_id, experiment))
    return plan


def replan(plan: dict[str, Any], run_id: str, experiment: str) -> dict[str, Any]:
    """Another run's plan for a new run (a rerun): the same inputs, the
    outputs' destinations resolved again for the new run id."""
    from runyard.data.inputs import resolve_destination

    outputs = []
    for out in plan.get("outputs", []):
        raw = out.get("destination") or out["path"]
        outputs.append({**out, "path": resolve_destination(raw, run_id=run_id, output_name=out["name"],
                                                           experiment=experiment)})
    return {**plan, "outputs": outputs}


def save_plan(folder: str, plan: dict[str, Any]) -> None:
    from runyard.data.inputs import PLAN_FILE

    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{PLAN_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(plan, fh)
    os.replace(tmp, os.path.join(folder, PLAN_FILE))


def load_plan(folder: str) -> dict[str, Any] | None:
    from runyard.data.inputs import PLAN_FILE

    try:
        with open(os.path.join(folder, PLAN_FILE), encoding="utf-8") as fh:
            plan: dict[str, Any] = json.load(fh)
            return plan
    except FileNotFoundError:
        return None


def record_run_data(history: RunHistory, run_id: str, final: RunStatus, records: Sequence[dict[str, Any]]) -> None:
    """Record a run's inputs and outputs; register its outputs if it completed.

    Safe to call twice (the supervisor, then a reader recording the end
    from the end file): an output registered once is not registered again.
    """
    from runyard.data.dataset import DatasetFile, digest_of
    from runyard.history.catalog import DataCatalog, RunDataRow

    catalog = DataCatalog(history)
    done = {(r.direction, r.name): r for r in catalog.run_data(run_id)}
    rows: list[RunDataRow] = []
    for rec in records:
        key = (rec["direction"], rec["name"])
        if key in done and done[key].state == STATE_REGISTERED:
            continue
        if rec["direction"] == "input":
            rows.append(RunDataRow(run_id, "input", rec["name"], rec["mode"], rec.get("dataset"), rec.get("version"),
                                   rec.get("datastore"), rec.get("path"), STATE_READ, rec.get("detail") or {}))
            continue
        files = [DatasetFile.from_row(r) for r in rec.get("files") or []]
        detail = {"files": len(files), "bytes": sum(f.size for f in files)}
        if rec.get("error"):
            detail["error"] = rec["error"]
        register = rec.get("register")
        version = None
        if rec.get("error"):
            state = STATE_FAILED
        elif final is not RunStatus.COMPLETED:
            state = STATE_PARTIAL
        elif not files:
            state = STATE_EMPTY
        elif register:
            row, _ = catalog.add_dataset_version(
                register["name"], sources=[{"datastore": rec["datastore"], "pattern": rec["path"],
                                            "base": rec["path"], "exact": True}],
                files=[f.row() for f in files], total_bytes=detail["bytes"], digest=digest_of(files),
                description=register.get("description"), tags=register.get("tags"), run_id=run_id,
                reuse_same=False)
            version = row.version
            state = STATE_REGISTERED
        else:
            state = STATE_STORED
        rows.append(RunDataRow(run_id, "output", rec["name"], rec["mode"], register["name"] if register else None,
                               version, rec["datastore"], rec["path"], state, detail))
    catalog.record_run_data(rows)


__all__ = ["load_plan", "make_plan", "record_run_data", "replan", "save_plan"]
