"""Datastores, datasets, run inputs and declared outputs, against real services.

One conformance suite runs on every datastore kind: a local folder, Azure
Blob (Azurite), S3 (a moto server) and GCS (gcp-storage-emulator), each
started by the test session on 127.0.0.1. Runs are real runs (a supervisor process, a script).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runyard
from runyard import Dataset, Datastore, OutputFileDatasetConfig
from runyard.errors import (
    ConfigError,
    DataChangedError,
    DatastoreAuthError,
    DatastoreError,
    DatastoreUnreachableError,
    NotFoundError,
)
from runyard.workspace import Workspace
from services import Azurite, GcsEmulator, MotoS3, free_port
from trees import write_script

pytestmark = pytest.mark.timeout(180)

KINDS = ["local", "azureblob", "s3", "gcs"]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, workspace: Workspace, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Datastore:
    """A fresh datastore of each kind, registered in the test's workspace as 'store'."""
    monkeypatch.setenv("RUNYARD_DATA_RETRIES", "2")
    kind = request.param
    if kind == "local":
        folder = tmp_path / "datastore-folder"
        folder.mkdir()
        return Datastore.register_local(workspace, "store", str(folder))
    if kind == "azureblob":
        az: Azurite = request.getfixturevalue("azurite")
        monkeypatch.setenv("TEST_AZ_KEY", az.account_key)
        return Datastore.register_azure_blob_container(
            workspace, "store", az.new_container(), az.account_name, account_key="env:TEST_AZ_KEY",
            endpoint=az.blob_endpoint)
    if kind == "gcs":
        g: GcsEmulator = request.getfixturevalue("gcs")
        return Datastore.register_gcs(workspace, "store", g.new_bucket(), project=g.project,
                                      endpoint_url=g.endpoint_url, token="anon")
    s3: MotoS3 = request.getfixturevalue("moto_s3")
    return Datastore.register_s3(workspace, "store", s3.new_bucket(), s3.access_key, s3.secret_key,
                                 endpoint_url=s3.endpoint_url, region=s3.region)


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


TREE = {"train/a.csv": b"1,2\n", "train/sub/b.csv": b"3,4\n" * 100, "train/notes.txt": b"not csv",
        "test/c.csv": b"5,6\n", "train/big.bin": os.urandom(300_000)}


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


write = write_script


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    write(d, "read.py", """
        import hashlib, os, sys
        from runyard import Run
        run = Run.get_context()
        root = run.input_datasets["train"]
        assert os.environ["RUNYARD_INPUT_train"] == root
        assert sys.argv[1] == root, (sys.argv, root)
        for dp, dn, fn in sorted(os.walk(root)):
            dn.sort()
            for n in sorted(fn):
                p = os.path.join(dp, n)
                print("FILE", os.path.relpath(p, root), hashlib.sha256(open(p, "rb").read()).hexdigest())
        out = run.output_datasets.get("model")
        if out:
            os.makedirs(os.path.join(out, "deep"), exist_ok=True)
            with open(os.path.join(out, "deep", "weights.bin"), "wb") as f:
                f.write(b"w" * 5000)
            with open(os.path.join(out, "summary.txt"), "w") as f:
                f.write("ok\\n")
        sys.exit(int(os.environ.get("EXIT_WITH", "0")))
    """)
    return d


def submit(ws: Workspace, src: Path, script: str, *args: Any, **cfg: Any) -> runyard.Run:
    config = runyard.ScriptRunConfig(source_directory=str(src), script=script, arguments=list(args), **cfg)
    return runyard.Experiment(ws, "data").submit(config)


def driver_log(run: runyard.Run) -> str:
    return (Path(run.workspace.runs_dir) / run.id / "driver_log.txt").read_text()


