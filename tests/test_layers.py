"""Which layer may import which: the folder tree shows the layers, and no import goes up.

The layers, top to bottom (docs/DESIGN's sketch): the CLI and the SDK facade;
``runs`` (orchestration, reaping); ``compute`` (where a supervisor starts);
``agent`` (the supervisor); ``environments`` (building what a script runs
with); ``data``; ``snapshot``; ``history``; ``store``.
A module may import its own layer and the layers below. The exceptions are
named here: ``runs.model`` and ``runs.ending`` are leaves the supervisor
shares with the orchestration (what a run is and how its end is recorded);
``runyard.workspace`` is the handle every layer is given and that opens each
of them (lazily), so it is outside the order; the bare package (for its
version) may be imported by anyone. Imports inside functions count too (they
are imports all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import runyard

SRC = Path(runyard.__file__).parent
ORDER = ["facade", "runs", "compute", "agent", "environments", "data", "snapshot", "history", "store", "base"]
LEAVES = {"runyard.runs.model", "runyard.runs.ending"}
FACADE = {"runyard.cli", "runyard.cli_common", "runyard.cli_data", "runyard.cli_compute", "runyard.cli_env",
          "runyard.cli_runs", "runyard._main", "runyard.__main__",
          "runyard.run", "runyard.experiment", "runyard.environment", "runyard.cleanup", "runyard"}
OUTSIDE = {"runyard", "runyard.workspace"}


def layer(module: str) -> str:
    if module in FACADE:
        return "facade"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ORDER:
        return parts[1]
    return "base"  # errors, config, paths, workspace, _progress: shared by all


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "runyard" or m.startswith("runyard.")}


def test_no_import_goes_up_a_layer() -> None:
    wrong = []
    rank = {name: i for i, name in enumerate(ORDER)}
    for name, path in sorted(modules().items()):
        if name in OUTSIDE:
            continue
        mine = layer(name)
        for target in sorted(imports_of(path) - OUTSIDE - LEAVES):
            theirs = layer(target)
            if rank[theirs] < rank[mine]:
                wrong.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert wrong == []


def test_the_supervisor_does_not_know_the_orchestration() -> None:
    for name, path in modules().items():
        if layer(name) in ("agent", "compute"):
            assert not {m for m in imports_of(path) if m.startswith("runyard.runs") and m not in LEAVES}, name
