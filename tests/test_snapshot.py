"""The snapshot engine on real trees: manifest and id, odd files, files that
change under it, the stat cache, restore and diff."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from runyard.errors import BlobNotFoundError, CorruptBlobError, SnapshotError, StoreError
from runyard.snapshot import engine
from runyard.snapshot import manifest as mf
from runyard.snapshot.engine import diff, load_manifest, restore, take_snapshot
from runyard.snapshot.explain import explain
from runyard.snapshot.walk import (
    CHANGED,
    LINK_DANGLING,
    LINK_OUTSIDE,
    NOT_UTF8,
    SOURCE_IGNORED,
    SPECIAL_FILE,
    VANISHED,
    FileEntry,
    walk,
)
from runyard.store import open_store
from runyard.store.base import blob_key
from runyard.store.local import LocalStore
from runyard.workspace import Workspace
from trees import EMPTY_DIR, Exe, Link, Spec, write_tree

# -- building and reading trees ----------------------------------------------------


def tree_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything restore must reproduce: bytes, exec bit, link targets, directories."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), bool(st.st_mode & 0o111))
    return out


def snap(ws: Workspace, src: Path, **kw: Any) -> engine.SnapshotResult:
    return ws.snapshot(src, **kw)


def manifest_of(ws: Workspace, sid: str) -> mf.Manifest:
    return load_manifest(ws.open_store(), sid)


def blob_count(ws: Workspace) -> int:
    return sum(len(files) for _, _, files in os.walk(os.path.join(ws.path, "store", "blobs")))


def kinds(result: engine.SnapshotResult) -> dict[str, str]:
    return {i.path: i.kind for i in result.issues}


BASIC: Spec = {
    "train.py": "print('train')\n",
    "run.sh": Exe(b"#!/bin/sh\nexec python train.py\n"),
    "pkg/__init__.py": "",
    "pkg/model.py": "W = 1\n",
    "pkg/data/table.csv": "a,b\n1,2\n",
    "latest": Link("pkg/model.py"),
    "outputs": EMPTY_DIR,
    "deep/er/still_empty": EMPTY_DIR,
}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", BASIC)


# -- the manifest and the id -----------------------------------------------------------


def test_manifest_records_paths_types_modes_hashes_links_and_empty_dirs(workspace: Workspace, src: Path) -> None:
    r = snap(workspace, src)
    assert (r.files, r.links, r.empty_dirs) == (5, 1, 2)
    m = manifest_of(workspace, r.id)
    by = m.by_path()
    assert [e.path for e in m.entries] == [
        "deep/er/still_empty", "latest", "outputs", "pkg/__init__.py", "pkg/data/table.csv", "pkg/model.py",
        "run.sh", "train.py",
    ]
    script = b"#!/bin/sh\nexec python train.py\n"
    assert by["run.sh"] == mf.Entry("run.sh", mf.FILE, len(script), True, blake3.blake3(script).hexdigest())
    assert by["train.py"].executable is False
    assert by["latest"] == mf.Entry("latest", mf.LINK, target="pkg/model.py")
    assert by["outputs"].type == mf.DIR
    assert "deep" not in by and "deep/er" not in by  # implied by the empty directory's path
    assert r.total_bytes == m.total_bytes == sum(e.size for e in m.files)
    # The id is the blake3 of the canonical manifest bytes, which are stored under it.
    data = workspace.open_store().get_bytes(r.id)
    assert blake3.blake3(data).hexdigest() == r.id == m.id()
    assert data == m.encode()


def test_manifest_bytes_are_canonical() -> None:
    entries = [
        mf.Entry("é.txt", mf.FILE, 1, False, "a" * 64),
        mf.Entry("b", mf.DIR),
        mf.Entry("a/z", mf.FILE, 2, True, "b" * 64),
        mf.Entry("a.txt", mf.LINK, target="a/z"),
        mf.Entry("A", mf.FILE, 0, False, "c" * 64),
    ]
    m = mf.build(entries)
    # Sorted by UTF-8 bytes, as git sorts: 'A' < 'a.txt' < 'a/z' ('.' < '/') < 'b' < 'é'.
    assert [e.path for e in m.entries] == ["A", "a.txt", "a/z", "b", "é.txt"]
    assert mf.build(list(reversed(entries))).encode() == m.encode()
    text = m.encode().decode("utf-8")
    assert " " not in text and "\n" not in text
    assert text.startswith('{"entries":[{"exec":false,"hash":"' + "c" * 64 + '","path":"A","size":0,"type":"file"},')
    assert text.endswith('],"format":"runyard-manifest/1","hash":"blake3"}')
    assert '"path":"é.txt"' in text  # raw UTF-8, not \\u escapes
    assert mf.parse(m.encode(), m.id()) == m


def test_same_tree_same_id_in_two_workspaces(tmp_path: Path, src: Path) -> None:
    a = Workspace.create(tmp_path / "ws1")
    b = Workspace.create(tmp_path / "ws2")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy, symlinks=True)
    ra, rb = snap(a, src), snap(b, copy)
    assert ra.id == rb.id
    # And again (from the stat cache) it is still the same.
    assert snap(a, src).id == ra.id


@pytest.mark.parametrize(
    "change",
    ["rename_dir", "rename_empty_dir", "chmod", "content", "link_target", "new_empty_dir", "add_file", "delete"],
)
def test_any_change_changes_the_id(tmp_path: Path, workspace: Workspace, change: str) -> None:
    src = write_tree(tmp_path / "src", BASIC)
    before = snap(workspace, src).id
    if change == "rename_dir":
        (src / "pkg").rename(src / "pkg2")
    elif change == "rename_empty_dir":
        (src / "outputs").rename(src / "output")
    elif change == "chmod":
        (src / "train.py").chmod(0o755)
    elif change == "content":
        (src / "pkg/model.py").write_text("W = 2\n")
    elif change == "link_target":
        os.unlink(src / "latest")
        os.symlink("train.py", src / "latest")
    elif change == "new_empty_dir":
        (src / "pkg/data/more").mkdir()
    elif change == "add_file":
        (src / "outputs/.keep").write_text("")
    elif change == "delete":
        (src / "pkg/__init__.py").unlink()
    after = snap(workspace, src).id
    assert after != before


def test_read_permission_bits_other_than_exec_do_not_change_the_id(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "x"})
    before = snap(workspace, src).id
    (src / "a.txt").chmod(0o600)
    assert snap(workspace, src).id == before


@pytest.mark.parametrize(
    "path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", "", "a/\x00b", "..", "a/"]
)
def test_manifest_parse_rejects_unsafe_paths(path: str) -> None:
    doc = {"format": mf.FORMAT, "hash": "blake3",
           "entries": [{"path": path, "type": "file", "size": 1, "exec": False, "hash": "a" * 64}]}
    with pytest.raises(StoreError, match="unsafe path"):
        mf.parse(json.dumps(doc).encode())


@pytest.mark.parametrize("parent_type", ["link", "file"])
def test_manifest_parse_rejects_entries_below_a_link_or_file(parent_type: str) -> None:
    parent = ({"path": "lib", "type": "link", "target": "/etc"} if parent_type == "link"
              else {"path": "lib", "type": "file", "size": 0, "exec": False, "hash": "a" * 64})
    doc = {"format": mf.FORMAT, "hash": "blake3", "entries": [
        parent, {"path": "lib/passwd", "type": "file", "size": 1, "exec": False, "hash": "b" * 64},
    ]}
    with pytest.raises(StoreError, match=f"puts 'lib/passwd' below the {parent_type} 'lib'"):
        mf.parse(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"format": "other/9", "entries": []}, "Unknown manifest format"),
        ({"format": mf.FORMAT, "entries": [{"path": "a", "type": "socket"}]}, "Unknown entry type"),
        ({"format": mf.FORMAT, "entries": [{"path": "a", "type": "file"}]}, "malformed"),
        ({"format": mf.FORMAT, "entries": [{"path": "a", "type": "dir"}, {"path": "a", "type": "dir"}]}, "twice"),
        ({"format": mf.FORMAT, "entries": [{"path": "a", "type": "file", "size": 1, "exec": False,
                                             "hash": "../x"}]}, "not a blob name"),
    ],
)
def test_manifest_parse_rejects_damaged_manifests(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(StoreError, match=match):
        mf.parse(json.dumps(doc).encode())


def test_manifest_parse_checks_the_id() -> None:
    m = mf.build([mf.Entry("a", mf.DIR)])
    with pytest.raises(StoreError, match="does not match its id"):
        mf.parse(m.encode(), "0" * 64)
    with pytest.raises(StoreError, match="not valid JSON"):
        mf.parse(b"\xff{", None)


# -- what is in and out ----------------------------------------------------------------


def test_ignore_rules_git_and_workspace_are_applied(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {
        ".amlignore": "*.log\n/data/\n",
        ".gitignore": "*.py\n",  # not read: .amlignore wins in the directory
        "a.py": "x",
        "run.log": "x",
        "data/big.bin": "x",
        "sub/data/kept.bin": "x",
        ".git/HEAD": "ref: refs/heads/main\n",
        "pkg/__pycache__/m.cpython-311.pyc": "x",
        "ignored_empty/.keep.log": "",
    })
    ws = Workspace.create(src)  # a workspace inside the source directory
    r = snap(ws, src)
    paths = [e.path for e in manifest_of(ws, r.id).entries]
    # A directory whose every entry is ignored is kept as an empty directory.
    assert paths == [".amlignore", ".gitignore", "a.py", "ignored_empty", "pkg", "sub/data/kept.bin"]


def test_workspace_with_another_name_inside_the_source_is_left_out(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "x"})
    made = Workspace.create(tmp_path / "elsewhere")
    shutil.move(made.path, src / "myws")
    ws = Workspace(src / "myws")
    r = snap(ws, src)
    assert [e.path for e in manifest_of(ws, r.id).entries] == ["a.py"]
    [verdict] = explain(str(src), ["myws/config.toml"], exclude_dirs=(ws.path,))
    assert not verdict.included
    assert "runyard workspace" in verdict.reason


# -- odd files ---------------------------------------------------------------------------


def test_symlinks_are_recorded_not_followed(tmp_path: Path, workspace: Workspace) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.txt": "top secret"})
    src = write_tree(tmp_path / "src", {
        "real/x.py": "x",
        "lib": Link("real"),
        "ext": Link(str(outside)),
        "up": Link("../outside/secret.txt"),
        "sneaky": Link("ext/secret.txt"),  # lexically inside, but through 'ext' it leaves
        "fine": Link("real/../real/x.py"),
    })
    r = snap(workspace, src)
    m = manifest_of(workspace, r.id).by_path()
    assert {p: e.target for p, e in m.items() if e.type == mf.LINK} == {
        "lib": "real", "ext": str(outside), "up": "../outside/secret.txt", "sneaky": "ext/secret.txt",
        "fine": "real/../real/x.py",
    }
    assert not any(p.startswith(("lib/", "ext/")) for p in m)
    assert all(e.hash != blake3.blake3(b"top secret").hexdigest() for e in m.values())
    found = kinds(r)
    assert found == {"ext": LINK_OUTSIDE, "up": LINK_OUTSIDE, "sneaky": LINK_OUTSIDE}


def test_broken_links_and_loops_are_reported_and_kept(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {
        "ok.txt": "x",
        "broken": Link("does-not-exist"),
        "loop_a": Link("loop_b"),
        "loop_b": Link("loop_a"),
        "self": Link("self"),
    })
    r = snap(workspace, src)
    details = {i.path: (i.kind, i.detail) for i in r.issues}
    assert details["broken"] == (LINK_DANGLING, "-> does-not-exist (a broken link)")
    assert details["loop_a"] == (LINK_DANGLING, "-> loop_b (a link loop)")
    assert details["self"] == (LINK_DANGLING, "-> self (a link loop)")
    m = manifest_of(workspace, r.id).by_path()
    assert m["broken"].target == "does-not-exist" and m["self"].target == "self"


@pytest.mark.timeout(30)
def test_fifos_and_sockets_are_skipped_and_reported(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "x", "d/b.txt": "y"})
    os.mkfifo(src / "pipe")
    os.mkfifo(src / "d" / "pipe2")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(src)  # a short relative path: AF_UNIX paths are limited to ~100 bytes
    try:
        sock.bind("s.sock")
    finally:
        os.chdir(cwd)
    try:
        r = snap(workspace, src)
    finally:
        sock.close()
    assert kinds(r) == {"pipe": SPECIAL_FILE, "d/pipe2": SPECIAL_FILE, "s.sock": SPECIAL_FILE}
    assert {i.detail for i in r.issues} == {"a FIFO is not snapshotted", "a socket is not snapshotted"}
    assert [e.path for e in manifest_of(workspace, r.id).entries] == ["a.txt", "d/b.txt"]


def test_non_utf8_names_are_reported_not_fatal(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"good.txt": "x", "ignored/": EMPTY_DIR, ".amlignore": "ignored*\n"})
    bsrc = os.fsencode(src)
    with open(os.path.join(bsrc, b"bad\xffname.txt"), "wb") as fh:
        fh.write(b"x")
    os.mkdir(os.path.join(bsrc, b"dir\xfe"))
    with open(os.path.join(bsrc, b"dir\xfe", b"inner.txt"), "wb") as fh:
        fh.write(b"x")
    os.symlink(b"target\xff", os.path.join(bsrc, b"link"))
    with open(os.path.join(bsrc, b"ignored\xff.txt"), "wb") as fh:  # ignored: nothing to report
        fh.write(b"x")
    r = snap(workspace, src)
    got = sorted((i.kind, i.path) for i in r.issues)
    assert got == [(NOT_UTF8, "bad\\xffname.txt"), (NOT_UTF8, "dir\\xfe"), (NOT_UTF8, "link")]
    assert [e.path for e in manifest_of(workspace, r.id).entries] == [".amlignore", "good.txt"]


def test_source_that_is_not_a_directory(tmp_path: Path, workspace: Workspace) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(SnapshotError, match="is not a directory"):
        snap(workspace, tmp_path / "f")
    with pytest.raises(SnapshotError, match=r"Cannot read the source directory .*Check the path"):
        snap(workspace, tmp_path / "missing")


# -- unreadable files (needs a process without root's powers) -------------------------


class Unprivileged:
    """Runs ``python -m runyard.cli`` where permissions bite.

    Not root: directly. Root: as ``nobody`` when the interpreter is reachable
    for it, else as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (then
    mode 000 stops root-owned files from being read, too).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix: list[str] = []
        self.as_nobody = False
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("needs setpriv to drop root's powers")
            nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
            probe = subprocess.run([*nobody, sys.executable, "-c", "import runyard.cli"],
                                   capture_output=True, cwd=root)
            if probe.returncode == 0:
                self.prefix, self.as_nobody = nobody, True
            else:
                self.prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]

    def own(self) -> None:
        if self.as_nobody:
            subprocess.run(["chown", "-hR", "nobody:nogroup", str(self.root)], check=True)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env["HOME"] = str(self.root / "home")
        return subprocess.run([*self.prefix, sys.executable, "-m", "runyard.cli", *args],
                              capture_output=True, text=True, env=env, cwd=self.root, timeout=60)


