"""Compute-target benchmarks, every reference measured in the same run:

- ``run.log()`` throughput from one script: through the run's channel (what a
  script in a run does), against a direct write per point into the run history
  (what it did before the channel), and against MLflow's ``log_metric`` into a
  local store (when a venv with mlflow is given: ``--mlflow /path/to/venv``);
  and how long the last point takes to be readable in the history;
- the sandbox: a no-op ``runyard run`` on a sandbox target against the same on
  ``local`` (whole process), and a CPU-bound script inside the sandbox against
  the same outside it (the script's own timing).

    python bench/bench_compute.py [--points 200000] [--runs 7] [--mlflow /tmp/peer-mlflow]

Needs root (the sandbox drops to nobody) and bubblewrap.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
RUNYARD = [PY, "-m", "runyard"]

LOGGER = """
import sys, time
import runyard
run = runyard.Run.get_context()
n = int(sys.argv[1])
t = time.perf_counter()
for i in range(n):
    run.log("loss", 0.5, step=i)
dt = time.perf_counter() - t
print(f"RATE {n / dt:.0f}", flush=True)
print(f"SENT {time.time():.6f}", flush=True)
"""

DIRECT = """
import os, sys, time
from runyard.history.migrations import migrate
from runyard.history.store import RunHistory
migrate(sys.argv[1])
history = RunHistory.open(sys.argv[1])
run = history.create_run("bench", status="Running")
n = int(sys.argv[2])
t = time.perf_counter()
for i in range(n):
    history.log_metrics(run.id, [("loss", 0.5, i)])
print(f"RATE {n / (time.perf_counter() - t):.0f}")
"""

MLFLOW = """
import os, sys, tempfile, time
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
import mlflow
store = tempfile.mkdtemp()
mlflow.set_tracking_uri("file://" + store)
mlflow.set_experiment("bench")
n = int(sys.argv[1])
with mlflow.start_run():
    t = time.perf_counter()
    for i in range(n):
        mlflow.log_metric("loss", 0.5, step=i)
    print(f"RATE {n / (time.perf_counter() - t):.0f}")
"""

CPU = """
import time
t = time.perf_counter()
x = 0
for i in range(30_000_000):
    x += i * i % 7
