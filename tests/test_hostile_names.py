"""No write outside the folder the user named, whatever the history or a manifest says.

A script on the local target can write the history database directly, and a
store or a dataset record can be forged, so every place that turns a recorded
name (an artifact name, a manifest path, a dataset's file list, an object key,
an output's files) into a local path is tried here with hostile names and
with links already in the destination folder. Each test lists a sentinel
folder around the destination before and after: nothing outside may change.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from runyard.data.dataset import Dataset
from runyard.data.datastore import Datastore
from runyard.errors import CorruptBlobError, RunyardError
from runyard.history import Artifact
from runyard.history.catalog import DataCatalog
from runyard.run import Run
from runyard.store.base import blob_key, hash_bytes
from runyard.workspace import Workspace

HOSTILE = [
    "../escape",
    "outputs/../../x",
    "outputs/../../../../up4",
    "/abs",
    "a//b",
    "outputs/",
    "outputs/.",
    "outputs/..",
    "outputs/nul\x00x",
    "outputs\\..\\..\\bs",
    "",
]


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) with what it is: the sentinel listing."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                out[rel] = "file:" + Path(p).read_bytes().hex()
    return out


def outside(listing: dict[str, str], folder: str) -> dict[str, str]:
    """The part of a listing that is not ``folder`` or below it."""
    return {k: v for k, v in listing.items() if k != folder and not k.startswith(folder + os.sep)}


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """sandbox/d1/d2/d3/dest is where downloads go; sandbox/elsewhere is a folder outside it."""
    box = tmp_path / "sandbox"
    (box / "d1" / "d2" / "d3").mkdir(parents=True)
    (box / "elsewhere").mkdir()
    (box / "elsewhere" / "keep.txt").write_text("untouched")
    return box


DEST = os.path.join("d1", "d2", "d3", "dest")


def completed_run(ws: Workspace, names: list[str], content: bytes = b"payload") -> str:
    """A Completed run whose artifacts are ``names`` (written with raw SQL, as a script could), plus
    one good artifact ``outputs/good.txt``."""
    history = ws.open_history()
    run = history.create_run("exp", status="Running")
    history.set_status(run.id, "Completed")
    store = ws.open_store()
    good, _ = store.put_bytes(b"good")
    bad, _ = store.put_bytes(content)
    history.upsert_artifacts(run.id, [Artifact("outputs/good.txt", 4, good, 1.0)])
    with sqlite3.connect(ws.history_location) as conn:
        conn.executemany("INSERT INTO artifacts (run_id, name, size, digest, mtime) VALUES (?, ?, ?, ?, ?)",
                         [(run.id, n, len(content), bad, 1.0) for n in names])
    return run.id


# -- artifacts: runyard artifacts download, Run.download_files, Run.download_file ------------------


def test_artifacts_download_refuses_hostile_names_and_downloads_the_others(
        workspace: Workspace, sandbox: Path, cli: object) -> None:
    run_id = completed_run(workspace, HOSTILE)
    before = tree(sandbox)
    result = cli("artifacts", "download", run_id, "-o", str(sandbox / DEST))  # type: ignore[operator]
    after = tree(sandbox)
    assert outside(after, DEST) == outside(before, DEST)
    assert result.exit_code == 1, result.output
    assert (sandbox / DEST / "outputs" / "good.txt").read_bytes() == b"good"
    for name in HOSTILE:
        assert repr(name) in result.output
    assert "was downloaded" in result.output or "were downloaded" in result.output
    assert "Traceback" not in result.output
    # Nothing but the good file landed in the folder either (no half-written temporary file).
    assert {k for k in after if k.startswith(DEST + os.sep)} == {
        os.path.join(DEST, "outputs"), os.path.join(DEST, "outputs", "good.txt")}


@pytest.mark.parametrize("name", HOSTILE)
def test_download_files_never_writes_outside(workspace: Workspace, sandbox: Path, name: str) -> None:
    run_id = completed_run(workspace, [name])
    before = tree(sandbox)
    with pytest.raises(RunyardError) as info:
        Run(workspace, run_id).download_files(output_directory=str(sandbox / DEST))
    assert outside(tree(sandbox), DEST) == outside(before, DEST)
    assert repr(name) in str(info.value)
    assert run_id in str(info.value)
    assert (sandbox / DEST / "outputs" / "good.txt").read_bytes() == b"good"


@pytest.mark.parametrize("name", HOSTILE)
def test_download_file_refuses_a_hostile_name_as_a_path(workspace: Workspace, sandbox: Path, name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = completed_run(workspace, [name])
    cwd = sandbox / DEST
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = tree(sandbox)
    with pytest.raises(RunyardError) as info:
        Run(workspace, run_id).download_file(name)
    with pytest.raises(RunyardError):
        Run(workspace, run_id).download_file(name, str(cwd))  # a folder: the name would give the file's name
    assert tree(sandbox) == before
    assert repr(name) in str(info.value)
    assert "output_file_path" in str(info.value)


def test_download_file_to_a_path_the_user_names_works_for_any_recorded_name(
        workspace: Workspace, sandbox: Path) -> None:
    run_id = completed_run(workspace, ["../escape"], b"bytes of a badly named artifact")
    target = sandbox / DEST
    target.mkdir()
    before = tree(sandbox)
    got = Run(workspace, run_id).download_file("../escape", str(target / "renamed.bin"))
    assert got == str(target / "renamed.bin")
    assert (target / "renamed.bin").read_bytes() == b"bytes of a badly named artifact"
    assert outside(tree(sandbox), DEST) == outside(before, DEST)


def test_a_link_in_the_destination_folder_is_not_written_through(workspace: Workspace, sandbox: Path) -> None:
    run_id = completed_run(workspace, [])
    dest = sandbox / DEST
    dest.mkdir()
    (dest / "outputs").symlink_to(sandbox / "elsewhere")
    before = tree(sandbox)
    with pytest.raises(RunyardError) as info:
        Run(workspace, run_id).download_files(output_directory=str(dest))
    assert tree(sandbox) == before
    assert "outputs/good.txt" in str(info.value)
    assert "link" in str(info.value)


def test_a_dangling_link_in_the_destination_folder_is_not_written_through(workspace: Workspace,
                                                                           sandbox: Path) -> None:
    run_id = completed_run(workspace, [])
    dest = sandbox / DEST
    dest.mkdir()
    (dest / "outputs").symlink_to(sandbox / "elsewhere" / "new")
    before = tree(sandbox)
    with pytest.raises(RunyardError):
        Run(workspace, run_id).download_files(output_directory=str(dest))
    assert tree(sandbox) == before
    assert not (sandbox / "elsewhere" / "new").exists()


def test_a_link_to_the_file_itself_is_refused(workspace: Workspace, sandbox: Path) -> None:
    run_id = completed_run(workspace, [])
    dest = sandbox / DEST
    (dest / "outputs").mkdir(parents=True)
    (dest / "outputs" / "good.txt").symlink_to(sandbox / "elsewhere" / "keep.txt")
    before = tree(sandbox)
    with pytest.raises(RunyardError):
        Run(workspace, run_id).download_files(output_directory=str(dest))
    assert tree(sandbox) == before
    assert (sandbox / "elsewhere" / "keep.txt").read_text() == "untouched"


def test_a_link_that_stays_inside_the_destination_is_followed(workspace: Workspace, sandbox: Path) -> None:
    run_id = completed_run(workspace, [])
    dest = sandbox / DEST
    (dest / "real").mkdir(parents=True)
    (dest / "outputs").symlink_to("real")
    paths = Run(workspace, run_id).download_files(output_directory=str(dest))
    assert (dest / "real" / "good.txt").read_bytes() == b"good"
    assert paths == [str(dest / "outputs" / "good.txt")]


# -- a corrupt artifact blob -----------------------------------------------------------------------------


def test_a_corrupt_artifact_says_which_artifact_of_which_run_and_what_to_do(workspace: Workspace,
                                                                             tmp_path: Path) -> None:
    history = workspace.open_history()
    run = history.create_run("exp", status="Running")
    history.set_status(run.id, "Completed")
    store = workspace.open_store()
    digest, _ = store.put_bytes(b"weights")
    ok, _ = store.put_bytes(b"fine")
    history.upsert_artifacts(run.id, [Artifact("outputs/model.pt", 7, digest, 1.0),
                                      Artifact("outputs/other.txt", 4, ok, 1.0)])
    blob = os.path.join(workspace.path, "store", blob_key(digest))
    os.chmod(blob, 0o644)
    Path(blob).write_bytes(b"rotten!")
    with pytest.raises(CorruptBlobError) as info:
        Run(workspace, run.id).download_files(output_directory=str(tmp_path / "out"))
    msg = str(info.value)
    quarantined = os.path.join(workspace.path, "store", "quarantine", digest)
    assert os.path.exists(quarantined)
    assert "'outputs/model.pt'" in msg and run.id in msg
    assert quarantined in msg
    assert f"runyard rerun {run.id}" in msg
    assert "working directory" in msg
    assert "Take the snapshot again" not in msg
    assert (tmp_path / "out" / "outputs" / "other.txt").read_bytes() == b"fine"  # the others still come
    assert not (tmp_path / "out" / "outputs" / "model.pt").exists()
    with pytest.raises(CorruptBlobError) as one:
        Run(workspace, run.id).download_file("outputs/other.txt", str(tmp_path / "x"))  # fine
        raise CorruptBlobError("not raised")
    assert str(one.value) == "not raised"
    with pytest.raises(RunyardError) as missing:  # the blob is gone now: say so for the artifact, too
        Run(workspace, run.id).download_file("outputs/model.pt", str(tmp_path / "y"))
    assert "'outputs/model.pt'" in str(missing.value) and f"runyard rerun {run.id}" in str(missing.value)
    assert "Take the snapshot again" not in str(missing.value)


def test_a_corrupt_snapshot_blob_keeps_the_snapshot_advice(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print(1)\n")
    snap = workspace.snapshot(src)
    digest = hash_bytes(b"print(1)\n")
    blob = os.path.join(workspace.path, "store", blob_key(digest))
    Path(blob).write_bytes(b"print(2)\n")
    with pytest.raises(CorruptBlobError) as info:
        workspace.restore_snapshot(snap.id, tmp_path / "restored")
    msg = str(info.value)
    assert "Take the snapshot again" in msg
    assert "'train.py'" in msg
    assert os.path.join(workspace.path, "store", "quarantine", digest) in msg


# -- snapshots: restore and a run's working directory ------------------------------------------------------


def forged_manifest(ws: Workspace, entries: list[dict[str, object]]) -> str:
    store = ws.open_store()
    digest, _ = store.put_bytes(b"x")
    for e in entries:
        if e["type"] == "file":
            e.setdefault("hash", digest)
            e.setdefault("size", 1)
            e.setdefault("exec", False)
    doc = {"entries": entries, "format": "runyard-manifest/1", "hash": "blake3"}
    snap, _ = store.put_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    store.put_snapshot_record(snap, {"source": "forged"})
    return snap


FORGED = [
    [{"path": "../escape", "type": "file"}],
    [{"path": "a/../../escape", "type": "file"}],
    [{"path": "/abs", "type": "file"}],
    [{"path": "a//b", "type": "file"}],
    [{"path": "nul\x00x", "type": "file"}],
    [{"path": "", "type": "dir"}],
    [{"path": "out", "type": "link", "target": "../../elsewhere"}, {"path": "out/x", "type": "file"}],
    [{"path": "out", "type": "link", "target": "/"}, {"path": "out/tmp", "type": "dir"}],
]


@pytest.mark.parametrize("entries", FORGED, ids=[str(i) for i in range(len(FORGED))])
def test_restore_refuses_a_manifest_that_leaves_the_folder(workspace: Workspace, sandbox: Path,
                                                           entries: list[dict[str, object]]) -> None:
    snap = forged_manifest(workspace, entries)
    before = tree(sandbox)
    with pytest.raises(RunyardError, match=r"unsafe path|below the link"):
        workspace.restore_snapshot(snap, sandbox / DEST)
    assert tree(sandbox) == before


@pytest.mark.parametrize("entries", FORGED, ids=[str(i) for i in range(len(FORGED))])
def test_materialize_refuses_a_manifest_that_leaves_the_folder(workspace: Workspace, sandbox: Path,
                                                               entries: list[dict[str, object]]) -> None:
    from runyard.agent.workdir import materialize

    snap = forged_manifest(workspace, entries)
    before = tree(sandbox)
    with pytest.raises(RunyardError, match=r"unsafe path|below the link"):
        materialize(workspace.open_store(), snap, str(sandbox / DEST))
    assert outside(tree(sandbox), DEST) == outside(before, DEST)


# -- datasets and datastores -------------------------------------------------------------------------------


@pytest.fixture
def lake(workspace: Workspace, sandbox: Path) -> Datastore:
    """A local datastore (outside the sentinel folder) holding data/a.csv and data/sub/b.csv."""
    root = sandbox.parent / "lake"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.csv").write_text("a\n")
    (root / "data" / "sub" / "b.csv").write_text("b\n")
    return Datastore.register_local(workspace, "lake", str(root))


def forged_version(ws: Workspace, lake: Datastore, rels: list[str]) -> str:
    """Version 2 of dataset 'd': the real file data/a.csv recorded under each name in ``rels``."""
    real = Dataset.File.from_files([(lake, "data")]).register(ws, "d")
    a = next(f for f in real.files if f.rel == "a.csv")
    rows = [[rel, a.datastore, a.path, a.size, a.fingerprint, a.mtime] for rel in rels]
    DataCatalog(ws.open_history()).add_dataset_version(
        "d", sources=[s.as_dict() for s in real.sources], files=rows, total_bytes=a.size * len(rows),
        digest="forged", new_version=True)
    return "d:2"


@pytest.mark.parametrize("rel", ["../escape", "sub/../../escape", "/abs", "a//b", "nul\x00x", ""])
def test_dataset_download_refuses_a_recorded_name_that_leaves_the_folder(
        workspace: Workspace, lake: Datastore, sandbox: Path, rel: str) -> None:
    from runyard.data.dataset import get_version

    ref = forged_version(workspace, lake, [rel])
    before = tree(sandbox)
    with pytest.raises(RunyardError) as info:
        get_version(workspace, ref).download(str(sandbox / DEST), show_progress=False)
    assert tree(sandbox) == before
    assert repr(rel) in str(info.value)
    assert "dataset 'd' version 2" in str(info.value)


def test_dataset_download_refuses_a_recorded_datastore_path_that_leaves_the_datastore(
        workspace: Workspace, lake: Datastore, sandbox: Path) -> None:
    from runyard.data.dataset import get_version

    real = Dataset.File.from_files([(lake, "data")]).register(workspace, "d")
    a = real.files[0]
    rows = [[a.rel, a.datastore, "../sandbox/elsewhere/keep.txt", a.size, a.fingerprint, a.mtime]]
    DataCatalog(workspace.open_history()).add_dataset_version(
        "d", sources=[s.as_dict() for s in real.sources], files=rows, total_bytes=a.size, digest="forged2",
        new_version=True)
    with pytest.raises(RunyardError) as info:
        get_version(workspace, "d:2").download(str(sandbox / DEST), show_progress=False)
    assert "'../sandbox/elsewhere/keep.txt'" in str(info.value)
    assert not (sandbox / DEST).exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_dataset_download_does_not_write_through_a_link_in_the_destination(
        workspace: Workspace, lake: Datastore, sandbox: Path, overwrite: bool) -> None:
    ds = Dataset.File.from_files([(lake, "data")]).register(workspace, "d")
    dest = sandbox / DEST
    dest.mkdir()
    (dest / "sub").symlink_to(sandbox / "elsewhere")
    before = tree(sandbox)
    with pytest.raises(RunyardError) as info:
        ds.download(str(dest), overwrite=overwrite, show_progress=False)
    assert tree(sandbox) == before
    assert "link" in str(info.value)


def test_datastore_download_does_not_write_through_a_link_in_the_destination(
        workspace: Workspace, lake: Datastore, sandbox: Path) -> None:
    dest = sandbox / DEST
    dest.mkdir()
    (dest / "sub").symlink_to(sandbox / "elsewhere")
    before = tree(sandbox)
    with pytest.raises(RunyardError) as info:
        lake.download(str(dest), "data", show_progress=False)
    assert tree(sandbox) == before
    assert "'sub/b.csv'" in str(info.value)


def run_data(ws: Workspace, tmp_path: Path, plan: dict[str, object]) -> object:
    from runyard.data.materialize import RunData

    folder = tmp_path / "runs" / "r1"
    (folder / "wd").mkdir(parents=True)
    said: list[str] = []
    return RunData(ws, str(folder), str(folder / "wd"), plan, said.append)


@pytest.mark.parametrize("rel", ["../escape", "../../../../escape", "/abs", "a//b"])
def test_input_download_refuses_a_recorded_name_that_leaves_the_folder(
        workspace: Workspace, lake: Datastore, sandbox: Path, tmp_path: Path, rel: str) -> None:
    from runyard.data.dataset import get_version

    ds = get_version(workspace, forged_version(workspace, lake, [rel]))
    item = {"name": "train", "mode": "download", "path_on_compute": None, "kind": "dataset", "dataset": "d",
            "version": 2, "sources": [s.as_dict() for s in ds.sources], "files": [f.row() for f in ds.files]}
    rd = run_data(workspace, tmp_path, {"inputs": [item]})
    before = tree(tmp_path)
    with pytest.raises(RunyardError) as info:
        rd.prepare()  # type: ignore[attr-defined]
    data = os.path.join("runs", "r1", "data")
    assert outside(tree(tmp_path), data) == outside(before, data)
    assert repr(rel) in str(info.value)
    assert "input 'train'" in str(info.value) or "dataset 'd' version 2" in str(info.value)


def test_output_upload_does_not_follow_an_output_folder_swapped_for_a_link(
        workspace: Workspace, lake: Datastore, sandbox: Path, tmp_path: Path) -> None:
    """The script may replace its output folder with a link to anything it likes; the supervisor
    must not upload what the link leads to."""
    secrets = sandbox / "elsewhere"
    item = {"name": "out", "mode": "upload", "datastore": "lake", "path": "results", "destination": "results",
            "overwrite": False, "source_globs": None, "register": None, "path_on_compute": None}
    rd = run_data(workspace, tmp_path, {"outputs": [item]})
    env = rd.prepare()  # type: ignore[attr-defined]
    target = env["RUNYARD_OUTPUT_out"]
    os.rmdir(target)
    os.symlink(secrets, target)  # what the script did
    records, problems = rd.finish()  # type: ignore[attr-defined]
    assert not os.path.exists(os.path.join(lake.root, "results"))
    assert records[0]["error"] and "link" in records[0]["error"]
    assert problems and "out" in problems[0]
    assert (secrets / "keep.txt").read_text() == "untouched"


# -- the helper ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_join_under_refuses_every_hostile_name(tmp_path: Path, name: str) -> None:
    from runyard.errors import UnsafePathError  # type: ignore[attr-defined]
    from runyard.paths import join_under  # type: ignore[import-not-found]

    with pytest.raises(UnsafePathError) as info:
        join_under(str(tmp_path), name)
    assert repr(name) in str(info.value)


def test_join_under_accepts_plain_names_and_links_that_stay_inside(tmp_path: Path) -> None:
    from runyard.errors import UnsafePathError  # type: ignore[attr-defined]
    from runyard.paths import join_under

    assert join_under(str(tmp_path), "a/b c/d.txt") == str(tmp_path / "a" / "b c" / "d.txt")
    assert join_under(str(tmp_path), "..x/x..") == str(tmp_path / "..x" / "x..")
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to("in")
    assert join_under(str(tmp_path), "link/f") == str(tmp_path / "link" / "f")
    (tmp_path / "out").symlink_to("/")
    with pytest.raises(UnsafePathError, match="'out'"):
        join_under(str(tmp_path), "out/etc/f")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(UnsafePathError):
        join_under(str(tmp_path), "loop/f")
    assert join_under(str(tmp_path), "b\\c", backslash=True) == str(tmp_path / "b\\c")
    # A root that is itself a link is the user's choice: what is below it is checked against its target.
    (tmp_path / "rootlink").symlink_to("in")
    assert join_under(str(tmp_path / "rootlink"), "f") == str(tmp_path / "rootlink" / "f")
