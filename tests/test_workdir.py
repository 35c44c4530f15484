"""Working directories made from snapshots: real overlay mounts (as root), the
copy fallback (also as an unprivileged user), isolation from the store and from
other runs, and cleanup after normal ends and crashes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest

from runyard.agent.workdir import (
    COPY,
    LAYERS,
    OVERLAY,
    Workdir,
    WorkdirError,
    cleanup_stale,
    materialize,
    mounts_below,
    overlay_available,
    prune_lower_cache,
)
from runyard.errors import BlobNotFoundError, CorruptBlobError
from runyard.snapshot.engine import load_manifest, restore
from runyard.store import open_store
from runyard.store.base import ObjectStore, blob_key
from runyard.store.local import LocalStore
from runyard.workspace import Workspace
from trees import EMPTY_DIR, Exe, Link, write_tree
from unprivileged import nobody_python

# -- trees -------------------------------------------------------------------------

TREE: dict[str, Any] = {
    "train.py": "print('train')\n",
    "run.sh": Exe(b"#!/bin/sh\necho run\n"),
    "tools/also_exec.sh": Exe(b"#!/bin/sh\necho run\n"),  # same bytes as run.sh
    "data/a.txt": "alpha " * 100,
    "data/b.txt": "bravo\n",
    "data/c.txt": "charlie charlie\n",
    "data/d.txt": "delta\n",
    "data/e.txt": "echo\n",
    "dup1.txt": "same bytes\n",
    "dup2.txt": "same bytes\n",
    "pkg/__init__.py": "",
    "pkg/sub/__init__.py": "",
    "pkg/sub/mod.py": "X = 1\n",
    "big.bin": bytes(range(256)) * 4096,
    "link-to-a": Link("data/a.txt"),
    "abs-link": Link("/etc/hostname"),
    "dangling": Link("no/such/file"),
    "empty": EMPTY_DIR,
    "deep/er/empty": EMPTY_DIR,
    "odd name, with: colon.txt": "odd\n",
}


def tree_state(root: str | Path) -> dict[str, tuple[Any, ...]]:
    """Bytes and exact mode of every file, link targets, every directory."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), blake3.blake3(Path(p).read_bytes()).hexdigest())
    return out


def store_state(store: LocalStore) -> dict[str, tuple[int, str]]:
    """Every blob's mode and content hash (which must also be its name)."""
    out: dict[str, tuple[int, str]] = {}
    blobs = os.path.join(store.root, "blobs")
    for dirpath, _, filenames in os.walk(blobs):
        for name in filenames:
            p = os.path.join(dirpath, name)
            digest = blake3.blake3(Path(p).read_bytes()).hexdigest()
            assert digest == os.path.basename(dirpath) + name, f"blob {name} does not hash to its name"
            out[os.path.relpath(p, blobs)] = (stat.S_IMODE(os.stat(p).st_mode), digest)
    return out


@dataclass
class Snap:
    store: LocalStore
    id: str
    expected: dict[str, tuple[Any, ...]]
    """tree_state of a restore: what every working directory must look like."""


@pytest.fixture
def snap(tmp_path: Path) -> Snap:
    src = write_tree(tmp_path / "src", TREE)
    ws = Workspace.create(tmp_path / "ws")
    sid = ws.snapshot(src).id
    store = ws.open_store()
    assert isinstance(store, LocalStore)
    restore(store, sid, tmp_path / "restored")
    return Snap(store, sid, tree_state(tmp_path / "restored"))


@pytest.fixture
def overlay(tmp_path: Path) -> None:
    if not overlay_available(tmp_path):
        pytest.skip("needs root and overlayfs (CI runs these as root)")


def assert_matches_manifest(wd: Workdir, s: Snap) -> None:
    state = tree_state(wd.path)
    assert state == s.expected
    # and the manifest's own words, not just restore's
    for e in load_manifest(s.store, s.id).entries:
        got = state[e.path]
        if e.type == "file":
            assert got == ("file", 0o755 if e.executable else 0o644, e.hash)
        elif e.type == "link":
            assert got == ("link", e.target)
        else:
            assert got == ("dir",)


