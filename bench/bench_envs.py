"""Environment benchmarks, every reference measured in the same run:

- a no-op ``runyard run`` in a cached environment against the same run without
  one (whole process, alternating);
- building an environment (runyard's ``ensure`` into an empty cache) against
  ``uv venv`` + ``uv pip install -r`` of the same requirements from the same
  index, alternating, both with uv's own download cache warm (what is measured
  is what runyard adds to uv), and with uv's cache empty too (every package
  fetched: the network's variance is in it);
- two processes asking for the same new environment at once: how many builds.

    python bench/bench_envs.py [--runs 9] [--builds 5] [--requirements FILE]

The requirements default to a few common packages from whatever index uv is
configured for here (PyPI by default).
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

PY = sys.executable
RUNYARD = [PY, "-m", "runyard"]
DEFAULT_REQUIREMENTS = "requests==2.32.3\nrich==13.9.4\npyyaml==6.0.2\nnumpy==2.1.3\n"
RACE = """
import sys
from runyard.environments.build import ensure
from runyard.environments.spec import EnvSpec
ensure(sys.argv[1], EnvSpec.from_pip_requirements("race", sys.argv[2]),
       progress=lambda line: print(line, flush=True))
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--builds", type=int, default=5)
    ap.add_argument("--requirements", help="a requirements file (default: a few common packages)")
    a = ap.parse_args()
    from uv import find_uv_bin

    from runyard.environments.build import ensure, uv_environ
    from runyard.environments.spec import EnvSpec

    uv = str(find_uv_bin())
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-envs-"))
    req = work / "requirements.txt"
    req.write_text(Path(a.requirements).read_text() if a.requirements else DEFAULT_REQUIREMENTS)
    src = work / "src"
    src.mkdir()
    (src / "noop.py").write_text("pass\n")
    subprocess.run([*RUNYARD, "init", str(work)], check=True, capture_output=True)
    env = {**os.environ, "RUNYARD_WORKSPACE": str(work / ".runyard")}
    results: dict[str, object] = {"requirements": req.read_text().split()}

    # A run in a cached environment against a run without one.
    run = [*RUNYARD, "run", "--source-dir", str(src), "-e", "bench"]
    subprocess.run([*run, "--env", str(req), "noop.py"], check=True, capture_output=True, env=env)  # builds it
    subprocess.run([*run, "noop.py"], check=True, capture_output=True, env=env)
    plain, cached = [], []
    for i in range(a.runs):
        pairs = (([*run, "noop.py"], plain), ([*run, "--env", str(req), "noop.py"], cached))
        for argv, into in pairs[:: 1 if i % 2 else -1]:
            into.append(timed(argv, env))
    results["run_plain_s"] = statistics.median(plain)
    results["run_cached_env_s"] = statistics.median(cached)

    # Building: runyard's build against uv venv + uv pip install -r, uv's cache warm for both.
    spec = EnvSpec.from_pip_requirements("bench", str(req))
    same = uv_environ()  # uv as runyard runs it: the same index settings (pip's passed on), no Python downloads
    ours, theirs = [], []
    for i in range(a.builds):
        def runyard_build(i: int = i) -> float:
            cache = work / f"cache-{i}"
            t = time.perf_counter()
            ensure(str(cache), spec)
            took = time.perf_counter() - t
            shutil.rmtree(cache)
            return took

        def uv_build(i: int = i) -> float:
            venv = work / f"venv-{i}"
            t = time.perf_counter()
            subprocess.run([uv, "venv", "-q", "--python", os.path.realpath(sys.executable), str(venv)], check=True,
                           env=same)
            subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r", str(req)],
                           check=True, env=same)
            took = time.perf_counter() - t
            shutil.rmtree(venv)
            return took

        for fn, into in (((runyard_build, ours), (uv_build, theirs)))[:: 1 if i % 2 else -1]:
            into.append(fn())
    results["build_runyard_warm_s"] = statistics.median(ours)
    results["build_uv_warm_s"] = statistics.median(theirs)

    # With uv's download cache empty as well (every package fetched from the index), alternating.
    cold_ours, cold_theirs = [], []
    for i in range(3):
        def runyard_cold(i: int = i) -> float:
            os.environ["UV_CACHE_DIR"] = str(work / f"uv-cache-r{i}")
            try:
                t = time.perf_counter()
                ensure(str(work / f"cache-cold-{i}"), spec)
                return time.perf_counter() - t
            finally:
                del os.environ["UV_CACHE_DIR"]

        def uv_cold(i: int = i) -> float:
            cache_env = {**same, "UV_CACHE_DIR": str(work / f"uv-cache-u{i}")}
            venv = work / f"venv-cold-{i}"
            t = time.perf_counter()
            subprocess.run([uv, "venv", "-q", "--python", os.path.realpath(sys.executable), str(venv)], check=True,
                           env=cache_env)
            subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r", str(req)],
                           check=True, env=cache_env)
            return time.perf_counter() - t

        for fn, into in (((runyard_cold, cold_ours), (uv_cold, cold_theirs)))[:: 1 if i % 2 else -1]:
            into.append(fn())
    cold = {"runyard": statistics.median(cold_ours), "uv": statistics.median(cold_theirs)}
    results["build_runyard_cold_s"], results["build_uv_cold_s"] = cold["runyard"], cold["uv"]

    # Two at once: one build.
    race_cache = work / "cache-race"
    procs = [subprocess.Popen([PY, "-c", RACE, str(race_cache), str(req)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    results["concurrent_builds"] = sum(o.count("building environment") for o in outs)

    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    print("| what | measured |")
    print("|---|---|")
    plain_s, cached_s = float(results["run_plain_s"]), float(results["run_cached_env_s"])  # type: ignore[arg-type]
    print(f"| no-op run, no environment / a cached environment | {plain_s:.3f} s / {cached_s:.3f} s "
          f"({(cached_s - plain_s) * 1000:+.0f} ms) |")
    ours_s, uv_s = float(results["build_runyard_warm_s"]), float(results["build_uv_warm_s"])  # type: ignore[arg-type]
    print(f"| build, uv's cache warm: runyard / uv venv + uv pip install -r | {ours_s:.2f} s / {uv_s:.2f} s "
          f"({ours_s / uv_s:.2f}x) |")
    cr, cu = cold["runyard"], cold["uv"]
    print(f"| build, uv's cache empty too: runyard / uv | {cr:.2f} s / {cu:.2f} s ({cr / cu:.2f}x) |")
    print(f"| two processes asking for the same new environment at once | {results['concurrent_builds']} build |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
