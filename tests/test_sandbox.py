"""The sandbox target, tried as an attacker would: a script that wants out, and cannot get out.

Real bubblewrap, run as the unprivileged user ``nobody`` (the suite runs as root,
as CI does). Each attempt must fail, and the run must still complete honestly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import runyard
from runyard.agent.folder import RunFolder
from runyard.compute.base import add_target
from runyard.errors import ComputeError
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def ws(sandbox_workspace: Workspace) -> Workspace:
    """A workspace whose default target is a sandbox."""
    return sandbox_workspace


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "source_secret.txt").write_text("in the source directory")
    return d


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 that answers 'host'."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"host")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def submit(ws: Workspace, src: Path, script: str, *args: str, compute: str | None = None) -> runyard.Run:
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script=script, arguments=list(args),
                                  compute_target=compute)
    return runyard.Experiment(ws, "sb").submit(cfg)


def _read_elsewhere(path: str) -> bytes:
    """The bytes of ``path``, read by another process. Not by this one: it has the workspace's
    history open, and closing any other descriptor of ``history.db`` here drops this process's
    POSIX locks on it; another process may then take itself for the last user, checkpoint and
    remove the WAL under this one ("database disk image is malformed")."""
    import subprocess

    return subprocess.run(["cat", path], capture_output=True, check=True).stdout


def driver_log(ws: Workspace, run: runyard.Run) -> str:
    return Path(RunFolder.of(ws.path, run.id).driver_log).read_text()


ATTACKER = r"""
import json, os, socket, sys
import runyard
out = {}
def attempt(what, fn):
    try:
        fn()
        out[what] = "GOT IN"
    except BaseException as exc:
        out[what] = type(exc).__name__
targets = json.loads(sys.argv[1])
for name, path in targets["read"].items():
    try:
        out["read " + name] = "read: " + open(path, "rb").read(64).decode("latin-1")
    except BaseException as exc:
        out["read " + name] = type(exc).__name__
for name, path in targets["write"].items():  # (a path that only exists in its private /tmp is no escape)
    attempt("write " + name, lambda p=path: open(p, "ab").write(b"WRITTEN BY THE SANDBOX"))
try:
    out["runs seen"] = ",".join(sorted(os.listdir(targets["runs"])))  # only its own folder's path, at most
except OSError as exc:
    out["runs seen"] = type(exc).__name__
attempt("connect host 127.0.0.1", lambda: socket.create_connection(("127.0.0.1", targets["port"]), timeout=2).recv(4))
attempt("connect outside", lambda: socket.create_connection(("192.0.2.1", 80), timeout=2))
attempt("resolve a name", lambda: socket.getaddrinfo("pypi.org", 443))
attempt("dot-dot out of the working directory", lambda: open("../" * 12 + "etc/shadow").read(1))
os.makedirs("outputs", exist_ok=True)
for name, path in targets["read"].items():
    try:
        os.symlink(path, os.path.join("outputs", "link-" + name.replace(" ", "_")))
    except OSError:
        pass
