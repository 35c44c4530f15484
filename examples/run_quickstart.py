"""The README's first command: snapshot the quickstart experiment and run it
from its snapshot in a fresh, isolated folder.

Until `runyard run` lands, this shows the first half of a run by hand: the
snapshot (what goes, what stays out, its id), then a restore of exactly that
snapshot into a scratch folder, where the script runs without touching this
source directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from runyard import Workspace
from runyard.snapshot.render import render_create

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    # RUNYARD_WORKSPACE wins; else .runyard/ at the repository root (kept out of git).
    ws = Workspace.from_config() if os.environ.get("RUNYARD_WORKSPACE") else Workspace.create(REPO)
    print(f"workspace: {ws.path}\n")
    snap = ws.snapshot(HERE)
    print(render_create(snap))
    with tempfile.TemporaryDirectory(prefix="runyard-quickstart-") as scratch:
        workdir = os.path.join(scratch, "wd")
        ws.restore_snapshot(snap.id, workdir)
        print(f"\nrunning train.py from snapshot {snap.id[:12]} in {workdir}\n")
        code = subprocess.call([sys.executable, "train.py"], cwd=workdir)
        made = sorted(os.path.join(d, f) for d in ("outputs", "logs") for f in os.listdir(os.path.join(workdir, d)))
        print(f"\nthe run wrote: {', '.join(made)} (in the scratch folder; the source directory is untouched)")
    print("\nnext: runyard snapshot ls examples/quickstart      what goes into the snapshot")
    print("      runyard snapshot explain examples/quickstart outputs/model.json")
    print(f"      runyard snapshot show {snap.id[:12]}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
