"""The run history at scale: a synthetic history of N runs (default 100,000) with M metric
points each (default 100: 10 million points), tags and properties, then the queries the
runs table and ``runyard runs ls`` make, timed on SQLite and (with ``--postgres URL``)
PostgreSQL:

- the first page, newest first (what ``runs ls`` and the UI's table open with);
- a filtered and sorted page: ``metrics.acc > 0.9 and tags.team = "vision"`` by ``-metrics.acc``;
- a page sorted by a metric over every run;
- ``runyard runs ls`` as a whole command (SQLite).

    python bench/bench_history_scale.py [--runs 100000] [--points 100] [--postgres URL]

Building the history is not timed; it goes in one transaction per 2,000 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PY = sys.executable


def build(location: str, runs: int, points: int) -> None:
    from sqlalchemy import insert

    from runyard.history import schema as t
    from runyard.history.migrations import migrate
    from runyard.history.store import RunHistory, note_latest

    migrate(location)
    history = RunHistory.open(location)
    rng = random.Random(7)
    experiments = [f"exp{i}" for i in range(20)]
    teams = ["vision", "nlp", "speech", "rl"]
    now = time.time() - runs * 10
    with history.database.engine.begin() as conn:
        conn.execute(insert(t.experiments), [{"name": e, "created": now} for e in experiments])
    metric_id = 0
    for start in range(0, runs, 2000):
        run_rows: list[dict[str, Any]] = []
        tag_rows: list[dict[str, Any]] = []
        prop_rows: list[dict[str, Any]] = []
        metric_rows: list[dict[str, Any]] = []
        for i in range(start, min(runs, start + 2000)):
            run_id = f"{experiments[i % 20]}_{int(now) + i * 10}_{i:08x}"
            created = now + i * 10
            run_rows.append({"id": run_id, "experiment": experiments[i % 20], "status": "Completed",
                             "created": created, "started": created + 1, "ended": created + 61,
                             "heartbeat": created + 61, "script": "train.py",
                             "arguments": json.dumps(["--lr", str(rng.choice([0.1, 0.01, 0.001]))]),
                             "exit_code": 0})
            tag_rows.append({"run_id": run_id, "key": "team", "value": rng.choice(teams)})
            prop_rows.append({"run_id": run_id, "key": "owner", "value": f"user{i % 50}"})
            final = rng.random()
            for step in range(points):
                metric_id += 1
                name = "acc" if step % 2 == 0 else "loss"
                value = final * (step + 1) / points if name == "acc" else 1 - final * (step + 1) / points
                metric_rows.append({"id": metric_id, "run_id": run_id, "name": name, "kind": "scalar",
                                    "step": step, "value": value, "time": created + step, "pid": 1})
        with history.database.engine.begin() as conn:
            conn.execute(insert(t.runs), run_rows)
            conn.execute(insert(t.tags), tag_rows)
            conn.execute(insert(t.properties), prop_rows)
            conn.execute(insert(t.metrics), metric_rows)
            note_latest(conn, metric_rows)  # as RunHistory.log_metrics and the channel keep it
        print(f"  {min(runs, start + 2000):,} runs", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    history.close()


def timed(fn: Any, n: int = 5) -> float:
    fn()  # warm (the database's caches)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(location: str) -> dict[str, float]:
    from runyard.history.query import query_runs
    from runyard.history.store import RunHistory

    h = RunHistory.open(location)
    out = {
        "first_page_s": timed(lambda: query_runs(h, limit=50)),
        "filtered_sorted_page_s": timed(lambda: query_runs(
            h, filter='metrics.acc > 0.9 and tags.team = "vision"', sort=["-metrics.acc"],
            columns=["metrics.acc", "tags.team"], limit=50)),
        "sorted_by_metric_page_s": timed(lambda: query_runs(h, sort=["-metrics.loss"], columns=["metrics.loss"],
                                                            limit=50)),
        "tag_filter_page_s": timed(lambda: query_runs(h, filter='tags.team = "nlp"', limit=50)),
    }
    h.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--postgres", help="an empty PostgreSQL database's URL (postgresql+psycopg://...)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-scale-"))
    subprocess.run([PY, "-m", "runyard", "init", str(work)], check=True, capture_output=True)
    location = str(work / ".runyard" / "history.db")
    os.unlink(location)
    t = time.perf_counter()
    build(location, a.runs, a.points)
    results: dict[str, Any] = {"runs": a.runs, "points": a.runs * a.points,
                               "sqlite_build_s": round(time.perf_counter() - t, 1)}
    results["sqlite"] = measure(location)
    env = {**os.environ, "RUNYARD_WORKSPACE": str(work / ".runyard")}
    results["sqlite"]["cli_runs_ls_s"] = timed(lambda: subprocess.run(
        [PY, "-m", "runyard", "runs", "ls"], check=True, capture_output=True, env=env), n=3)
    if a.postgres:
        t = time.perf_counter()
        build(a.postgres, a.runs, a.points)
        results["postgres_build_s"] = round(time.perf_counter() - t, 1)
        results["postgres"] = measure(a.postgres)
    print(json.dumps(results, indent=1))
    print("| query | " + " | ".join(k for k in ("sqlite", "postgres") if k in results) + " |")
    print("|---|" + "---|" * len([k for k in ("sqlite", "postgres") if k in results]))
    for key in results["sqlite"]:
        cells = [f"{results[db][key] * 1000:.0f} ms" for db in ("sqlite", "postgres") if db in results
                 and key in results[db]]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