# -- the overlay ---------------------------------------------------------------------


def test_overlay_matches_the_manifest(snap: Snap, tmp_path: Path, overlay: None) -> None:
    wd = materialize(snap.store, snap.id, tmp_path / "run1")
    try:
        assert wd.method == OVERLAY and wd.fallback_reason is None
        assert wd.path == str(tmp_path / "run1" / "wd")
        assert wd.path in mounts_below(str(tmp_path / "run1"))
        assert_matches_manifest(wd, snap)
        # Executables are copies with mode 0755; a content seen twice is linked once.
        files = len([v for v in TREE.values() if v is not EMPTY_DIR and not isinstance(v, Link)])
        assert (wd.files, wd.linked, wd.copied) == (files, files - 4, 4)  # 2 exec, dup2.txt, pkg/sub/__init__.py
        assert os.stat(os.path.join(wd.path, "train.py")).st_nlink >= 2  # a hardlink to the blob
        # Two paths of one working directory are never one file.
        assert not os.path.samefile(os.path.join(wd.path, "dup1.txt"), os.path.join(wd.path, "dup2.txt"))
        assert not os.path.samefile(os.path.join(wd.path, "pkg/__init__.py"),
                                    os.path.join(wd.path, "pkg/sub/__init__.py"))
        shutil.copyfile(os.path.join(wd.path, "dup1.txt"), os.path.join(wd.path, "dup2.txt"))
    finally:
        wd.cleanup()


WRITER = r"""
import os, sys
def rw(p, mode="r+b"):
    return open(p, mode)
with rw("data/a.txt") as f:            # modify in place
    f.write(b"XXXX")
with rw("data/b.txt", "ab") as f:      # append
    f.write(b"appended\n")
os.truncate("data/c.txt", 3)           # truncate
with rw("big.bin", "wb") as f:         # truncate to nothing and rewrite
    f.write(b"small now")
os.chmod("run.sh", 0o600)              # chmod
os.chmod("dup1.txt", 0o777)
os.remove("data/d.txt")                # delete
os.rename("data/e.txt", "data/e2.txt") # rename a file
os.rename("pkg", "pkg2")               # rename a directory from the snapshot
os.utime("train.py", (0, 0))
os.link("dup2.txt", "dup2-hardlink.txt")
with rw("dup2-hardlink.txt", "ab") as f:
    f.write(b"through a hardlink\n")
with rw("link-to-a", "ab") as f:       # write through a symlink
    f.write(b"through a symlink\n")
os.rmdir("empty")
os.makedirs("outputs", exist_ok=True)
with rw("outputs/model.bin", "wb") as f:
    f.write(b"weights")
os.symlink("/etc/passwd", "new-link")
os.unlink("dangling")
with rw("tools/also_exec.sh", "wb") as f:
    f.write(b"#!/bin/sh\necho changed\n")
print("wrote")
"""


