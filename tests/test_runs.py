"""Runs end to end: real supervisor processes, real scripts, real signals.

Every exit path (success, exit code, exception, kill -9, cancel, a dead
supervisor) must end in an honest status with the outputs synced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runyard
from runyard.compute.local import pid_alive
from runyard.history import RunStatus
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(120)


write = write_script


@pytest.fixture
def workspace(target_workspace: Workspace) -> Workspace:
    """The conformance suite: every test here runs on each compute target kind (conftest.TARGETS)."""
    return target_workspace


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "data.txt").write_text("original\n")
    return d


def default_sigint() -> None:
    """In a child about to run ``runyard run``: Ctrl-C does what it does in a terminal.

    The suite may have been started with SIGINT ignored (a background job, some
    CI runners); a child inherits that, and Python then never raises
    KeyboardInterrupt. A test that sends SIGINT resets it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def submit(ws: Workspace, src: Path, script: str, *args: str, experiment: str = "t") -> runyard.Run:
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script=script, arguments=list(args))
    return runyard.Experiment(ws, experiment).submit(cfg)


def cli(ws: Workspace, *args: str, env: dict[str, str] | None = None, timeout: float = 60,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # ``python -m runyard`` is the installed command's entry: `run` forks its supervisor early.
    return subprocess.run([sys.executable, "-m", "runyard", "--workspace", ws.path, *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=cwd)


def test_a_run_completes_with_metrics_outputs_logs_and_env(workspace: Workspace, src: Path) -> None:
    write(src, "train.py", """
        import os, sys
        import runyard
        run = runyard.Run.get_context()
        for step in range(3):
            run.log("loss", 1.0 / (step + 1), step=step)
        run.log_list("acc", [0.5, 0.7])
        run.log_row("table", epoch=1, score=0.9)
        run.tag("kind", "test")
        run.add_properties({"owner": "me"})
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/model.txt", "w") as f:
            f.write("weights")
        with open("logs/extra.log", "w") as f:
            f.write("hello log\\n")
        print("out 1", flush=True)
        print("err 2", file=sys.stderr, flush=True)
        print("out 3", flush=True)
        for k in ("RUNYARD_RUN_ID", "RUNYARD_EXPERIMENT", "RUNYARD_WORKSPACE", "RUNYARD_SNAPSHOT_ID",
                  "RUNYARD_OUTPUTS_DIR", "RUNYARD_LOGS_DIR"):
            print(k, "=", os.environ[k])
        print("args", sys.argv[1:])
        print("cwd", os.getcwd())
    """)
    run = submit(workspace, src, "train.py", "--lr", "0.1", "two words")
    details = run.wait_for_completion()
    assert details["status"] == "Completed" and details["exitCode"] == 0
    metrics = run.get_metrics()
    assert metrics["loss"] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert metrics["acc"] == [0.5, 0.7]
    assert metrics["table"] == {"epoch": 1, "score": 0.9}
    assert run.get_tags() == {"kind": "test"} and run.get_properties() == {"owner": "me"}
    names = run.get_file_names()
    assert "outputs/model.txt" in names and "logs/extra.log" in names and "runyard_logs/driver_log.txt" in names
    log = workspace.open_store().get_bytes(
        {a.name: a for a in run.history.list_artifacts(run.id)}["runyard_logs/driver_log.txt"].digest).decode()
    assert log.index("out 1") < log.index("err 2") < log.index("out 3")
    assert f"RUNYARD_RUN_ID = {run.id}" in log and "RUNYARD_EXPERIMENT = t" in log
    assert "args ['--lr', '0.1', 'two words']" in log
    cwd = log.split("cwd ")[1].split("\n")[0]
    assert not cwd.startswith(str(src)) and not os.path.exists(cwd)  # outside the source; gone after the run
    out = tmp = Path(run.download_file("outputs/model.txt", str(src.parent / "model.txt")))
    assert out.read_text() == "weights" and tmp.parent == src.parent


def test_isolation_nothing_reaches_the_source_the_store_or_the_next_run(workspace: Workspace, src: Path) -> None:
    write(src, "mutate.py", """
        import os
        print("saw", open("data.txt").read().strip())
        with open("data.txt", "a") as f:
            f.write("changed by the run\\n")
        os.chmod("mutate.py", 0o600)
        open("new_file.txt", "w").write("x")
        os.remove("data.txt") if os.environ.get("DELETE") else None
    """)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    store_root = Path(workspace.path) / "store" / "blobs"

    def blobs() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in store_root.rglob("*") if p.is_file()}

    first = submit(workspace, src, "mutate.py")
    first.wait_for_completion()
    snapshot_blobs = blobs()
    second = submit(workspace, src, "mutate.py")
    second.wait_for_completion()
    for run in (first, second):
        assert "saw original" in _driver_log(workspace, run.id)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    after = blobs()
    assert {k: v for k, v in after.items() if k in snapshot_blobs} == snapshot_blobs


def _driver_log(ws: Workspace, run_id: str) -> str:
    from runyard.agent.folder import RunFolder

    return Path(RunFolder.of(ws.path, run_id).driver_log).read_text()


@pytest.mark.parametrize(
    ("code", "status", "exit_code", "sig", "error"),
    [
        ("raise SystemExit(3)", "Failed", 3, None, "exited with code 3"),
        ("raise ValueError('bad value')", "Failed", 1, None, "ValueError: bad value"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "Failed", None, 9, "SIGKILL"),
        ("os._exit(0)", "Completed", 0, None, None),
    ],
    ids=["exit-3", "exception", "kill-9", "os-exit-0"],
)
def test_every_exit_keeps_outputs_and_the_last_line(workspace: Workspace, src: Path, code: str, status: str,
                                                    exit_code: int | None, sig: int | None, error: str | None) -> None:
    write(src, "end.py", f"""
        import os, signal, sys
        os.makedirs("outputs", exist_ok=True)
        open("outputs/partial.txt", "w").write("saved before the end")
        sys.stdout.write("last words without a newline")
        sys.stdout.flush()
        {code}
    """)
    run = submit(workspace, src, "end.py")
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == status
    assert details["exitCode"] == exit_code and details["signal"] == sig
    if error:
        assert error in details["error"]
    assert "outputs/partial.txt" in run.get_file_names()
    log = _driver_log(workspace, run.id)
    assert "last words without a newline" in log
    if status == "Completed" or sig:
        assert log.rstrip("\n").endswith("last words without a newline")
    if status == "Failed":
        with pytest.raises(runyard.RunError, match="failed"):
            run.wait_for_completion()


# A script that saves an output and says so when it gets SIGTERM.
SIGTERM_AWARE = """
    import signal, sys, time
    def bye(*_):
        open("outputs/at_sigterm.txt", "w").write("bye")
        print("got SIGTERM", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, bye)
    print("started", flush=True)
    time.sleep(60)
"""


def test_cancel_sends_sigterm_then_the_status_is_canceled(workspace: Workspace, src: Path) -> None:
    write(src, "slow.py", SIGTERM_AWARE)
    run = submit(workspace, src, "slow.py")
    _wait_for_log(workspace, run.id, "started")
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Canceled"
    assert "got SIGTERM" in _driver_log(workspace, run.id)
    assert "outputs/at_sigterm.txt" in run.get_file_names()


def test_cancel_kills_a_script_that_ignores_sigterm(workspace: Workspace, src: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_CANCEL_GRACE", "0.5")
    write(src, "stubborn.py", """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("started", flush=True)
        time.sleep(60)
    """)
    run = submit(workspace, src, "stubborn.py")
    _wait_for_log(workspace, run.id, "started")
    t = time.monotonic()
    run.cancel()
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    assert time.monotonic() - t < 30


def _wait_for_log(ws: Workspace, run_id: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in _driver_log(ws, run_id):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the driver log of {run_id}")


def test_a_dead_supervisor_is_found_and_the_run_marked_failed(workspace: Workspace, src: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write(src, "forever.py", """
        import time
        print("started", flush=True)
        time.sleep(600)
    """)
    run = submit(workspace, src, "forever.py")
    _wait_for_log(workspace, run.id, "started")
    history = workspace.open_history()
    deadline = time.monotonic() + 20
    while (record := history.get_run(run.id)).status is not RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)  # the script may start before the history has the run Running
    assert record.status is RunStatus.RUNNING and record.supervisor_pid
    os.kill(record.supervisor_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(record.supervisor_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.get_status() == "Failed"
    assert "lost" in (run.get_details()["error"] or "")
    from runyard.agent.workdir import mounts_below

    assert mounts_below(workspace.runs_dir) == []  # the dead supervisor's overlay was cleaned up


def test_logs_are_mirrored_while_the_script_runs(workspace: Workspace, src: Path) -> None:
    write(src, "logger.py", """
        import time
        with open("logs/progress.log", "w") as f:
            f.write("step 1\\n"); f.flush()
            print("wrote step 1", flush=True)
            time.sleep(60)
    """)
    run = submit(workspace, src, "logger.py")
    _wait_for_log(workspace, run.id, "wrote step 1")
    mirror = Path(workspace.runs_dir, run.id, "logs", "progress.log")
    deadline = time.monotonic() + 10
    while not (mirror.exists() and mirror.read_text() == "step 1\n") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mirror.read_text() == "step 1\n"
    run.cancel()
    run.wait_for_completion(raise_on_error=False)
    assert "logs/progress.log" in run.get_file_names()


def test_an_outputs_symlink_to_a_secret_uploads_nothing(workspace: Workspace, src: Path) -> None:
    write(src, "evil.py", """
        import os
        os.makedirs("outputs", exist_ok=True)
        os.symlink("/etc/shadow", "outputs/shadow")
        os.symlink("../../../../etc/passwd", "outputs/passwd")
        open("outputs/fine.txt", "w").write("ok")
    """)
    run = submit(workspace, src, "evil.py")
    run.wait_for_completion()
    names = run.get_file_names()
    assert "outputs/fine.txt" in names
    assert "outputs/shadow" not in names and "outputs/passwd" not in names
    secret = Path("/etc/shadow")
    if secret.exists():
        from runyard.store.base import hash_bytes

        digest = hash_bytes(secret.read_bytes())
        assert not workspace.open_store().has(digest)


def test_cli_run_exit_code_detach_and_the_history_commands(workspace: Workspace, src: Path,
                                                           tmp_path: Path) -> None:
    write(src, "job.py", """
        import os, platform, sys
        import runyard
        runyard.Run.get_context().log("score", 7)
        os.makedirs("outputs", exist_ok=True)
        open("outputs/result.txt", "w").write("42")
        print("progress 10%\\rprogress 50%\\rprogress 100%")
        print("job args", sys.argv[1:], "python", platform.python_version())
        sys.exit(int(sys.argv[1]))
    """)
    done = cli(workspace, "run", "--source-dir", str(src), "-e", "cli", "job.py", "0", "--flag")
    assert done.returncode == 0, done.stderr
    assert "job args ['0', '--flag']" in done.stdout
    failed = cli(workspace, "run", "--source-dir", str(src), "-e", "cli", "job.py", "5")
    assert failed.returncode == 5
    assert "Failed" in failed.stderr
    detached = cli(workspace, "run", "--detach", "--source-dir", str(src), "-e", "cli", "--tag", "lr=0.1",
                   "--tag", "baseline", "job.py", "0")
    assert detached.returncode == 0
    run_id = detached.stdout.strip().splitlines()[-1]
    assert runyard.Run(workspace, run_id).wait_for_completion()["status"] == "Completed"

    listing = cli(workspace, "runs", "ls", "-e", "cli")
    assert listing.stdout.count("cli_") == 3 and "Failed" in listing.stdout
    assert cli(workspace, "runs", "ls", "--status", "Failed").stdout.count("cli_") == 1
    shown = cli(workspace, "runs", "show", run_id)
    assert "Completed" in shown.stdout and "score: 7\n" in shown.stdout  # an int stays an int
    ran_with = done.stdout.split("python ")[1].split()[0]  # the Python the script ran with is the one recorded
    assert "tags: baseline, lr=0.1\n" in shown.stdout and f"python: {ran_with}\n" in shown.stdout
    assert f"(Python {ran_with}, " in shown.stdout  # and its environment
    assert "command: " in shown.stdout
    assert cli(workspace, "runs", "ls", "--tag", "lr=0.1", "--json").stdout.count(run_id) == 1
    logs = cli(workspace, "logs", run_id)
    assert "progress 100%" in logs.stdout and "progress 50%" not in logs.stdout  # \r updates collapsed
    arts = cli(workspace, "artifacts", "ls", run_id)
    assert "outputs/result.txt" in arts.stdout
    out_dir = tmp_path / "dl"
    got = cli(workspace, "artifacts", "download", run_id, "outputs/*", "-o", str(out_dir))
    assert got.returncode == 0 and (out_dir / "outputs" / "result.txt").read_text() == "42"
    again = cli(workspace, "rerun", run_id[:-4])  # a unique prefix
    new_id = again.stderr.split("runyard: run ", 1)[1].split()[0]
    assert f"rerun of: {run_id}\n" in cli(workspace, "runs", "show", new_id).stdout
    assert again.returncode == 0 and "job args ['0']" in again.stdout
    restored = tmp_path / "restored"
    assert cli(workspace, "snapshot", "restore", run_id, str(restored)).returncode == 0
    assert (restored / "job.py").exists()
    missing = cli(workspace, "runs", "show", "nope_1_deadbeef")
    assert missing.returncode == 1 and "runyard runs ls" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_run_of_a_missing_or_ignored_script_says_what_to_do(workspace: Workspace, src: Path) -> None:
    r = cli(workspace, "run", "--source-dir", str(src), "nope.py")
    assert r.returncode == 1 and "no script 'nope.py'" in r.stderr and "Traceback" not in r.stderr
    (src / ".amlignore").write_text("hidden.py\n")
    write(src, "hidden.py", "print(1)\n")
    r = cli(workspace, "run", "--source-dir", str(src), "hidden.py")
    assert r.returncode == 1 and "excluded from the snapshot" in r.stderr and "snapshot explain" in r.stderr


def test_sixteen_runs_at_once_lose_nothing(workspace: Workspace, src: Path) -> None:
    write(src, "many.py", """
        import os, sys
        import runyard
        run = runyard.Run.get_context()
        for i in range(50):
            run.log("i", i, step=i)
        os.makedirs("outputs", exist_ok=True)
        open("outputs/me.txt", "w").write(sys.argv[1])
    """)
    runs = [submit(workspace, src, "many.py", str(i), experiment="crowd") for i in range(16)]
    for run in runs:
        assert run.wait_for_completion()["status"] == "Completed"
    for i, run in enumerate(runs):
        assert run.get_metrics()["i"] == [float(k) for k in range(50)]
        path = run.download_file("outputs/me.txt", str(src.parent / f"me{i}.txt"))
        assert Path(path).read_text() == str(i)


def test_get_context_outside_a_run_is_offline(capsys: pytest.CaptureFixture[str]) -> None:
    run = runyard.Run.get_context()
    run.log("loss", 0.25)
    assert "loss = 0.25" in capsys.readouterr().err
    assert run.get_metrics() == {"loss": 0.25}


def test_ctrl_c_in_runyard_run_cancels_the_run(workspace: Workspace, src: Path) -> None:
    write(src, "wait.py", SIGTERM_AWARE)
    proc = subprocess.Popen([sys.executable, "-m", "runyard.cli", "--workspace", workspace.path, "run",
                             "--source-dir", str(src), "-e", "ctrlc", "wait.py"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    while first.startswith("runyard:"):  # what runyard says of the run (a sandbox's limits, say)
        first = proc.stdout.readline()
    assert first.strip() == "started"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground process
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "got SIGTERM" in out and "Canceled" in err
    run_id = err.split("runyard: run ")[1].split()[0]
    run = runyard.Run(workspace, run_id)
    assert run.get_status() == "Canceled"
    assert "outputs/at_sigterm.txt" in run.get_file_names()


@pytest.mark.parametrize(
    ("argv", "early"),
    [
        (["run", "train.py"], True),
        (["--workspace", "w", "run", "--source-dir", "s", "train.py", "--detach"], False),  # (forked later then)
        (["run", "--command", "make", "-e", "x"], True),
        (["run", "--detach", "train.py"], False),
        (["run", "--tag", "lr=0.1", "--detach", "train.py"], False),  # --tag takes a value
        (["run", "--input", "x=dataset:d", "--detach", "train.py"], False),  # so do the data options
        (["run", "--output", "m", "--register-output", "m=model", "--overwrite-output", "m", "--detach", "t.py"],
         False),
        (["--workspace=w", "run", "-e", "x", "t.py"], True),
        (["run", "--help"], False),
        (["--help", "run"], False),
        (["runs", "ls"], False),
        ([], False),
    ],
)
def test_only_a_foreground_run_forks_its_supervisor_early(argv: list[str], early: bool) -> None:
    from runyard._main import _is_foreground_run

    assert _is_foreground_run(argv) is early


def test_a_run_records_the_git_commit_branch_and_dirty_flag(workspace: Workspace, src: Path) -> None:
    from conftest import git

    write(src, "g.py", "print('git')\n")
    git(src, "init", "-q", "-b", "main", ".")
    git(src, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "g.py", "data.txt")
    git(src, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "one")
    head = git(src, "rev-parse", "HEAD").strip()
    clean = submit(workspace, src, "g.py").wait_for_completion()["git"]
    assert clean == {"commit": head, "branch": "main", "dirty": False}
    (src / "data.txt").write_text("edited\n")
    assert submit(workspace, src, "g.py").wait_for_completion()["git"]["dirty"] is True


def test_an_end_written_but_not_recorded_is_recorded_by_the_next_reader(workspace: Workspace, src: Path) -> None:
    """The supervisor writes end.json, then records it; should it die between,
    the next read records the true end from the file instead of 'lost'."""
    from runyard.history import Artifact
    from runyard.runs import RunEnd, RunSpec, get_run, prepare, record

    write(src, "x.py", "print(1)\n")
    request = prepare(workspace, RunSpec(source_directory=str(src), script="x.py", experiment="crash"))
    assert request.claim is not None
    os.close(request.claim)  # the process that prepared it dies before the supervisor takes over
    history = workspace.open_history()
    record(history, request)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    history.set_status(request.run_id, RunStatus.PREPARING, supervisor_pid=dead.pid, host=os.uname().nodename)
    digest, size, _ = workspace.open_store().put_file(str(src / "x.py"))
    started = time.time() - 1
    RunEnd("Completed", 0, None, None, started, time.time(), "python x.py", "/gone",
           [Artifact("outputs/x.py", size, digest, None)]).write(os.path.join(workspace.runs_dir, request.run_id))
    run = get_run(workspace, request.run_id)
    assert run.status is RunStatus.COMPLETED and run.exit_code == 0 and run.started == pytest.approx(started)
    assert [a.name for a in history.list_artifacts(request.run_id)] == ["outputs/x.py"]


def test_ctrl_c_at_once_cancels_even_before_the_history_has_the_run(workspace: Workspace, src: Path) -> None:
    write(src, "ticks.py", """
        import time
        for i in range(40):
            print("tick", i, flush=True)
            time.sleep(0.25)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "runyard", "--workspace", workspace.path, "run",
                             "--source-dir", str(src), "-e", "early", "ticks.py"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "runyard: run <id> (snapshot ...)": the supervisor was just handed the run
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, first + err
    run_id = first.split("runyard: run ")[1].split()[0]
    assert runyard.Run(workspace, run_id).get_status() == "Canceled"
    assert out.count("tick") < 40


def test_the_run_is_readable_the_moment_runyard_run_returns(workspace: Workspace, src: Path) -> None:
    write(src, "hello.py", "print('hello')\n")
    for _ in range(3):
        done = cli(workspace, "run", "--source-dir", str(src), "-e", "quick", "hello.py")
        run_id = done.stderr.split("runyard: run ")[1].split()[0]
        run = runyard.Run(workspace, run_id)
        assert run.get_status() == "Completed"  # waits for the supervisor's record if needed
        assert "runyard_logs/driver_log.txt" in run.get_file_names()


def test_nothing_the_script_started_outlives_the_run(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    from runyard.agent.procs import processes_with

    mark = f"RUNYARD_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"  # found in /proc, in any PID namespace
    write(src, "spawner.py", f"""
        import os, subprocess, sys
        env = dict(os.environ)
        env["RUNYARD_TEST_MARK"] = {mark.split("=", 1)[1]!r}
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True, stdout=subprocess.DEVNULL, env=env)
        ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", ignore], stdout=subprocess.DEVNULL, env=env)
    """)
    run = submit(workspace, src, "spawner.py")
    assert run.wait_for_completion()["status"] == "Completed"
    left = [p for p in processes_with(mark) if pid_alive(p)]
    assert left == [], f"processes {left} outlived their run"


def test_a_symlinked_script_is_refused(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("print('outside')\n")
    os.symlink(outside, src / "link.py")
    r = cli(workspace, "run", "--source-dir", str(src), "link.py")
    assert r.returncode == 1 and "is a symlink" in r.stderr and "Traceback" not in r.stderr


def test_a_locked_history_does_not_hold_up_a_cancel(workspace: Workspace, src: Path) -> None:
    import sqlite3

    write(src, "slow.py", SIGTERM_AWARE)
    run = submit(workspace, src, "slow.py")
    _wait_for_log(workspace, run.id, "started")
    lock = sqlite3.connect(os.path.join(workspace.path, "history.db"), isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")  # every write to the history now waits
    try:
        run.cancel()  # a file and a signal: no history needed
        _wait_for_log(workspace, run.id, "got SIGTERM", timeout=20)  # while the history is still locked
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"


def test_detached_runs_never_corrupt_the_history(workspace: Workspace, src: Path) -> None:
    """`runyard run --detach` records the run, then forks the supervisor: no
    SQLite connection of the command may reach the child (closing it there
    drops the child's locks, and the script's metric writes then went into
    the wrong pages of the database)."""
    import sqlite3

    write(src, "metric.py", """
        import runyard
        runyard.Run.get_context().log("score", 7)
    """)
    ids = []
    for _ in range(8):
        p = cli(workspace, "run", "--detach", "--source-dir", str(src), "-e", "det", "metric.py")
        assert p.returncode == 0, p.stderr
        ids.append(p.stdout.strip().splitlines()[-1])
        runyard.Run(workspace, ids[-1]).wait_for_completion()
    con = sqlite3.connect(Path(workspace.path) / "history.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        got = dict(con.execute("SELECT run_id, value FROM metrics WHERE name = 'score'").fetchall())
    finally:
        con.close()
    assert got == {i: 7.0 for i in ids}