print(f"CPU {time.perf_counter() - t:.4f}")
"""


def rate(out: str) -> float:
    return float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("RATE")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--mlflow", help="a venv with mlflow installed (its log_metric is measured too)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-compute-"))
    work.chmod(0o755)
    src = work / "src"
    src.mkdir()
    (src / "logger.py").write_text(LOGGER)
    (src / "noop.py").write_text("pass\n")
    (src / "cpu.py").write_text(CPU)
    subprocess.run([*RUNYARD, "init", str(work)], check=True, capture_output=True)
    env = {**os.environ, "RUNYARD_WORKSPACE": str(work / ".runyard")}
    subprocess.run([*RUNYARD, "compute", "add", "box", "--kind", "sandbox"], check=True, env=env,
                   capture_output=True)
    results: dict[str, object] = {}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RUNYARD, "run", "--source-dir", str(src), "-e", "bench", *args], check=True,
                              capture_output=True, text=True, env=env)

    # run.log() through the channel, and how long until the last point is in the history.
    from runyard.workspace import Workspace

    ws = Workspace(str(work / ".runyard"))
    channel = []
    visible = []
    for _ in range(3):
        done = run("logger.py", str(a.points))
        channel.append(rate(done.stdout))
        run_id = done.stderr.split("runyard: run ")[1].split()[0]
        sent = float(next(ln.split()[1] for ln in done.stdout.splitlines() if ln.startswith("SENT")))
        record = ws.open_history().get_run(run_id)
        visible.append((record.ended or time.time()) - sent)
    direct_n = min(a.points, 20_000)
    direct = [rate(subprocess.run([PY, "-c", DIRECT, str(work / "direct.db"), str(direct_n)], check=True,
                                  capture_output=True, text=True).stdout) for _ in range(3)]
    results["log_channel_per_s"] = statistics.median(channel)
    results["log_direct_per_s"] = statistics.median(direct)
    results["log_all_in_history_after_s"] = statistics.median(visible)
    if a.mlflow:
        mlpy = os.path.join(a.mlflow, "bin", "python")
        ml = [rate(subprocess.run([mlpy, "-c", MLFLOW, str(min(a.points, 5000))], check=True, capture_output=True,
                                  text=True).stdout) for _ in range(3)]
        results["log_mlflow_per_s"] = statistics.median(ml)

    # The sandbox's cost per run, and on a CPU-bound script.
    for args in (("noop.py",), ("--compute", "box", "noop.py")):
        run(*args)  # warm
    local, boxed = [], []
    for i in range(a.runs):
        for target, into in ((("--compute", "local"), local), (("--compute", "box"), boxed))[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            run(*target, "noop.py")
            into.append(time.perf_counter() - t)
    results["noop_local_s"] = statistics.median(local)
    results["noop_sandbox_s"] = statistics.median(boxed)
    # Of that, what the interpreter the sandbox uses costs to start against runyard's own, both
    # outside any sandbox (where runyard's Python is out of the sandbox user's reach, the sandbox
    # runs the system's Python of the same version through a small venv in the workspace's cache).
    from runyard.agent.sandbox import python_for_sandbox

    boxed_python, _, pythonpath = python_for_sandbox(str(work / ".runyard" / "cache"))

    def startup(python: str) -> float:
        times = []
        for _ in range(15):
            t = time.perf_counter()
            subprocess.run([python, "-c", "pass"], check=True,
                           env={**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})})
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    results["startup_sandbox_python_minus_own_s"] = startup(boxed_python) - startup(PY)
    cpu_local, cpu_box = [], []
    for i in range(5):
        pairs = ((("--compute", "local"), cpu_local), (("--compute", "box"), cpu_box))
        for target, into in pairs[:: 1 if i % 2 else -1]:
            # The same interpreter on both sides (a sandbox may use the system's Python).
            out = run(*target, "--command", f"{boxed_python} cpu.py").stdout
            into.append(float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("CPU"))))
    results["cpu_local_s"] = statistics.median(cpu_local)
    results["cpu_sandbox_s"] = statistics.median(cpu_box)
    subprocess.run([*RUNYARD, "gc"], env=env, capture_output=True)
    subprocess.run(["rm", "-rf", str(work)], check=False)

    print(json.dumps(results, indent=1))
    print("| what | measured |")
    print("|---|---|")
    print(f"| `run.log()` through the channel, one script | {results['log_channel_per_s']:,.0f} points/s |")
    print(f"| a direct history write per point (before the channel) | {results['log_direct_per_s']:,.0f} points/s "
          f"({float(results['log_channel_per_s']) / float(results['log_direct_per_s']):.0f}x) |")  # type: ignore[arg-type]
    if "log_mlflow_per_s" in results:
        print(f"| MLflow `log_metric` into a local file store | {results['log_mlflow_per_s']:,.0f} points/s |")
    print(f"| the last of {a.points:,} points in the history, after it was logged | "
          f"{results['log_all_in_history_after_s']:.2f} s |")
    print(f"| no-op run, local / sandbox | {results['noop_local_s']:.3f} s / {results['noop_sandbox_s']:.3f} s "
          f"(+{(float(results['noop_sandbox_s']) - float(results['noop_local_s'])) * 1000:.0f} ms) |")  # type: ignore[arg-type]
    print(f"| of which: the sandbox's Python ({boxed_python}) starting, against runyard's own, outside the sandbox | "
          f"{float(results['startup_sandbox_python_minus_own_s']) * 1000:+.0f} ms |")  # type: ignore[arg-type]
    inside, outside = float(results["cpu_sandbox_s"]), float(results["cpu_local_s"])  # type: ignore[arg-type]
    print(f"| CPU-bound script, outside / inside the sandbox | {outside:.3f} s / {inside:.3f} s "
          f"({inside / outside:.3f}x) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