run = runyard.Run.get_context()
attempt("read the history through the SDK", lambda: run.get_metrics())
run.log("attempts", len(out))
open("outputs/report.json", "w").write(json.dumps(out))
print(json.dumps(out))
"""


def test_a_sandboxed_script_that_tries_to_get_out_gets_nowhere(ws: Workspace, src: Path, listener: int,
                                                               tmp_path: Path) -> None:
    # Something to steal in every place a script must not reach.
    other = submit(ws, src, "noop.py") if (src / "noop.py").write_text("print('other run')\n") else None
    assert other is not None
    other.wait_for_completion()
    (Path(ws.path) / "credentials.json").write_text(json.dumps({"lake": {"key": "the-secret-key"}}))
    home = Path(os.path.expanduser("~"))
    home.mkdir(parents=True, exist_ok=True)
    (home / "notes.txt").write_text("in the home folder")
    store_blob = next(p for p in (Path(ws.path) / "store" / "blobs").rglob("*") if p.is_file())
    targets = {
        "read": {
            "credentials": str(Path(ws.path) / "credentials.json"),
            "history": str(Path(ws.path) / "history.db"),
            "other run's log": RunFolder.of(ws.path, other.id).driver_log,
            "source": str(src / "source_secret.txt"),
            "home": str(home / "notes.txt"),
            "shadow": "/etc/shadow",
            "host ssh keys": "/etc/ssh/ssh_host_rsa_key",
        },
        "write": {"store": str(store_blob), "history": str(Path(ws.path) / "history.db"),
                  "workspace config": str(Path(ws.path) / "config.toml")},
        "runs": str(Path(ws.path) / "runs"),
        "port": listener,
    }
    write_script(src, "attack.py", ATTACKER)
    before = {p: _read_elsewhere(p) for p in targets["write"].values()}  # type: ignore[union-attr]
    secrets = {name: _read_elsewhere(p)[:64].decode("latin-1") for name, p in targets["read"].items()  # type: ignore[union-attr]
               if os.path.exists(p)}
    run = submit(ws, src, "attack.py", json.dumps(targets))
    details = run.wait_for_completion()
    assert details["status"] == "Completed"  # honestly: the script ran to its end
    report = json.loads(driver_log(ws, run).strip().splitlines()[-1])
    assert len(report) >= 14
    assert [k for k, v in report.items() if v == "GOT IN" and not k.startswith("write")] == []
    leaked = [name for name, content in secrets.items() if content and report[f"read {name}"] == f"read: {content}"]
    assert leaked == []
    for path in before:  # nothing outside was written (runyard itself writes the history meanwhile)
        assert b"WRITTEN BY THE SANDBOX" not in _read_elsewhere(path), path
    assert _read_elsewhere(targets["write"]["store"]) == before[targets["write"]["store"]]  # type: ignore[index]
    assert other.id not in report["runs seen"]
    assert run.get_metrics("attempts") == {"attempts": len(report)}  # it could still report, through its channel
    names = run.get_file_names()
    assert "outputs/report.json" in names and not [n for n in names if "link-" in n]


def test_the_network_is_there_only_when_asked_for(ws: Workspace, src: Path, listener: int) -> None:
    write_script(src, "net.py", """
        import socket, sys
        try:
            print("got", socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).recv(4))
        except OSError as exc:
            print("no network:", type(exc).__name__)
    """)
    closed = submit(ws, src, "net.py", str(listener))
    closed.wait_for_completion()
    assert "no network" in driver_log(ws, closed)
    add_target(ws, "open", "sandbox", {"network": True})
    opened = submit(ws, src, "net.py", str(listener), compute="open")
    opened.wait_for_completion()
    assert "got b'host'" in driver_log(ws, opened)


def test_a_fork_bomb_stops_at_the_process_limit_and_the_run_ends(ws: Workspace, src: Path) -> None:
    add_target(ws, "small", "sandbox", {"pids": 48})
    write_script(src, "bomb.py", """
        import os, time
        made = 0
        children = []
        while True:
            try:
                pid = os.fork()
            except OSError as exc:
                print("stopped after", made, "forks:", type(exc).__name__, flush=True)
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
            made += 1
            if made > 5000:
                print("NO LIMIT", flush=True)
                break
    """)
    run = submit(ws, src, "bomb.py", compute="small")
    details = run.wait_for_completion()
    log = driver_log(ws, run)
    assert "stopped after" in log and "NO LIMIT" not in log
    assert details["status"] == "Completed"


def test_memory_and_time_limits(ws: Workspace, src: Path) -> None:
    add_target(ws, "tight", "sandbox", {"memory": "256MiB", "time": 3})
    write_script(src, "mem.py", """
        try:
            block = bytearray(1 << 30)
            print("allocated 1 GiB")
        except MemoryError:
            print("MemoryError at 1 GiB")
    """)
    mem = submit(ws, src, "mem.py", compute="tight")
    mem.wait_for_completion()
    assert "MemoryError at 1 GiB" in driver_log(ws, mem)
    write_script(src, "slow.py", "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    slow = submit(ws, src, "slow.py", compute="tight")
    details = slow.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "time limit" in details["error"]


def test_what_the_sandbox_needs_is_said_before_anything_runs(ws: Workspace, src: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard.agent import sandbox

    monkeypatch.setattr(sandbox, "_checked", {})
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name))
    with pytest.raises(ComputeError, match="apt-get install bubblewrap"):
        add_target(ws, "nope", "sandbox", {})
    write_script(src, "x.py", "print(1)\n")
    with pytest.raises(ComputeError, match="bubblewrap is not installed"):
        submit(ws, src, "x.py")  # the workspace's default target is a sandbox
    assert ws.open_history().list_runs() == []


def test_bad_options_are_refused_with_what_to_give(ws: Workspace) -> None:
    for options, said in (({"memory": "lots"}, "--memory"), ({"cpus": 0}, "--cpus"), ({"time": "-1"}, "--time"),
                          ({"user": "no-such-user-here"}, "no user"), ({"user": "root"}, "root"),
                          ({"colour": "blue"}, "no option colour")):
        with pytest.raises(ComputeError, match=said):
            add_target(ws, "bad", "sandbox", options)


def test_inputs_are_read_only_and_outputs_reach_the_datastore(ws: Workspace, src: Path, tmp_path: Path) -> None:
    from runyard import Dataset, Datastore, OutputFileDatasetConfig

    up = tmp_path / "up" / "train"
    up.mkdir(parents=True)
    (up / "a.txt").write_text("alpha")
    store = Datastore.register_local(ws, "store", str(tmp_path / "datastore"))
    store.upload(str(tmp_path / "up"), "raw", show_progress=False)
    train = Dataset.File.from_files([(store, "raw/train")]).register(ws, "train")
    write_script(src, "io.py", """
        import os, sys
        from runyard import Run
        run = Run.get_context()
        src, out = run.input_datasets["train"], sys.argv[1]
        text = open(os.path.join(src, "a.txt")).read()
        try:
            open(os.path.join(src, "a.txt"), "w").write("changed")
            print("wrote the input")
        except OSError as exc:
            print("input is read-only:", exc.strerror)
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "model.txt"), "w").write(text.upper())
        run.log("chars", len(text))
    """)
    out = OutputFileDatasetConfig("model", destination=(store, "models/{run-id}")).register_on_complete("model")
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script="io.py", arguments=[out],
                                  inputs=[train.as_named_input("train").as_download()])
    run = runyard.Experiment(ws, "sb").submit(cfg)
    details = run.wait_for_completion(raise_on_error=False)
    log = driver_log(ws, run)
    assert details["status"] == "Completed", log
    assert "input is read-only: Read-only file system" in log
    model = Dataset.get_by_name(ws, "model")
    assert [f.rel for f in model.files] == ["model.txt"]
    got = model.download(str(tmp_path / "got"), show_progress=False)
    assert len(got) == 1 and (tmp_path / "got" / "model.txt").read_text() == "ALPHA"
    assert run.get_metrics()["chars"] == 5
    assert (tmp_path / "datastore" / "raw" / "train" / "a.txt").read_text() == "alpha"


def test_mounted_inputs_and_outputs_work_inside(ws: Workspace, src: Path, tmp_path: Path) -> None:
    from runyard import Dataset, Datastore, OutputFileDatasetConfig
    from runyard.data.fuse import fuse_available

    if fuse_available() is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE is needed in CI: {fuse_available()}")
        pytest.skip(str(fuse_available()))
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.txt").write_text("alpha")
    store = Datastore.register_local(ws, "store", str(tmp_path / "datastore"))
    store.upload(str(tmp_path / "up"), "raw", show_progress=False)
    train = Dataset.File.from_files([(store, "raw")]).register(ws, "train")
    write_script(src, "x.py", """
        import os, sys
        from runyard import Run
        text = open(os.path.join(Run.get_context().input_datasets["train"], "a.txt")).read()
        os.makedirs(sys.argv[1], exist_ok=True)
        open(os.path.join(sys.argv[1], "b.txt"), "w").write(text * 2)
        print("read", text)
    """)
    out = OutputFileDatasetConfig("out", destination=(store, "written/{run-id}")).as_mount()
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script="x.py", arguments=[out],
                                  inputs=[train.as_named_input("train").as_mount()])
    run = runyard.Experiment(ws, "sb").submit(cfg)
    details = run.wait_for_completion(raise_on_error=False)
    log = driver_log(ws, run)
    assert details["status"] == "Completed", log
    assert "read alpha" in log and details["inputDatasets"][0]["mode"] == "mount"
    assert (tmp_path / "datastore" / "written" / run.id / "b.txt").read_text() == "alphaalpha"
