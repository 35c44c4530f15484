"""Environments with real uv and real virtual environments, and no network: the packages
are wheels made here, found through the user's own uv configuration (UV_FIND_LINKS,
UV_NO_INDEX), which is what the builder must respect."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import runyard
from conftest import Cli
from runyard.environments import build
from runyard.environments.build import acquire, cached, ensure, prune, satisfies
from runyard.environments.spec import EnvSpec, parse_conda
from runyard.errors import EnvironmentBuildError, EnvironmentSpecError, NotFoundError
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(180)


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel of package ``name`` whose ``VALUE`` is ``version``."""
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{name}/__init__.py": f"VALUE = {version!r}\n".encode(), f"{dist}/METADATA": meta.encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for p, d in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    out = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wheels")
    d.chmod(0o755)
    make_wheel(d, "ryalpha", "1.0")
    make_wheel(d, "ryalpha", "2.0")
    make_wheel(d, "rybeta", "0.5", requires=("ryalpha>=2",))
    return d


@pytest.fixture(autouse=True)
def uv_offline(wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """uv configured as a user would: packages from a folder of wheels, no index."""
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_FIND_LINKS", str(wheels))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return wheels


def test_requirements_files_are_read_whole(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("ryalpha==2.0  # pinned\n\n")
    (tmp_path / "req.txt").write_text("--find-links ./wheels\n-r base.txt\nrybeta\n# a comment\n")
    spec = EnvSpec.from_pip_requirements("x", str(tmp_path / "req.txt"))
    assert spec.lines() == ["--find-links ./wheels", "ryalpha==2.0", "rybeta"]
    assert spec.options() == ["--find-links ./wheels"]
    (tmp_path / "loop.txt").write_text("-r loop.txt\n")
    with pytest.raises(EnvironmentSpecError, match="includes itself"):
        EnvSpec.from_pip_requirements("x", str(tmp_path / "loop.txt"))
    for line, said in (("-e .", "local path"), ("./pkg", "local path"), ("-c constraints.txt", "constraint")):
        with pytest.raises(EnvironmentSpecError, match=said):
            EnvSpec("x", requirements=(line,))
    with pytest.raises(EnvironmentSpecError, match="cannot be read"):
        EnvSpec.from_pip_requirements("x", str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "x" * 256, "a b", "-r"])
def test_hostile_environment_names_are_refused(name: str) -> None:
    with pytest.raises(EnvironmentSpecError, match="cannot name an environment"):
        EnvSpec(name)
    with pytest.raises(EnvironmentSpecError, match="cannot name an environment"):
        runyard.Environment(name)


def test_conda_files(tmp_path: Path) -> None:
    good = tmp_path / "environment.yml"
    good.write_text("name: train  # the name\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n"
                    "  - pip\n  - pip:\n    - ryalpha==2.0\n    - \"rybeta\"\nvariables:\n  OMP_NUM_THREADS: '4'\n")
    spec = EnvSpec.from_conda_specification("train", str(good))
    assert (spec.python, spec.lines(), dict(spec.variables)) == ("3.11", ["ryalpha==2.0", "rybeta"],
                                                                  {"OMP_NUM_THREADS": "4"})
    assert parse_conda("dependencies:\n- python==3.12.4\n")[0] == "3.12.4"
    conda_only = tmp_path / "c.yml"
    conda_only.write_text("dependencies:\n  - python=3.11\n  - numpy=1.26\n  - conda-forge::scipy\n")
    with pytest.raises(EnvironmentSpecError, match=r"conda packages \(numpy=1.26, conda-forge::scipy\)"):
        EnvSpec.from_conda_specification("c", str(conda_only))
    for text, said in (("dependencies: [numpy]\n", "as a list"), ("dependencies:\n\t- pip\n", "tab"),
                       ("dependencies:\n  - {a: b}\n", "not understood"), ("just words\n", "expected 'key:'")):
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        with pytest.raises(EnvironmentSpecError, match=said):
            EnvSpec.from_conda_specification("b", str(bad))


def test_version_requests() -> None:
    assert satisfies("3.11.7", "3.11") and satisfies("3.11.7", "3.11.7") and not satisfies("3.11.7", "3.12")
    assert satisfies("3.12.1", ">=3.10,<3.13") and not satisfies("3.13.0", ">=3.10,<3.13")
    with pytest.raises(EnvironmentSpecError, match="not a Python version"):
        satisfies("3.11.7", "latest")


def test_a_build_is_exact_and_a_cached_one_runs_no_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = str(tmp_path / "envs")
    lines: list[str] = []
    built = ensure(cache, EnvSpec("b", requirements=("rybeta",)), progress=lines.append)
    assert built.packages == ("ryalpha==2.0", "rybeta==0.5")
    assert any("rybeta==0.5" in line for line in lines)
    out = subprocess.run([built.python, "-c", "import ryalpha, rybeta; print(ryalpha.VALUE)"], check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "2.0"
    assert (Path(built.path) / "requirements.txt").read_text() == "rybeta\n"

    def no_uv() -> str:
        raise AssertionError("uv was run for a cached environment")

    monkeypatch.setattr(build, "uv_bin", no_uv)
    monkeypatch.setenv("UV_FIND_LINKS", str(tmp_path / "gone"))  # nothing could be fetched anyway
    again = ensure(cache, EnvSpec("another-name", requirements=("rybeta  # same content",),
                                  variables={"X": "1"}))
    assert again.key == built.key and again.path == built.path


def test_a_failed_build_leaves_nothing_and_says_what_uv_said(tmp_path: Path) -> None:
    cache = tmp_path / "envs"
    with pytest.raises(EnvironmentBuildError, match=r"(?s)no-such-package-here.*Fix the requirement"):
        ensure(str(cache), EnvSpec("f", requirements=("no-such-package-here==1.0",)))
    assert [p.name for p in cache.iterdir() if p.is_dir()] == []


def test_a_missing_python_is_named_with_what_is_there(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentSpecError, match=r"no Python 3\.4 .*found: .*uv python install 3\.4"):
        ensure(str(tmp_path / "envs"), EnvSpec("old", python="3.4", requirements=("ryalpha",)))


KILLER = """
import os, signal, sys
from runyard.environments.build import ensure
from runyard.environments.spec import EnvSpec

def progress(line):
    print(line, flush=True)
    if "Resolved" in line or "Installed" in line:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the build

ensure(sys.argv[1], EnvSpec("k", requirements=("rybeta",)), progress=progress)
"""


def test_a_build_killed_half_way_is_built_again(tmp_path: Path) -> None:
    cache = tmp_path / "envs"
    died = subprocess.run([sys.executable, "-c", KILLER, str(cache)], capture_output=True, text=True)
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    (half,) = [p for p in cache.iterdir() if p.is_dir()]
    assert not (half / "runyard-env.json").exists()
    built = ensure(str(cache), EnvSpec("k", requirements=("rybeta",)))
    assert built.path == str(half) and built.packages == ("ryalpha==2.0", "rybeta==0.5")


RACER = """
import sys, time
from runyard.environments.build import ensure
from runyard.environments.spec import EnvSpec

def progress(line):
    print(line, flush=True)
    if line.startswith("building"):
        open(sys.argv[2], "w").close()  # the other process may start now
        time.sleep(1.5)                 # and finds this build under way

ensure(sys.argv[1], EnvSpec("r", requirements=("rybeta",)), progress=progress)
print("done", flush=True)
"""


def test_two_runs_asking_for_the_same_new_environment_build_it_once(tmp_path: Path) -> None:
    cache, flag = tmp_path / "envs", tmp_path / "started"
    first = subprocess.Popen([sys.executable, "-c", RACER, str(cache), str(flag)], stdout=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run([sys.executable, "-c", RACER, str(cache), str(tmp_path / "unused")],
                            capture_output=True, text=True, check=True)
    out, _ = first.communicate(timeout=60)
    builds = [line for line in (out + second.stdout).splitlines() if line.startswith("building")]
    assert len(builds) == 1, out + second.stdout
    assert "done" in second.stdout and first.returncode == 0


HOLDER = """
import sys, time
from runyard.environments.build import acquire
from runyard.environments.spec import EnvSpec
built, held = acquire(sys.argv[1], EnvSpec("h", requirements=(sys.argv[2],)))
print(built.key, flush=True)
time.sleep(60)
"""


def test_pruning_removes_the_least_recently_used_and_never_one_in_use(tmp_path: Path) -> None:
    cache = tmp_path / "envs"
    old = ensure(str(cache), EnvSpec("a", requirements=("ryalpha==1.0",)))
    new = ensure(str(cache), EnvSpec("b", requirements=("ryalpha==2.0",)))
    os.utime(Path(old.path) / "last-used", (time.time() - 3600, time.time() - 3600))
    (cache / "deadbeef").mkdir()  # a half-made one: no runyard-env.json
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), "ryalpha==1.0"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == old.key
        removed = prune(str(cache), keep_bytes=0)
        assert sorted(r.key for r in removed) == sorted(["deadbeef", new.key])  # the old one is in use
        assert Path(old.path).is_dir() and not Path(new.path).exists()
    finally:
        holder.kill()
        holder.wait()
    assert [r.key for r in prune(str(cache), keep_bytes=0)] == [old.key]
    assert cached(str(cache)) == []


def test_a_user_managed_interpreter_is_used_as_it_is(tmp_path: Path) -> None:
    spec = EnvSpec.from_interpreter("mine", sys.executable)
    built, held = acquire(str(tmp_path / "envs"), spec)
    assert held is None and built.user_managed and built.python == sys.executable
    assert any(p.startswith("sqlalchemy==") for p in built.packages)
    assert not (tmp_path / "envs").exists()
    with pytest.raises(EnvironmentSpecError, match="no Python interpreter"):
        EnvSpec.from_interpreter("x", str(tmp_path / "nope"))


def test_registered_environments_are_versioned(workspace: Workspace, tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("ryalpha\n")
    env = runyard.Environment.from_pip_requirements("sk", str(req))
    assert env.register(workspace).version == 1
    assert runyard.Environment.from_pip_requirements("sk", str(req)).register(workspace).version == 1
    env.environment_variables["A"] = "1"
    assert env.register(workspace).version == 2
    got = runyard.Environment.get(workspace, "sk", 1)
    assert (got.version, got.environment_variables) == (1, {})
    assert runyard.Environment.get(workspace, "sk").environment_variables == {"A": "1"}
    assert list(runyard.Environment.list(workspace)) == ["sk"]
    with pytest.raises(NotFoundError, match="has no version 7; it has 1, 2"):
        runyard.Environment.get(workspace, "sk", 7)
    with pytest.raises(NotFoundError, match=r"no environment named 'nope'\. Registered: sk"):
        runyard.Environment.get(workspace, "nope")
    conda = runyard.Environment("c")
    conda.python.conda_dependencies = runyard.CondaDependencies.create(conda_packages=["numpy"],
                                                                       pip_packages=["ryalpha"])
    with pytest.raises(EnvironmentSpecError, match=r"conda packages \(numpy\)"):
        conda.register(workspace)


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "requirements.txt").write_text("rybeta\n")
    write_script(d, "train.py", """
        import os, sys
        import ryalpha, rybeta
        from runyard import Run
        run = Run.get_context()
        run.log("alpha", float(ryalpha.VALUE))
        print("alpha", ryalpha.VALUE, "var", os.environ.get("MY_VAR"))
        try:
            import sqlalchemy
            print("runyard's own dependencies leaked in")
        except ImportError:
            print("only what it asked for")
    """)
    return d


def test_a_run_in_an_environment_records_what_it_ran_with_and_rerun_rebuilds_it(
        target_workspace: Workspace, proj: Path, uv_offline: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = target_workspace
    here = tmp_path / "wheels-of-this-test"  # a release is added below: not to the module's wheels
    shutil.copytree(uv_offline, here)
    monkeypatch.setenv("UV_FIND_LINKS", str(here))
    env = runyard.Environment.from_pip_requirements("train", str(proj / "requirements.txt"))
    env.environment_variables["MY_VAR"] = "hello"
    env.register(ws)
    exp = runyard.Experiment(ws, "env")
    run = exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="train.py", environment="train"))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Completed", details
    assert run.get_metrics()["alpha"] == 2.0
    recorded = run.get_environment()
    assert (recorded.name, recorded.version) == ("train", 1)
    assert recorded.packages == ["ryalpha==2.0", "rybeta==0.5"]
    assert run.get_details()["environment"]["python_version"] == details["pythonVersion"]
    make_wheel(here, "ryalpha", "3.0")  # a newer release after the run
    same = exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="train.py",
                                              environment=str(proj / "requirements.txt")))
    assert same.wait_for_completion()["status"] == "Completed"
    assert same.get_metrics()["alpha"] == 2.0  # the same content: the environment built before
    (proj / "other.txt").write_text("rybeta\nryalpha>=1\n")
    fresh = exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="train.py",
                                               environment=str(proj / "other.txt")))
    assert fresh.wait_for_completion()["status"] == "Completed"
    assert fresh.get_metrics()["alpha"] == 3.0
    from runyard.runs import rerun_spec, submit

    again = runyard.Run(ws, submit(ws, rerun_spec(ws, run.id)).id)
    assert again.wait_for_completion()["status"] == "Completed"
    assert again.get_metrics()["alpha"] == 2.0  # the recorded pins, not the newest release
    assert again.get_environment().packages == ["ryalpha==2.0", "rybeta==0.5"]
    text = Cli(ws)("runs", "show", run.id).output
    assert "environment: train:1 (Python" in text and "ryalpha==2.0, rybeta==0.5" in text


