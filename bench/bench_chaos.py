"""Chaos trials, many of them: runs killed at random moments must lose nothing.

Runs ``--trials`` trials of every kind of kill (the script, the supervisor,
``runyard run``, everything at once as a reboot) against one workspace, with
the harness of the test suite (``tests/chaos.py``, which says what each trial
checks), and prints trials by kind, where the kills landed, what was checked,
and the violations by kind. Every trial is appended to ``--out`` as it ends,
so an interrupted run keeps its figures.

    python bench/bench_chaos.py [--trials 200] [--kinds script,supervisor,...] [--out bench/.out/chaos.jsonl]

Exit status 1 when any trial found a violation. Needs root for the overlay
(the ``host`` kind then also unmounts it, as a reboot would); works without.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chaos import KINDS, Chaos, Trial, summary  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200, help="trials of each kind (default 200)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--out", default=str(ROOT / "bench" / ".out" / "chaos.jsonl"))
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    from runyard.workspace import Workspace

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trials: list[Trial] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="runyard-chaos-") as tmp:
        ws = Workspace.create(Path(tmp) / "ws")
        chaos = Chaos(ws.path, Path(tmp))
        with out.open("a") as log:
            for i in range(args.trials):
                for kind in kinds:  # interleaved: every kind sees the same machine load
                    trial = chaos.run(kind, args.seed + i)
                    trials.append(trial)
                    log.write(json.dumps(asdict(trial)) + "\n")
                    log.flush()
                    if trial.violations:
                        print(f"VIOLATION {kind} {trial.run_id} ({trial.when}): {trial.violations[:5]}",
                              flush=True)
                print(f"[{i + 1}/{args.trials}] {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        corrupt = _corrupt_blobs(ws.path)
        from runyard.cleanup import collect

        collect(ws)  # (nothing should be left; this unmounts anything that is, before the folder goes)
    print(summary(trials))
    print(f"store: {corrupt[1]} blobs checked, {len(corrupt[0])} corrupt {corrupt[0][:5]}")
    print(f"{len(trials)} trials in {time.monotonic() - started:.0f} s")
    return 1 if any(t.violations for t in trials) or corrupt[0] else 0


def _corrupt_blobs(ws_path: str) -> tuple[list[str], int]:
    """Every blob of the workspace's store hashed again: (the corrupt ones, how many were checked)."""
    from runyard.store.base import new_hasher

    bad: list[str] = []
    checked = 0
    for path in sorted(Path(ws_path, "store", "blobs").rglob("*")):
        if not path.is_file():
            continue
        h = new_hasher()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        checked += 1
        if h.hexdigest() != path.parent.name + path.name:  # blobs/ab/cdef...: the digest split after 2
            bad.append(str(path))
    return bad, checked


if __name__ == "__main__":
    raise SystemExit(main())
