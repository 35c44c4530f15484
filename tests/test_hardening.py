"""What a run promises when its supervisor dies, and what is left behind.

Real supervisors killed with SIGKILL, real overlay mounts, real leftovers;
each test failed on the code before the reaper salvaged runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runyard
from runyard.agent.folder import RunFolder
from runyard.agent.workdir import mounts_below
from runyard.compute.local import pid_alive
from runyard.errors import RunError
from runyard.history import RunStatus
from runyard.runs import RunSpec, get_run, prepare, record
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    return d


def submit(ws: Workspace, src: Path, script: str, *args: str, **config: object) -> runyard.Run:
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script=script, arguments=list(args), **config)  # type: ignore[arg-type]
    return runyard.Experiment(ws, "h").submit(cfg)


def wait_for(check: object, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def identity(ws: Workspace, run_id: str) -> dict[str, object]:
    return RunFolder.of(ws.path, run_id).read_identity()


def started(ws: Workspace, src: Path, script: str, printed: str) -> tuple[runyard.Run, RunFolder]:
    """Submit ``script`` and wait until it has printed ``printed``."""
    run = submit(ws, src, script)
    folder = RunFolder.of(ws.path, run.id)
    wait_for(lambda: os.path.exists(folder.raw_output) and printed in Path(folder.raw_output).read_text(),
             what=f"{printed!r} in the run's output")
    return run, folder


def kill_and_wait(pid: object) -> None:
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, f"pid {pid} to die")


WRITES_THEN_WAITS = """
    import os, sys, time
    os.makedirs("outputs/deep", exist_ok=True)
    for i in range(30):
        with open(f"outputs/deep/part-{i:02d}.txt", "w") as f:
            f.write(f"part {i}\\n" * (i + 1))
    with open("logs/train.log", "w") as f:
        f.write("epoch 1\\nepoch 2\\n")
    print("all written", flush=True)
    print("progress 10%\\rprogress 100%", end="", flush=True)
    time.sleep(600)
"""


def _check_salvaged(ws: Workspace, run: runyard.Run) -> None:
    names = set(run.get_file_names())
    assert {f"outputs/deep/part-{i:02d}.txt" for i in range(30)} <= names
    assert "logs/train.log" in names and "runyard_logs/driver_log.txt" in names
    store = ws.open_store()
    arts = {a.name: a for a in run.history.list_artifacts(run.id)}
    assert store.get_bytes(arts["outputs/deep/part-07.txt"].digest) == b"part 7\n" * 8
    log = store.get_bytes(arts["runyard_logs/driver_log.txt"].digest).decode()
    assert log.endswith("all written\nprogress 100%\n")  # the last line, which had no newline, is kept
    assert store.get_bytes(arts["logs/train.log"].digest) == b"epoch 1\nepoch 2\n"


def test_a_dead_supervisor_loses_no_output_log_or_last_line(workspace: Workspace, src: Path) -> None:
    write_script(src, "w.py", WRITES_THEN_WAITS)
    run = submit(workspace, src, "w.py")
    folder = RunFolder.of(workspace.path, run.id)
    wait_for(lambda: "all written" in Path(folder.raw_output).read_text() if os.path.exists(folder.raw_output)
             else False, what="the script's output")
    who = identity(workspace, run.id)
    kill_and_wait(who["pid"])
    wait_for(lambda: not pid_alive(who["script_pid"]), 10, "the script to die with its supervisor")  # type: ignore[arg-type]
    assert run.get_status() == "Failed"  # one read: salvaged, recorded, cleaned up
    details = run.get_details()
    assert "lost" in details["error"] and "was stopped with it" in details["error"]
    _check_salvaged(workspace, run)
    assert mounts_below(os.path.realpath(folder.path)) == []
    assert not os.path.exists(folder.work) and not os.path.exists(folder.marker)


def test_a_reboot_leaves_the_outputs_in_the_overlay_upper_layer(workspace: Workspace, src: Path) -> None:
    """Processes gone and the overlay unmounted, as after a reboot: the run's own layer has its files."""
    write_script(src, "w.py", WRITES_THEN_WAITS)
    run, folder = started(workspace, src, "w.py", "all written")
    who = identity(workspace, run.id)
    kill_and_wait(who["pid"])
    wd = os.path.join(folder.work, "wd")
    if os.path.ismount(wd):
        subprocess.run(["umount", "-l", wd], check=True)
    assert run.get_status() == "Failed"
    _check_salvaged(workspace, run)


