"""Review repros (review2): each fails on 22934a6 and passes with /tmp/review2/patches applied."""
# ruff: noqa: F811  (fixtures imported from test_envs, taken as arguments)
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runyard
from runyard.workspace import Workspace
from test_envs import make_wheel, proj, uv_offline, wheels  # noqa: F401  (fixtures)
from trees import write_script

pytestmark = pytest.mark.timeout(180)


def test_rerun_of_a_run_whose_environment_failed_keeps_the_environment(workspace: Workspace, proj: Path,
                                                                       uv_offline: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-wheels-yet"
    empty.mkdir()
    monkeypatch.setenv("UV_FIND_LINKS", str(empty))  # the index is down: the build fails
    run = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(
        source_directory=str(proj), script="train.py", environment=str(proj / "requirements.txt")))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "could not be made" in details["error"]
    # what it asked for is on its record
    assert details["environment"] is not None and details["environment"]["spec"]["requirements"] == ["rybeta"]
    monkeypatch.setenv("UV_FIND_LINKS", str(uv_offline))  # the index is back: run it again
    from runyard.runs import rerun_spec, submit

    again = runyard.Run(workspace, submit(workspace, rerun_spec(workspace, run.id)).id)
    d2 = again.wait_for_completion(raise_on_error=False)
    assert d2["status"] == "Completed", d2
    assert again.get_environment().packages == ["ryalpha==2.0", "rybeta==0.5"]


def test_a_sandboxed_script_does_not_get_the_callers_secrets_from_its_environment(
        sandbox_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard.agent.folder import RunFolder

    ws = sandbox_workspace
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-s3-secret")  # the workspace's datastore credentials
    monkeypatch.setenv("PGPASSWORD", "the-history-password")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=the-blob-key")
    src = tmp_path / "proj"
    src.mkdir()
    write_script(src, "peek.py", """
        import os
        print("SEEN", sorted(v for v in os.environ.values() if "the-" in v))
    """)
    run = runyard.Experiment(ws, "sb").submit(runyard.ScriptRunConfig(source_directory=str(src), script="peek.py"))
    assert run.wait_for_completion()["status"] == "Completed"
    log = Path(RunFolder.of(ws.path, run.id).driver_log).read_text()
    assert "SEEN []" in log, log


def test_an_environments_own_variables_are_not_overwritten(workspace: Workspace, proj: Path,
                                                           tmp_path: Path) -> None:
    from runyard.agent.folder import RunFolder

    lib = tmp_path / "mylib"
    lib.mkdir()
    (lib / "helpers.py").write_text("NAME = 'helpers from PYTHONPATH'\n")
    write_script(proj, "uses.py", """
        import helpers
        print(helpers.NAME)
    """)
    env = runyard.Environment.from_pip_requirements("pp", str(proj / "requirements.txt"))
    env.environment_variables["PYTHONPATH"] = str(lib)
    run = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(
        source_directory=str(proj), script="uses.py", environment=env))
    details = run.wait_for_completion(raise_on_error=False)
    log = Path(RunFolder.of(workspace.path, run.id).driver_log).read_text()
    assert details["status"] == "Completed", log


NO_USERNS = Path(__file__).with_name("no_userns.py")