@pytest.fixture
def unprivileged() -> Iterator[Unprivileged]:
    root = Path(tempfile.mkdtemp(prefix="runyard-perm-"))
    root.chmod(0o777)
    (root / "home").mkdir()
    try:
        yield Unprivileged(root)
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755, follow_symlinks=False)
        shutil.rmtree(root)


def test_unreadable_files_are_errors_that_name_them(unprivileged: Unprivileged) -> None:
    u = unprivileged
    src = write_tree(u.root / "src", {
        "ok.py": "x",
        "secret.key": "k",
        "locked/inner.py": "x",
        "skipped.bin": "x",
        ".amlignore": "skipped.bin\n",
    })
    ws = Workspace.create(u.root / "ws")
    u.own()
    (src / "secret.key").chmod(0o000)
    (src / "locked").chmod(0o000)
    (src / "skipped.bin").chmod(0o000)  # ignored, so never opened: not an error
    create = ("--workspace", ws.path, "snapshot", "create", str(src))
    # An unreadable directory is found by the walk, before anything is read or stored.
    p = u.run(*create)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    head = f"Cannot take a snapshot of {src}: 1 path cannot be read.\n"
    assert p.stderr.startswith(head + "  locked/: Permission denied\n")
    assert "Make them readable (chmod), or leave them out with a line in .amlignore" in p.stderr
    assert os.listdir(os.path.join(ws.path, "store", "blobs")) == []
    # Leaving it out (as the message says) gets to the unreadable file.
    with open(src / ".amlignore", "a") as fh:
        fh.write("locked/\n")
    p = u.run(*create)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith(head + "  secret.key: Permission denied\n")
    assert "skipped.bin" not in p.stderr
    assert os.listdir(os.path.join(ws.path, "store", "snapshots")) == []
    with open(src / ".amlignore", "a") as fh:
        fh.write("secret.key\n")
    ok = u.run(*create)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip().splitlines()[-1]) == 64


