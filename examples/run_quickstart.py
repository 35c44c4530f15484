"""The README's first command: run the quickstart experiment with runyard and
show where its outputs, logs and metrics are.

It submits examples/quickstart/train.py as a run of the experiment
"quickstart": runyard snapshots the folder (its .amlignore keeps outputs/ and
logs/ out), runs the script in a fresh working directory outside it, streams
its output here, and keeps ./outputs, ./logs and the metrics in run history.
"""

from __future__ import annotations

import os
import sys

import runyard

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    # RUNYARD_WORKSPACE wins; else .runyard/ at the repository root (kept out of git).
    ws = runyard.Workspace.from_config() if os.environ.get("RUNYARD_WORKSPACE") else runyard.Workspace.create(REPO)
    print(f"workspace: {ws.path}")
    epochs = sys.argv[1] if len(sys.argv) > 1 else "5"
    config = runyard.ScriptRunConfig(source_directory=HERE, script="train.py", arguments=[epochs])
    run = runyard.Experiment(ws, "quickstart").submit(config)
    print(f"run: {run.id}\n")
    details = run.wait_for_completion(show_output=True, raise_on_error=False)
    print(f"\nstatus: {details['status']} (snapshot {details['snapshotId'][:12]})")
    metrics = run.get_metrics()
    for name, value in sorted(metrics.items()):
        print(f"metric {name}: {value}")
    print("artifacts:", ", ".join(run.get_file_names()))
    print("\nnext:")
    print(f"  .venv/bin/runyard runs show {run.id}")
    print(f"  .venv/bin/runyard logs {run.id}")
    print(f"  .venv/bin/runyard artifacts download {run.id} 'outputs/*' -o results")
    print("  .venv/bin/runyard run --source-dir examples/quickstart -e quickstart train.py 3")
    return 0 if details["status"] == "Completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
