"""Snapshot benchmarks: runyard against Azure ML v1's own snapshot code, a
plain-Python reference snapshotter, git and cp, all measured in this run.

    python bench/bench_snapshot.py [--runs 5] [--shared ../shared/bench] [--out bench/.out]

Needs the reference scripts in ``--shared`` (make_trees.py, azml_snapshot.py,
ref_snapshot.py). Trees are generated into ``--out/trees`` once. Azure ML's
code runs from a venv with ``azureml-core`` (``$AZML_PYTHON``, else
``--out/peer-azureml``, made on first use). Every figure is the median of
``--runs`` whole-process runs (the ``sync`` before each cold run is not timed);
the ratios are what the targets are about, since this machine is noisy.
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
RUNYARD = [PY, "-m", "runyard.cli"]


def sh(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ensure_trees(shared: Path, out: Path) -> Path:
    trees = out / "trees"
    if not (trees / "T1.included.txt").exists():
        print("generating T1/T2 ...", flush=True)
        sh([PY, str(shared / "make_trees.py"), str(trees)])
    return trees


def ensure_azml(out: Path) -> str | None:
    py = os.environ.get("AZML_PYTHON") or str(out / "peer-azureml" / "bin" / "python")
    if Path(py).exists():
        return py
    print("making a venv with azureml-core (once) ...", flush=True)
    try:
        sh([sys.executable, "-m", "venv", str(out / "peer-azureml")])
        sh([str(out / "peer-azureml" / "bin" / "pip"), "install", "-q", "azureml-core"])
    except subprocess.CalledProcessError as exc:
        print(f"could not install azureml-core: {exc.stderr[-500:]}", file=sys.stderr)
        return None
    return py


def sync() -> None:
    os.sync()


def bench(args: argparse.Namespace) -> dict[str, float]:
    shared = Path(args.shared).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    trees = ensure_trees(shared, out)
    t1 = str(trees / "T1")
    azml = ensure_azml(out)
    env = {**os.environ}
    env.pop("RUNYARD_WORKSPACE", None)
    res: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        res.setdefault(key, []).append(v)

    work = Path(tempfile.mkdtemp(prefix="runyard-bench-", dir=out))
    try:
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", flush=True)
            # Cold: an empty store and no stat cache, for runyard and the reference.
            ws = work / f"ws{i}"
            sh([*RUNYARD, "init", str(ws)], env=env)
            wsp = str(ws / ".runyard")
            order = ["runyard", "azml", "ref"] if i % 2 == 0 else ["ref", "azml", "runyard"]
            for who in order:
                sync()
                if who == "runyard":
                    add("cold_create", timed([*RUNYARD, "--workspace", wsp, "snapshot", "create", t1], env))
                elif who == "azml" and azml:
                    add("azml_merkle", timed([azml, str(shared / "azml_snapshot.py"), t1, "merkle"]))
                elif who == "ref":
                    store = work / f"ref{i}"
                    add("ref_hash_store", timed([PY, str(shared / "ref_snapshot.py"), t1, "--algo", "blake3",
                                                 "--threads", "2", "--store", str(store)]))
                    shutil.rmtree(store, ignore_errors=True)
            add("ref_hash_only", timed([PY, str(shared / "ref_snapshot.py"), t1, "--algo", "blake3",
                                        "--threads", "2"]))
            # Warm: the same tree again, unchanged.
            add("warm_create", timed([*RUNYARD, "--workspace", wsp, "snapshot", "create", t1], env))
            add("python_noop", timed([PY, "-c", "pass"]))
            # Listing: never entering the ignored 215 MiB.
            add("ls", timed([*RUNYARD, "snapshot", "ls", t1], env))
            add("ref_walk", timed([PY, str(shared / "ref_snapshot.py"), t1, "--mode", "walk"]))
            add("git_ls_files", timed(["git", "-C", t1, "ls-files", "-o", "--exclude-standard"]))
            add("help", timed([*RUNYARD, "--help"], env))
            shutil.rmtree(ws, ignore_errors=True)
        # In-process warm snapshot of the unchanged tree.
        code = (
            "import sys, time, statistics\n"
            "from runyard.workspace import Workspace\n"
            f"ws = Workspace.create({str(work / 'inproc')!r})\n"
            f"ws.snapshot({t1!r})\n"
            "ts = []\n"
            "for _ in range(15):\n"
            "    t = time.perf_counter(); r = ws.snapshot(" + repr(t1) + "); ts.append(time.perf_counter() - t)\n"
            "    assert r.read_files == 0\n"
            "print(statistics.median(ts))\n"
        )
        res["warm_inprocess"] = [float(sh([PY, "-c", code], env=env).stdout.strip())]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {k: median(v) for k, v in res.items()}


def report(m: dict[str, float]) -> str:
    def r(a: str, b: str) -> str:
        return f"{m[a] / m[b]:.2f}x" if a in m and b in m and m[b] else "n/a"

    rows = [
        ("cold `snapshot create T1` (hash + store, empty store)", "cold_create", ""),
        ("  Azure ML v1 `create_merkletree` (hash only)", "azml_merkle", ""),
        ("  reference: `ref_snapshot.py` hash + store, 2 threads", "ref_hash_store", ""),
        ("  reference: `ref_snapshot.py` hash only", "ref_hash_only", ""),
        ("warm `snapshot create T1` (unchanged)", "warm_create", ""),
        ("  in-process, unchanged", "warm_inprocess", ""),
        ("  `python -c pass`", "python_noop", ""),
        ("`snapshot ls T1`", "ls", ""),
        ("  reference walk `ref_snapshot.py --mode walk`", "ref_walk", ""),
        ("  `git ls-files -o --exclude-standard`", "git_ls_files", ""),
        ("`runyard --help`", "help", ""),
    ]
    lines = ["| what | median (s) |", "|---|---|"]
    for label, key, _ in rows:
        if key in m:
            lines.append(f"| {label} | {m[key]:.3f} |")
    lines.append("")
    lines.append("| ratio | measured | target |")
    lines.append("|---|---|---|")
    lines.append(f"| cold create / Azure ML merkle | {r('cold_create', 'azml_merkle')} | <= 0.75x |")
    lines.append(f"| cold create / reference hash + store | {r('cold_create', 'ref_hash_store')} | (floor) |")
    lines.append(f"| warm create, whole process | {m.get('warm_create', 0):.3f} s | <= 0.15 s |")
    lines.append(f"| warm create, in-process | {m.get('warm_inprocess', 0) * 1000:.1f} ms | <= 25 ms |")
    lines.append(f"| `snapshot ls` / reference walk | {r('ls', 'ref_walk')} | <= 2x |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / ".out"))
    args = ap.parse_args()
    if not (Path(args.shared) / "make_trees.py").exists():
        print(f"no reference scripts in {args.shared}; pass --shared", file=sys.stderr)
        return 2
    m = bench(args)
    Path(args.out, "snapshot.json").write_text(json.dumps(m, indent=1))
    print(report(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