def test_unreadable_ignore_file_is_an_error(unprivileged: Unprivileged) -> None:
    u = unprivileged
    src = write_tree(u.root / "src", {"ok.py": "x", "sub/.gitignore": "*.bin\n", "sub/x.bin": "x"})
    ws = Workspace.create(u.root / "ws")
    u.own()
    (src / "sub" / ".gitignore").chmod(0o000)
    p = u.run("--workspace", ws.path, "snapshot", "create", str(src))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert "sub/.gitignore: Permission denied" in p.stderr


# -- files that change or vanish while the snapshot is taken ---------------------------


def test_file_changed_before_it_is_read(tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "before", "b.txt": "b"})
    real = engine._hash_one

    def racing(store: Any, root: str, f: FileEntry) -> Any:
        if f.path == "a.txt":
            (src / "a.txt").write_text("after, and longer")
        return real(store, root, f)

    monkeypatch.setattr(engine, "_hash_one", racing)
    r = snap(workspace, src)
    assert kinds(r) == {"a.txt": CHANGED}
    entry = manifest_of(workspace, r.id).by_path()["a.txt"]
    # The snapshot holds the bytes as read, with their size, consistently.
    assert entry.hash == blake3.blake3(b"after, and longer").hexdigest()
    assert entry.size == len(b"after, and longer")
    assert r.total_bytes == entry.size + 1
    restore(workspace.open_store(), r.id, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "after, and longer"


def test_file_changed_after_it_is_read(tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "before", "b.txt": "b"})
    real = LocalStore.put_file

    def put_then_change(self: LocalStore, path: str) -> tuple[str, int, bool]:
        out = real(self, path)
        if path.endswith("a.txt"):
            with open(path, "a") as fh:
                fh.write(" and more")
        return out

    monkeypatch.setattr(LocalStore, "put_file", put_then_change)
    r = snap(workspace, src)
    assert kinds(r) == {"a.txt": CHANGED}
    assert manifest_of(workspace, r.id).by_path()["a.txt"].hash == blake3.blake3(b"before").hexdigest()
    monkeypatch.undo()
    # The changed file is not trusted from the stat cache: the next snapshot reads it again.
    r2 = snap(workspace, src)
    assert manifest_of(workspace, r2.id).by_path()["a.txt"].hash == blake3.blake3(b"before and more").hexdigest()