def test_a_remembered_preflight_does_not_hide_a_sandbox_that_cannot_work_here(
        sandbox_workspace: Workspace, tmp_path: Path) -> None:
    """The workspace's sandbox preflight was remembered on this boot; the same workspace is then
    used from a process that cannot make user namespaces (a container under Docker's default
    seccomp profile on the same host: same boot id, same /proc/sys, same bwrap). The run must
    be refused with the preflight's reason, not start and fail with bwrap's exit code."""
    from runyard.agent import sandbox

    ws = sandbox_workspace
    sandbox._checked.clear()
    uid, gid = sandbox.user_ids(None)
    assert sandbox.preflight(uid, gid, ws.cache_dir) is None  # remembered in the cache
    src = tmp_path / "proj"
    src.mkdir()
    write_script(src, "hello.py", "print('hello')\n")
    done = subprocess.run([sys.executable, str(NO_USERNS), sys.executable, "-m", "runyard", "--workspace", ws.path,
                           "run", "--source-dir", str(src), "hello.py"], capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert "cannot make user namespaces" in said, said


from test_envs import building_against, stalling_index  # noqa: E402,F401


def test_a_supervisor_killed_during_a_build(workspace: Workspace, proj: Path, stalling_index: str,
                                             uv_offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from runyard.agent.folder import RunFolder
    from runyard.agent.procs import pid_alive, processes_with

    run = building_against(stalling_index, workspace, proj, monkeypatch)
    time.sleep(1.0)
    folder = RunFolder.of(workspace.path, run.id)
    pid = folder.read_identity()["pid"]
    uvs = [p for p in processes_with(f"UV_DEFAULT_INDEX={stalling_index}")
           if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/uv")]
    assert uvs, "uv is not running"
    os.kill(pid, signal.SIGKILL)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "lost" in details["error"]
    assert details["environment"] and details["environment"]["name"] == "requirements"  # what it asked for
    time.sleep(0.5)
    assert [p for p in uvs if pid_alive(p)] == []
    envs = Path(workspace.cache_dir) / "envs"
    print(sorted(p.name for p in envs.iterdir()))
    monkeypatch.delenv("UV_DEFAULT_INDEX")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(uv_offline))
    again = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(
        source_directory=str(proj), script="train.py", environment=str(proj / "requirements.txt")))
    assert again.wait_for_completion(raise_on_error=False)["status"] == "Completed"


def test_a_sandboxed_script_cannot_have_the_supervisor_upload_a_host_file(
        sandbox_workspace: Workspace, tmp_path: Path) -> None:
    """The channel's folder is the sandbox user's: its ``uploads`` folder can be replaced by a
    link, and the supervisor (root, outside the sandbox) then reads through it."""
    ws = sandbox_workspace
    creds = Path(ws.path) / "credentials.json"
    creds.write_text('{"lake": {"key": "the-secret-key"}}')
    creds.chmod(0o600)
    src = tmp_path / "proj"
    src.mkdir()
    write_script(src, "steal.py", """
        import json, os, shutil
        ch = os.environ["RUNYARD_CHANNEL"]
        up = os.path.join(ch, "uploads")
        shutil.rmtree(up, ignore_errors=True)
        os.symlink(os.environ["RUNYARD_WORKSPACE"], up)   # a folder outside the sandbox, as the host sees it
        with open(os.path.join(ch, "log.jsonl"), "a") as fh:
            fh.write(json.dumps({"k": "u", "n": "outputs/stolen.json", "f": "credentials.json"}) + "\\n")
            fh.write(json.dumps({"k": "u", "n": "outputs/shadow", "f": "shadow"}) + "\\n")
        print("asked")
    """)
    run = runyard.Experiment(ws, "sb").submit(runyard.ScriptRunConfig(source_directory=str(src), script="steal.py"))
    run.wait_for_completion(raise_on_error=False)
    names = run.get_file_names()
    stolen = ""
    if "outputs/stolen.json" in names:
        stolen = Path(run.download_file("outputs/stolen.json", str(tmp_path / "got.json"))).read_text()
    assert "the-secret-key" not in stolen, f"root's 0600 file was stored as the run's artifact: {stolen}"


def test_a_fifo_named_as_an_upload_does_not_hang_the_supervisor(sandbox_workspace: Workspace,
                                                                 tmp_path: Path) -> None:
    ws = sandbox_workspace
    src = tmp_path / "proj"
    src.mkdir()
    write_script(src, "fifo.py", """
        import json, os
        ch = os.environ["RUNYARD_CHANNEL"]
        up = os.path.join(ch, "uploads")
        os.makedirs(up, exist_ok=True)
        os.mkfifo(os.path.join(up, "pipe"))
        with open(os.path.join(ch, "log.jsonl"), "a") as fh:
            fh.write(json.dumps({"k": "u", "n": "outputs/pipe", "f": "pipe"}) + "\\n")
        print("asked")
    """)
    run = runyard.Experiment(ws, "sb").submit(runyard.ScriptRunConfig(source_directory=str(src), script="fifo.py"))
    deadline = time.monotonic() + 30
    while run.get_status() not in ("Completed", "Failed", "Canceled") and time.monotonic() < deadline:
        time.sleep(0.2)
    status = run.get_status()
    if status not in ("Completed", "Failed"):
        import signal

        from runyard.agent.folder import RunFolder

        folder = RunFolder.of(ws.path, run.id)
        pid = folder.read_identity().get("pid")
        if pid:
            os.kill(pid, signal.SIGKILL)  # (not even a cancel reaches it: it waits in open())
        os.unlink(os.path.join(folder.channel, "uploads", "pipe"))  # else whoever reaps the run waits too
    assert status in ("Completed", "Failed"), f"stuck in {status}: the supervisor waits on the FIFO for ever"


def test_a_rerun_runs_where_the_run_ran(sandbox_workspace: Workspace, tmp_path: Path) -> None:
    """A run on the sandbox, rerun: not on the workspace's default (local: as root, unsandboxed)."""
    from runyard.runs import rerun_spec, submit

    ws = sandbox_workspace
    ws.set_setting("compute.default", "local")
    src = tmp_path / "proj"
    src.mkdir()
    write_script(src, "who.py", "import os; print('uid', os.getuid())\n")
    run = runyard.Experiment(ws, "sb").submit(runyard.ScriptRunConfig(source_directory=str(src), script="who.py",
                                                                      compute_target="box"))
    assert run.wait_for_completion()["target"] == "box"
    again = runyard.Run(ws, submit(ws, rerun_spec(ws, run.id)).id)
    details = again.wait_for_completion()
    assert details["target"] == "box", f"the rerun ran on {details['target']!r}"


HOLD_MARKER = """
import sys, time
from runyard.agent.folder import RunFolder
fd = RunFolder.of(sys.argv[1], sys.argv[2]).claim()
print("held", flush=True)
time.sleep(60)
"""


def test_cancel_never_signals_a_process_of_this_machine_for_a_supervisor_on_another(workspace: Workspace) -> None:
    """A workspace shared by two machines (its history and runs folder on a shared disk): the
    run's supervisor is on the other machine. Its pid means nothing here."""
    import json

    from runyard.agent.folder import RunFolder
    from runyard.runs.service import cancel

    run_id = "exp_1700000000_0123abcd"
    folder = RunFolder.of(workspace.path, run_id)
    os.makedirs(folder.path, exist_ok=True)
    Path(folder.request).write_text(json.dumps({"run_id": run_id, "compute_target": "local"}))
    victim = subprocess.Popen(["sleep", "30"])  # an unrelated process of this machine
    holder = subprocess.Popen([sys.executable, "-c", HOLD_MARKER, workspace.path, run_id],
                              stdout=subprocess.PIPE, text=True)  # the other machine's supervisor holds the run
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        folder.write_identity({"pid": victim.pid, "host": "other-machine", "boot_id": "0000", "started": 0})
        try:
            cancel(workspace, run_id)
        except Exception as exc:  # (no history record: what cancel does next does not matter here)
            print("cancel said:", exc)
        time.sleep(0.5)
        assert victim.poll() is None, f"an unrelated process of this machine got {victim.returncode}"
        assert os.path.exists(folder.cancel)  # the other machine's supervisor polls the file
    finally:
        for p in (victim, holder):
            p.kill()
            p.wait()



def test_a_run_records_what_its_environment_holds_when_a_run_before_changed_it(
        workspace: Workspace, proj: Path) -> None:
    """A script that installs into its environment (``uv pip install``, ``pip install``: common in
    notebooks and samples) changes the cached environment every later run shares."""
    from runyard.environments.build import uv_bin

    write_script(proj, "downgrade.py", f"""
        import subprocess, sys
        subprocess.run([{uv_bin()!r}, "pip", "install", "--python", sys.executable, "ryalpha==1.0"], check=True)
    """)
    write_script(proj, "show.py", """
        import ryalpha
        print("ryalpha", ryalpha.VALUE)
        from runyard import Run
        Run.get_context().log("alpha", float(ryalpha.VALUE))
    """)
    exp = runyard.Experiment(workspace, "env")
    req = str(proj / "requirements.txt")
    first = exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="downgrade.py", environment=req))
    assert first.wait_for_completion()["status"] == "Completed"
    second = exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="show.py", environment=req))
    assert second.wait_for_completion()["status"] == "Completed"
    ran_with = second.get_metrics()["alpha"]
    recorded = second.get_environment().packages
    assert f"ryalpha=={ran_with}" in recorded, f"ran with ryalpha {ran_with}, recorded {recorded}"