def test_a_run_whose_environment_cannot_be_built_fails_in_preparing(workspace: Workspace, proj: Path) -> None:
    (proj / "requirements.txt").write_text("no-such-package-here\n")
    run = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(
        source_directory=str(proj), script="train.py", environment=str(proj / "requirements.txt")))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "could not be made" in details["error"]
    assert "no-such-package-here" in details["error"]
    assert details["startTimeUtc"] is None  # it never ran


def test_a_run_without_an_environment_records_runyards_python(workspace: Workspace, proj: Path) -> None:
    write_script(proj, "plain.py", "print('plain')\n")
    run = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(source_directory=str(proj),
                                                                              script="plain.py"))
    assert run.wait_for_completion()["status"] == "Completed"
    env = run.get_environment()
    assert env.python.user_managed_dependencies and any(p.startswith("click==") for p in env.packages or [])


def test_bad_environments_store_nothing(workspace: Workspace, proj: Path) -> None:
    exp = runyard.Experiment(workspace, "env")
    for value, said in (("nope", "no environment named 'nope'"), ("nope:x", "NAME:VERSION"),
                        (str(proj / "missing.txt"), "no file")):
        with pytest.raises(runyard.RunyardError, match=said):
            exp.submit(runyard.ScriptRunConfig(source_directory=str(proj), script="train.py", environment=value))
    assert workspace.open_history().list_runs() == []


