"""The README's first command runs the quickstart example from its snapshot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runyard.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_from_its_snapshot_and_leaves_the_source_alone(workspace: Workspace) -> None:
    src = ROOT / "examples" / "quickstart"
    before = sorted(p.name for p in src.iterdir())
    env = {**os.environ, "RUNYARD_WORKSPACE": workspace.path}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "run_quickstart.py")], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "epoch=5" in out and "wrote outputs/model.json" in out
    assert sorted(p.name for p in src.iterdir()) == before  # nothing written into the source
    snapshot_id = out.split("running train.py from snapshot ")[1].split()[0]
    assert len(snapshot_id) == 12
