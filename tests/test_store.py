"""The object store: one conformance suite over every backend, then the
atomicity and verification guarantees of each backend on a real store."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest

from runyard.errors import BlobNotFoundError, CorruptBlobError, NotFoundError, StoreError
from runyard.store import open_store
from runyard.store.base import ObjectStore, blob_key
from runyard.store.fs import FsspecStore
from runyard.store.local import LocalStore

BACKENDS = ["local", "memory"]


def _memory_cleanup(root: str) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    for key in [k for k in MemoryFileSystem.store if k == root or k.startswith(root + "/")]:
        del MemoryFileSystem.store[key]
    for d in [d for d in MemoryFileSystem.pseudo_dirs if d == root or d.startswith(root + "/")]:
        MemoryFileSystem.pseudo_dirs.remove(d)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    name = f"runyard-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    _memory_cleanup(f"/{name}")


@pytest.fixture
def store(store_url: str) -> ObjectStore:
    return open_store(store_url)


def overwrite_blob(store: ObjectStore, digest: str, data: bytes) -> None:
    """Replace a blob's bytes behind the store's back (a disk error, a bad copy)."""
    if isinstance(store, LocalStore):
        path = os.path.join(store.root, blob_key(digest))
        os.chmod(path, 0o644)
        Path(path).write_bytes(data)
    else:
        assert isinstance(store, FsspecStore)
        store.fs.pipe_file(f"{store.root}/{blob_key(digest)}", data)


def delete_blob(store: ObjectStore, digest: str) -> None:
    if isinstance(store, LocalStore):
        os.unlink(os.path.join(store.root, blob_key(digest)))
    else:
        assert isinstance(store, FsspecStore)
        store.fs.rm(f"{store.root}/{blob_key(digest)}")


def tmp_entries(store: ObjectStore) -> list[str]:
    """What is left in the store's tmp/ area."""
    if isinstance(store, LocalStore):
        d = os.path.join(store.root, "tmp")
        return os.listdir(d) if os.path.isdir(d) else []
    assert isinstance(store, FsspecStore)
    key = f"{store.root}/tmp"
    return list(store.fs.ls(key, detail=False)) if store.fs.exists(key) else []