def test_file_vanishes_before_it_is_read(tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "a", "gone/b.txt": "b", "c.txt": "c"})
    real = engine._hash_one

    def racing(store: Any, root: str, f: FileEntry) -> Any:
        if f.path == "gone/b.txt":
            (src / "gone" / "b.txt").unlink()
        return real(store, root, f)

    monkeypatch.setattr(engine, "_hash_one", racing)
    r = snap(workspace, src)
    assert kinds(r) == {"gone/b.txt": VANISHED}
    m = manifest_of(workspace, r.id)
    assert [e.path for e in m.entries] == ["a.txt", "c.txt"]
    assert r.files == 2
    restore(workspace.open_store(), r.id, tmp_path / "out")


def test_file_replaced_by_a_directory_while_read(
    tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "a", "b.txt": "b"})
    real = engine._hash_one

    def racing(store: Any, root: str, f: FileEntry) -> Any:
        if f.path == "b.txt":
            (src / "b.txt").unlink()
            (src / "b.txt").mkdir()
        return real(store, root, f)

    monkeypatch.setattr(engine, "_hash_one", racing)
    r = snap(workspace, src)
    assert kinds(r) == {"b.txt": CHANGED}
    # A usable snapshot without it, not a manifest with an empty hash.
    assert [e.path for e in manifest_of(workspace, r.id).entries] == ["a.txt"]
    restore(workspace.open_store(), r.id, tmp_path / "out")
    assert tree_state(tmp_path / "out") == {"a.txt": ("file", b"a", False)}


