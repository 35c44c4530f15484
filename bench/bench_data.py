"""Datastore transfer benchmarks: runyard's parallel upload and download of
T2 (20,000 files of 1-8 KB, 88 MiB) to and from real local servers (Azurite
for Azure Blob, a moto server for S3), against references measured in this
run on the same servers:

- ``aws s3 sync T2 s3://BUCKET/PREFIX`` and back (moto only; the AWS CLI from
  this venv, its default 10 concurrent requests, ``--only-show-errors``);
- a sequential loop of ``ds.fs.put_file`` (then ``get_file``) through the same
  fsspec filesystem runyard uses.

    python bench/bench_data.py [--repeat 3] [--sample N] [--quick] [--backends az,s3]
                               [--concurrency 8,16,32,64] [--sweep-backends s3]
                               [--shared ../shared/bench] [--out bench/.out]

Targets: runyard's throughput >= ``aws s3 sync``'s; >= 5x the sequential put.
Also one upload per ``RUNYARD_TRANSFER_CONCURRENCY`` in ``--concurrency``, to
the servers in ``--sweep-backends``, to pick the default.

Every measurement goes into a fresh container or bucket, deleted afterwards
(untimed): Azurite's cost per request grows with the number of blobs it holds,
so no contender may run against a fuller server than another. Contenders
alternate their order from one repeat to the next. runyard is timed in this
process (``Datastore.upload``/``download``, its filesystem already connected
by the registration's check); ``aws`` is a whole process, so its fixed cost
(start-up, one request) is measured too. Client CPU (this process, or the
``aws`` child) and server CPU (from /proc) are recorded per file.

``--sample N`` times the sequential reference on a uniform sample of N files
(every k-th) instead of all of them, with the server in the state a full
sequential run would meet on average: before the timed puts, half of the other
files are put (untimed, in parallel), and the rest before the timed gets, so
the gets, like runyard's download, meet a full container. Its throughput is
that of the sample; the report says so and gives the time scaled to all files.

Every runyard download, ``aws`` download and sequential get is checked: file
count, total bytes, each size, no leftover ``.part`` file, and the SHA-256 of
a few files. ``--quick`` uses a uniform 2,000-file subset of T2 and one repeat
(a smoke test). Servers are started on free ports with tests/services.py and
stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
AWS = str(Path(sys.executable).parent / "aws")
MiB = 1 << 20
ENV_CONC = "RUNYARD_TRANSFER_CONCURRENCY"

sys.path.insert(0, str(ROOT / "tests"))
import services as svc  # noqa: E402  (tests/services.py: Azurite, moto, free ports, process cleanup)

Files = list[tuple[str, str, int]]
"""(absolute path, relative POSIX path, size) of every file of a tree."""


def ensure_trees(shared: Path, out: Path) -> Path:
    trees = out / "trees"
    if not (trees / "T2").is_dir() or not (trees / "T1.included.txt").exists():
        print("generating T1/T2 ...", flush=True)
        subprocess.run([PY, str(shared / "make_trees.py"), str(trees)], check=True, capture_output=True)
    return trees


def tree_files(root: Path) -> Files:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            out.append((p, os.path.relpath(p, root).replace(os.sep, "/"), os.path.getsize(p)))
    return out


def uniform(files: Files, n: int) -> Files:
    """n files spread evenly over the sorted list (every k-th)."""
    if n <= 0 or n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def subset_tree(files: Files, dest: Path) -> Path:
    """A folder of hardlinks to ``files`` (same relative paths)."""
    for p, rel, _ in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(p, target)
    return dest


def warm(files: Files) -> None:
    for p, _, _ in files:
        with open(p, "rb") as fh:
            fh.read()


def sha(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def verify(files: Files, dest: Path, who: str) -> None:
    """dest holds exactly ``files`` (relative paths, sizes), no .part file, and a few hash alike."""
    got = tree_files(dest)
    want = {rel: size for _, rel, size in files}
    have = {rel: size for _, rel, size in got}
    problems = []
    if len(have) != len(want):
        problems.append(f"{len(have)} files, expected {len(want)}")
    if sum(have.values()) != sum(want.values()):
        problems.append(f"{sum(have.values())} bytes, expected {sum(want.values())}")
    parts = [r for r in have if r.endswith(".part")]
    if parts:
        problems.append(f"leftover partial files, e.g. {parts[0]}")
    wrong = [r for r in want if have.get(r) != want[r]]
    if wrong:
        problems.append(f"{len(wrong)} files missing or of the wrong size, e.g. {wrong[0]}")
    for p, rel, _ in uniform(files, 8):
        if rel in have and sha(p) != sha(str(dest / rel)):
            problems.append(f"{rel} differs from the source")
    if problems:
        raise SystemExit(f"{who}: the download is wrong: {'; '.join(problems)}")


def own_cpu() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds of another process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- servers and datastores --------------------------------------------------
@contextlib.contextmanager
def azurite(base: Path) -> Iterator[svc.Azurite]:
    if not svc.AZURITE_BIN.exists():
        raise SystemExit(f"Azurite is not installed ({svc.AZURITE_BIN}): run ./dev test once")

    def argv(port: int, tmp: Path) -> list[str]:
        (tmp / "data").mkdir(exist_ok=True)
        return [str(svc.AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                str(tmp / "data"), "--skipApiVersionCheck", "--loose", "--silent"]

    with svc._serve("azurite", argv, base) as (port, tmp):
        yield svc.Azurite(host="127.0.0.1", port=port, log_path=tmp / "azurite.log")


@contextlib.contextmanager
def moto(base: Path) -> Iterator[svc.MotoS3]:
    if not svc.MOTO_SERVER.exists():
        raise SystemExit(f"moto_server is not installed ({svc.MOTO_SERVER}): run ./dev test once")

    def argv(port: int, tmp: Path) -> list[str]:
        return [str(svc.MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)]

    with svc._serve("moto", argv, base) as (port, tmp):
        yield svc.MotoS3(host="127.0.0.1", port=port, log_path=tmp / "moto.log")


class Backend:
    """A server and a way to put a datastore named ``name`` on a fresh container or bucket."""

    def __init__(self, name: str, server: Any, ws: Any) -> None:
        self.name = name
        self.server = server
        self.ws = ws
        self.root = ""
        port = str(server.port)
        self.pid = next((p.pid for p in svc._running.values() if port in map(str, p.args)), 0)

    def timed(self, fn: Callable[[], object], files: int, nbytes: int) -> Sample:
        """Run fn; (wall seconds, files, bytes, client CPU s, server CPU s)."""
        c, sv, t = own_cpu(), proc_cpu(self.pid), time.perf_counter()
        fn()
        wall = time.perf_counter() - t
        return wall, files, nbytes, own_cpu() - c, proc_cpu(self.pid) - sv

    def fresh(self, tag: str) -> Any:
        from runyard.data.datastore import Datastore

        if self.name == "az":
            self.root = self.server.new_container(f"bench-{tag}")
            return Datastore.register_azure_blob_container(
                self.ws, "az", self.root, svc.AZURITE_ACCOUNT, account_key=svc.AZURITE_KEY,
                endpoint=self.server.blob_endpoint, overwrite=True)
        self.root = self.server.new_bucket(f"bench-{tag}")
        return Datastore.register_s3(self.ws, "s3", self.root, "testing", "testing",
                                     endpoint_url=self.server.endpoint_url, region="us-east-1", overwrite=True)

    def drop(self) -> None:
        """Delete the current container or bucket and everything in it (untimed)."""
        if self.name == "az":
            from azure.storage.blob import BlobServiceClient

            with BlobServiceClient.from_connection_string(self.server.connection_string) as client:
                client.delete_container(self.root)
        else:
            s3 = self.server.client()
            try:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.root)
                for page in pages:
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        s3.delete_objects(Bucket=self.root, Delete={"Objects": keys, "Quiet": True})
                s3.delete_bucket(Bucket=self.root)
            finally:
                s3.close()


def aws_env(server: svc.MotoS3, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION=server.region, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(scratch / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(scratch / "no-aws-credentials"))
    return env


def aws(args: list[str], server: svc.MotoS3, env: dict[str, str]) -> None:
    quiet = ["--only-show-errors"] if args[:2] == ["s3", "sync"] else []
    subprocess.run([AWS, *args, "--endpoint-url", server.endpoint_url, *quiet], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)


# -- the benchmark -------------------------------------------------------------
Sample = tuple[float, int, int, float, float]
"""(wall seconds, files, bytes, client CPU seconds, server CPU seconds) of one timed transfer."""


def put_untimed(fs: Any, pairs: list[tuple[str, str]]) -> None:
    for k in range(0, len(pairs), 1000):
        chunk = pairs[k:k + 1000]
        fs.put([lp for lp, _ in chunk], [r for _, r in chunk], batch_size=32)


def bench_backend(be: Backend, src: Path, files: Files, seq_files: Files, a: argparse.Namespace, work: Path,
                  res: dict[str, list[Sample]], save: Callable[[], None]) -> None:
    nfiles, nbytes = len(files), sum(s for _, _, s in files)
    seq_bytes = sum(s for _, _, s in seq_files)
    sampled = {rel for _, rel, _ in seq_files} if len(seq_files) < nfiles else set()
    others = [f for f in files if f[1] not in sampled] if sampled else []

    def add(key: str, sample: Sample) -> None:
        res.setdefault(key, []).append(sample)
        save()
        secs, n, b, ccpu, scpu = sample
        per = f"  CPU/file client {ccpu / n * 1000:5.2f} ms, server {scpu / n * 1000:5.2f} ms" if n else ""
        print(f"  {be.name} {key:<16} {secs:8.2f} s" + (f"  {n / secs:6.0f} files/s  {b / MiB / secs:6.2f} MiB/s"
                                                      if n else "") + per, flush=True)

    def runyard(i: int) -> None:
        ds = be.fresh(f"ry{i}")
        add("runyard_up", be.timed(lambda: ds.upload(str(src), f"t2-{i}", show_progress=False), nfiles, nbytes))
        dest = work / f"{be.name}-runyard-{i}"
        dest.mkdir()
        add("runyard_down", be.timed(lambda: ds.download(str(dest), f"t2-{i}", show_progress=False), nfiles, nbytes))
        verify(files, dest, f"runyard download from {be.name}")
        be.drop()

    def awscli(i: int) -> None:
        be.fresh(f"aws{i}")
        env = aws_env(be.server, work)
        url = f"s3://{be.root}/t2-{i}"
        add("aws_up", be.timed(lambda: aws(["s3", "sync", str(src), url], be.server, env), nfiles, nbytes))
        dest = work / f"{be.name}-aws-{i}"
        add("aws_down", be.timed(lambda: aws(["s3", "sync", url, str(dest)], be.server, env), nfiles, nbytes))
        verify(files, dest, "aws s3 sync download")
        # The CLI's fixed cost: start-up, credentials, one request.
        add("aws_fixed", be.timed(lambda: aws(["s3api", "head-bucket", "--bucket", be.root], be.server, env), 0, 0))
        be.drop()

    def sequential(i: int) -> None:
        ds = be.fresh(f"seq{i}")
        fs = ds.fs
        remote = [(p, ds.full_path(f"t2-{i}/{rel}")) for p, rel, _ in seq_files]
        rest = [(p, ds.full_path(f"t2-{i}/{rel}")) for p, rel, _ in others]
        put_untimed(fs, rest[0::2])  # a sample's puts meet the server half full, as a full run's do on average

        def put() -> None:
            for local, r in remote:
                fs.put_file(local, r)

        add("seq_put", be.timed(put, len(seq_files), seq_bytes))
        put_untimed(fs, rest[1::2])  # the gets meet a full container, as runyard's download does
        dest = work / f"{be.name}-seq-{i}"

        def get() -> None:
            for (_, r), (_, rel, _) in zip(remote, seq_files, strict=True):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(r, str(target))

        add("seq_get", be.timed(get, len(seq_files), seq_bytes))
        verify(seq_files, dest, f"sequential get from {be.name}")
        be.drop()

    contenders = [runyard, *([awscli] if be.name == "s3" else []), sequential]
    for i in range(a.repeat):
        print(f"{be.name}: repeat {i + 1}/{a.repeat}", flush=True)
        for fn in contenders if i % 2 == 0 else contenders[::-1]:
            fn(i)

    if a.concurrency and be.name in a.sweep_backends:
        print(f"{be.name}: {ENV_CONC} sweep (one upload each)", flush=True)
        before = os.environ.get(ENV_CONC)
        try:
            for c in a.concurrency:
                os.environ[ENV_CONC] = str(c)
                ds = be.fresh(f"c{c}")
                add(f"runyard_up_c{c}", be.timed(lambda ds=ds: ds.upload(str(src), "t2", show_progress=False),
                                                 nfiles, nbytes))
                be.drop()
        finally:
            if before is None:
                os.environ.pop(ENV_CONC, None)
            else:
                os.environ[ENV_CONC] = before


# -- the report ----------------------------------------------------------------
def summarize(res: dict[str, dict[str, list[Sample]]]) -> dict[str, Any]:
    """Per server and measurement: median and min seconds, files, bytes, throughputs (at the median and the
    best run) and median CPU milliseconds per file of the client and the server."""
    out: dict[str, Any] = {}
    for be, metrics in res.items():
        for key, samples in metrics.items():
            secs = [x[0] for x in samples]
            med, n, b = statistics.median(secs), samples[0][1], samples[0][2]
            out.setdefault(be, {})[key] = {
                "median_s": med, "min_s": min(secs), "all_s": secs, "files": n, "bytes": b,
                "files_per_s": n / med if n else None, "mib_per_s": b / MiB / med if n else None,
                "best_files_per_s": n / min(secs) if n else None,
                "client_cpu_ms_per_file": statistics.median(x[3] for x in samples) / n * 1000 if n else None,
                "server_cpu_ms_per_file": statistics.median(x[4] for x in samples) / n * 1000 if n else None}
    return out


LABELS = {
    "runyard_up": "runyard upload (`Datastore.upload`)",
    "runyard_down": "runyard download (`Datastore.download`)",
    "aws_up": "`aws s3 sync DIR s3://...` (upload)",
    "aws_down": "`aws s3 sync s3://... DIR` (download)",
    "aws_fixed": "`aws s3api head-bucket` (the CLI's fixed cost: start-up and one request)",
    "seq_put": "sequential `fs.put_file` loop",
    "seq_get": "sequential `fs.get_file` loop",
}
SERVER = {"az": "Azurite", "s3": "moto S3"}


def report(m: dict[str, Any], total_files: int) -> str:
    lines = ["| server | what | files | median s | min s | files/s | MiB/s | CPU ms/file: client, server |",
             "|---|---|---|---|---|---|---|---|"]
    for be, rows in m.items():
        for key, r in rows.items():
            label = LABELS.get(key) or f"runyard upload, {ENV_CONC}={key.rsplit('_c', 1)[1]} (once)"
            n = r["files"]
            if not n:
                lines.append(f"| {SERVER[be]} | {label} | | {r['median_s']:.2f} | {r['min_s']:.2f} | | | |")
                continue
            files = f"{n:,}"
            if n < total_files:
                files += f" (sample; all {total_files:,}: ~{total_files / r['files_per_s']:.0f} s)"
            lines.append(f"| {SERVER[be]} | {label} | {files} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                         f"{r['files_per_s']:,.0f} | {r['mib_per_s']:.2f} | "
                         f"{r['client_cpu_ms_per_file']:.2f}, {r['server_cpu_ms_per_file']:.2f} |")
    lines += ["", "Ratios of throughput (files/s; bytes/s gives the same ratio): median against median, and "
              "best against best.", "",
              "| server | ratio | median | best | target | |", "|---|---|---|---|---|---|"]

    def ratio(be: str, a: str, b: str, label: str, target: float | None) -> None:
        rows = m.get(be, {})
        if a not in rows or b not in rows:
            return
        med = rows[a]["files_per_s"] / rows[b]["files_per_s"]
        best = rows[a]["best_files_per_s"] / rows[b]["best_files_per_s"]
        verdict = "" if target is None else ("met" if med >= target else "**not met**")
        lines.append(f"| {SERVER[be]} | {label} | {med:.2f}x | {best:.2f}x | "
                     f"{'' if target is None else f'>= {target:g}'} | {verdict} |")

    for be in m:
        ratio(be, "runyard_up", "aws_up", "runyard upload / `aws s3 sync` upload", 1.0)
        ratio(be, "runyard_down", "aws_down", "runyard download / `aws s3 sync` download", 1.0)
        ratio(be, "runyard_up", "seq_put", "runyard upload / sequential put", 5.0)
        ratio(be, "runyard_down", "seq_get", "runyard download / sequential get", None)
    # Neither server uses more than one core (Azurite is one Node.js thread, moto one Python process under
    # its GIL), and client and server share this machine's cores: the most any client could reach here.
    cores = os.cpu_count() or 1
    lines += ["", "Bounds: the server's own CPU per file on one core, and client + server CPU per file on "
              f"{cores} cores, from runyard's runs.", "",
              "| server | transfer | CPU ms/file: client, server | bound | runyard | of bound | bound / sequential |",
              "|---|---|---|---|---|---|---|"]
    for be, rows in m.items():
        for what, key, seq in (("upload", "runyard_up", "seq_put"), ("download", "runyard_down", "seq_get")):
            r = rows.get(key)
            if not r or not r["client_cpu_ms_per_file"] or not r["server_cpu_ms_per_file"]:
                continue
            c, sv = r["client_cpu_ms_per_file"], r["server_cpu_ms_per_file"]
            bound = min(1000 / sv, cores * 1000 / (c + sv))
            vs = f"{bound / rows[seq]['files_per_s']:.2f}x" if seq in rows else ""
            lines.append(f"| {SERVER[be]} | {what} | {c:.2f}, {sv:.2f} | {bound:,.0f} files/s | "
                         f"{r['files_per_s']:,.0f} files/s | {r['files_per_s'] / bound:.0%} | {vs} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed runs of each measurement (default 3; 1 with --quick)")
    ap.add_argument("--sample", type=int, default=0,
                    help="time the sequential reference on a uniform sample of N files (default: every file)")
    ap.add_argument("--quick", action="store_true", help="a 2,000-file subset of T2, one repeat: a smoke test")
    ap.add_argument("--backends", default="az,s3", help="comma-separated: az (Azurite), s3 (moto)")
    ap.add_argument("--concurrency", default="8,16,32,64",
                    help=f"{ENV_CONC} values for one extra upload each ('' for none)")
    ap.add_argument("--sweep-backends", default="s3", help="the servers the --concurrency uploads go to")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / ".out"))
    a = ap.parse_args()
    a.repeat = a.repeat or (1 if a.quick else 3)
    a.concurrency = [int(c) for c in a.concurrency.split(",") if c.strip()]
    a.sweep_backends = {b.strip() for b in a.sweep_backends.split(",")}
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if set(backends) - set(SERVER):
        ap.error(f"--backends: choose among {', '.join(SERVER)}")
    if not Path(AWS).exists() and "s3" in backends:
        ap.error(f"no AWS CLI at {AWS}: pip install awscli in this venv")
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (Path(a.shared) / "make_trees.py").exists():
        ap.error(f"no make_trees.py in {a.shared}; pass --shared")
    t2 = ensure_trees(Path(a.shared).resolve(), out) / "T2"

    from runyard.workspace import Workspace

    # A SIGTERM unwinds like Ctrl-C: the servers are stopped and the scratch folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-data-", dir=out))
    res: dict[str, dict[str, list[Sample]]] = {}
    partial = out / ("data-quick.partial.json" if a.quick else "data.partial.json")

    def save() -> None:  # every sample as soon as it is taken, so an interrupted run leaves its figures
        partial.write_text(json.dumps(res, indent=1))

    try:
        files = tree_files(t2)
        src = t2
        if a.quick:
            files = [(str(work / "T2q" / rel), rel, size) for _, rel, size in uniform(files, 2000)]
            src = subset_tree([(str(t2 / rel), rel, s) for _, rel, s in files], work / "T2q")
        seq_files = uniform(files, a.sample)
        total = sum(s for _, _, s in files)
        print(f"{len(files):,} files, {total / MiB:.1f} MiB from {src}; sequential reference on "
              f"{len(seq_files):,} files{' (a uniform sample)' if len(seq_files) < len(files) else ''}", flush=True)
        warm(files)
        ws = Workspace.create(work / "ws")
        for name in backends:  # one server at a time, stopped before the next starts
            with azurite(work) if name == "az" else moto(work) as server:
                print(f"{SERVER[name]} on {server.host}:{server.port}", flush=True)
                be = Backend(name, server, ws)
                bench_backend(be, src, files, seq_files, a, work, res.setdefault(name, {}), save)
        m = summarize(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {"files": len(files), "bytes": total, "sequential_files": len(seq_files), "repeat": a.repeat,
            "quick": a.quick, "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()}
    (out / ("data-quick.json" if a.quick else "data.json")).write_text(json.dumps({"meta": meta, **m}, indent=1))
    partial.unlink(missing_ok=True)
    print()
    if len(seq_files) < len(files):
        print(f"NOTE: the sequential reference timed a uniform sample of {len(seq_files):,} of the "
              f"{len(files):,} files (the server half full for the puts, full for the gets); its "
              "throughput is that of the sample, its time for all files scaled from it.\n")
    print(report(m, len(files)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