def run_writer(wd: str) -> None:
    p = subprocess.run([sys.executable, "-c", WRITER], cwd=wd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "wrote\n"


def test_what_a_run_writes_reaches_neither_the_store_nor_other_runs(snap: Snap, tmp_path: Path,
                                                                    overlay: None) -> None:
    before = store_state(snap.store)
    other = materialize(snap.store, snap.id, tmp_path / "other")  # mounted while the writer runs
    wd = materialize(snap.store, snap.id, tmp_path / "run")
    try:
        run_writer(wd.path)
        changed = tree_state(wd.path)
        assert changed != snap.expected
        assert changed["data/b.txt"][2] == blake3.blake3(b"bravo\nappended\n").hexdigest()
        assert changed["run.sh"][1] == 0o600 and changed["dup1.txt"][1] == 0o777
        assert "pkg2/sub/mod.py" in changed and "pkg" not in changed and "data/d.txt" not in changed

        assert store_state(snap.store) == before
        assert_matches_manifest(other, snap)
        after = materialize(snap.store, snap.id, tmp_path / "after")
        try:
            assert_matches_manifest(after, snap)
        finally:
            after.cleanup()
        restore(snap.store, snap.id, tmp_path / "restored-again")
        assert tree_state(tmp_path / "restored-again") == snap.expected
    finally:
        wd.cleanup()
        other.cleanup()
    assert store_state(snap.store) == before


def test_cleanup_leaves_no_mount_and_no_file(snap: Snap, tmp_path: Path, overlay: None) -> None:
    run_dir = tmp_path / "runs" / "r1"
    wd = materialize(snap.store, snap.id, run_dir)
    run_writer(wd.path)
    train = os.path.join(snap.store.root, blob_key(load_manifest(snap.store, snap.id).by_path()["train.py"].hash))
    assert os.stat(train).st_nlink == 2
    wd.cleanup()
    assert mounts_below(str(tmp_path)) == []
    assert not run_dir.exists()  # materialize made it, so cleanup removes it
    assert os.stat(train).st_nlink == 1
    wd.cleanup()  # idempotent
    # A run folder the caller made is kept, with what the caller put there.
    run_dir.mkdir()
    (run_dir / "supervisor.json").write_text("{}")
    wd = materialize(snap.store, snap.id, run_dir)
    wd.cleanup()
    assert os.listdir(run_dir) == ["supervisor.json"]


def test_cleanup_while_a_process_still_sits_in_the_directory(snap: Snap, tmp_path: Path, overlay: None) -> None:
    wd = materialize(snap.store, snap.id, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; open('train.py').read(); "
                             "print('in', flush=True); time.sleep(60)"], cwd=wd.path, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"in\n"
        wd.cleanup()  # busy: detached lazily, then removed
        assert mounts_below(str(tmp_path)) == []
        assert not (tmp_path / "run").exists()
    finally:
        proc.kill()
        proc.wait()


CRASH = r"""
import os, sys
from runyard.agent.workdir import materialize
from runyard.store.local import LocalStore
wd = materialize(LocalStore.open(sys.argv[1]), sys.argv[2], sys.argv[3])
open(os.path.join(wd.path, "written-by-the-run"), "w").write("x")
print(wd.method, flush=True)
os._exit(9)  # the supervisor dies: no cleanup
"""


def test_cleanup_stale_after_a_crashed_supervisor(snap: Snap, tmp_path: Path, overlay: None) -> None:
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", CRASH, snap.store.root, snap.id, str(run_dir)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 9 and p.stdout == "overlay\n", p.stderr
    assert mounts_below(str(run_dir)) == [str(run_dir / "wd")]
    with pytest.raises(WorkdirError, match=r"already exists.*cleanup_stale"):
        materialize(snap.store, snap.id, run_dir)
    done = cleanup_stale(run_dir)
    assert str(run_dir / "wd") in done and str(run_dir / LAYERS) in done
    assert mounts_below(str(tmp_path)) == [] and os.listdir(run_dir) == []
    assert cleanup_stale(run_dir) == []  # nothing left to do
    with materialize(snap.store, snap.id, run_dir) as wd:
        assert_matches_manifest(wd, snap)
    assert mounts_below(str(tmp_path)) == []


def test_cleanup_stale_never_deletes_through_a_mount(snap: Snap, tmp_path: Path, overlay: None) -> None:
    # A dataset mounted inside the working directory (by whoever) is unmounted, not emptied.
    data = write_tree(tmp_path / "dataset", {"keep.csv": "precious\n"})
    wd = materialize(snap.store, snap.id, tmp_path / "run")
    os.mkdir(os.path.join(wd.path, "inputs"))
    subprocess.run(["mount", "--bind", str(data), os.path.join(wd.path, "inputs")], check=True)
    wd.cleanup()
    assert (data / "keep.csv").read_text() == "precious\n"
    assert mounts_below(str(tmp_path)) == []


def test_concurrent_materializations_of_one_snapshot(snap: Snap, tmp_path: Path, overlay: None) -> None:
    results: dict[int, Workdir] = {}
    errors: list[BaseException] = []

    def make(i: int) -> None:
        try:
            results[i] = materialize(snap.store, snap.id, tmp_path / f"run{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    try:
        assert {w.method for w in results.values()} == {OVERLAY}
        Path(results[0].path, "train.py").write_text("changed in run 0\n")
        os.remove(os.path.join(results[1].path, "dup1.txt"))
        for i in (2, 3):
            assert_matches_manifest(results[i], snap)
    finally:
        for w in results.values():
            w.cleanup()
    assert mounts_below(str(tmp_path)) == []


def test_read_only_blobs_of_an_older_store_are_copied_with_the_right_mode(snap: Snap, tmp_path: Path,
                                                                          overlay: None) -> None:
    for dirpath, _, filenames in os.walk(os.path.join(snap.store.root, "blobs")):
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o444)  # what LocalStore wrote before blobs were 0644
    with materialize(snap.store, snap.id, tmp_path / "run") as wd:
        assert wd.method == OVERLAY and wd.linked == 0 and wd.copied == wd.files
        assert_matches_manifest(wd, snap)


def test_an_odd_run_folder_name_still_mounts(snap: Snap, tmp_path: Path, overlay: None) -> None:
    with materialize(snap.store, snap.id, tmp_path / "run,1:x\\y z") as wd:
        assert wd.method == OVERLAY
        assert_matches_manifest(wd, snap)


# -- the fallback --------------------------------------------------------------------


def test_copy_when_asked(snap: Snap, tmp_path: Path) -> None:
    before = store_state(snap.store)
    wd = materialize(snap.store, snap.id, tmp_path / "run", method="copy")
    assert wd.method == COPY and wd.fallback_reason is None and wd.copied == wd.files
    assert mounts_below(str(tmp_path)) == []
    assert_matches_manifest(wd, snap)
    run_writer(wd.path)
    assert store_state(snap.store) == before
    with materialize(snap.store, snap.id, tmp_path / "again", method="copy") as again:
        assert_matches_manifest(again, snap)
    wd.cleanup()
    assert not (tmp_path / "run").exists()


def test_store_on_another_filesystem_falls_back_to_a_copy(tmp_path: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temp dir")
    shm = tempfile.mkdtemp(dir="/dev/shm")
    try:
        ws = Workspace.create(shm)
        sid = ws.snapshot(write_tree(tmp_path / "src", TREE)).id
        with materialize(ws.open_store(), sid, tmp_path / "run") as wd:
            assert wd.method == COPY
            assert wd.fallback_reason is not None and "another filesystem" in wd.fallback_reason
            restore(ws.open_store(), sid, tmp_path / "restored")
            assert tree_state(wd.path) == tree_state(tmp_path / "restored")
    finally:
        shutil.rmtree(shm)


@pytest.fixture
def memory_store() -> Iterator[ObjectStore]:
    from fsspec.implementations.memory import MemoryFileSystem

    name = f"runyard-workdir-{os.urandom(4).hex()}"
    yield open_store(f"memory://{name}")
    for key in [k for k in MemoryFileSystem.store if k.startswith(f"/{name}")]:
        del MemoryFileSystem.store[key]
    for d in [d for d in MemoryFileSystem.pseudo_dirs if d.startswith(f"/{name}")]:
        MemoryFileSystem.pseudo_dirs.remove(d)


def test_a_remote_store_is_copied_and_forcing_the_overlay_says_why_not(memory_store: ObjectStore,
                                                                       tmp_path: Path) -> None:
    from runyard.snapshot.engine import take_snapshot

    sid = take_snapshot(write_tree(tmp_path / "src", TREE), memory_store).id
    with pytest.raises(WorkdirError, match=r"is not a local folder\. Use method='auto' or 'copy'"):
        materialize(memory_store, sid, tmp_path / "forced", method="overlay")
    assert not (tmp_path / "forced" / "wd").exists()
    with materialize(memory_store, sid, tmp_path / "run") as wd:
        assert wd.method == COPY and "not a local folder" in (wd.fallback_reason or "")
        assert tree_state(wd.path) == tree_state(write_tree(tmp_path / "expected", TREE))


def test_a_corrupt_blob_is_caught_by_the_verified_copy(snap: Snap, tmp_path: Path) -> None:
    entry = load_manifest(snap.store, snap.id).by_path()["data/b.txt"]
    path = os.path.join(snap.store.root, blob_key(entry.hash))
    Path(path).write_bytes(b"rotten bytes")  # another size: the fast path hands over to the copy
    with pytest.raises(CorruptBlobError, match="corrupt"):
        materialize(snap.store, snap.id, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # made by materialize, so removed when it failed


def test_same_size_corruption_is_caught_when_asked_to_verify(snap: Snap, tmp_path: Path, overlay: None) -> None:
    entry = load_manifest(snap.store, snap.id).by_path()["data/b.txt"]
    path = os.path.join(snap.store.root, blob_key(entry.hash))
    Path(path).write_bytes(b"BRAVO\n")  # the same size: only hashing sees it
    # The fast path trusts type and size (documented): the damage shows.
    with materialize(snap.store, snap.id, tmp_path / "fast") as wd:
        assert wd.method == OVERLAY and Path(wd.path, "data/b.txt").read_bytes() == b"BRAVO\n"
    with pytest.raises(CorruptBlobError, match="corrupt"):
        materialize(snap.store, snap.id, tmp_path / "verified", verify=True)
    assert not os.path.exists(path)  # quarantined by the verified copy
    assert mounts_below(str(tmp_path)) == [] and not (tmp_path / "verified").exists()


def test_verify_on_a_sound_store_still_mounts(snap: Snap, tmp_path: Path, overlay: None) -> None:
    with materialize(snap.store, snap.id, tmp_path / "run", verify=True) as wd:
        assert wd.method == OVERLAY
        assert_matches_manifest(wd, snap)


def test_a_missing_blob_is_reported(snap: Snap, tmp_path: Path) -> None:
    entry = load_manifest(snap.store, snap.id).by_path()["data/c.txt"]
    os.remove(os.path.join(snap.store.root, blob_key(entry.hash)))
    (tmp_path / "run").mkdir()
    with pytest.raises(BlobNotFoundError, match="Take the snapshot again"):
        materialize(snap.store, snap.id, tmp_path / "run")
    assert os.listdir(tmp_path / "run") == []  # the caller's folder is kept, empty


def test_unknown_method(snap: Snap, tmp_path: Path) -> None:
    with pytest.raises(WorkdirError, match="use 'auto', 'overlay' or 'copy'"):
        materialize(snap.store, snap.id, tmp_path / "run", method="hardlink")  # type: ignore[arg-type]


# -- as a user without root's powers --------------------------------------------------

AS_USER = r"""
import json, os, sys
from runyard.agent.workdir import materialize
from runyard.store.local import LocalStore
store_root, sid, run_dir, method = sys.argv[1:5]
wd = materialize(LocalStore.open(store_root), sid, run_dir, method=method)
out = {"method": wd.method, "reason": wd.fallback_reason, "path": wd.path, "uid": os.getuid()}
os.makedirs(os.path.join(wd.path, "outputs/locked"))
open(os.path.join(wd.path, "outputs/locked/x"), "w").write("x")
open(os.path.join(wd.path, "train.py"), "a").write("# changed by the run\n")
os.chmod(os.path.join(wd.path, "outputs/locked"), 0o500)  # the run takes away its own write permission
os.chmod(os.path.join(wd.path, "data"), 0o500)
out["state_before_cleanup"] = sorted(os.listdir(wd.path))
wd.cleanup()
out["left"] = os.listdir(run_dir) if os.path.exists(run_dir) else None
print(json.dumps(out))
"""


def test_an_unprivileged_supervisor_gets_a_correct_isolated_copy(shared_dir: Path) -> None:
    ws = Workspace.create(shared_dir / "ws")
    sid = ws.snapshot(write_tree(shared_dir / "src", TREE)).id
    store = ws.open_store()
    assert isinstance(store, LocalStore)
    before = store_state(store)
    runs = shared_dir / "runs"
    runs.mkdir()
    cmd = ([sys.executable], dict(os.environ)) if os.geteuid() != 0 else nobody_python(
        "runyard.agent.workdir, blake3")
    if cmd is None:
        # No interpreter nobody can run: the fallback is forced in-process instead.
        with materialize(store, sid, runs / "r", method="copy") as wd:
            assert wd.method == COPY
        pytest.skip("no Python an unprivileged user can run; checked the forced copy fallback instead")
    prefix, env = cmd
    os.chown(runs, 65534, 65534)
    p = subprocess.run([*prefix, "-c", AS_USER, store.root, sid, str(runs / "r"), "auto"],
                       capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["uid"] != 0
    assert out["method"] == COPY and "not running as root" in out["reason"]
    assert "outputs" in out["state_before_cleanup"]
    assert out["left"] is None  # everything removed, read-only folders too
    assert store_state(store) == before
    # What the unprivileged run saw was the snapshot, made as a copy it owned.
    q = subprocess.run([*prefix, "-c", "import json,sys; from runyard.agent.workdir import materialize;"
                        "from runyard.store.local import LocalStore; import os;"
                        "w = materialize(LocalStore.open(sys.argv[1]), sys.argv[2], sys.argv[3]);"
                        "print(json.dumps([w.path, os.stat(os.path.join(w.path, 'train.py')).st_uid]))",
                        store.root, sid, str(runs / "r2")], capture_output=True, text=True, env=env, cwd="/",
                       timeout=60)
    assert q.returncode == 0, q.stderr
    path, uid = json.loads(q.stdout)
    assert uid == 65534
    restore(store, sid, shared_dir / "restored")
    assert tree_state(path) == tree_state(shared_dir / "restored")


def test_overlay_check_is_cached_and_leaves_nothing(tmp_path: Path) -> None:
    first = overlay_available(tmp_path)
    assert overlay_available(tmp_path) == first
    assert os.listdir(tmp_path) == []
    assert mounts_below(str(tmp_path)) == []


@pytest.fixture(autouse=True)
def _no_mount_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = mounts_below(str(tmp_path))
    for mp in left:
        subprocess.run(["umount", "-l", mp], check=False)
    assert left == [], f"a test left mounts behind: {left}"


# -- the shared lower layer ------------------------------------------------------


def test_a_shared_lower_layer_is_built_once_and_stays_isolated(snap: Snap, tmp_path: Path) -> None:
    if not overlay_available(tmp_path):
        pytest.skip("overlayfs is not available here")
    cache = tmp_path / "lower-cache"
    first = materialize(snap.store, snap.id, tmp_path / "run-a", lower_cache=cache)
    second = materialize(snap.store, snap.id, tmp_path / "run-b", lower_cache=cache)
    try:
        assert first.method == second.method == OVERLAY
        assert first.linked + first.copied > 0 and second.linked == second.copied == 0  # reused, not rebuilt
        assert tree_state(first.path) == tree_state(second.path) == snap.expected
        before_store = store_state(snap.store)
        layer = tree_state(cache / snap.id)
        for name in ("train.py", "new.txt"):
            with open(os.path.join(first.path, name), "a") as fh:
                fh.write("changed in run a\n")
        assert tree_state(second.path) == snap.expected  # run b sees nothing of run a
        assert tree_state(cache / snap.id) == layer and store_state(snap.store) == before_store
        assert prune_lower_cache(cache, keep=0) == []  # in use: kept
    finally:
        first.cleanup()
        second.cleanup()
    assert prune_lower_cache(cache, keep=0) == [snap.id]
    assert not (cache / snap.id).exists()
    third = materialize(snap.store, snap.id, tmp_path / "run-c", lower_cache=cache)  # rebuilt after pruning
    try:
        assert tree_state(third.path) == snap.expected
    finally:
        third.cleanup()