def test_the_env_commands(workspace: Workspace, proj: Path) -> None:
    cli = Cli(workspace)
    made = cli("env", "create", "t", "-r", str(proj / "requirements.txt"), "--var", "A=1", "--build")
    assert made.exit_code == 0, made.output
    assert "Registered environment t:1" in made.output and "Built t: Python" in made.output
    assert json.loads(cli("env", "ls", "--json").output)[0]["requirements"] == ["rybeta"]
    shown = cli("env", "show", "t:1")
    assert "requirements:\n  rybeta" in shown.output and "variable: A=1" in shown.output
    both = cli("env", "create", "u", "-r", "x.txt", "--conda", "y.yml")
    assert both.exit_code != 0 and "one of -r, --conda and --python" in both.output
    nothing = cli("env", "create", "u")
    assert nothing.exit_code != 0 and "Say what the environment holds" in nothing.output
    assert "would remove" in cli("env", "prune", "--max-bytes", "0", "--dry-run").output
    assert "removed" in cli("env", "prune", "--max-bytes", "0").output
    assert "Nothing to remove" in cli("env", "prune", "--max-bytes", "0").output


@pytest.fixture
def stalling_index() -> Iterator[str]:
    """A package index on 127.0.0.1 that never answers in time (a slow network)."""
    import http.server
    import threading

    stop = threading.Event()

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stop.wait(60)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    stop.set()
    server.shutdown()
    server.server_close()


