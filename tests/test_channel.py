"""The script's channel: what Run.get_context() reports reaches the history through the
supervisor, fast, in order, and nothing is lost when the script or the supervisor dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

import runyard
from runyard.agent.folder import RunFolder
from runyard.compute.local import pid_alive
from runyard.history import RunStatus
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def workspace(target_workspace: Workspace) -> Workspace:
    """On every compute target kind: in a sandbox the channel is the script's only way to report."""
    return target_workspace


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    return d


def submit(ws: Workspace, src: Path, script: str, *args: str) -> runyard.Run:
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script=script, arguments=list(args))
    return runyard.Experiment(ws, "ch").submit(cfg)


def wait_for(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        time.sleep(0.02)


def printed(ws: Workspace, run_id: str, text: str) -> bool:
    raw = Path(RunFolder.of(ws.path, run_id).raw_output)
    return raw.exists() and text in raw.read_text()


LOGS_THEN_WAITS = """
    import sys, time
    import runyard
    run = runyard.Run.get_context()
    n = int(sys.argv[1])
    for i in range(n):
        run.log("loss", 1.0 / (i + 1), step=i)
    run.log("count", n)
    run.tag("phase", "done")
    run.add_properties({"owner": "me"})
    open("report.txt", "w").write("report")
    run.upload_file("outputs/report.txt", "report.txt")
    print("logged", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_every_point_and_report_reaches_the_history_in_order(workspace: Workspace, src: Path) -> None:
    write_script(src, "l.py", LOGS_THEN_WAITS)
    run = submit(workspace, src, "l.py", "20000", "0")
    run.wait_for_completion()
    points = run.get_metric_points("loss")
    assert len(points) == 20000
    assert [p.step for p in points] == list(range(20000))  # order and steps kept
    assert points[9].value == pytest.approx(0.1)
    assert run.get_metrics("count") == {"count": 20000}  # an int stays an int
    assert run.get_tags() == {"phase": "done"} and run.get_properties()["owner"] == "me"
    assert "outputs/report.txt" in run.get_file_names()


@pytest.mark.parametrize("who", ["script", "supervisor"])
def test_nothing_logged_before_a_kill_is_lost(workspace: Workspace, src: Path, who: str) -> None:
    write_script(src, "l.py", LOGS_THEN_WAITS)
    run = submit(workspace, src, "l.py", "30000", "600")
    wait_for(lambda: printed(workspace, run.id, "logged"))
    identity = RunFolder.of(workspace.path, run.id).read_identity()
    pid = identity["script_pid" if who == "script" else "pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid))
    run.wait_for_completion(raise_on_error=False)
    assert run.get_status() == "Failed"
    assert len(run.get_metric_points("loss")) == 30000
    assert run.get_metrics("count") == {"count": 30000}
    assert run.get_tags() == {"phase": "done"}
    assert "outputs/report.txt" in run.get_file_names()


def test_points_are_readable_while_the_run_goes(workspace: Workspace, src: Path) -> None:
    write_script(src, "t.py", """
        import time
        import runyard
        run = runyard.Run.get_context()
        for i in range(600):
            run.log("tick", i, step=i)
            time.sleep(0.05)
    """)
    run = submit(workspace, src, "t.py")
    try:
        wait_for(lambda: run.get_status() == "Running")
        time.sleep(2)
        seen = run.get_metric_points("tick")
        assert len(seen) >= 10  # about 40 logged by now: within a second of being logged
        assert seen[-1].value >= len(seen) - 1
    finally:
        run.cancel()
        run.wait_for_completion(raise_on_error=False)


def test_logging_never_waits_for_a_locked_history(workspace: Workspace, src: Path) -> None:
    write_script(src, "l.py", """
        import os, time
        import runyard
        run = runyard.Run.get_context()
        while not os.path.exists("go"):  # the test says when, in the working directory
            time.sleep(0.01)
        for i in range(50000):
            run.log("loss", i, step=i)
        print("logged", flush=True)
    """)
    run = submit(workspace, src, "l.py")
    go = Path(RunFolder.of(workspace.path, run.id).work, "wd", "go")
    locker = sqlite3.connect(os.path.join(workspace.path, "history.db"), isolation_level=None, timeout=30)
    try:
        wait_for(lambda: run.get_status() == "Running")
        locker.execute("BEGIN EXCLUSIVE")  # the history is locked for everybody from now on
        started = time.monotonic()
        go.write_text("go")
        wait_for(lambda: printed(workspace, run.id, "logged"), 60)
        took = time.monotonic() - started
        locker.execute("ROLLBACK")
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
    assert took < 30  # 50,000 points while the history was locked (the history timeout is 30 s)
    run.wait_for_completion()
    assert len(run.get_metric_points("loss")) == 50000


def test_a_forked_process_logs_too_and_every_value_is_kept(workspace: Workspace, src: Path) -> None:
    write_script(src, "f.py", """
        import os
        import runyard
        run = runyard.Run.get_context()
        run.log("parent", 1)
        kids = []
        for k in range(4):
            pid = os.fork()
            if pid == 0:
                for i in range(1000):
                    run.log("child", k * 1000 + i)
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
    """)
    run = submit(workspace, src, "f.py")
    run.wait_for_completion()
    values = sorted(p.value for p in run.get_metric_points("child"))
    assert values == list(range(4000))
    assert len({p.pid for p in run.get_metric_points("child")}) == 4


def test_lines_runyard_cannot_read_are_skipped_not_fatal(workspace: Workspace, src: Path) -> None:
    write_script(src, "h.py", """
        import os
        import runyard
        run = runyard.Run.get_context()
        run.log("before", 1)
        with open(os.path.join(os.environ["RUNYARD_CHANNEL"], "log.jsonl"), "a") as f:
            f.write("not json\\n")
            f.write('{"k": "u", "n": "outputs/x", "f": "../../../../etc/passwd"}\\n')
            f.write('{"k": "m", "n": "bad step", "v": 1, "s": "one"}\\n')
        run.log("after", 2)
    """)
    run = submit(workspace, src, "h.py")
    run.wait_for_completion()
    assert run.get_metrics() == {"before": 1, "after": 2}
    assert "outputs/x" not in run.get_file_names()


def test_many_points_per_second(workspace: Workspace, src: Path) -> None:
    """Not a timing assertion: the script reports how many it logged in a while, and all of them arrive."""
    write_script(src, "fast.py", """
        import time
        import runyard
        run = runyard.Run.get_context()
        n = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for _ in range(1000):
                run.log("x", n, step=n)
                n += 1
        run.log("n", n)
        print("logged", n, flush=True)
    """)
    run = submit(workspace, src, "fast.py")
    run.wait_for_completion()
    n = run.get_metrics("n")["n"]
    assert len(run.get_metric_points("x")) == n
    assert RunStatus(run.get_status()) is RunStatus.COMPLETED


def test_the_channel_of_a_run_does_not_follow_a_planted_link(workspace: Workspace, src: Path,
                                                             tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    write_script(src, "u.py", """
        import os, time
        import runyard
        run = runyard.Run.get_context()
        uploads = os.path.join(os.environ["RUNYARD_CHANNEL"], "uploads")
        os.makedirs(uploads, exist_ok=True)
        os.symlink(SECRET, os.path.join(uploads, "planted"))
        with open(os.path.join(os.environ["RUNYARD_CHANNEL"], "log.jsonl"), "a") as f:
            f.write('{"k": "u", "n": "outputs/stolen", "f": "planted"}\\n')
    """.replace("SECRET", repr(str(secret))))  # (not through the environment: a sandbox passes little of it on)
    run = submit(workspace, src, "u.py")
    run.wait_for_completion()
    assert "outputs/stolen" not in run.get_file_names()
    assert secret.read_text() == "secret"