def test_a_supervisor_killed_before_it_recorded_the_run_leaves_nothing(workspace: Workspace, src: Path) -> None:
    """`runyard run`'s supervisor killed right after it took the run: the
    history has no record yet; the next read records it lost and cleans up."""
    write_script(src, "s.py", "import time\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", workspace.path, "run",
                             "--source-dir", str(src), "s.py"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = Path(workspace.runs_dir)
    wait_for(lambda: runs.exists() and any((runs / r / "supervisor.json").exists() for r in os.listdir(runs)))
    run_id = os.listdir(runs)[0]
    kill_and_wait(identity(workspace, run_id)["pid"])
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    rec = get_run(workspace, run_id)
    assert rec.status is RunStatus.FAILED and "lost" in (rec.error or "")
    assert mounts_below(os.path.realpath(workspace.runs_dir)) == []
    assert not os.path.exists(RunFolder.of(workspace.path, run_id).work)
    assert os.listdir(os.path.join(workspace.path, "active")) == []


def test_a_run_nobody_took_over_is_lost_at_once_not_after_a_timeout(workspace: Workspace, src: Path) -> None:
    """`runyard run --detach` killed between recording the run and starting its supervisor."""
    write_script(src, "x.py", "print(1)\n")
    request = prepare(workspace, RunSpec(source_directory=str(src), script="x.py"))
    history = workspace.open_history()
    record(history, request)
    assert get_run(workspace, request.run_id, history).status is RunStatus.QUEUED  # looked after: left alone
    assert request.claim is not None
    os.close(request.claim)  # the process dies
    started = time.monotonic()
    rec = get_run(workspace, request.run_id, history)
    assert rec.status is RunStatus.FAILED and "never started" in (rec.error or "")
    assert time.monotonic() - started < 5


def test_a_late_supervisor_does_not_run_a_reaped_run(workspace: Workspace, src: Path) -> None:
    write_script(src, "x.py", "open('ran', 'w')\n")
    request = prepare(workspace, RunSpec(source_directory=str(src), script="x.py"))
    assert request.claim is not None
    os.close(request.claim)
    history = workspace.open_history()
    assert get_run(workspace, request.run_id, history).status is RunStatus.FAILED
    with pytest.raises(RunError, match=r"reaped|ended already"):
        RunFolder.of(workspace.path, request.run_id).hold()


def test_the_journal_records_outputs_as_they_settle(workspace: Workspace, src: Path) -> None:
    """Stored and recorded while the script runs, before any end: the durable record of the live sync."""
    write_script(src, "s.py", """
        import os, time
        os.makedirs("outputs", exist_ok=True)
        open("outputs/early.txt", "w").write("early")
        open("logs/early.log", "w").write("log")
        print("written", flush=True)
        time.sleep(600)
    """)
    run = submit(workspace, src, "s.py")
    folder = RunFolder.of(workspace.path, run.id)
    try:
        def journaled() -> set[str]:
            try:
                return {json.loads(line)["name"] for line in Path(folder.journal).read_text().splitlines()}
            except FileNotFoundError:
                return set()

        wait_for(lambda: {"outputs/early.txt", "logs/early.log"} <= journaled(), 30, "the journal")
        wait_for(lambda: {"outputs/early.txt", "logs/early.log"} <= set(run.get_file_names()), 30, "the history")
        assert run.get_status() == "Running"
    finally:
        run.cancel()
        run.wait_for_completion(raise_on_error=False)


def test_hostile_journal_lines_are_skipped_by_the_reaper(workspace: Workspace, src: Path) -> None:
    write_script(src, "s.py", """
        import json, os, time
        with open(os.path.join(os.environ["RUNYARD_WORKSPACE"], "runs", os.environ["RUNYARD_RUN_ID"],
                               "artifacts.jsonl"), "a") as f:
            f.write(json.dumps({"name": "../../escape", "size": 1, "digest": "0" * 64}) + "\\n")
            f.write(json.dumps({"name": "outputs/forged", "size": 1, "digest": "z" * 64}) + "\\n")
            f.write('{"torn": ')
        print("done", flush=True)
        time.sleep(600)
    """)
    run, _folder = started(workspace, src, "s.py", "done")
    kill_and_wait(identity(workspace, run.id)["pid"])
    assert run.get_status() == "Failed"
    assert run.get_file_names() == ["runyard_logs/driver_log.txt"]


def test_only_what_the_run_wrote_is_its_artifacts(workspace: Workspace, src: Path) -> None:
    (src / "outputs").mkdir()
    (src / "outputs" / "old_model.json").write_text("{}")
    (src / "outputs" / "changed.txt").write_text("before")
    (src / "logs").mkdir()
    (src / "logs" / "old.log").write_text("old\n")
    write_script(src, "t.py", """
        open("outputs/new.txt", "w").write("new")
        open("outputs/changed.txt", "w").write("after")
    """)
    run = submit(workspace, src, "t.py")
    run.wait_for_completion()
    assert sorted(run.get_file_names()) == ["outputs/changed.txt", "outputs/new.txt", "runyard_logs/driver_log.txt"]


@pytest.mark.parametrize(("name", "body", "expect"), [
    ("job.sh", "echo from bash $BASH_VERSION | cut -c1-9\necho args \"$@\"\n", "from bash"),
    ("job", "#!/bin/sh\necho from sh\necho args \"$@\"\n", "from sh"),
    ("job.py", "import sys\nprint('from python', sys.version_info[0])\nprint('args', *sys.argv[1:])\n",
     "from python 3"),
])
def test_a_script_runs_by_its_kind(workspace: Workspace, src: Path, name: str, body: str, expect: str) -> None:
    (src / name).write_text(body)
    run = submit(workspace, src, name, "a", "b c")
    run.wait_for_completion()
    log = Path(RunFolder.of(workspace.path, run.id).driver_log).read_text()
    assert expect in log and "args a b c" in log


@pytest.mark.parametrize(("name", "body", "hint"), [
    ("nb.ipynb", '{"cells": [], "metadata": null}', "nbconvert"),
    ("model.R", "print(1)\n", "#!"),
])
def test_what_runyard_cannot_run_is_refused_before_anything_is_stored(workspace: Workspace, src: Path,
                                                                     name: str, body: str, hint: str) -> None:
    (src / name).write_text(body)
    with pytest.raises(RunError, match=hint):
        submit(workspace, src, name)
    assert workspace.open_history().list_runs() == []
    assert workspace.open_store().list_snapshots() == []


def test_a_command_runs_as_given_with_the_runs_python_first_on_path(workspace: Workspace, src: Path) -> None:
    write_script(src, "t.py", "import sys\nprint('exe', sys.executable)\nprint('args', sys.argv[1:])\n")
    run = submit(workspace, src, None, command=["python", "t.py", "--lr", "0.1"])  # type: ignore[arg-type]
    run.wait_for_completion()
    log = Path(RunFolder.of(workspace.path, run.id).driver_log).read_text()
    assert f"exe {os.path.dirname(sys.executable)}/python" in log and "args ['--lr', '0.1']" in log
    shell = submit(workspace, src, None, command="echo one && echo two > outputs/two.txt")  # type: ignore[arg-type]
    shell.wait_for_completion()
    assert "outputs/two.txt" in shell.get_file_names()
    with pytest.raises(RunError, match="not both"):
        submit(workspace, src, "t.py", command=["python", "t.py"])


def test_gc_reaps_and_removes_what_crashes_left(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    from runyard.cleanup import collect

    write_script(src, "w.py", WRITES_THEN_WAITS)
    run, folder = started(workspace, src, "w.py", "all written")
    kill_and_wait(identity(workspace, run.id)["pid"])
    # A store writer that died mid-write, a layer build that crashed, a folder of a run that never was.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_blob = Path(workspace.path, "store", "tmp", f"{'ab' * 8}.{dead.pid}.1.beef")
    tmp_blob.write_bytes(b"half a blob")
    building = Path(workspace.cache_dir, "lower", f".building-{'cd' * 8}-{dead.pid}-1")
    building.mkdir(parents=True)
    (building / "x").write_text("x")
    old = time.time() - 120
    for p in (tmp_blob, building):
        os.utime(p, (old, old))
    stray = Path(workspace.runs_dir, "h_1700000000_deadbeef")
    stray.mkdir()

    dry = collect(workspace, dry_run=True)
    planned = {(a.what, a.path) for a in dry.actions}
    assert ("reap", folder.path) in planned
    assert ("remove", str(tmp_blob)) in planned and ("remove", str(building)) in planned
    assert ("remove", str(stray)) in planned
    assert tmp_blob.exists() and building.exists() and stray.exists()  # a dry run touches nothing
    assert not workspace.open_history().get_run(run.id).is_terminal

    done = collect(workspace)
    assert not done.problems, done.problems
    assert not tmp_blob.exists() and not building.exists() and not stray.exists()
    assert run.get_status() == "Failed"
    _check_salvaged(workspace, run)
    assert mounts_below(os.path.realpath(workspace.path)) == []
    assert collect(workspace).actions == []  # nothing left the second time


def test_gc_leaves_a_running_run_alone(workspace: Workspace, src: Path) -> None:
    from runyard.cleanup import collect

    write_script(src, "s.py", "print('up', flush=True)\nimport time\ntime.sleep(600)\n")
    run = submit(workspace, src, "s.py")
    folder = RunFolder.of(workspace.path, run.id)
    try:
        wait_for(lambda: os.path.exists(folder.raw_output) and "up" in Path(folder.raw_output).read_text())
        report = collect(workspace)
        assert not [a for a in report.actions if a.path.startswith(folder.path)]
        assert run.get_status() in ("Queued", "Preparing", "Running")  # (recorded Running a moment later)
        assert os.path.ismount(os.path.join(folder.work, "wd")) == (os.geteuid() == 0)
    finally:
        run.cancel()
        run.wait_for_completion(raise_on_error=False)


def test_gc_cli_dry_run_and_nothing_to_do(workspace: Workspace) -> None:
    done = subprocess.run([sys.executable, "-m", "runyard", "--workspace", workspace.path, "gc", "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Nothing to clean up." in done.stdout


def test_artifacts_download_without_o_stays_out_of_the_next_snapshot(workspace: Workspace, src: Path) -> None:
    write_script(src, "t.py", "open('outputs/model.json', 'w').write('{}')\n")
    first = submit(workspace, src, "t.py")
    first.wait_for_completion()
    done = subprocess.run([sys.executable, "-m", "runyard", "--workspace", workspace.path, "artifacts", "download",
                           first.id], capture_output=True, text=True, timeout=60, cwd=src)
    assert done.returncode == 0, done.stderr
    where = Path(workspace.downloads_dir, first.id)
    assert (where / "outputs" / "model.json").read_text() == "{}"
    assert str(where) in done.stderr and "no snapshot" in done.stderr
    assert sorted(os.listdir(src)) == ["t.py"]  # nothing written into the source directory
    write_script(src, "quiet.py", "print('nothing written')\n")
    second = submit(workspace, src, "quiet.py")
    second.wait_for_completion()
    assert second.get_file_names() == ["runyard_logs/driver_log.txt"]


def test_the_reaper_does_not_read_again_what_the_live_sync_stored(workspace: Workspace, src: Path) -> None:
    from runyard.agent.salvage import salvage

    write_script(src, "s.py", """
        import os, time
        os.makedirs("outputs", exist_ok=True)
        for i in range(5):
            open(f"outputs/ckpt-{i}.bin", "wb").write(os.urandom(200_000))
        print("saved", flush=True)
        time.sleep(600)
    """)
    run = submit(workspace, src, "s.py")
    folder = RunFolder.of(workspace.path, run.id)
    wait_for(lambda: os.path.exists(folder.journal) and Path(folder.journal).read_text().count("ckpt-") == 5,
             30, "the live sync to store the checkpoints")
    kill_and_wait(identity(workspace, run.id)["pid"])
    taken = salvage(workspace.open_store(), folder, identity(workspace, run.id).get("snapshot_id") or None)
    assert {f"outputs/ckpt-{i}.bin" for i in range(5)} <= {a.name for a in taken.artifacts}
    assert taken.read == 0 and taken.recovered == 0
    assert run.get_status() == "Failed"


def test_a_supervisor_that_crashes_is_reaped_with_its_last_words(workspace: Workspace, src: Path) -> None:
    from runyard.compute.local import launch

    write_script(src, "x.py", "print(1)\n")
    request = prepare(workspace, RunSpec(source_directory=str(src), script="x.py"))
    record(workspace.open_history(), request)
    folder = RunFolder.of(workspace.path, request.run_id)
    Path(folder.request).write_text('{"run_id": "damaged"')  # the supervisor cannot read what to run
    launch(workspace, request.run_id, claim=request.claim)
    wait_for(lambda: RunFolder.of(workspace.path, request.run_id).attended() is False, 30, "the supervisor to fail")
    rec = get_run(workspace, request.run_id)
    assert rec.status is RunStatus.FAILED
    assert "The supervisor failed with: json.decoder.JSONDecodeError" in (rec.error or "")
    assert folder.supervisor_log in (rec.error or "")


def test_runyard_run_shows_the_last_line_when_the_supervisor_dies(workspace: Workspace, src: Path) -> None:
    write_script(src, "w.py", WRITES_THEN_WAITS)
    proc = subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", workspace.path, "run",
                             "--source-dir", str(src), "w.py"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    runs = Path(workspace.runs_dir)

    def raw() -> str:
        found = [runs / r / "output.raw" for r in os.listdir(runs)] if runs.exists() else []
        return found[0].read_text() if found and found[0].exists() else ""

    wait_for(lambda: "progress 100%" in raw(), 60, "the script's last line")
    run_id = os.listdir(runs)[0]
    kill_and_wait(identity(workspace, run_id)["pid"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert out.endswith("all written\nprogress 100%\n")
    assert f"run {run_id} Failed" in err


def test_a_dead_supervisors_declared_output_is_stored_as_partial(workspace: Workspace, src: Path,
                                                                 tmp_path: Path) -> None:
    from runyard import Datastore, OutputFileDatasetConfig
    from runyard.errors import NotFoundError

    lake = Datastore.register_local(workspace, "lake", str(tmp_path / "lake"))
    write_script(src, "o.py", """
        import os, sys, time
        out = sys.argv[1]
        os.makedirs(os.path.join(out, "deep"), exist_ok=True)
        open(os.path.join(out, "deep", "weights.bin"), "wb").write(b"w" * 1000)
        print("saved", flush=True)
        time.sleep(600)
    """)
    out = OutputFileDatasetConfig("model", destination=(lake, "models/{run-id}")).register_on_complete("trained")
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script="o.py", arguments=[out])
    run = runyard.Experiment(workspace, "h").submit(cfg)
    folder = RunFolder.of(workspace.path, run.id)
    wait_for(lambda: os.path.exists(folder.raw_output) and "saved" in Path(folder.raw_output).read_text())
    kill_and_wait(identity(workspace, run.id)["pid"])
    assert run.get_status() == "Failed"
    got = run.get_details()["outputDatasets"][0]
    assert (got["state"], got["version"], got["files"]) == ("partial", None, 1)
    assert [f.path for f in lake.list_files(f"models/{run.id}")] == [f"models/{run.id}/deep/weights.bin"]
    with pytest.raises(NotFoundError):
        runyard.Dataset.get_by_name(workspace, "trained")  # a lost run's output is never registered
    assert not os.path.exists(os.path.join(folder.data, "outputs", "model"))  # stored: no second copy left


def test_another_machines_run_is_judged_by_its_heartbeat_and_never_touched(workspace: Workspace,
                                                                             src: Path) -> None:
    from runyard.runs.reaper import LOST_AFTER_REMOTE

    write_script(src, "x.py", "print(1)\n")
    history = workspace.open_history()
    ids = []
    for age in (5.0, LOST_AFTER_REMOTE + 60):
        request = prepare(workspace, RunSpec(source_directory=str(src), script="x.py"))
        record(history, request)
        history.set_status(request.run_id, RunStatus.PREPARING, supervisor_pid=4242, host="elsewhere")
        history.set_status(request.run_id, RunStatus.RUNNING)
        history.heartbeat(request.run_id, now=time.time() - age)
        assert request.claim is not None
        os.close(request.claim)  # (its marker here means nothing: the run is elsewhere)
        folder = RunFolder.of(workspace.path, request.run_id)
        Path(folder.marker).write_text(json.dumps({"host": "elsewhere"}))
        ids.append(request.run_id)
    fresh, stale = (get_run(workspace, i, history) for i in ids)
    assert fresh.status is RunStatus.RUNNING
    assert stale.status is RunStatus.FAILED and "no heartbeat" in (stale.error or "")
    for run_id in ids:  # nothing of theirs was reaped here
        assert os.path.exists(RunFolder.of(workspace.path, run_id).request)
        assert not os.path.exists(RunFolder.of(workspace.path, run_id).end)


def test_writing_to_dev_stderr_keeps_every_line(workspace: Workspace, src: Path) -> None:
    """A pipe, not a file, is the script's stdout: `> /dev/stderr` reopens it without cutting the log."""
    (src / "warn.sh").write_text('for i in 1 2 3; do echo "step $i"; done\n'
                                 'echo "warning: disk almost full" > /dev/stderr\n'
                                 'python -c "open(\'/dev/stdout\', \'w\').write(\'from python\\\\n\')"\n'
                                 'for i in 4 5; do echo "step $i"; done\n')
    run = submit(workspace, src, "warn.sh")
    run.wait_for_completion()
    log = Path(RunFolder.of(workspace.path, run.id).driver_log).read_text()
    assert log == "step 1\nstep 2\nstep 3\nwarning: disk almost full\nfrom python\nstep 4\nstep 5\n"


def test_readers_at_once_all_see_the_end_of_a_lost_run(workspace: Workspace, src: Path) -> None:
    write_script(src, "big.py", """
        import os, time
        os.makedirs("outputs", exist_ok=True)
        for i in range(40):
            with open(f"outputs/chunk-{i}.bin", "wb") as f:
                f.write(os.urandom(1 << 20))
        print("written", flush=True)
        time.sleep(600)
    """)
    run, _folder = started(workspace, src, "big.py", "written")
    kill_and_wait(identity(workspace, run.id)["pid"])
    readers = [subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", workspace.path, *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for cmd in (["runs", "show", run.id], ["runs", "ls"], ["runs", "show", run.id], ["runs", "ls"])]
    assert get_run(workspace, run.id).status is RunStatus.FAILED
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        assert "Failed" in out and "Running" not in out and "Queued" not in out, out
    assert len([n for n in run.get_file_names() if n.startswith("outputs/")]) == 40


HOSTILE = """
    import json, os, shutil, time
    folder = os.path.join(os.environ["RUNYARD_WORKSPACE"], "runs", os.environ["RUNYARD_RUN_ID"])
    victim = os.environ["VICTIM"]
    os.makedirs("outputs", exist_ok=True)
    open("outputs/mine.txt", "w").write("mine")
    what = os.environ["HOSTILE"]
    if what == "work":  # the working directory's folder swapped for a link to somebody's folder
        os.rename(os.path.join(folder, "work"), os.path.join(folder, "work.old"))
        os.symlink(victim, os.path.join(folder, "work"))
    elif what == "data":
        os.symlink(victim, os.path.join(folder, "data"))
    elif what == "mounts":
        with open(os.path.join(folder, "mounts.txt"), "a") as f:
            f.write(os.path.join(victim, "mnt") + "\\n")
    print("planted", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("what", ["work", "data", "mounts"])
def test_the_reaper_follows_no_link_and_unmounts_nothing_a_script_planted(workspace: Workspace, src: Path,
                                                                         tmp_path: Path, what: str) -> None:
    victim = tmp_path / "victim"
    for rel in ("wd/outputs/precious.txt", "layers/upper/x", "inputs/thesis.tex", "outputs/model/w.bin"):
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_text("keep me")
    (victim / "mnt").mkdir()
    tmpfs = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(victim / "mnt")],
                                                 capture_output=True).returncode == 0
    before = sorted(str(p) for p in victim.rglob("*"))
    # A process of the user's that works in the run's folder (a shell cd'd there, tail -f of the log).
    write_script(src, "h.py", HOSTILE)
    os.environ["VICTIM"], os.environ["HOSTILE"] = str(victim), what
    try:
        run = submit(workspace, src, "h.py")
    finally:
        del os.environ["VICTIM"], os.environ["HOSTILE"]
    folder = RunFolder.of(workspace.path, run.id)
    try:
        wait_for(lambda: os.path.exists(folder.raw_output) and "planted" in Path(folder.raw_output).read_text())
        bystander = subprocess.Popen(["sleep", "600"], cwd=folder.path)
        kill_and_wait(identity(workspace, run.id)["pid"])
        assert run.get_status() == "Failed"
        from runyard.cleanup import collect

        collect(workspace)
        assert sorted(str(p) for p in victim.rglob("*")) == before  # nothing removed, nothing taken in
        if tmpfs:
            assert os.path.ismount(victim / "mnt")
        assert bystander.poll() is None  # not the run's: not killed
        assert not [n for n in run.get_file_names() if "precious" in n or "thesis" in n]
        assert mounts_below(os.path.realpath(workspace.path)) == []  # the run's own overlay is gone wherever it went
    finally:
        if tmpfs:
            subprocess.run(["umount", "-l", str(victim / "mnt")], check=False)
        if "bystander" in locals():
            bystander.kill()


def test_logs_follow_shows_the_last_line_when_the_supervisor_dies(workspace: Workspace, src: Path) -> None:
    write_script(src, "w.py", WRITES_THEN_WAITS)
    run = submit(workspace, src, "w.py")
    folder = RunFolder.of(workspace.path, run.id)
    follower = subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", workspace.path, "logs", "-f",
                                 run.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(folder.raw_output) and "progress 100%" in Path(folder.raw_output).read_text())
    time.sleep(0.3)  # the follower has shown what the driver log had
    kill_and_wait(identity(workspace, run.id)["pid"])
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out.endswith("all written\nprogress 100%\n")


def test_a_working_directory_unmounted_under_the_run_keeps_its_outputs(workspace: Workspace, src: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the working directory is an overlay only as root")
    write_script(src, "u.py", """
        import os, time
        os.makedirs("outputs", exist_ok=True)
        for i in range(8):
            open(f"outputs/o{i}.txt", "w").write(str(i))
        print("written", flush=True)
        time.sleep(3)
    """)
    run, folder = started(workspace, src, "u.py", "written")
    subprocess.run(["umount", "-l", os.path.join(folder.work, "wd")], check=True)
    run.wait_for_completion()
    assert {f"outputs/o{i}.txt" for i in range(8)} <= set(run.get_file_names())
    assert "upper layer" in (run.get_details()["error"] or "")


def test_cli_command_runs_and_reruns_and_a_program_runs_as_it_is(workspace: Workspace, src: Path) -> None:
    import shutil

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runyard", "--workspace", workspace.path, *args],
                              capture_output=True, text=True, timeout=60)

    write_script(src, "t.py", "import sys\nprint('args', sys.argv[1:])\n")
    done = cli("run", "--source-dir", str(src), "--command", "python t.py 'two words' && echo second")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "args ['two words']\nsecond\n"
    run_id = done.stderr.split("runyard: run ")[1].split()[0]
    again = cli("rerun", run_id)
    assert again.returncode == 0 and again.stdout == done.stdout, again.stderr
    listed = cli("runs", "ls")
    assert "python t.py 'two words' && echo second" in listed.stdout
    assert cli("run", "--source-dir", str(src), "--command", "true", "t.py").returncode != 0  # not both
    shutil.copy("/bin/echo", src / "prog")
    prog = cli("run", "--source-dir", str(src), "prog", "from", "a program")
    assert prog.returncode == 0 and prog.stdout == "from a program\n", prog.stderr


def test_a_running_supervisor_follows_no_link_its_script_plants(workspace: Workspace, src: Path,
                                                                tmp_path: Path) -> None:
    """The supervisor's own end: a work folder swapped for a link, links planted under runyard's
    temporary names and as the logs mirror; nothing outside the run is written, read or removed."""
    victim = tmp_path / "victim"
    for rel in ("wd/outputs/precious.txt", "layers/upper/outputs/secret.txt", "target.txt"):
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_text("keep me")
    (victim / "mirror").mkdir()
    before = {str(p): p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    write_script(src, "p.py", """
        import os
        folder = os.path.join(os.environ["RUNYARD_WORKSPACE"], "runs", os.environ["RUNYARD_RUN_ID"])
        victim = os.environ["VICTIM"]
        for pid in range(1, 65536, 97):  # runyard's old temporary names had a pid in them
            os.symlink(os.path.join(victim, "target.txt"), os.path.join(folder, f".end.json.{pid}.tmp"))
        os.symlink(os.path.join(victim, "mirror"), os.path.join(folder, "logs"))
        open("logs/planted.txt", "w").write("planted")
        os.makedirs("outputs", exist_ok=True)
        open("outputs/mine.txt", "w").write("mine")
        os.rename(os.path.join(folder, "work"), os.path.join(folder, "moved"))
        os.symlink(victim, os.path.join(folder, "work"))
    """)
    os.environ["VICTIM"] = str(victim)
    try:
        run = submit(workspace, src, "p.py")
    finally:
        del os.environ["VICTIM"]
    run.wait_for_completion(raise_on_error=False)
    assert {str(p): p.read_bytes() for p in victim.rglob("*") if p.is_file()} == before
    names = run.get_file_names()
    assert not [n for n in names if "precious" in n or "secret" in n]
    assert mounts_below(os.path.realpath(workspace.path)) == []  # the run's overlay went, where it was moved


def test_a_look_works_where_it_cannot_make_its_probe_lock(workspace: Workspace, src: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A workspace this process may only read (a read-only mount, another user's): a look at a
    running run answers without taking turns, instead of failing."""
    write_script(src, "s.py", "print('up', flush=True)\nimport time\ntime.sleep(600)\n")
    run, folder = started(workspace, src, "s.py", "up")
    try:
        for probe in Path(folder.active_dir).glob(".*.probe"):
            probe.unlink()
        real_open = os.open

        def read_only(path: str, flags: int, *args: int) -> int:
            if str(path).endswith(".probe") and flags & os.O_CREAT:
                raise OSError(30, "Read-only file system", path)
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", read_only)
        assert folder.attended() is True
        assert get_run(workspace, run.id).status in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING)
    finally:
        monkeypatch.undo()
        run.cancel()
        run.wait_for_completion(raise_on_error=False)


def test_rerun_of_a_command_run_takes_the_command_from_the_history(workspace: Workspace, src: Path) -> None:
    from runyard.runs import rerun_spec

    write_script(src, "t.py", """
        import json, os
        folder = os.path.join(os.environ["RUNYARD_WORKSPACE"], "runs", os.environ["RUNYARD_RUN_ID"])
        path = os.path.join(folder, "request.json")
        request = json.load(open(path))
        request["command"] = ["echo", "INJECTED"]
        json.dump(request, open(path, "w"))
    """)
    run = submit(workspace, src, None, command=["python", "t.py"])  # type: ignore[arg-type]
    run.wait_for_completion()
    assert rerun_spec(workspace, run.id).command == ["python", "t.py"]


def test_a_planted_end_file_does_not_block_the_reaper(workspace: Workspace, src: Path) -> None:
    write_script(src, "e.py", """
        import json, os, time
        folder = os.path.join(os.environ["RUNYARD_WORKSPACE"], "runs", os.environ["RUNYARD_RUN_ID"])
        json.dump({"status": "Bogus", "exit_code": 0, "signal": None, "error": None, "started": None,
                   "ended": 0}, open(os.path.join(folder, "end.json"), "w"))
        os.makedirs("outputs", exist_ok=True)
        open("outputs/kept.txt", "w").write("kept")
        print("planted", flush=True)
        time.sleep(600)
    """)
    run, _folder = started(workspace, src, "e.py", "planted")
    kill_and_wait(identity(workspace, run.id)["pid"])
    assert run.get_status() == "Failed"
    assert "outputs/kept.txt" in run.get_file_names()


def test_a_run_whose_reaper_died_after_recording_its_end_is_finished_by_the_next_read(workspace: Workspace,
                                                                                       src: Path) -> None:
    """The end is in the history, but whoever recorded it (a supervisor, a reaper) was killed
    before letting go: the marker stays, nobody holds it. The next read finishes the work."""
    write_script(src, "ok.py", "print('done')\n")
    run = runyard.Experiment(workspace, "late").submit(runyard.ScriptRunConfig(source_directory=str(src),
                                                                               script="ok.py"))
    assert run.wait_for_completion()["status"] == "Completed"
    folder = RunFolder.of(workspace.path, run.id)
    deadline = time.monotonic() + 10
    while os.path.exists(folder.marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.close(folder.claim())  # a marker as a killed holder leaves it: there, and held by nobody
    assert os.path.exists(folder.marker) and folder.attended() is False
    assert get_run(workspace, run.id).status is RunStatus.COMPLETED
    assert not os.path.exists(folder.marker)
    assert get_run(workspace, run.id).status is RunStatus.COMPLETED  # and reads stay as they were