def files_in_log(text: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[2] for line in text.splitlines() if line.startswith("FILE ")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- datastores ---------------------------------------------------------------------
def test_upload_list_download_round_trip(store: Datastore, tmp_path: Path) -> None:
    local = make_tree(tmp_path / "up", TREE)
    written = store.upload(str(local), "raw", show_progress=False)
    assert sorted(written) == sorted(f"raw/{k}" for k in TREE)
    listed = store.list_files("raw")
    assert [f.path for f in listed] == sorted(f"raw/{k}" for k in TREE)
    assert {f.path: f.size for f in listed} == {f"raw/{k}": len(v) for k, v in TREE.items()}
    assert all(f.fingerprint for f in listed)
    assert [f.path for f in store.list_files("raw/train/**/*.csv")] == ["raw/train/a.csv", "raw/train/sub/b.csv"]
    # upload again without overwrite: nothing is written again
    assert store.upload(str(local), "raw", show_progress=False) == []
    n = store.download(str(tmp_path / "down"), "raw", show_progress=False)
    assert n == len(TREE)
    assert tree_of(tmp_path / "down") == TREE
    # a single file keeps its own name
    assert store.download(str(tmp_path / "one"), "raw/test/c.csv", show_progress=False) == 1
    assert (tmp_path / "one" / "c.csv").read_bytes() == TREE["test/c.csv"]


def test_dataset_versions_and_change_detection(store: Datastore, workspace: Workspace, tmp_path: Path) -> None:
    store.upload(str(make_tree(tmp_path / "up", TREE)), "raw", show_progress=False)
    ds = Dataset.File.from_files([(store, "raw/train/**/*.csv")])
    assert ds.to_path() == ["/a.csv", "/sub/b.csv"]
    v1 = ds.register(workspace, "train", description="csv files", tags={"team": "a"})
    assert (v1.name, v1.version) == ("train", 1)
    with pytest.raises(runyard.HistoryError, match="create_new_version=True"):
        ds.register(workspace, "train")
    assert ds.register(workspace, "train", create_new_version=True).version == 1  # same files: same version
    assert v1.changes().unchanged
    # the data under version 1 changes at the datastore
    changed = make_tree(tmp_path / "change", {"train/a.csv": b"9,9,9\n", "train/new.csv": b"7\n"})
    store.upload(str(changed), "raw", overwrite=True, show_progress=False)
    again = Dataset.get_by_name(workspace, "train", version=1)
    changes = again.changes()
    assert changes.changed == ["a.csv"] and changes.added == ["new.csv"] and changes.removed == []
    with pytest.raises(DataChangedError, match=r"train.*version 1.*a\.csv"):
        again.download(str(tmp_path / "refused"), show_progress=False)
    v2 = Dataset.File.from_files([(store, "raw/train/**/*.csv")]).register(workspace, "train",
                                                                            create_new_version=True)
    assert v2.version == 2 and len(v2.files) == 3
    assert Dataset.get_by_name(workspace, "train").version == 2
    got = v2.download(str(tmp_path / "v2"), show_progress=False)
    assert len(got) == 3
    assert (tmp_path / "v2" / "a.csv").read_bytes() == b"9,9,9\n"


def test_run_reads_a_dataset_by_download_then_from_the_cache(store: Datastore, workspace: Workspace,
                                                             src: Path, tmp_path: Path) -> None:
    store.upload(str(make_tree(tmp_path / "up", TREE)), "raw", show_progress=False)
    train = Dataset.File.from_files([(store, "raw/train")]).register(workspace, "train")
    runs = []
    for _ in range(2):
        run = submit(workspace, src, "read.py", train.as_named_input("train").as_download())
        assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
        runs.append(run)
    expected = {k[len("train/"):]: sha(v) for k, v in TREE.items() if k.startswith("train/")}
    for run in runs:
        assert files_in_log(driver_log(run)) == expected
    assert "(0 from the cache, 4 downloaded)" in driver_log(runs[0])
    assert "(4 from the cache, 0 downloaded)" in driver_log(runs[1])
    details = runs[1].get_details()
    assert [(d["name"], d["dataset"], d["version"], d["state"]) for d in details["inputDatasets"]] == [
        ("train", "train", 1, "read")]
    readers = {r.run_id for r in _catalog(workspace).dataset_runs("train", 1)}
    assert readers == {r.id for r in runs}


def test_run_reads_a_dataset_by_mount(store: Datastore, workspace: Workspace, src: Path, tmp_path: Path) -> None:
    _need_fuse()
    store.upload(str(make_tree(tmp_path / "up", TREE)), "raw", show_progress=False)
    train = Dataset.File.from_files([(store, "raw/train/**")]).register(workspace, "train")
    run = submit(workspace, src, "read.py", train.as_named_input("train").as_mount())
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    expected = {k[len("train/"):]: sha(v) for k, v in TREE.items() if k.startswith("train/")}
    assert files_in_log(driver_log(run)) == expected
    assert run.get_details()["inputDatasets"][0]["mode"] == "mount"
    assert not _mounts_under(workspace.path), "the mount outlived the run"


def test_run_reads_a_datastore_path_by_mount_and_download(store: Datastore, workspace: Workspace, src: Path,
                                                          tmp_path: Path) -> None:
    store.upload(str(make_tree(tmp_path / "up", TREE)), "raw", show_progress=False)
    expected = {k[len("train/"):]: sha(v) for k, v in TREE.items() if k.startswith("train/")}
    modes = ["download", "mount"] if _fuse_ok() else ["download"]
    for mode in modes:
        path = store.path("raw/train").as_named_input("train")
        cfg = path.as_mount() if mode == "mount" else path.as_download()
        run = submit(workspace, src, "read.py", cfg)
        assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
        assert files_in_log(driver_log(run)) == expected, mode
    assert not _mounts_under(workspace.path)


def test_outputs_upload_and_register_only_when_the_run_completes(store: Datastore, workspace: Workspace,
                                                                src: Path, tmp_path: Path) -> None:
    store.upload(str(make_tree(tmp_path / "up", TREE)), "raw", show_progress=False)
    train = Dataset.File.from_files([(store, "raw/test")]).register(workspace, "train")

    def go(exit_with: int) -> runyard.Run:
        out = OutputFileDatasetConfig("model", destination=(store, "models/{run-id}/{output-name}"))
        out = out.as_upload().register_on_complete("trained", description="weights")
        os.environ["EXIT_WITH"] = str(exit_with)
        try:
            run = submit(workspace, src, "read.py", train.as_named_input("train"), outputs=[out])
        finally:
            del os.environ["EXIT_WITH"]
        run.wait_for_completion(raise_on_error=False)
        return run

    failed = go(3)
    assert failed.get_status() == "Failed"
    out = failed.get_details()["outputDatasets"][0]
    assert (out["state"], out["version"], out["files"]) == ("partial", None, 2)
    # the failed run's output stays at its destination, and is not a dataset
    assert [f.path for f in store.list_files(f"models/{failed.id}/model")] == [
        f"models/{failed.id}/model/deep/weights.bin", f"models/{failed.id}/model/summary.txt"]
    with pytest.raises(NotFoundError, match="no dataset named 'trained'"):
        Dataset.get_by_name(workspace, "trained")

    done = go(0)
    assert done.get_status() == "Completed", driver_log(done)
    out = done.get_details()["outputDatasets"][0]
    assert (out["state"], out["dataset"], out["version"]) == ("registered", "trained", 1)
    trained = Dataset.get_by_name(workspace, "trained")
    assert trained.run_id == done.id
    assert sorted(f.rel for f in trained.files) == ["deep/weights.bin", "summary.txt"]
    assert trained.changes().unchanged
    got = trained.download(str(tmp_path / "trained"), show_progress=False)
    assert len(got) == 2 and (tmp_path / "trained" / "deep" / "weights.bin").read_bytes() == b"w" * 5000


def test_output_that_exists_fails_before_the_script_starts(store: Datastore, workspace: Workspace, src: Path,
                                                          tmp_path: Path) -> None:
    store.upload(str(make_tree(tmp_path / "up", {"taken/x.txt": b"x"})), "", show_progress=False)
    write(src, "touch.py", """
        open("outputs/ran", "w").write("yes")
    """)
    out = OutputFileDatasetConfig("result", destination=(store, "taken"))
    run = submit(workspace, src, "touch.py", outputs=[out])
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "Output path already exist: store:taken" in details["error"]
    assert "outputs/ran" not in run.get_file_names(), "the script ran"
    assert [f.path for f in store.list_files("taken")] == ["taken/x.txt"]  # nothing overwritten
    # allowed with overwrite=True
    out2 = OutputFileDatasetConfig("result", destination=(store, "taken")).as_upload(overwrite=True)
    assert submit(workspace, src, "touch.py", outputs=[out2]).wait_for_completion()["status"] == "Completed"


def _fuse_ok() -> bool:
    from runyard.data.fuse import fuse_available

    return fuse_available() is None


def _need_fuse() -> None:
    from runyard.data.fuse import fuse_available

    reason = fuse_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE is needed in CI: {reason}")
        pytest.skip(reason)


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def _catalog(ws: Workspace) -> Any:
    from runyard.history.catalog import DataCatalog

    return DataCatalog(ws.open_history())


# -- mount-mode outputs, and the store on a datastore -------------------------------------
def test_output_in_mount_mode_writes_through(store: Datastore, workspace: Workspace, src: Path) -> None:
    _need_fuse()
    write(src, "emit.py", """
        import os
        from runyard import Run
        out = Run.get_context().output_datasets["emitted"]
        os.makedirs(os.path.join(out, "a", "b"))
        for i in range(3):
            with open(os.path.join(out, "a", "b", f"part-{i}.txt"), "w") as f:
                f.write("x" * (i + 1) * 1000)
    """)
    out = OutputFileDatasetConfig("emitted", destination=(store, "stream/{run-id}")).as_mount()
    run = submit(workspace, src, "emit.py", outputs=[out.register_on_complete("emitted")])
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    files = store.list_files(f"stream/{run.id}")
    assert {f.path.rsplit("/", 1)[1]: f.size for f in files} == {"part-0.txt": 1000, "part-1.txt": 2000,
                                                                   "part-2.txt": 3000}
    assert Dataset.get_by_name(workspace, "emitted").version == 1
    assert run.get_details()["outputDatasets"][0]["mode"] == "mount"
    assert not _mounts_under(workspace.path)


@pytest.mark.parametrize("store", ["azureblob", "s3", "gcs"], indirect=True)
def test_snapshot_store_on_a_datastore(store: Datastore, workspace: Workspace, tmp_path: Path) -> None:
    workspace.set_setting("store.url", "datastore://store/snapshots")
    proj = make_tree(tmp_path / "p", {"a.py": b"print(1)\n", "pkg/b.py": b"x = 2\n"})
    snap = workspace.snapshot(str(proj))
    assert [f.path for f in store.list_files("snapshots/store.json")] == ["snapshots/store.json"]
    workspace.restore_snapshot(snap.id, str(tmp_path / "back"))
    assert tree_of(tmp_path / "back") == tree_of(proj)


# -- the command line -----------------------------------------------------------------------
def runyard_cli(ws: Workspace, *args: str, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard", "--workspace", ws.path, *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, cwd=cwd)


def test_cli_end_to_end_with_lineage(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "lake", TREE)
    p = runyard_cli(workspace, "datastore", "register", "lake", "--kind", "local", "--path", str(data))
    assert p.returncode == 0, p.stderr
    p = runyard_cli(workspace, "dataset", "register", "train", "--from", "lake:train/**/*.csv")
    assert p.returncode == 0 and "train:1: 2 files" in p.stdout, p.stderr
    p = runyard_cli(workspace, "run", "--source-dir", str(src), "--input", "train=dataset:train:1",
                    "--output", "model", "--register-output", "model=model", "read.py", "${{inputs.train}}")
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = p.stderr.split("run ", 1)[1].split()[0]
    show = runyard_cli(workspace, "dataset", "show", "model")
    assert show.returncode == 0, show.stderr
    assert f"produced by: {run_id}" in show.stdout and "unchanged since it was registered" in show.stdout
    show = runyard_cli(workspace, "dataset", "show", "train:1")
    assert f"read by:     {run_id}" in show.stdout
    runs_show = runyard_cli(workspace, "runs", "show", run_id)
    assert "train: dataset train:1 (download, read, 2 files" in runs_show.stdout
    assert "model: dataset model:1 -> default:dataset/" in runs_show.stdout
    # the default destination is in the default datastore, a folder in the workspace
    assert (Path(workspace.path) / "datastore" / "dataset" / run_id / "model" / "summary.txt").is_file()
    # rerun: same inputs, a fresh destination
    p = runyard_cli(workspace, "rerun", run_id)
    assert p.returncode == 0, p.stdout + p.stderr
    assert runyard_cli(workspace, "dataset", "show", "model:2").returncode == 0
    ls = runyard_cli(workspace, "datastore", "ls")
    assert ls.stdout.split()[:2] == ["default", "local"] and "lake" in ls.stdout


def test_cli_upload_download_and_show_masks_credentials(workspace: Workspace, tmp_path: Path,
                                                         azurite: Azurite) -> None:
    container = azurite.new_container()
    p = runyard_cli(workspace, "datastore", "register", "az", "--kind", "azureblob", "--account-name",
                    azurite.account_name, "--container", container, "--endpoint", azurite.blob_endpoint,
                    "--account-key", azurite.account_key)
    assert p.returncode == 0, p.stderr
    show = runyard_cli(workspace, "datastore", "show", "az")
    assert azurite.account_key not in show.stdout and "hidden" in show.stdout
    creds = Path(workspace.path) / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert azurite.account_key in creds.read_text()
    make_tree(tmp_path / "up", TREE)
    p = runyard_cli(workspace, "datastore", "upload", "az", str(tmp_path / "up"), "in")
    assert p.returncode == 0 and f"Uploaded {len(TREE)} files" in p.stdout, p.stderr
    p = runyard_cli(workspace, "datastore", "download", "az", "in", str(tmp_path / "down"))
    assert p.returncode == 0, p.stderr
    assert tree_of(tmp_path / "down") == TREE
    # a run that reads from it and writes to it (request, data plan, logs, end file, mounts' spec files)
    src = tmp_path / "proj"
    write(src, "copy.py", """
        import os, shutil
        shutil.copytree(os.environ["RUNYARD_INPUT_data"], os.path.join(os.environ["RUNYARD_OUTPUT_out"], "c"))
    """)
    mode = "@mount" if _fuse_ok() else "@download"
    p = runyard_cli(workspace, "run", "--source-dir", str(src), "--input", f"data=az:in/train{mode}",
                    "--output", "out=az:out/{run-id}", "--register-output", "out=copied", "copy.py")
    assert p.returncode == 0, p.stdout + p.stderr
    # the key is nowhere but the credentials file
    for path in Path(workspace.path).rglob("*"):
        if path.is_file() and path != creds:
            assert azurite.account_key.encode() not in path.read_bytes(), path
    rm = runyard_cli(workspace, "datastore", "rm", "az")
    assert rm.returncode == 0
    assert azurite.account_key not in creds.read_text()


# -- bad input --------------------------------------------------------------------------------
def test_an_unreachable_datastore_fails_the_run_in_preparing(workspace: Workspace, src: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_DATA_RETRIES", "2")
    port = free_port()
    ds = Datastore.register(workspace, "gone", "s3", {"bucket": "b", "endpoint_url": f"http://127.0.0.1:{port}",
                                                      "region": "us-east-1"},
                            {"access_key_id": "k", "secret_access_key": "s"}, verify=False)
    with pytest.raises(DatastoreUnreachableError, match=rf"datastore 'gone'.*127\.0\.0\.1:{port}.*tried 2 times"):
        ds.check()
    run = submit(workspace, src, "read.py", ds.path("x").as_named_input("train"))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "preparing the run's data failed" in details["error"]
    assert "Cannot reach datastore 'gone'" in details["error"] and f"127.0.0.1:{port}" in details["error"]
    assert "FILE" not in driver_log(run)
    assert workspace.open_history().get_run(run.id).started is None, "the script was started"


def test_wrong_credentials_are_refused_at_register_without_echoing_them(workspace: Workspace,
                                                                        azurite: Azurite) -> None:
    wrong = "A" * 86 + "=="
    with pytest.raises(DatastoreAuthError) as err:
        Datastore.register_azure_blob_container(workspace, "az", azurite.new_container(), azurite.account_name,
                                                account_key=wrong, endpoint=azurite.blob_endpoint)
    assert "refused the credentials" in str(err.value) and wrong not in str(err.value)
    assert "register az --replace" in str(err.value)
    with pytest.raises(NotFoundError):
        Datastore.get(workspace, "az")  # nothing registered


def test_a_missing_container_or_bucket_is_named(workspace: Workspace, azurite: Azurite, moto_s3: MotoS3) -> None:
    with pytest.raises(DatastoreError, match=r"container 'nosuchcontainer'.*does not exist"):
        Datastore.register_azure_blob_container(workspace, "az", "nosuchcontainer", azurite.account_name,
                                                account_key=azurite.account_key, endpoint=azurite.blob_endpoint)
    with pytest.raises(DatastoreError, match=r"bucket 'nosuchbucket'.*does not exist"):
        Datastore.register_s3(workspace, "s3", "nosuchbucket", moto_s3.access_key, moto_s3.secret_key,
                              endpoint_url=moto_s3.endpoint_url)


def test_missing_dataset_version_glob_and_bad_paths(workspace: Workspace, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "lake", TREE)
    lake = Datastore.register_local(workspace, "lake", str(data))
    with pytest.raises(NotFoundError, match=r"no dataset named 'nope'.*No dataset is registered yet"):
        Dataset.get_by_name(workspace, "nope")
    Dataset.File.from_files([(lake, "train/*.csv")]).register(workspace, "train")
    with pytest.raises(NotFoundError, match="has no version 7; its versions are 1"):
        Dataset.get_by_name(workspace, "train", version=7)
    with pytest.raises(DatastoreError, match=r"glob 'train/\*\*/\*\.parquet' matches no file.*datastore ls lake"):
        Dataset.File.from_files([(lake, "train/**/*.parquet")])
    with pytest.raises(ConfigError, match=r"contains '\.\.'"):
        Dataset.File.from_files([(lake, "../etc/passwd")])
    with pytest.raises(ConfigError, match=r"contains '\.\.'"):
        lake.path("a/../../b")
    with pytest.raises(ConfigError, match=r"contains '\.\.'"):
        OutputFileDatasetConfig("o", destination=(lake, "x/../../y"))
    with pytest.raises(ConfigError, match=r"Unknown placeholder \{runid\}"):
        OutputFileDatasetConfig("o", destination=(lake, "x/{runid}"))
    with pytest.raises(NotFoundError, match=r"no datastore named 'nostore'.*Registered: default, lake"):
        Datastore.get(workspace, "nostore")


def test_names_are_checked_and_common_env_names_warned(workspace: Workspace, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    with pytest.raises(ConfigError, match=r'Invalid input name "1st"\. The name can only be alphanumeric'):
        lake.path("train").as_named_input("1st")
    with pytest.raises(ConfigError, match='Invalid output name "my-out"'):
        OutputFileDatasetConfig("my-out")
    with caplog.at_level("WARNING", logger="runyard"):
        lake.path("train").as_named_input("PATH")
    assert "common environment variable PATH" in caplog.text
    with pytest.raises(ConfigError, match="'dataset' is reserved"):
        Datastore.register_local(workspace, "dataset", str(tmp_path))
    with pytest.raises(ConfigError, match="already registered"):
        Datastore.register_local(workspace, "lake", str(tmp_path))


def test_cli_input_and_output_syntax_errors(workspace: Workspace, src: Path) -> None:
    cases = [
        (["--input", "train"], "write NAME=dataset:DATASET"),
        (["--input", "train=dataset:nope"], "no dataset named 'nope'"),
        (["--input", "train=default:x@fast"], "unknown mode '@fast'"),
        (["--output", "m=default"], "the destination is DATASTORE:PATH"),
        (["--register-output", "zz=ds"], "for an output given with --output"),
        (["--output", "m", "read.py", "${{outputs.other}}"], "refers to output 'other'"),
    ]
    for args, message in cases:
        argv = ["run", "--source-dir", str(src), *args]
        if "read.py" not in args:
            argv.append("read.py")
        p = runyard_cli(workspace, *argv)
        assert p.returncode != 0 and message in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr


def test_credentials_by_environment_variable_are_never_stored(workspace: Workspace, moto_s3: MotoS3,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_S3_SECRET", moto_s3.secret_key + "-env")
    bucket = moto_s3.new_bucket()
    Datastore.register_s3(workspace, "s3", bucket, moto_s3.access_key, "env:MY_S3_SECRET",
                          endpoint_url=moto_s3.endpoint_url)
    got = Datastore.get(workspace, "s3")
    assert got.masked_options()["secret_access_key"] == "(from $MY_S3_SECRET)"
    creds = json.loads((Path(workspace.path) / "credentials.json").read_text())
    assert "secret_access_key" not in creds["datastores"]["s3"]
    con = sqlite3.connect(Path(workspace.path) / "history.db")
    try:
        row = con.execute("SELECT options, secret_refs FROM datastores WHERE name = 's3'").fetchone()
    finally:
        con.close()
    assert moto_s3.secret_key not in row[0] + row[1] and "env:MY_S3_SECRET" in row[1]
    monkeypatch.delenv("MY_S3_SECRET")
    with pytest.raises(ConfigError, match="environment variable MY_S3_SECRET, which is not set"):
        Datastore.get(workspace, "s3").list_files("")


@pytest.fixture(autouse=True)
def _no_mount_left(workspace: Workspace) -> Iterator[None]:
    yield
    from runyard.data.fuse import unmount_stale

    for m in _mounts_under(workspace.path):
        unmount_stale(m)


# -- every kind of end -----------------------------------------------------------------
def test_a_dead_supervisor_leaves_no_mount_behind(workspace: Workspace, src: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _need_fuse()
    import signal
    import time

    from runyard.compute.local import pid_alive
    from runyard.history import RunStatus

    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    write(src, "forever.py", """
        import os, time
        print("sees", sorted(os.listdir(os.environ["RUNYARD_INPUT_train"])), flush=True)
        time.sleep(600)
    """)
    run = submit(workspace, src, "forever.py", lake.path("train").as_named_input("train").as_mount())
    history = workspace.open_history()
    deadline = time.monotonic() + 30
    while (record := history.get_run(run.id)).status is not RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.status is RunStatus.RUNNING and record.supervisor_pid
    while "sees" not in driver_log(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "'a.csv', 'big.bin', 'notes.txt', 'sub'" in driver_log(run)
    assert _mounts_under(workspace.path), "the input is not mounted"
    os.kill(record.supervisor_pid, signal.SIGKILL)
    while pid_alive(record.supervisor_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.get_status() == "Failed"
    assert _mounts_under(workspace.path) == []


def test_a_run_canceled_while_its_data_downloads(workspace: Workspace, src: Path, moto_s3: MotoS3,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    s3 = Datastore.register_s3(workspace, "s3", moto_s3.new_bucket(), moto_s3.access_key, moto_s3.secret_key,
                               endpoint_url=moto_s3.endpoint_url, region=moto_s3.region)
    s3.upload(str(make_tree(tmp_path / "many", {f"f{i:04d}.txt": b"x" * 100 for i in range(1500)})), "many",
              show_progress=False)
    monkeypatch.setenv("RUNYARD_TRANSFER_CONCURRENCY", "1")  # slow enough to cancel in the middle
    run = submit(workspace, src, "read.py", s3.path("many").as_named_input("train"))
    deadline = time.monotonic() + 30
    while run.get_status() != "Preparing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.get_status() == "Preparing"
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Canceled", details
    assert "FILE" not in driver_log(run)
    inputs = Path(workspace.runs_dir) / run.id / "data" / "inputs" / "train"
    assert not any(p.name.endswith(".part") for p in inputs.rglob("*")), "a partial file was left"
    cached = [p for p in (Path(workspace.cache_dir) / "data").rglob("*") if len(p.name) == 64]
    assert len(cached) < 1500, "the download went on after the cancel"


def test_a_stopped_download_leaves_only_complete_files(workspace: Workspace, tmp_path: Path) -> None:
    from runyard.data.transfer import get_files
    from runyard.errors import DataError

    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    files = lake.list_files("train")
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="canceled"):
        get_files(lake, [(f, str(dest / f.path)) for f in files], stop=stop)
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got and len(got) < len(files)
    assert all(TREE[k] == v for k, v in got.items())


# -- the cache, and what a version covers -------------------------------------------------
def test_a_script_that_writes_to_its_input_does_not_change_the_cache(workspace: Workspace, src: Path,
                                                                      tmp_path: Path) -> None:
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    train = Dataset.File.from_files([(lake, "train")]).register(workspace, "train")
    write(src, "spoil.py", """
        import os
        p = os.path.join(os.environ["RUNYARD_INPUT_train"], "a.csv")
        os.chmod(p, 0o644)
        with open(p, "r+b") as f:  # same size, other bytes
            f.write(b"X,X\\n")
    """)
    spoil = submit(workspace, src, "spoil.py", train.as_named_input("train"))
    assert spoil.wait_for_completion()["status"] == "Completed", driver_log(spoil)
    run = submit(workspace, src, "read.py", train.as_named_input("train"))
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    assert files_in_log(driver_log(run))["a.csv"] == sha(TREE["train/a.csv"])
    assert "(4 from the cache, 0 downloaded)" in driver_log(run)  # the script changed its own copy only
    cached = [p for p in (Path(workspace.cache_dir) / "data").rglob("*") if p.is_file() and len(p.name) == 64]
    assert len(cached) == 4 and all(p.stat().st_nlink == 1 for p in cached), "a run links into the cache"
    got = train.download(str(tmp_path / "dl"), show_progress=False)
    assert len(got) == 4 and (tmp_path / "dl" / "a.csv").read_bytes() == TREE["train/a.csv"]


def test_files_added_under_a_glob_do_not_stop_a_version(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "lake", TREE)
    lake = Datastore.register_local(workspace, "lake", str(data))
    train = Dataset.File.from_files([(lake, "train/**/*.csv")]).register(workspace, "train")
    (data / "train" / "late.csv").write_bytes(b"late\n")
    assert train.changes().added == ["late.csv"]
    run = submit(workspace, src, "read.py", train.as_named_input("train"))
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    assert sorted(files_in_log(driver_log(run))) == ["a.csv", "sub/b.csv"]
    assert "1 added (late.csv) since it was registered; those files are not part of it" in driver_log(run)
    (data / "train" / "a.csv").unlink()
    failed = submit(workspace, src, "read.py", train.as_named_input("train"))
    details = failed.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "1 removed (a.csv)" in details["error"]


def test_overwrite_registers_only_what_the_run_wrote(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    (tmp_path / "lake" / "out" / "stale.txt").parent.mkdir()
    (tmp_path / "lake" / "out" / "stale.txt").write_text("old")
    out = OutputFileDatasetConfig("model", destination=(lake, "out")).as_upload(overwrite=True)
    run = submit(workspace, src, "read.py", lake.path("test").as_named_input("train"),
                 outputs=[out.register_on_complete("model")])
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    assert sorted(f.rel for f in Dataset.get_by_name(workspace, "model").files) == ["deep/weights.bin",
                                                                                   "summary.txt"]


def test_inputs_of_an_outer_run_do_not_leak_into_a_nested_one(workspace: Workspace, src: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write(src, "env.py", """
        from runyard import Run
        print("INPUTS", sorted(Run.get_context().input_datasets))
    """)
    monkeypatch.setenv("RUNYARD_INPUT_outer", "/somewhere")
    run = submit(workspace, src, "env.py")
    assert run.wait_for_completion()["status"] == "Completed"
    assert "INPUTS []" in driver_log(run)


def test_a_placeholder_without_its_input_is_an_error(workspace: Workspace, src: Path) -> None:
    p = runyard_cli(workspace, "run", "--source-dir", str(src), "read.py", "${{inputs.train}}")
    assert p.returncode == 1 and "refers to input 'train'" in p.stderr and "--input train=" in p.stderr
    with pytest.raises(ConfigError, match="refers to output 'model'"):
        submit(workspace, src, "read.py", "--out", "${{outputs.model}}")


def test_create_if_not_exists_with_a_key_from_the_environment(workspace: Workspace, azurite: Azurite,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_KEY_FOR_TEST", azurite.account_key)
    ds = Datastore.register_azure_blob_container(workspace, "made", "madehere", azurite.account_name,
                                                 account_key="env:AZ_KEY_FOR_TEST", endpoint=azurite.blob_endpoint,
                                                 create_if_not_exists=True)
    assert ds.list_files("") == []
    assert Datastore.get(workspace, "made").masked_options()["account_key"] == "(from $AZ_KEY_FOR_TEST)"


def test_the_download_cache_is_pruned_least_recently_used_first(workspace: Workspace, tmp_path: Path) -> None:
    import time

    from runyard.data.materialize import CACHE_DIR, fetch, prune_cache

    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", {
        "old.bin": b"o" * 1000, "mid.bin": b"m" * 1000, "new.bin": b"n" * 1000})))
    files = {f.path: f for f in lake.list_files("")}
    for name in ("old.bin", "mid.bin", "new.bin"):
        fetch(workspace, lake, [(files[name], str(tmp_path / "got" / name))])
        time.sleep(0.02)
    fetch(workspace, lake, [(files["old.bin"], str(tmp_path / "again" / "old.bin"))])  # used again: now newest
    cache = Path(workspace.cache_dir) / CACHE_DIR
    assert len([p for p in cache.rglob("*") if p.is_file() and len(p.name) == 64]) == 3
    assert prune_cache(workspace, 2500) == (1, 1000)
    assert prune_cache(workspace) == (0, 0)  # the default limit (20 GiB) keeps them
    workspace.set_setting("data.cache_max_bytes", "1500B")
    assert prune_cache(workspace) == (1, 1000)
    _, hit = fetch(workspace, lake, [(files["old.bin"], str(tmp_path / "third" / "old.bin"))])
    assert hit == 1, "the most recently used file was kept"
    assert (tmp_path / "got" / "mid.bin").read_bytes() == b"m" * 1000  # the copies runs made are their own


def test_without_fuse_mounts_fall_back_to_download_and_upload(workspace: Workspace, src: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_NO_FUSE", "1")
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    train = Dataset.File.from_files([(lake, "train")]).register(workspace, "train")
    out = OutputFileDatasetConfig("model", destination=(lake, "out/{run-id}")).as_mount()
    run = submit(workspace, src, "read.py", train.as_named_input("train").as_mount(), outputs=[out])
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    log = driver_log(run)
    assert "input 'train' cannot be mounted here (RUNYARD_NO_FUSE is set); it is downloaded instead" in log
    assert "output 'model' cannot be mounted here (RUNYARD_NO_FUSE is set); it is uploaded at the end" in log
    assert len(files_in_log(log)) == 4
    details = run.get_details()
    assert details["inputDatasets"][0]["mode"] == "download" and details["outputDatasets"][0]["mode"] == "upload"
    assert len(lake.list_files(f"out/{run.id}")) == 2


@pytest.mark.parametrize("key", ["evil/../../../escaped.txt", "evil/./x.txt", "evil//x.txt"])
def test_object_keys_that_would_leave_the_folder_are_refused(workspace: Workspace, moto_s3: MotoS3,
                                                             tmp_path: Path, key: str) -> None:
    bucket = moto_s3.new_bucket()
    client = moto_s3.client()
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
        client.put_object(Bucket=bucket, Key="evil/fine.txt", Body=b"ok")
    finally:
        client.close()
    s3 = Datastore.register_s3(workspace, "s3", bucket, moto_s3.access_key, moto_s3.secret_key,
                               endpoint_url=moto_s3.endpoint_url, region=moto_s3.region)
    with pytest.raises(DatastoreError, match="cannot be a file name here"):
        s3.download(str(tmp_path / "dl" / "in"), "evil", show_progress=False)
    with pytest.raises(DatastoreError, match="cannot be a file name here"):
        Dataset.File.from_files([(s3, "evil")])
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "dl" / "escaped.txt").exists()


def test_an_unregistered_dataset_and_a_previous_output_as_inputs(workspace: Workspace, src: Path,
                                                                 tmp_path: Path) -> None:
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    files = Dataset.File.from_files([(lake, "train/*.csv"), (lake, "test/c.csv")])
    out = OutputFileDatasetConfig("model", destination=(lake, "made/{run-id}"))
    first = submit(workspace, src, "read.py", files.as_named_input("train"), outputs=[out])
    assert first.wait_for_completion()["status"] == "Completed", driver_log(first)
    assert sorted(files_in_log(driver_log(first))) == ["a.csv", "c.csv"]
    second = submit(workspace, src, "read.py", out.as_input("train"))
    assert second.wait_for_completion()["status"] == "Completed", driver_log(second)
    assert sorted(files_in_log(driver_log(second))) == ["deep/weights.bin", "summary.txt"]
    shown = runyard_cli(workspace, "runs", "show", first.id).stdout
    assert "train: an unregistered dataset (download, read, 2 files" in shown
    with pytest.raises(ConfigError, match="submit the run that writes it first"):
        OutputFileDatasetConfig("later").as_input()


def test_a_local_datastore_never_reaches_outside_through_links(workspace: Workspace, tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"secret.txt": b"s"})
    data = make_tree(tmp_path / "lake", {"in/a.txt": b"a"})
    (data / "in" / "link.txt").symlink_to(outside / "secret.txt")
    (data / "linked_dir").symlink_to(outside)
    lake = Datastore.register_local(workspace, "lake", str(data))
    assert [f.path for f in lake.list_files("")] == ["in/a.txt"]
    assert lake.list_files("linked_dir") == []
    assert lake.list_files("linked_dir/*.txt") == []
    assert [f.path for f in lake.list_files("**/*.txt")] == ["in/a.txt"]



def test_pruning_waits_for_runs_reading_the_cache(workspace: Workspace, tmp_path: Path) -> None:
    from runyard.data.materialize import CACHE_DIR, _cache_lock, fetch, prune_cache

    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", {"a.bin": b"a" * 100})))
    fetch(workspace, lake, [(lake.list_files("a.bin")[0], str(tmp_path / "got" / "a.bin"))])
    with _cache_lock(os.path.join(workspace.cache_dir, CACHE_DIR), exclusive=False):  # a run copying out
        assert prune_cache(workspace, 1) == (0, 0)
    assert prune_cache(workspace, 1) == (1, 100)


def test_output_names_with_a_backslash_fail_the_output_and_keep_the_files(workspace: Workspace, src: Path,
                                                                          tmp_path: Path) -> None:
    write(src, "odd.py", """
        import os
        from runyard import Run
        out = Run.get_context().output_datasets["model"]
        for name in ("a\\\\b.txt", "c.txt"):
            with open(os.path.join(out, name), "w") as f:
                f.write(name)
    """)
    lake = Datastore.register_local(workspace, "lake", str(tmp_path / "lake"))
    out = OutputFileDatasetConfig("model", destination=(lake, "o/{run-id}")).register_on_complete("m")
    run = submit(workspace, src, "odd.py", outputs=[out])
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "backslash" in details["error"]
    assert "its files are kept in" in details["error"]
    kept = Path(workspace.runs_dir) / run.id / "data" / "outputs" / "model"
    assert sorted(p.name for p in kept.iterdir()) == ["a\\b.txt", "c.txt"]
    assert lake.list_files(f"o/{run.id}") == []
    with pytest.raises(NotFoundError):
        Dataset.get_by_name(workspace, "m")


def test_a_link_in_the_snapshot_cannot_take_path_on_compute_out(workspace: Workspace, src: Path,
                                                                tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (src / "data").symlink_to(outside)
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    run = submit(workspace, src, "read.py", lake.path("train").as_named_input("train").as_download(
        path_on_compute="data/train"))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "through a symbolic link" in details["error"]
    assert list(outside.iterdir()) == []


def test_a_run_failing_in_preparing_keeps_no_downloaded_inputs(workspace: Workspace, src: Path,
                                                               tmp_path: Path) -> None:
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    train = Dataset.File.from_files([(lake, "train")]).register(workspace, "train")
    run = submit(workspace, src, "read.py", train.as_named_input("train"),
                 inputs=[lake.path("nothing/here").as_named_input("other")])
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "nothing at 'nothing/here'" in details["error"]
    assert not (Path(workspace.runs_dir) / run.id / "data" / "inputs" / "train").exists()


def test_an_absolute_mount_of_a_dead_supervisor_is_unmounted(workspace: Workspace, src: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _need_fuse()
    import signal
    import time

    from runyard.compute.local import pid_alive
    from runyard.data.fuse import is_mounted

    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    where = tmp_path / "mnt" / "train"
    write(src, "forever.py", """
        import time
        print("up", flush=True)
        time.sleep(600)
    """)
    run = submit(workspace, src, "forever.py", lake.path("train").as_named_input("train").as_mount(
        path_on_compute=str(where)))
    log = Path(workspace.runs_dir) / run.id / "driver_log.txt"
    deadline = time.monotonic() + 30
    try:
        while not (log.exists() and "up" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_mounted(where)
        pid = workspace.open_history().get_run(run.id).supervisor_pid
        while pid is None and time.monotonic() < deadline:
            time.sleep(0.05)
            pid = workspace.open_history().get_run(run.id).supervisor_pid
        assert pid
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.get_status() == "Failed"
        assert not is_mounted(where)
    finally:  # whatever failed above, nothing stays running or mounted
        run.cancel()
        from runyard.data.fuse import unmount_stale

        unmount_stale(where)


def test_a_registered_output_is_the_files_the_run_wrote(workspace: Workspace, src: Path, tmp_path: Path) -> None:
    lake = Datastore.register_local(workspace, "lake", str(make_tree(tmp_path / "lake", TREE)))
    out = OutputFileDatasetConfig("model", destination=(lake, "shared")).as_upload(overwrite=True)
    run = submit(workspace, src, "read.py", lake.path("test").as_named_input("train"),
                 outputs=[out.register_on_complete("model")])
    assert run.wait_for_completion()["status"] == "Completed", driver_log(run)
    (tmp_path / "lake" / "shared" / "later.txt").write_text("someone else's")
    assert Dataset.get_by_name(workspace, "model").changes().unchanged