def building_against(index: str, workspace: Workspace, proj: Path, monkeypatch: pytest.MonkeyPatch) -> runyard.Run:
    """A run whose environment is being built from ``index`` (one that never answers): Preparing."""
    monkeypatch.delenv("UV_NO_INDEX")
    monkeypatch.delenv("UV_FIND_LINKS")
    monkeypatch.setenv("UV_DEFAULT_INDEX", index)
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "120")
    run = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(
        source_directory=str(proj), script="train.py", environment=str(proj / "requirements.txt")))
    deadline = time.monotonic() + 60
    while run.get_status() != "Preparing" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.get_status() == "Preparing"
    return run


def test_a_run_canceled_while_its_environment_builds(workspace: Workspace, proj: Path, stalling_index: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run = building_against(stalling_index, workspace, proj, monkeypatch)
    began = time.monotonic()
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Canceled", details
    assert time.monotonic() - began < 10  # not the index's 60 s
    envs = Path(workspace.cache_dir) / "envs"
    assert [p for p in envs.iterdir() if p.is_dir()] == []
    from runyard.agent.procs import processes_with

    def uv_left() -> list[int]:
        left = []
        for pid in processes_with(f"UV_DEFAULT_INDEX={stalling_index}"):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/uv"):
                    left.append(pid)
            except OSError:
                pass
        return left

    assert uv_left() == []  # uv went with the build


def test_a_workspace_from_before_environments_says_to_migrate_before_a_run(workspace: Workspace,
                                                                             proj: Path) -> None:
    import sqlite3

    con = sqlite3.connect(workspace.history_location)
    con.execute("DELETE FROM schema_version WHERE version >= 4")
    con.commit()
    con.close()
    with pytest.raises(runyard.SchemaVersionError, match="runyard init"):
        runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(source_directory=str(proj),
                                                                            script="train.py"))
    assert not any(Path(workspace.runs_dir).iterdir()) if Path(workspace.runs_dir).exists() else True


