"""Run-agent benchmarks: making a working directory from a snapshot, and
syncing ./outputs into the store, each against ``cp -r`` measured in this run.

    python bench/bench_workdir.py [--runs 5] [--shared ../shared/bench] [--out bench/.out]

1. T1 (1,990 included files, 291 MiB) is snapshotted into a temporary
   workspace; then ``materialize`` with the overlay (hardlinks + mount) and
   with the copy fallback, against ``cp -r`` of T1's included files (the
   paths in T1.included.txt) into a fresh folder. Target: overlay <= 0.25x cp.
   Also the overlay with ``verify=True`` (every blob hashed first).
2. ``OutputsSync(store, T2).scan(final=True)``: T2's 20,000 small files
   (under ``T2/outputs``) into an empty local store, against ``cp -r T2``.
   Target: <= 3x cp. A second, unchanged scan shows the stat cache.

Every figure is the median of ``--runs`` whole operations, timed in this
process (``cp`` as a child process). Before each: the files the contender
reads are read once (untimed, so every contender runs with a warm page
cache: this VM reclaims cache proactively) and ``os.sync()`` (untimed).
Contenders alternate within each run so drifting load hits all of them;
copies are deleted only at the end (deleting is slow on this disk and
would land in the next timing). Overlay runs are unmounted and removed
right away (that cleanup is timed too, separately). Needs root for the
overlay; without it the overlay rows are skipped.
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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def ensure_trees(shared: Path, out: Path) -> Path:
    trees = out / "trees"
    if not (trees / "T1.included.txt").exists() or not (trees / "T2").is_dir():
        print("generating T1/T2 ...", flush=True)
        subprocess.run([PY, str(shared / "make_trees.py"), str(trees)], check=True, capture_output=True)
    return trees


def warm(paths: Iterable[str]) -> None:
    """Read every file once so the timed run finds it in the page cache."""
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.read(8 << 20):
                pass


def files_under(root: str) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]


@contextmanager
def timed(res: dict[str, list[float]], key: str) -> Iterator[None]:
    """Time the block into ``res[key]``; ``os.sync()`` first, untimed."""
    os.sync()
    t = time.perf_counter()
    yield
    res.setdefault(key, []).append(time.perf_counter() - t)


def cp(args: list[str], cwd: str | None = None) -> None:
    subprocess.run(["cp", *args], check=True, cwd=cwd)


def bench_workdir(trees: Path, work: Path, runs: int, res: dict[str, list[float]]) -> None:
    from runyard.agent.workdir import materialize, overlay_available
    from runyard.workspace import Workspace

    t1 = str(trees / "T1")
    included = [p for p in (trees / "T1.included.txt").read_text().splitlines() if p]
    t1_files = [os.path.join(t1, p) for p in included]
    ws = Workspace.create(work / "ws")
    snap = ws.snapshot(t1)
    store = ws.open_store()
    blob_files = files_under(os.path.join(ws.path, "store", "blobs"))
    has_overlay = overlay_available(work)
    if not has_overlay:
        print("overlayfs not available (not root?): overlay rows skipped", flush=True)

    for i in range(runs):
        print(f"workdir run {i + 1}/{runs}", flush=True)
        order = ["overlay", "verify", "copy", "cp"] if i % 2 == 0 else ["cp", "copy", "verify", "overlay"]
        for who in order:
            if who == "overlay" and has_overlay:
                with timed(res, "overlay"):
                    wd = materialize(store, snap.id, str(work / f"ov{i}"), method="overlay")
                with timed(res, "overlay_cleanup"):
                    wd.cleanup()
            elif who == "verify" and has_overlay:
                warm(blob_files)
                with timed(res, "overlay_verify"):
                    wd = materialize(store, snap.id, str(work / f"ovv{i}"), method="overlay", verify=True)
                wd.cleanup()
            elif who == "copy":
                warm(blob_files)
                with timed(res, "copy"):
                    materialize(store, snap.id, str(work / f"cp-fallback{i}"), method="copy")
            elif who == "cp":
                dest = work / f"cpr{i}"
                dest.mkdir()
                warm(t1_files)
                with timed(res, "cp_t1"):  # exactly the included paths, parents made as needed
                    cp(["-r", "--parents", *included, str(dest)], t1)
    # One number the report explains: mount(2) through ctypes against the mount(8) command.
    if has_overlay:
        res.update(mount_costs(work))


def mount_costs(work: Path) -> dict[str, list[float]]:
    from runyard.agent import workdir as w

    base = work / "mount-probe"
    parts = [base / p for p in ("l", "u", "w", "m")]
    for p in parts:
        p.mkdir(parents=True)
    out: dict[str, list[float]] = {"mount_ctypes": [], "mount_command": []}
    opts = f"lowerdir={parts[0]},upperdir={parts[1]},workdir={parts[2]},{w._OVERLAY_OPTIONS}"
    for _ in range(7):
        t = time.perf_counter()
        w._mount_overlay(str(parts[0]), str(parts[1]), str(parts[2]), str(parts[3]))
        out["mount_ctypes"].append(time.perf_counter() - t)
        w._umount(str(parts[3]))
        t = time.perf_counter()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(parts[3])], check=True)
        out["mount_command"].append(time.perf_counter() - t)
        w._umount(str(parts[3]))
    return out


def bench_outputs(trees: Path, work: Path, runs: int, res: dict[str, list[float]]) -> None:
    from runyard.agent.artifacts import OutputsSync
    from runyard.store.local import LocalStore

    t2 = str(trees / "T2")
    t2_files = files_under(t2)
    for i in range(runs):
        print(f"outputs run {i + 1}/{runs}", flush=True)
        order = ["sync", "cp"] if i % 2 == 0 else ["cp", "sync"]
        for who in order:
            warm(t2_files)
            if who == "sync":
                sync = OutputsSync(LocalStore.open(str(work / f"store{i}")), t2)
                with timed(res, "outputs_sync"):
                    records = sync.scan(final=True)
                assert len(records) == 20000 and not sync.issues, (len(records), sync.issues[:3])
                with timed(res, "outputs_rescan"):
                    again = sync.scan(final=True)
                assert again == [] and sync.read_files == 20000
            else:
                with timed(res, "cp_t2"):
                    cp(["-r", t2, str(work / f"t2copy{i}")])


def report(m: dict[str, float]) -> str:
    def r(a: str, b: str) -> str:
        return f"{m[a] / m[b]:.3f}x" if a in m and b in m and m[b] else "n/a"

    rows = [
        ("`materialize` T1, overlay (hardlinks + mount)", "overlay"),
        ("  its `cleanup()` (unmount + remove)", "overlay_cleanup"),
        ("`materialize` T1, overlay with `verify=True` (hashes every blob)", "overlay_verify"),
        ("`materialize` T1, copy fallback (verified restore)", "copy"),
        ("`cp -r` of T1's included files", "cp_t1"),
        ("`OutputsSync(T2).scan(final=True)`, empty store", "outputs_sync"),
        ("  the same again, unchanged (stat cache)", "outputs_rescan"),
        ("`cp -r T2`", "cp_t2"),
        ("overlay mount(2) via ctypes", "mount_ctypes"),
        ("overlay mount via the `mount` command", "mount_command"),
    ]
    lines = ["| what | median (s) |", "|---|---|"]
    for label, key in rows:
        if key in m:
            lines.append(f"| {label} | {m[key]:.4f} |")
    lines += ["", "| ratio | measured | target |", "|---|---|---|",
              f"| overlay / cp -r T1 | {r('overlay', 'cp_t1')} | <= 0.25x |",
              f"| overlay verify=True / cp -r T1 | {r('overlay_verify', 'cp_t1')} | (option) |",
              f"| copy fallback / cp -r T1 | {r('copy', 'cp_t1')} | (reference) |",
              f"| outputs sync T2 / cp -r T2 | {r('outputs_sync', 'cp_t2')} | <= 3x |"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / ".out"))
    ap.add_argument("--only", choices=["workdir", "outputs"], default=None)
    args = ap.parse_args()
    shared, out = Path(args.shared).resolve(), Path(args.out).resolve()
    if not (shared / "make_trees.py").exists():
        print(f"no reference scripts in {shared}; pass --shared", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    trees = ensure_trees(shared, out)
    res: dict[str, list[float]] = {}
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-workdir-", dir=out))
    try:
        if args.only in (None, "workdir"):
            bench_workdir(trees, work, args.runs, res)
        if args.only in (None, "outputs"):
            bench_outputs(trees, work, args.runs, res)
    finally:
        from runyard.agent.workdir import cleanup_stale

        for d in work.iterdir():
            if d.name.startswith(("ov", "cp-fallback", "mount-probe")):
                cleanup_stale(d)  # unmounts whatever an interrupted run left
        shutil.rmtree(work, ignore_errors=True)
    m = {k: statistics.median(v) for k, v in res.items()}
    Path(out, "workdir.json").write_text(json.dumps({"median": m, "all": res}, indent=1))
    print(report(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
