"""The README's first command runs the quickstart example as a real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.run import Run
from runyard.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_quickstart_runs_and_keeps_outputs_logs_and_metrics(workspace: Workspace) -> None:
    src = ROOT / "examples" / "quickstart"
    before = sorted(p.name for p in src.iterdir())
    env = {**os.environ, "RUNYARD_WORKSPACE": workspace.path}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "run_quickstart.py"), "3"], env=env,
                         capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "epoch=3" in out.stdout and "status: Completed" in out.stdout
    assert sorted(p.name for p in src.iterdir()) == before  # nothing written into the source
    run_id = out.stdout.split("run: ")[1].split()[0]
    run = Run(workspace, run_id)
    assert {"outputs/model.json", "logs/train.log"} <= set(run.get_file_names())
    metrics = run.get_metrics()
    assert len(metrics["loss"]) == 3 and len(metrics["accuracy"]) == 3
    # the data came from a dataset, and the model went out as a new dataset version
    assert "read 2000 samples from" in out.stdout
    details = run.get_details()
    assert [(d["dataset"], d["version"], d["state"]) for d in details["inputDatasets"]] == [
        ("quickstart_blobs", 1, "read")]
    assert [(d["dataset"], d["version"], d["state"]) for d in details["outputDatasets"]] == [
        ("quickstart_model", 1, "registered")]
    # a second run reads the same version from the cache and makes model version 2
    again = subprocess.run([sys.executable, str(ROOT / "examples" / "run_quickstart.py"), "1"], env=env,
                           capture_output=True, text=True, timeout=110)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "dataset quickstart_blobs:1" in again.stdout and "(1 from the cache, 0 downloaded)" in again.stdout
    assert "(dataset quickstart_model:2)" in again.stdout