def test_a_relative_find_links_folder_is_read_where_its_file_is(tmp_path: Path, uv_offline: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """pip and uv read ``--find-links wheels`` relative to the requirements file; the build
    installs from a copy of the lines in the cache, so the folder is anchored when read."""
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    shutil.copytree(uv_offline, proj / "wheels")
    elsewhere.mkdir()
    (proj / "requirements.txt").write_text("--find-links wheels\nrybeta\n")
    (proj / "environment.yml").write_text("dependencies:\n  - pip:\n    - -f wheels\n    - rybeta\n")
    monkeypatch.delenv("UV_FIND_LINKS")
    monkeypatch.chdir(elsewhere)
    spec = EnvSpec.from_pip_requirements("rel", str(proj / "requirements.txt"))
    assert spec.lines() == [f"--find-links {proj / 'wheels'}", "rybeta"]
    assert EnvSpec.from_conda_specification("rel", str(proj / "environment.yml")).lines() == [
        f"-f {proj / 'wheels'}", "rybeta"]
    built = ensure(str(tmp_path / "envs"), spec)
    assert built.packages == ("ryalpha==2.0", "rybeta==0.5")


def test_pips_find_links_with_several_folders_reaches_uv(tmp_path: Path, uv_offline: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine set up for pip (PIP_FIND_LINKS, whitespace between folders) works with uv
    (UV_FIND_LINKS, commas between folders)."""
    alphas, betas = tmp_path / "alphas", tmp_path / "betas"
    alphas.mkdir()
    betas.mkdir()
    shutil.copy(uv_offline / "ryalpha-2.0-py3-none-any.whl", alphas)
    shutil.copy(uv_offline / "rybeta-0.5-py3-none-any.whl", betas)
    monkeypatch.delenv("UV_FIND_LINKS")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{alphas}  {betas}")
    built = ensure(str(tmp_path / "envs"), EnvSpec("two", requirements=("rybeta",)))
    assert built.packages == ("ryalpha==2.0", "rybeta==0.5")


def _blocked_on_a_lock(pid: int) -> bool:
    """Whether process ``pid`` waits for a flock (``/proc/locks`` marks waiters with ``->``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        words = line.split()
        if len(words) > 5 and words[1] == "->" and words[2] == "FLOCK" and words[5] == str(pid):
            return True
    return False


def test_an_environment_asked_for_while_it_is_pruned_is_then_kept_in_use(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that asks for an environment while a prune removes it waits, builds it again and
    holds it; the next prune must see that it is in use (pruning unlinks the lock files of what
    it removes, and a lock held on an unlinked file would be seen by nobody)."""
    cache = tmp_path / "envs"
    old = ensure(str(cache), EnvSpec("a", requirements=("ryalpha==1.0",)))
    removing = shutil.rmtree
    holders: list[subprocess.Popen[str]] = []

    def rmtree_while_a_run_asks(path: str, *args: object, **kwargs: object) -> None:
        if not holders:  # the run asks while the prune holds the environment's locks
            holders.append(subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), "ryalpha==1.0"],
                                            stdout=subprocess.PIPE, text=True))
            deadline = time.monotonic() + 30
            while not _blocked_on_a_lock(holders[0].pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _blocked_on_a_lock(holders[0].pid)
        removing(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(build.shutil, "rmtree", rmtree_while_a_run_asks)
    try:
        assert [r.key for r in prune(str(cache), keep_bytes=0)] == [old.key]
        monkeypatch.setattr(build.shutil, "rmtree", removing)
        (holder,) = holders
        assert holder.stdout is not None and holder.stdout.readline().strip() == old.key  # built again, held
        assert prune(str(cache), keep_bytes=0) == []
        assert (Path(old.path) / "runyard-env.json").exists()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def _register(location: str, spec: dict[str, object], barrier: object, queue: object) -> None:
    from runyard.history.environments import EnvironmentCatalog
    from runyard.history.store import RunHistory

    try:
        with RunHistory.open(location) as history:
            catalog = EnvironmentCatalog(history)
            barrier.wait()  # type: ignore[attr-defined]
            queue.put((spec, catalog.register("sk", spec).version))  # type: ignore[attr-defined]
    except BaseException as exc:
        queue.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_registering_one_name_at_once_gives_versions_in_turn(database: str, request: pytest.FixtureRequest,
                                                             tmp_path: Path) -> None:
    """Writers registering a new name at once (on PostgreSQL there is no row to lock yet):
    each gets a version that holds its definition, and the versions count up without gaps."""
    import multiprocessing

    from runyard.history.environments import EnvironmentCatalog
    from runyard.history.migrations import migrate
    from runyard.history.store import RunHistory

    location = (request.getfixturevalue("postgres").new_database() if database == "postgres"
                else str(tmp_path / "history.db"))
    migrate(location)
    specs: list[dict[str, object]] = [{"name": "sk", "requirements": [f"ryalpha=={i}.0"]} for i in range(4)]
    specs += [{"name": "sk", "requirements": ["rybeta"]}] * 4
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(len(specs)), ctx.Queue()
    procs = [ctx.Process(target=_register, args=(location, spec, barrier, queue)) for spec in specs]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(isinstance(g, tuple) for g in got), got
    with RunHistory.open(location) as history:
        stored = {r.version: r.spec for r in EnvironmentCatalog(history).versions("sk")}
    assert sorted(stored) == list(range(1, len(stored) + 1))
    assert all(stored[version] == spec for spec, version in got)


def test_show_of_an_environment_without_requirements_and_of_a_run_that_never_built(workspace: Workspace,
                                                                                   proj: Path) -> None:
    cli = Cli(workspace)
    assert cli("env", "create", "bare", "--python-version", "3.11").exit_code == 0
    assert "requirements: none" in cli("env", "show", "bare").output
    (proj / "requirements.txt").write_text("no-such-package-here\n")
    run = runyard.Experiment(workspace, "env").submit(runyard.ScriptRunConfig(
        source_directory=str(proj), script="train.py", environment=str(proj / "requirements.txt")))
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"
    shown = cli("runs", "show", run.id).output
    assert "environment: requirements (not built)" in shown and "Python None" not in shown