def test_engine_reports_walk_once(tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits, hashing and the manifest come from one traversal."""
    src = write_tree(tmp_path / "src", BASIC)
    calls: list[str] = []
    real = engine.walk

    def counting(root: Any, **kw: Any) -> Any:
        calls.append(str(root))
        return real(root, **kw)

    monkeypatch.setattr(engine, "walk", counting)
    snap(workspace, src)
    assert calls == [str(src)]


# -- the stat cache ----------------------------------------------------------------------

# Entries whose mtime or ctime lies within 2 s of the moment the cache was
# made are never trusted (git's racy rule; runyard applies it to ctime too,
# which os.utime cannot move into the past). These trees are made once and
# aged past that window before the stat-cache tests use them.
AGED_SPECS: dict[str, Spec] = {
    name: {f"f{i:02}.txt": f"content {i}\n" * 10 for i in range(12)} | {"sub/deep.py": "x = 1\n", "run.sh": Exe(b"#")}
    for name in (
        "unchanged", "one_change", "same_size", "racy", "exec_bit", "blob_gone", "blob_corrupt", "per_store", "deleted"
    )
}
RACY_WAIT_S = 2.2


@pytest.fixture(scope="module", autouse=True)
def _aged_trees_made(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], float]:
    """Made with the module's first test, so they age while the other tests run."""
    base = tmp_path_factory.mktemp("aged")
    return {name: write_tree(base / name, spec) for name, spec in AGED_SPECS.items()}, time.monotonic()


@pytest.fixture
def aged_trees(_aged_trees_made: tuple[dict[str, Path], float]) -> dict[str, Path]:
    trees, made = _aged_trees_made
    left = made + RACY_WAIT_S - time.monotonic()
    if left > 0:
        time.sleep(left)
    return trees


def test_unchanged_tree_is_not_read_again(aged_trees: dict[str, Path], workspace: Workspace) -> None:
    src = aged_trees["unchanged"]
    first = snap(workspace, src)
    assert first.read_files == first.files == 14
    assert first.new_blobs == 14
    second = snap(workspace, src)
    assert second.id == first.id
    assert (second.read_files, second.new_blobs, second.new_bytes) == (0, 0, 0)


def test_one_changed_file_reads_one_file_and_stores_one_blob(
    aged_trees: dict[str, Path], workspace: Workspace
) -> None:
    src = aged_trees["one_change"]
    first = snap(workspace, src)
    blobs = blob_count(workspace)
    (src / "sub" / "deep.py").write_text("x = 2  # changed\n")
    second = snap(workspace, src)
    assert second.id != first.id
    assert (second.read_files, second.new_blobs) == (1, 1)
    assert blob_count(workspace) == blobs + 2  # the new file and the new manifest


def test_same_size_change_with_restored_mtime_is_seen(aged_trees: dict[str, Path], workspace: Workspace) -> None:
    src = aged_trees["same_size"]
    target = src / "f03.txt"
    first = snap(workspace, src)
    st0 = target.stat()
    data = target.read_bytes()
    target.write_bytes(data.upper())  # same size
    os.utime(target, ns=(st0.st_atime_ns, st0.st_mtime_ns))  # same mtime: only ctime tells
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st0.st_size, st0.st_mtime_ns)
    second = snap(workspace, src)
    assert second.read_files == 1
    assert second.id != first.id
    assert manifest_of(workspace, second.id).by_path()["f03.txt"].hash == blake3.blake3(data.upper()).hexdigest()


