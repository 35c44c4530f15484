"""Run benchmarks, measured in this run against their references:

- ``runyard run noop.py`` from a T1-sized source with a warm store, against
  ``python noop.py`` (whole process each; target: at most 0.3 s more);
- log latency: from a script's ``print(..., flush=True)`` to the line coming
  out of ``runyard logs -f`` in another process (p50 and p99; aim: p99 under
  100 ms).

    python bench/bench_runs.py [--runs 7] [--lines 200] [--out bench/.out]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RUNYARD = [PY, "-m", "runyard"]

TICKER = """
import sys, time
n = int(sys.argv[1])
time.sleep(1.0)  # let the follower attach
for i in range(n):
    print(f"tick {i} {time.time():.6f}", flush=True)
    time.sleep(0.02)
"""


def timed(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    return time.perf_counter() - t


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / ".out"))
    a = ap.parse_args()
    out = Path(a.out)
    trees = out / "trees"
    if not (trees / "T1").exists():
        subprocess.run([PY, str(Path(a.shared) / "make_trees.py"), str(trees)], check=True)
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-runs-", dir=out))
    try:
        src = work / "T1"
        shutil.copytree(trees / "T1", src, symlinks=True)
        (src / "noop.py").write_text("pass\n")
        (src / "ticker.py").write_text(TICKER)
        subprocess.run([*RUNYARD, "init", str(work)], check=True, capture_output=True)
        env = {**os.environ, "RUNYARD_WORKSPACE": str(work / ".runyard")}
        run = [*RUNYARD, "run", "--source-dir", str(src), "-e", "bench", "noop.py"]
        subprocess.run(run, check=True, capture_output=True, env=env)  # warm the store and the stat cache
        subprocess.run(run, check=True, capture_output=True, env=env)
        noop, python = [], []
        for i in range(a.runs):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for o in order:
                if o == 0:
                    noop.append(timed(run, env))
                else:
                    python.append(timed([PY, "noop.py"], env, cwd=str(src)))

        # Log latency: a detached run, followed by `runyard logs -f` in another process.
        started = subprocess.run([*RUNYARD, "run", "--detach", "--source-dir", str(src), "-e", "bench",
                                  "ticker.py", str(a.lines)], check=True, capture_output=True, text=True, env=env)
        run_id = started.stdout.strip().splitlines()[-1]
        follower = subprocess.Popen([*RUNYARD, "logs", "-f", run_id], stdout=subprocess.PIPE, env=env)
        assert follower.stdout is not None
        lat = []
        for raw in follower.stdout:
            now = time.time()
            parts = raw.decode().split()
            if len(parts) == 3 and parts[0] == "tick":
                lat.append(now - float(parts[2]))
        follower.wait()
    finally:
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    m = {
        "run_noop": statistics.median(noop),
        "python_noop": statistics.median(python),
        "overhead": statistics.median(noop) - statistics.median(python),
        "log_latency_p50_ms": pct(lat, 50) * 1000 if lat else float("nan"),
        "log_latency_p99_ms": pct(lat, 99) * 1000 if lat else float("nan"),
        "log_lines": len(lat),
    }
    (out / "runs.json").write_text(json.dumps(m, indent=1))
    print("| what | measured | target |")
    print("|---|---|---|")
    print(f"| `runyard run noop.py` (T1-sized source, warm store) | {m['run_noop']:.3f} s | |")
    print(f"| `python noop.py` | {m['python_noop']:.3f} s | |")
    print(f"| overhead | {m['overhead']:.3f} s | <= 0.3 s |")
    print(f"| log latency p50 / p99 ({m['log_lines']} lines) | {m['log_latency_p50_ms']:.1f} / "
          f"{m['log_latency_p99_ms']:.1f} ms | p99 < 100 ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