def test_a_run_in_a_cached_environment_does_not_walk_the_cache_at_its_end(workspace: Workspace,
                                                                          proj: Path) -> None:
    """Pruning walks every file of every environment (a realistic cache holds 100,000s: 0.3 s
    per 60,000 here), and a run's end waits for it before the history has the end. The cache
    only grows when a run builds: a run on a cached environment has nothing to prune."""
    exp = runyard.Experiment(workspace, "env")
    req = str(proj / "requirements.txt")
    assert exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="train.py",
                                              environment=req)).wait_for_completion()["status"] == "Completed"
    envs = Path(workspace.cache_dir) / "envs"
    decoy = envs / "0123456789abcdef0123456789abcdef"
    decoy.mkdir()  # what a prune always removes (no runyard-env.json): it shows whether one ran
    (decoy / "x").write_text("x")
    run = exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="train.py", environment=req))
    assert run.wait_for_completion()["status"] == "Completed"
    assert decoy.exists(), "the cache was walked and pruned at the end of a run that built nothing"


def test_small_input_edges(tmp_path: Path) -> None:
    from runyard.compute.sandbox import SandboxKind
    from runyard.environments.registry import from_path
    from runyard.environments.spec import EnvSpec
    from runyard.errors import ComputeError, EnvironmentSpecError

    # a conda file saved with a BOM (Windows editors) starting with its dependencies
    (tmp_path / "environment.yml").write_bytes(b"\xef\xbb\xbfdependencies:\n  - python=3.11\n  - pip:\n"
                                               b"    - ryalpha\n")
    spec = EnvSpec.from_conda_specification("b", str(tmp_path / "environment.yml"))
    assert (spec.python, spec.lines()) == ("3.11", ["ryalpha"])
    (tmp_path / "req.txt").write_bytes(b"\xef\xbb\xbfryalpha==2.0\n")
    assert EnvSpec.from_pip_requirements("b", str(tmp_path / "req.txt")).lines() == ["ryalpha==2.0"]
    # runyard run --env requirements-é.txt: the file's name is not the user's to fix
    (tmp_path / "requirements-é.txt").write_text("ryalpha\n")
    assert from_path(str(tmp_path / "requirements-é.txt")).name == "requirements"
    # --time nan would be no limit at all
    with pytest.raises(ComputeError):
        SandboxKind().check_options({"time": "nan"})
    # a value no environment variable can hold: refused when defined, not when the run starts
    with pytest.raises(EnvironmentSpecError, match="NUL"):
        EnvSpec("v", requirements=("ryalpha",), variables={"A": "a\0b"})