def test_racy_entries_are_hashed_again(aged_trees: dict[str, Path], workspace: Workspace) -> None:
    src = aged_trees["racy"]
    fresh = src / "fresh.txt"
    fresh.write_text("written just now")  # mtime within 2 s of the cache's time
    first = snap(workspace, src)
    second = snap(workspace, src)
    assert second.read_files == 1  # only the racy one; the aged files come from the cache
    assert second.id == first.id
    # An old mtime does not help a file changed just now (its ctime is racy).
    old = time.time_ns() - 3_600_000_000_000
    os.utime(src / "f01.txt", ns=(old, old))
    third = snap(workspace, src)
    fourth = snap(workspace, src)
    assert third.read_files == 2 and fourth.read_files == 2


def test_exec_bit_change_is_seen(aged_trees: dict[str, Path], workspace: Workspace) -> None:
    src = aged_trees["exec_bit"]
    first = snap(workspace, src)
    (src / "f00.txt").chmod(0o755)
    second = snap(workspace, src)
    assert second.id != first.id
    assert manifest_of(workspace, second.id).by_path()["f00.txt"].executable is True
    assert diff(manifest_of(workspace, first.id), manifest_of(workspace, second.id)) == [
        engine.Change("X", "f00.txt")
    ]


def test_deleted_file_leaves_the_cache(aged_trees: dict[str, Path], workspace: Workspace) -> None:
    src = aged_trees["deleted"]
    first = snap(workspace, src)
    (src / "f05.txt").unlink()
    second = snap(workspace, src)
    assert second.read_files == 0
    assert second.id != first.id
    assert "f05.txt" not in manifest_of(workspace, second.id).by_path()


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_lost_blob_is_stored_again(aged_trees: dict[str, Path], workspace: Workspace, damage: str) -> None:
    """Once the store notices a blob is gone or corrupt, the next snapshot stores
    it again even though the stat cache vouches for the file."""
    src = aged_trees["blob_gone"] if damage == "delete" else aged_trees["blob_corrupt"]
    first = snap(workspace, src)
    store = workspace.open_store()
    digest = manifest_of(workspace, first.id).by_path()["f07.txt"].hash
    path = os.path.join(workspace.path, "store", blob_key(digest))
    if damage == "delete":
        os.unlink(path)
    else:
        os.chmod(path, 0o644)
        with open(path, "ab") as fh:
            fh.write(b"rot")
    with pytest.raises((BlobNotFoundError, CorruptBlobError), match="Take the snapshot again"):
        restore(store, first.id, src.parent / f"{damage}_failed")
    assert not (src.parent / f"{damage}_failed").exists()
    if damage == "corrupt":
        assert os.path.exists(os.path.join(workspace.path, "store", "quarantine", digest))
    second = snap(workspace, src)
    assert second.id == first.id
    assert second.new_blobs == 1
    assert store.has(digest)
    restore(store, second.id, src.parent / f"{damage}_restored")


