"""Chaos trials: a run killed at a random moment must lose nothing written before it.

One trial starts ``runyard run`` on a script that writes files to ``./outputs``,
lines to its output and to ``./logs/train.log``, and after each of them notes
what it did (and when) in a *witness* file outside the run. At a random
moment the trial kills, with SIGKILL, one of:

``script``      the script (its supervisor must record the end);
``supervisor``  the supervisor (right after launch, while the script runs, or
                while it stores the outputs at the end);
``runyard-run`` the ``runyard run`` command that follows the run (the run must go on);
``host``        everything at once, the output's writer included, and the working
                directory's overlay is unmounted, as a reboot would leave the run
                folder (what was in a pipe's kernel buffer at that instant is gone
                with it, as on a real reboot: lines printed less than 50 ms before
                are not required);
``reader``      the supervisor, then the first reader of the run (``runyard runs ls``)
                while it reaps it.

Then it reads the run, as a user would, with two more readers at the same
time, and checks: every read says the run has ended; every output file the
witness saw closed before the kill is an artifact with that content; every
line printed before the kill (the last one has no newline) is in the stored
driver log, and in what ``runyard run`` printed when it lived on; every log
line written before the kill is in the stored ``logs/train.log``; every
artifact's blob is intact; the history passes ``PRAGMA integrity_check``;
nothing is left mounted, running or marked active.

``tests/test_chaos.py`` runs a few dozen trials in the suite; ``bench/bench_chaos.py``
runs hundreds and prints the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("script", "supervisor", "runyard-run", "host", "reader")
HOST_SLACK = 0.05
"""Seconds before a simulated reboot within which a printed line may be lost (a pipe's buffer)."""

SCRIPT = r'''
import json, os, random, sys, time
from runyard.store.base import hash_bytes

witness, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
os.makedirs("outputs", exist_ok=True)
os.makedirs("logs", exist_ok=True)
w = open(witness, "a")

def note(**kw):
    kw["t"] = time.time()
    w.write(json.dumps(kw) + "\n")
    w.flush()

note(kind="start")
log = open("logs/train.log", "a")
for i in range(rnd.randint(3, 14)):
    data = os.urandom(rnd.choice([0, 7, 1500, 70000, 300000]))
    name = f"outputs/part-{i:03d}.bin"
    with open(name, "wb") as f:
        f.write(data)
    note(kind="file", name=name, digest=hash_bytes(data))
    print(f"line {i}", flush=True)
    note(kind="line", text=f"line {i}")
    log.write(f"log {i}\n")
    log.flush()
    note(kind="log", text=f"log {i}")
    time.sleep(rnd.uniform(0, 0.06))
print("progress 1%\rprogress 99%\rthe last line, without a newline", end="", flush=True)
note(kind="line", text="the last line, without a newline")
log.close()
note(kind="done")
time.sleep(rnd.uniform(0, 0.3))
'''


@dataclass
class Trial:
    kind: str
    seed: int
    run_id: str = ""
    when: str = ""
    """Where in the run the kill landed: preparing, running, finishing, after."""
    violations: list[str] = field(default_factory=list)
    checked_files: int = 0
    checked_lines: int = 0


def _witness(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a torn last line (the script was killed while writing it)
    return out


def _kill(pid: object) -> None:
    if isinstance(pid, int):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_all(pids: list[object], timeout: float = 30.0) -> list[int]:
    """SIGKILL ``pids`` and wait until each has exited with all its threads (its locks go only
    then); watched through pidfds, so a pid reused meanwhile is not mistaken for it. Returns
    those that did not exit in ``timeout`` seconds."""
    import select

    fds = {}
    for pid in pids:
        if not isinstance(pid, int):
            continue
        try:
            fds[pid] = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        _kill(pid)
    deadline = time.monotonic() + timeout
    try:
        while fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(fds.values()), [], [], max(0.0, deadline - time.monotonic()))
            for pid, fd in list(fds.items()):
                if fd in ready:
                    os.close(fds.pop(pid))
        return list(fds)
    finally:
        for fd in fds.values():
            os.close(fd)


def _who_holds(path: str) -> str:
    """For a report: which processes hold a lock on ``path`` now (from /proc/locks)."""
    try:
        ino = os.stat(path).st_ino
        with open("/proc/locks") as fh:
            pids = [int(line.split()[4]) for line in fh if line.split()[5].endswith(f":{ino}")]
    except (OSError, ValueError, IndexError):
        return "its marker is gone"
    who = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")[:120]
            who.append(f"{pid}: {cmd}")
        except OSError:
            who.append(f"{pid}: gone")
    return "marker held by " + "; ".join(who) if who else "marker not held"


def _processes_with(entry: str) -> list[int]:
    from runyard.agent.procs import processes_with

    return processes_with(entry)


class Chaos:
    """Runs trials against one workspace (``ws``, made with ``runyard init``) from one source folder."""

    def __init__(self, ws: str, root: Path) -> None:
        self.ws = ws
        self.root = root
        self.src = root / "chaos-src"
        self.src.mkdir(parents=True, exist_ok=True)
        (self.src / "chaos.py").write_text(SCRIPT)
        self.witness_dir = root / "witness"
        self.witness_dir.mkdir(exist_ok=True)
        self.n = 0

    def run(self, kind: str, seed: int) -> Trial:
        """One trial; its violations are listed, never raised."""
        from runyard.agent.folder import RunFolder

        self.n += 1
        trial = Trial(kind, seed)
        rnd = random.Random(seed)
        witness = self.witness_dir / f"w{self.n}-{seed}.jsonl"
        witness.unlink(missing_ok=True)
        runs_dir = Path(self.ws) / "runs"
        before = set(os.listdir(runs_dir)) if runs_dir.exists() else set()
        env = {**os.environ, "RUNYARD_CANCEL_GRACE": "2", "CHAOS_TRIAL": f"{os.getpid()}-{self.n}"}
        printed = self.witness_dir / f"out{self.n}-{seed}.txt"
        with printed.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runyard", "--workspace", self.ws, "run", "--source-dir", str(self.src),
                 "-e", "chaos", "chaos.py", str(witness), str(seed)],
                stdout=out, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        t0 = time.monotonic()
        folder = None
        while folder is None and time.monotonic() - t0 < 30:
            new = set(os.listdir(runs_dir)) - before if runs_dir.exists() else set()
            if new:
                folder = RunFolder.of(self.ws, sorted(new)[0])
            else:
                time.sleep(0.005)
        if folder is None:
            proc.kill()
            trial.violations.append("the run never got a folder")
            return trial
        trial.run_id = folder.run_id
        # When: early (right after launch), while the script runs, or once it is done (finishing).
        phase = rnd.random()
        if phase < 0.2:
            time.sleep(max(0.0, rnd.uniform(0, 0.6) - (time.monotonic() - t0)))
        else:
            mark = "start" if phase < 0.8 else "done"
            deadline = time.monotonic() + 20
            while not any(r.get("kind") == mark for r in _witness(witness)) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rnd.uniform(0, 0.7) if mark == "start" else rnd.uniform(0, 0.15))
        who = folder.read_identity()
        wanted = {"supervisor": "pid", "reader": "pid", "script": "script_pid"}.get(kind)
        if wanted and not isinstance(who.get(wanted), int):
            deadline = time.monotonic() + 20  # as soon as there is one to kill
            while not isinstance((who := folder.read_identity()).get(wanted), int) and time.monotonic() < deadline:
                time.sleep(0.001)
        trial.when = ("finished" if os.path.exists(folder.end) else "finishing" if "script_exit" in who
                      else "running" if "script_pid" in who else "preparing")
        handed_over = isinstance(who.get("pid"), int)
        killed_at = time.time()
        if kind == "script":
            victims = [who.get("script_pid")]
        elif kind in ("supervisor", "reader"):
            victims = [who.get("pid")]
        elif kind == "runyard-run":
            victims = [proc.pid]
        else:  # every process of the trial (found by its environment), as a reboot would
            victims = [*_processes_with(f"CHAOS_TRIAL={env['CHAOS_TRIAL']}"),
                       *_processes_with(f"RUNYARD_CAPTURE_OF={folder.run_id}")]
        alive = _kill_all(victims)
        if alive:
            trial.violations.append(f"harness: killed processes still alive after 30 s: {alive}")
        if kind == "host":
            wd = os.path.join(folder.work, "wd")  # a reboot takes the overlay away too
            if os.path.ismount(wd):
                subprocess.run(["umount", "-l", wd], check=False, capture_output=True)
        if kind == "reader":  # the first reader, killed while it reaps the run
            reader = subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", self.ws, "runs", "ls"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.05, 0.6))
            reader.kill()
            reader.wait()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            trial.violations.append("runyard run did not exit within 60 s of the kill")
        self._check(trial, folder, witness, killed_at, handed_over)
        if kind in ("script", "supervisor") and handed_over:  # runyard run lived on: it showed every line
            shown = printed.read_text(errors="replace")
            for r in _witness(witness):
                if r["kind"] == "line" and float(r["t"]) < killed_at and str(r["text"]) + "\n" not in shown:  # type: ignore[arg-type]
                    trial.violations.append(f"runyard run did not show {r['text']!r}")
        return trial

    def _check(self, trial: Trial, folder: object, witness: Path, killed_at: float, handed_over: bool) -> None:
        import runyard
        from runyard.agent.folder import RunFolder
        from runyard.agent.workdir import mounts_below
        from runyard.errors import RunyardError
        from runyard.history import RunStatus
        from runyard.runs import get_run, wait
        from runyard.workspace import Workspace

        assert isinstance(folder, RunFolder)
        ws = Workspace(self.ws)
        history = ws.open_history()
        others = [subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", self.ws, "runs", "show",
                                    trial.run_id, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(2)] if trial.kind not in ("runyard-run", "script") else []
        try:
            try:
                record = get_run(ws, trial.run_id, history)
            except RunyardError as exc:
                if not handed_over and not os.path.exists(folder.request):
                    # Killed before the run existed (no request yet): no run; the next listing clears it up.
                    from runyard.runs import reap_lost

                    reap_lost(history, ws=ws)
                    trial.when = "before the run existed"
                    if os.path.exists(folder.marker) or os.path.exists(folder.path):
                        trial.violations.append("the folder of a run that never existed was left behind")
                    return
                trial.violations.append(f"reading the run failed: {exc}")
                return
            if trial.kind in ("runyard-run", "script") and not record.is_terminal:
                record = wait(ws, trial.run_id, timeout=60)  # the run goes on (or is finishing): let it end
            if not record.is_terminal:
                trial.violations.append(f"the run is {record.status.value} after a read "
                                        f"({_who_holds(folder.marker)})")
                return
            for other in others:
                out, err = other.communicate(timeout=120)
                status = json.loads(out).get("status") if other.returncode == 0 else f"an error: {err.strip()}"
                if status not in ("Completed", "Failed", "Canceled"):
                    trial.violations.append(f"a reader at the same time saw {status}")
            if trial.kind == "runyard-run" and handed_over and record.status is not RunStatus.COMPLETED:
                trial.violations.append(f"killing runyard run ended the run: {record.status.value}")
            arts = {a.name: a for a in history.list_artifacts(trial.run_id)}
            store = ws.open_store()
            contents: dict[str, bytes] = {}
            for a in arts.values():
                try:
                    contents[a.name] = store.get_bytes(a.digest)
                except RunyardError as exc:
                    trial.violations.append(f"artifact {a.name} is corrupt: {exc}")
            seen = _witness(witness)
            before = [r for r in seen if float(r["t"]) < killed_at  # type: ignore[arg-type]
                      - (HOST_SLACK if trial.kind == "host" and r["kind"] == "line" else 0)]
            if trial.kind == "runyard-run" and handed_over:
                before = seen  # the run went on to its end
            log = contents.get("runyard_logs/driver_log.txt", b"").decode("utf-8", "replace")
            train = contents.get("logs/train.log", b"").decode("utf-8", "replace")
            for r in before:
                if r["kind"] == "file":
                    trial.checked_files += 1
                    got = arts.get(str(r["name"]))
                    if got is None:
                        trial.violations.append(f"lost output {r['name']}")
                    elif got.digest != r["digest"]:
                        trial.violations.append(f"wrong content for {r['name']}")
                elif r["kind"] == "line":
                    trial.checked_lines += 1
                    if str(r["text"]) + "\n" not in log:
                        trial.violations.append(f"lost line {r['text']!r}")
                elif r["kind"] == "log" and str(r["text"]) + "\n" not in train:
                    trial.violations.append(f"lost log line {r['text']!r}")
            names = [a for a in arts if not a.startswith(("outputs/", "logs/", "runyard_logs/"))]
            if names:
                trial.violations.append(f"artifacts with unexpected names: {names}")
            deadline = time.monotonic() + 10  # a live supervisor lets go of it right after recording the end
            while os.path.exists(folder.marker) and folder.attended() and time.monotonic() < deadline:
                time.sleep(0.01)
            if os.path.exists(folder.marker):
                trial.violations.append(f"the run is still marked active ({_who_holds(folder.marker)})")
            if mounts_below(os.path.realpath(folder.path)):
                trial.violations.append(f"still mounted: {mounts_below(os.path.realpath(folder.path))}")
            if os.path.exists(folder.work) and os.listdir(folder.work):
                trial.violations.append(f"working directory left: {os.listdir(folder.work)}")
            left = [*_processes_with(f"RUNYARD_RUN_ID={trial.run_id}"),
                    *_processes_with(f"RUNYARD_CAPTURE_OF={trial.run_id}")]
            if left:
                time.sleep(1)  # (a live supervisor's writer may be finishing this instant)
                from runyard.compute.local import pid_alive

                left = [p for p in left if pid_alive(p)]
            if left:
                trial.violations.append(f"processes of the run left running: {left}")
            _ = runyard  # (the public package imports cleanly in the checker too)
        finally:
            history.close()
            for other in others:
                if other.poll() is None:
                    other.kill()
                other.communicate()
        ok = sqlite3.connect(os.path.join(self.ws, "history.db")).execute("PRAGMA integrity_check").fetchone()
        if ok != ("ok",):
            trial.violations.append(f"PRAGMA integrity_check: {ok}")


def summary(trials: list[Trial]) -> str:
    """Trials by kind and where the kill landed, and violations by kind."""
    lines = []
    for kind in KINDS:
        mine = [t for t in trials if t.kind == kind]
        if not mine:
            continue
        bad = [t for t in mine if t.violations]
        when = Counter(t.when for t in mine)
        lines.append(f"{kind:<12} {len(mine):>4} trials ({', '.join(f'{k} {v}' for k, v in sorted(when.items()))}); "
                     f"{sum(t.checked_files for t in mine)} files and {sum(t.checked_lines for t in mine)} lines "
                     f"checked; {len(bad)} with violations")
        kinds = Counter(v.split(" ", 2)[0] + " " + v.split(" ", 2)[1] for t in bad for v in t.violations)
        for what, n in kinds.most_common():
            lines.append(f"    {n:>4}  {what}")
    return "\n".join(lines)
