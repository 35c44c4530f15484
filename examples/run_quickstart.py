"""The README's first command: run the quickstart experiment with runyard and
show where its outputs, logs and metrics are.

Data lives in a datastore, not in the snapshot: the training data is put in
the workspace's ``default`` datastore and registered as the dataset
``quickstart_blobs`` (a new version only when it changed). Then it submits
examples/quickstart/train.py as a run of the experiment "quickstart": runyard
snapshots the folder (its .amlignore keeps outputs/ and logs/ out), downloads
the dataset for the run, runs the script in a fresh working directory outside
the source, streams its output here, keeps ./outputs, ./logs and the metrics
in run history, and stores the declared output ``model``, registered as the
dataset ``quickstart_model`` because the run completed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import runyard

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    # RUNYARD_WORKSPACE wins; else .runyard/ at the repository root (kept out of git).
    ws = runyard.Workspace.from_config() if os.environ.get("RUNYARD_WORKSPACE") else runyard.Workspace.create(REPO)
    print(f"workspace: {ws.path}")
    epochs = sys.argv[1] if len(sys.argv) > 1 else "5"
    blobs = training_data(ws)
    print(f"data: dataset {blobs.name}:{blobs.version} ({len(blobs.files)} file, {blobs.total_bytes} bytes)")
    model = runyard.OutputFileDatasetConfig("model").register_on_complete("quickstart_model")
    config = runyard.ScriptRunConfig(
        source_directory=HERE, script="train.py",
        arguments=[epochs, "--data", blobs.as_named_input("blobs").as_download(), "--model-dir", model])
    run = runyard.Experiment(ws, "quickstart").submit(config)
    print(f"run: {run.id}\n")
    details = run.wait_for_completion(show_output=True, raise_on_error=False)
    print(f"\nstatus: {details['status']} (snapshot {details['snapshotId'][:12]})")
    metrics = run.get_metrics()
    for name, value in sorted(metrics.items()):
        print(f"metric {name}: {value}")
    print("artifacts:", ", ".join(run.get_file_names()))
    for out in details["outputDatasets"]:
        registered = f"dataset {out['dataset']}:{out['version']}" if out["version"] else out["state"]
        print(f"output {out['name']}: {out['datastore']}:{out['path']} ({registered})")
    print("\nnext:")
    print(f"  .venv/bin/runyard runs show {run.id}")
    print(f"  .venv/bin/runyard logs {run.id}")
    print(f"  .venv/bin/runyard artifacts download {run.id} 'outputs/*' -o results")
    print("  .venv/bin/runyard dataset show quickstart_model")
    print("  .venv/bin/runyard run --source-dir examples/quickstart -e quickstart "
          "--input blobs=dataset:quickstart_blobs train.py 3 --data '${{inputs.blobs}}'")
    return 0 if details["status"] == "Completed" else 1


def training_data(ws: runyard.Workspace) -> runyard.FileDataset:
    """The quickstart's data in the default datastore, as a registered dataset."""
    sys.path.insert(0, HERE)
    try:
        from train import make_data, write_data
    finally:
        sys.path.remove(HERE)
    with open(os.path.join(HERE, "config.json"), encoding="utf-8") as fh:
        cfg = json.load(fh)
    store = runyard.Datastore.get_default(ws)
    with tempfile.TemporaryDirectory() as tmp:
        write_data(os.path.join(tmp, "blobs.csv"), make_data(cfg["samples"], cfg["seed"]))
        store.upload(tmp, "quickstart/data", overwrite=True, show_progress=False)
    files = runyard.Dataset.File.from_files([(store, "quickstart/data/blobs.csv")])
    return files.register(ws, "quickstart_blobs", description="two Gaussian blobs", create_new_version=True)


if __name__ == "__main__":
    raise SystemExit(main())