def test_stat_cache_is_per_store(aged_trees: dict[str, Path], tmp_path: Path) -> None:
    src = aged_trees["per_store"]
    ws = Workspace.create(tmp_path / "ws")
    first = snap(ws, src)
    ws.set_setting("store.url", str(tmp_path / "other-store"))
    other = snap(ws, src)
    # A new store has none of the blobs: everything is read and stored again.
    assert other.id == first.id
    assert other.read_files == other.new_blobs == 14
    shutil.rmtree(ws.cache_dir)
    again = snap(ws, src)  # a lost cache only costs a re-read
    assert again.id == first.id and again.read_files == 14 and again.new_blobs == 0


# -- restore -----------------------------------------------------------------------------


def test_restore_is_byte_exact(tmp_path: Path, workspace: Workspace) -> None:
    spec = BASIC | {
        "bin/tool": Exe(os.urandom(70_000)),
        "broken": Link("nowhere"),
        "abs": Link("/usr/bin/env"),
        "dirlink": Link("pkg"),
        "weird name with spaces & ünïcode.txt": "ü",
        "empty.txt": "",
    }
    src = write_tree(tmp_path / "src", spec)
    r = snap(workspace, src)
    dest = tmp_path / "restored"
    res = workspace.restore_snapshot(r.id[:8], dest)
    assert tree_state(dest) == tree_state(src)
    assert (res.files, res.links, res.dirs, res.bytes) == (r.files, r.links, r.empty_dirs, r.total_bytes)
    # A snapshot of the restored tree is the same snapshot.
    assert snap(workspace, dest).id == r.id


def test_restore_into_an_existing_empty_folder(tmp_path: Path, workspace: Workspace, src: Path) -> None:
    r = snap(workspace, src)
    dest = tmp_path / "empty"
    dest.mkdir()
    workspace.restore_snapshot(r.id, dest)
    assert tree_state(dest) == tree_state(src)


def test_restore_refuses_a_non_empty_folder(tmp_path: Path, workspace: Workspace, src: Path) -> None:
    r = snap(workspace, src)
    dest = write_tree(tmp_path / "busy", {"mine.txt": "keep me"})
    with pytest.raises(SnapshotError, match=f"Cannot restore into '{dest}': it is not empty. Give a new or empty"):
        workspace.restore_snapshot(r.id, dest)
    assert tree_state(dest) == {"mine.txt": ("file", b"keep me", False)}
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SnapshotError, match="it exists and is not a directory"):
        workspace.restore_snapshot(r.id, tmp_path / "afile")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_restore_with_a_bad_blob_leaves_nothing(tmp_path: Path, workspace: Workspace, damage: str) -> None:
    src = write_tree(tmp_path / "src", {f"f{i}.txt": f"file {i}" for i in range(20)} | {"d/": EMPTY_DIR})
    r = snap(workspace, src)
    digest = blake3.blake3(b"file 13").hexdigest()
    path = os.path.join(workspace.path, "store", blob_key(digest))
    if damage == "missing":
        os.unlink(path)
    else:
        os.chmod(path, 0o644)
        Path(path).write_bytes(b"file 14")
    before = sorted(os.listdir(tmp_path))
    expected = BlobNotFoundError if damage == "missing" else CorruptBlobError
    with pytest.raises(expected, match=digest[:12]):
        workspace.restore_snapshot(r.id, tmp_path / "dest")
    assert sorted(os.listdir(tmp_path)) == before  # no dest, no temporary sibling
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlobNotFoundError):  # a corrupt blob was moved to quarantine/ by the first read
        workspace.restore_snapshot(r.id, tmp_path / "empty")
    assert os.listdir(tmp_path / "empty") == []