def fake_id(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex + uuid.uuid4().hex)[:64]


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
class TestConformance:
    """What every backend must do, checked the same way on each."""

    def test_put_bytes_is_content_addressed_by_blake3(self, store: ObjectStore) -> None:
        digest, new = store.put_bytes(b"hello runyard")
        assert digest == blake3.blake3(b"hello runyard").hexdigest()
        assert new is True
        assert store.has(digest)
        assert store.get_bytes(digest) == b"hello runyard"

    def test_present_blob_is_not_written_again(self, store: ObjectStore) -> None:
        d1, new1 = store.put_bytes(b"same")
        d2, new2 = store.put_bytes(b"same")
        assert d1 == d2
        assert (new1, new2) == (True, False)

    def test_empty_blob(self, store: ObjectStore) -> None:
        digest, _ = store.put_bytes(b"")
        assert store.get_bytes(digest) == b""

    def test_put_file(self, store: ObjectStore, tmp_path: Path) -> None:
        src = tmp_path / "f.bin"
        data = os.urandom(5000)
        src.write_bytes(data)
        digest, size, new = store.put_file(str(src))
        assert (digest, size, new) == (blake3.blake3(data).hexdigest(), 5000, True)
        assert store.get_bytes(digest) == data
        # The same bytes again, from a file or from memory: nothing new.
        assert store.put_file(str(src))[2] is False
        assert store.put_bytes(data) == (digest, False)

    def test_put_file_streamed(self, store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # Big files are copied in chunks while hashed; make "big" small.
        monkeypatch.setattr("runyard.store.local.CHUNK", 1024)
        monkeypatch.setattr("runyard.store.fs.STREAM_ABOVE", 1000)
        data = os.urandom(10_000)
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        digest, size, new = store.put_file(str(src))
        assert (digest, size, new) == (blake3.blake3(data).hexdigest(), 10_000, True)
        assert store.get_bytes(digest) == data
        assert store.put_file(str(src)) == (digest, 10_000, False)
        assert tmp_entries(store) == []

    def test_put_file_missing_source_is_file_not_found(self, store: ObjectStore, tmp_path: Path) -> None:
        # The engine turns this into a "vanished" report, so it must stay an OSError.
        with pytest.raises(FileNotFoundError):
            store.put_file(str(tmp_path / "nope"))

    def test_has(self, store: ObjectStore) -> None:
        assert not store.has(blake3.blake3(b"absent").hexdigest())

    def test_missing_blob(self, store: ObjectStore) -> None:
        digest = blake3.blake3(b"never stored").hexdigest()
        with pytest.raises(BlobNotFoundError, match=f"Blob {digest[:12]} is missing from the store"):
            store.get_bytes(digest)

    @pytest.mark.parametrize("bad", ["", "abc", "G" * 64, "A" * 64, "../" + "a" * 61])
    def test_bad_digest(self, store: ObjectStore, bad: str) -> None:
        with pytest.raises(StoreError, match="is not a blob name"):
            store.get_bytes(bad)

    def test_corrupt_blob_is_detected(self, store: ObjectStore) -> None:
        digest, _ = store.put_bytes(b"the real content")
        overwrite_blob(store, digest, b"the fake content")
        with pytest.raises(CorruptBlobError) as info:
            store.get_bytes(digest)
        msg = str(info.value)
        assert digest[:12] in msg
        assert "corrupt" in msg
        assert "Take the snapshot again" in msg
        assert not store.has(digest)  # moved to quarantine/, so the next snapshot stores it again
        assert store.generation() == 1

    def test_truncated_blob_is_detected(self, store: ObjectStore) -> None:
        digest, _ = store.put_bytes(b"x" * 1000)
        overwrite_blob(store, digest, b"x" * 999)
        with pytest.raises(CorruptBlobError):
            store.get_bytes(digest)

    def test_write_to(self, store: ObjectStore, tmp_path: Path) -> None:
        digest, _ = store.put_bytes(b"#!/bin/sh\necho hi\n")
        dest = tmp_path / "run.sh"
        store.write_to(digest, str(dest), 0o755)
        assert dest.read_bytes() == b"#!/bin/sh\necho hi\n"
        assert dest.stat().st_mode & 0o777 == 0o755
        # It never replaces an existing file.
        with pytest.raises(FileExistsError):
            store.write_to(digest, str(dest), 0o644)

    def test_write_to_corrupt_blob_writes_nothing(self, store: ObjectStore, tmp_path: Path) -> None:
        digest, _ = store.put_bytes(b"good")
        overwrite_blob(store, digest, b"evil")
        with pytest.raises(CorruptBlobError):
            store.write_to(digest, str(tmp_path / "out"), 0o644)
        assert not (tmp_path / "out").exists()

    def test_snapshot_records(self, store: ObjectStore) -> None:
        sid = fake_id("")
        assert store.get_snapshot_record(sid) is None
        store.put_snapshot_record(sid, {"id": sid, "files": 3})
        assert store.get_snapshot_record(sid) == {"id": sid, "files": 3}
        with pytest.raises(StoreError):
            store.put_snapshot_record("not-an-id", {})

    def test_list_snapshots(self, store: ObjectStore) -> None:
        assert store.list_snapshots() == []
        ids = [fake_id(p) for p in ("ff", "00", "7a")]
        for sid in ids:
            store.put_snapshot_record(sid, {"id": sid})
        # Blobs are not snapshots.
        store.put_bytes(b"a blob")
        assert store.list_snapshots() == sorted(ids)

    def test_resolve_snapshot(self, store: ObjectStore) -> None:
        a, b, c = fake_id("abcd1"), fake_id("abcd2"), fake_id("9999")
        for sid in (a, b, c):
            store.put_snapshot_record(sid, {"id": sid})
        assert store.resolve_snapshot(a) == a
        assert store.resolve_snapshot(a.upper()) == a
        assert store.resolve_snapshot(" " + a[:5] + "\n") == a
        assert store.resolve_snapshot("9999") == c
        with pytest.raises(NotFoundError, match="'abcd' is ambiguous: 2 snapshots start with it"):
            store.resolve_snapshot("abcd")
        with pytest.raises(NotFoundError, match="No snapshot id starts with 'eeee'"):
            store.resolve_snapshot("eeee")
        with pytest.raises(NotFoundError, match=f"No snapshot '{'e' * 64}'"):
            store.resolve_snapshot("e" * 64)
        with pytest.raises(NotFoundError, match="at least its first 4 digits"):
            store.resolve_snapshot("abc")
        with pytest.raises(NotFoundError, match="not a snapshot id"):
            store.resolve_snapshot("zzzz")

    def test_store_id_is_kept(self, store: ObjectStore, store_url: str) -> None:
        assert len(store.store_id) == 32
        again = open_store(store_url)
        assert again.store_id == store.store_id
        digest, _ = store.put_bytes(b"persisted")
        assert again.get_bytes(digest) == b"persisted"

    def test_open_without_create(self, store_url: str) -> None:
        with pytest.raises(StoreError, match="No runyard store at"):
            open_store(store_url, create=False)

    def test_foreign_store_json_is_refused(self, store: ObjectStore, store_url: str) -> None:
        if isinstance(store, LocalStore):
            Path(store.root, "store.json").write_text(json.dumps({"format": "something-else"}))
        else:
            assert isinstance(store, FsspecStore)
            store.fs.pipe_file(f"{store.root}/store.json", b'{"format": "runyard-store", "scheme": 99}')
        with pytest.raises(StoreError, match=r"not a runyard store|uses scheme 99"):
            open_store(store_url)

    def test_failed_write_leaves_no_blob_and_no_tmp(
        self, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails half-way never leaves a blob under its final name."""
        data = b"y" * 4096
        digest = blake3.blake3(data).hexdigest()
        if isinstance(store, LocalStore):
            def half_then_disk_full(fd: int, buf: bytes | memoryview) -> None:
                os.write(fd, memoryview(buf)[: len(buf) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr("runyard.store.local._write_all", half_then_disk_full)
        else:
            assert isinstance(store, FsspecStore)

            def broken_move(*args: object, **kwargs: object) -> None:
                raise OSError(errno.EIO, "connection reset while moving")

            monkeypatch.setattr(store.fs, "mv", broken_move)
        with pytest.raises(StoreError, match="Cannot write"):
            store.put_bytes(data)
        assert not store.has(digest)
        assert tmp_entries(store) == []
        monkeypatch.undo()
        # The store still works, and the blob can be written afterwards.
        assert store.put_bytes(data) == (digest, True)
        assert store.get_bytes(digest) == data


# -- local store details -----------------------------------------------------------


def test_local_layout(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"))
    assert isinstance(store, LocalStore)
    digest, _ = store.put_bytes(b"layout")
    path = tmp_path / "s" / "blobs" / digest[:2] / digest[2:]
    assert path.read_bytes() == b"layout"
    assert path.stat().st_mode & 0o777 == 0o644  # exactly, whatever the umask (hardlinked work dirs rely on it)
    cfg = json.loads((tmp_path / "s" / "store.json").read_text())
    assert cfg["format"] == "runyard-store" and cfg["scheme"] == 1 and cfg["hash"] == "blake3"


def test_file_url_is_a_local_store(tmp_path: Path) -> None:
    assert isinstance(open_store(f"file://{tmp_path / 's'}"), LocalStore)


def test_local_present_blob_is_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(tmp_path / "s"))
    digest, _ = store.put_bytes(b"once")
    before = os.stat(tmp_path / "s" / blob_key(digest))

    def must_not_write(fd: int, buf: bytes | memoryview) -> None:
        raise AssertionError("a present blob was written again")

    monkeypatch.setattr("runyard.store.local._write_all", must_not_write)
    src = tmp_path / "once.txt"
    src.write_bytes(b"once")
    assert store.put_bytes(b"once") == (digest, False)
    assert store.put_file(str(src)) == (digest, 4, False)
    after = os.stat(tmp_path / "s" / blob_key(digest))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_local_streamed_write_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runyard.store.local.CHUNK", 256)
    store = open_store(str(tmp_path / "s"))
    data = os.urandom(2000)
    src = tmp_path / "big"
    src.write_bytes(data)
    calls = {"n": 0}
    real = os.write

    def fail_on_third_chunk(fd: int, buf: bytes | memoryview) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, buf)

    monkeypatch.setattr("runyard.store.local._write_all", fail_on_third_chunk)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_file(str(src))
    assert calls["n"] == 3
    assert not store.has(blake3.blake3(data).hexdigest())
    assert tmp_entries(store) == []


def test_local_install_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failing at the final rename (the moment a crash matters most) leaves nothing."""
    store = open_store(str(tmp_path / "s"))
    real_replace = os.replace

    def broken_replace(src: str, dst: str) -> None:
        if "/blobs/" in dst:
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="I/O error"):
        store.put_bytes(b"never installed")
    monkeypatch.undo()
    assert not store.has(blake3.blake3(b"never installed").hexdigest())
    assert tmp_entries(store) == []


def test_local_concurrent_puts_of_the_same_blob(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"))
    data = os.urandom(100_000)
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def put() -> None:
        barrier.wait()
        results.append(store.put_bytes(data))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    digests = {d for d, _ in results}
    assert digests == {blake3.blake3(data).hexdigest()}
    assert store.get_bytes(digests.pop()) == data
    assert tmp_entries(store) == []


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"(Cannot create a store at|Cannot read the store at).*Check the path"):
        open_store(str(blocker / "store"))


def test_fsspec_streamed_upload_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"runyard-test-{uuid.uuid4().hex}"
    try:
        store = open_store(f"memory://{name}")
        assert isinstance(store, FsspecStore)
        monkeypatch.setattr("runyard.store.fs.STREAM_ABOVE", 100)
        data = os.urandom(3000)
        src = tmp_path / "big"
        src.write_bytes(data)

        def broken_move(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EIO, "connection reset while moving")

        monkeypatch.setattr(store.fs, "mv", broken_move)
        with pytest.raises(StoreError, match="Cannot upload"):
            store.put_file(str(src))
        assert not store.has(blake3.blake3(data).hexdigest())
        assert tmp_entries(store) == []
    finally:
        _memory_cleanup(f"/{name}")


def test_missing_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    loaded = importlib.import_module("fsspec.registry")._registry  # (fsspec.registry is a read-only view)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if not installed: importing it raises ImportError
    monkeypatch.delitem(loaded, "s3", raising=False)  # and not loaded before
    with pytest.raises(StoreError, match=r"pip install 'runyard\[s3\]'"):
        open_store("s3://some-bucket/runyard")


def test_local_store_does_not_import_fsspec(tmp_path: Path) -> None:
    code = (
        "import sys, runyard\n"
        "from runyard.store import open_store\n"
        f"s = open_store({str(tmp_path / 's')!r})\n"
        "s.put_bytes(b'x')\n"
        "assert 'fsspec' not in sys.modules, 'fsspec imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


OpenStore = Callable[[str], ObjectStore]