def test_reading_a_channel_never_follows_a_link_nor_waits_on_a_fifo(tmp_path: Path) -> None:
    """What the supervisor does, and whoever reaps a lost run (runyard gc, a read that reaps):
    the channel's folder is the script's."""
    import threading

    from runyard.agent import channel
    from runyard.history.model import ChannelEntry

    ws = Workspace.create(tmp_path / "ws")
    store = ws.open_store()
    secret = tmp_path / "secret.txt"
    secret.write_text("root's secret")
    ch = tmp_path / "channel"
    ch.mkdir()
    (ch / "uploads").symlink_to(tmp_path)
    got, problems = channel._store_uploads(store, str(ch), [ChannelEntry("u", "outputs/s", file="secret.txt")])
    assert got == {} and problems
    remove = getattr(channel, "_remove_upload", None)
    if remove is not None:  # (what ingest does with an upload once taken in)
        remove(str(ch), "secret.txt")
        assert secret.exists()
    (ch / "uploads").unlink()
    (ch / "uploads").mkdir()
    os.mkfifo(ch / "uploads" / "pipe")
    os.mkfifo(ch / "log.jsonl")
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append((
        channel._store_uploads(store, str(ch), [ChannelEntry("u", "outputs/p", file="pipe")]),
        channel.read(str(ch), 0))), daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock it (and this test's end) by opening the FIFOs for writing
        for name in ("uploads/pipe", "log.jsonl"):
            with contextlib.suppress(OSError):
                os.close(os.open(ch / name, os.O_RDWR))
        pytest.fail("reading the channel waits on a FIFO for ever")
    ((uploads, upload_problems), (entries, _offset, _problems)) = done[0]
    assert uploads == {} and upload_problems and entries == []


def test_a_sandboxed_script_cannot_have_the_supervisor_remove_a_host_file(
        sandbox_workspace: Workspace, tmp_path: Path) -> None:
    """After taking an upload in, the supervisor removes its copy from the channel, through the
    ``uploads`` the script controls: with a link there, root removes any file the script names
    (here the workspace's run history: every run of the workspace is gone)."""
    ws = sandbox_workspace
    history = Path(ws.path) / "history.db"
    src = tmp_path / "proj"
    src.mkdir()
    write_script(src, "wipe.py", """
        import json, os, shutil
        ch = os.environ["RUNYARD_CHANNEL"]
        up = os.path.join(ch, "uploads")
        shutil.rmtree(up, ignore_errors=True)
        os.symlink(os.environ["RUNYARD_WORKSPACE"], up)
        with open(os.path.join(ch, "log.jsonl"), "a") as fh:
            fh.write(json.dumps({"k": "u", "n": "outputs/x", "f": "history.db"}) + "\\n")
        print("asked")
    """)
    ino = history.stat().st_ino
    run = runyard.Experiment(ws, "sb").submit(runyard.ScriptRunConfig(source_directory=str(src), script="wipe.py"))
    try:
        run.wait_for_completion(raise_on_error=False)
    except Exception as exc:  # (the history it reads went meanwhile)
        print("wait:", exc)
    assert history.exists() and history.stat().st_ino == ino, "the workspace's history.db was removed"


def test_a_changed_environment_in_use_is_recorded_as_it_is_then_built_again(tmp_path: Path) -> None:
    from runyard.environments.build import acquire, ensure, uv_bin
    from runyard.environments.spec import EnvSpec
    from test_envs import HOLDER

    cache = tmp_path / "envs"
    spec = EnvSpec("d", requirements=("rybeta",))
    built = ensure(str(cache), spec)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), "rybeta"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == built.key
        subprocess.run([uv_bin(), "pip", "install", "--python", built.python, "ryalpha==1.0"], check=True,
                       capture_output=True)
        lines: list[str] = []
        now, held = acquire(str(cache), spec, progress=lines.append)
        os.close(held)  # type: ignore[arg-type]
        assert "ryalpha==1.0" in now.packages and any("another run uses it" in line for line in lines)
    finally:
        holder.kill()
        holder.wait()
    lines = []
    again, held = acquire(str(cache), spec, progress=lines.append)
    os.close(held)  # type: ignore[arg-type]
    assert again.packages == ("ryalpha==2.0", "rybeta==0.5") and any("building it again" in line for line in lines)
    out = subprocess.run([again.python, "-c", "import ryalpha; print(ryalpha.VALUE)"], capture_output=True, text=True)
    assert out.stdout.strip() == "2.0"