def test_restore_of_an_unknown_snapshot(tmp_path: Path, workspace: Workspace) -> None:
    from runyard.errors import NotFoundError

    with pytest.raises(NotFoundError):
        workspace.restore_snapshot("abcdef12", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_restore_refuses_a_forged_manifest(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    digest, _ = store.put_bytes(b"pwned")
    doc = {"format": mf.FORMAT, "hash": "blake3", "entries": [
        {"path": "../escaped.txt", "type": "file", "size": 5, "exec": False, "hash": digest}]}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    sid, _ = store.put_bytes(data)
    with pytest.raises(StoreError, match="unsafe path"):
        restore(store, sid, tmp_path / "dest" / "inner")
    assert not (tmp_path / "dest" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


# -- diff and take_snapshot without a workspace -------------------------------------------


def test_diff(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"keep.txt": "k", "mod.txt": "1", "gone.txt": "g", "x.sh": "#", "t": "file"})
    a = snap(workspace, src).id
    (src / "mod.txt").write_text("2")
    (src / "gone.txt").unlink()
    (src / "new.txt").write_text("n")
    (src / "x.sh").chmod(0o755)
    (src / "t").unlink()
    os.symlink("keep.txt", src / "t")
    b = snap(workspace, src).id
    changes = diff(manifest_of(workspace, a), manifest_of(workspace, b))
    assert [(c.status, c.path) for c in changes] == [
        ("D", "gone.txt"), ("M", "mod.txt"), ("A", "new.txt"), ("T", "t"), ("X", "x.sh"),
    ]


def test_take_snapshot_with_a_bare_store(tmp_path: Path, src: Path) -> None:
    store = open_store(f"memory://runyard-test-bare-{os.getpid()}-{time.time_ns()}")
    r = take_snapshot(src, store)
    assert r.read_files == r.files
    dest = tmp_path / "out"
    restore(store, r.id, dest)
    assert tree_state(dest) == tree_state(src)


def test_walk_lists_only_names_when_asked(src: Path) -> None:
    w = walk(src, want_stat=False)
    assert [f.path for f in w.files] == [
        "latest", "pkg/__init__.py", "pkg/data/table.csv", "pkg/model.py", "run.sh", "train.py",
    ]
    assert w.empty_dirs == ["deep/er/still_empty", "outputs"]


def test_a_directory_named_like_an_ignore_file_is_skipped_as_git_does(tmp_path: Path) -> None:
    from conftest import git_included

    src = write_tree(tmp_path / "src", {
        "sub/.amlignore/x": "x",  # a directory: it must not replace sub/.gitignore
        "sub/.gitignore": "*.log\n",
        "sub/keep.txt": "k",
        "sub/drop.log": "d",
        "top/.gitignore/y": "y",  # a directory named .gitignore: no error, no rules
        "top/a.log": "a",
    })
    result = walk(src)
    assert result.errors == []
    assert [f.path for f in result.files] == git_included(src)
    assert "sub/drop.log" not in [f.path for f in result.files]


def test_a_source_below_an_excluded_directory_is_walked_and_reported(tmp_path: Path) -> None:
    from conftest import git

    repo = write_tree(tmp_path / "repo", {".gitignore": "experiments/\n", "experiments/exp1/train.py": "x"})
    git(repo, "init", "-q", ".")
    result = walk(repo / "experiments" / "exp1")
    assert [f.path for f in result.files] == ["train.py"]
    notes = [i.detail for i in result.issues if i.kind == SOURCE_IGNORED]
    assert len(notes) == 1 and "its parent experiments/" in notes[0] and ".gitignore:1:experiments/" in notes[0]


def test_restore_fills_an_existing_empty_directory_in_place(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "a", "d/b.txt": "b"})
    r = snap(workspace, src)
    dest = tmp_path / "dest"
    dest.mkdir(mode=0o700)
    before = os.stat(dest)
    workspace.restore_snapshot(r.id, dest)
    after = os.stat(dest)
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o700)  # the same folder, filled
    assert sorted(os.listdir(dest)) == ["a.txt", "d"] and (dest / "d" / "b.txt").read_text() == "b"


def test_restore_into_an_unwritable_place_is_an_error_not_a_traceback(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "a"})
    r = snap(workspace, src)
    with pytest.raises(SnapshotError, match="Cannot restore into '/proc/"):
        workspace.restore_snapshot(r.id, "/proc/runyard-no-such-place")


@pytest.mark.parametrize("swap", ["symlink", "fifo"])
def test_a_file_swapped_during_the_snapshot_is_never_followed(tmp_path: Path, workspace: Workspace,
                                                              swap: str) -> None:
    src = write_tree(tmp_path / "src", {"data.txt": "inside", "keep.txt": "k"})
    secret = tmp_path / "outside.txt"
    secret.write_text("TOP SECRET OUTSIDE")

    class Swapper:
        def start(self, files: int, nbytes: int) -> None:  # after the walk, before any read
            (src / "data.txt").unlink()
            if swap == "symlink":
                os.symlink(secret, src / "data.txt")
            else:
                os.mkfifo(src / "data.txt")

        def advance(self, files: int, nbytes: int) -> None:
            pass

        def finish(self) -> None:
            pass

    r = workspace.snapshot(src, progress=Swapper())  # a FIFO must not block: this returns
    assert [i.kind for i in r.issues if i.path == "data.txt"] == [CHANGED]
    paths = manifest_of(workspace, r.id).by_path()
    assert "data.txt" not in paths and "keep.txt" in paths
    from runyard.store.base import hash_bytes

    assert not workspace.open_store().has(hash_bytes(secret.read_bytes()))
