"""FUSE mounts: the views on their own, then real mounts served by the helper process.

The mount tests skip (saying why) where FUSE cannot work, and fail instead under
CI, where a skip would hide that mounting is broken.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
import pytest

from runyard.data.fuse import (
    ManifestView,
    Mount,
    MountError,
    MountSpec,
    PrefixView,
    fuse_available,
    is_mounted,
    mount,
    unmount_stale,
)

# ---------------------------------------------------------------- views alone


@pytest.fixture
def memfs() -> Iterator[tuple[Any, str]]:
    """A memory filesystem and a root of its own (the memory store is process-wide)."""
    fs = fsspec.filesystem("memory")
    root = f"/t-{uuid.uuid4().hex}"
    fs.mkdir(root)
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def names(view: ManifestView | PrefixView, path: str) -> list[str]:
    """What ``ls -a`` would show (readdir also hands the kernel each entry's type)."""
    return [e if isinstance(e, str) else e[0] for e in view("readdir", path, 0)]


def errno_of(call: Callable[[], object]) -> int | None:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


def test_manifest_view_answers_from_the_manifest_alone(memfs: tuple[Any, str]) -> None:
    fs, root = memfs
    fs.pipe(f"{root}/blob", b"0123456789")
    view = ManifestView(
        [
            ("train/a.csv", fs, f"{root}/blob", 10, 1_700_000_000.5),
            ("train/deep/b.csv", fs, f"{root}/missing", 7, 1_600_000_000.0),
            ("README", fs, f"{root}/blob", 10, 0.0),
            ("old/times", fs, f"{root}/blob", 10, 0.0),
        ]
    )
    assert names(view, "/") == [".", "..", "README", "old", "train"]
    assert view("getattr", "/old")["st_mtime"] == 0
    assert view("getattr", "/")["st_mtime"] == 1_700_000_000_500_000_000  # a folder's time is its newest file's
    assert names(view, "/train") == [".", "..", "a.csv", "deep"]
    attrs = view("getattr", "/train/deep/b.csv")
    assert stat.S_ISREG(attrs["st_mode"]) and attrs["st_size"] == 7  # no remote call: the file is not even there
    assert attrs["st_mtime"] == 1_600_000_000 * 10**9
    assert stat.S_ISDIR(view("getattr", "/train/deep")["st_mode"])
    assert errno_of(lambda: view("getattr", "/nope")) == errno.ENOENT
    assert errno_of(lambda: names(view, "/README")) == errno.ENOTDIR
    fh = view("open", "/train/a.csv", os.O_RDONLY)
    assert view("read", "/train/a.csv", 4, 3, fh) == b"3456"
    view("release", "/train/a.csv", fh)
    fh = view("open", "/train/deep/b.csv", os.O_RDONLY)  # lazy: opening does not touch the fs
    assert errno_of(lambda: view("read", "/train/deep/b.csv", 4, 0, fh)) == errno.ENOENT
    assert errno_of(lambda: view("open", "/README", os.O_WRONLY)) == errno.EROFS
    assert errno_of(lambda: view("unlink", "/README")) == errno.EROFS
    assert errno_of(lambda: view("mkdir", "/new", 0o755)) == errno.EROFS


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a", "/x"), ("a", "/y")], "listed twice"),
        ([("a", "/x"), ("a/b", "/y")], "both a file and a folder"),
        ([("../a", "/x")], "not a plain relative"),
        ([("/a", "/x")], "not a plain relative"),
        ([("a//b", "/x")], "not a plain relative"),
    ],
)
def test_bad_manifests_are_refused_before_anything_starts(entries: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(MountError, match=message):
        MountSpec.for_manifest("/mnt/x", "file", [(rel, full, 1, 0.0) for rel, full in entries])


def test_a_memory_filesystem_cannot_be_mounted() -> None:
    with pytest.raises(MountError, match="lives inside this process"):
        MountSpec.for_prefix("/mnt/x", fsspec.filesystem("memory"), "/data")


def test_unmount_stale_leaves_other_mounts_and_plain_folders_alone(tmp_path: Path) -> None:
    unmount_stale(tmp_path)  # not a mount: nothing to do
    unmount_stale(tmp_path / "missing")
    if is_mounted("/proc"):
        with pytest.raises(MountError, match="not a FUSE mount"):
            unmount_stale("/proc")


def test_spec_round_trips_through_json() -> None:
    prefix = MountSpec.for_prefix("/mnt/out", "s3", "bucket/out", storage_options={"anon": True}, writable=True)
    assert MountSpec.from_json(prefix.to_json()) == prefix
    manifest = MountSpec.for_manifest("/mnt/in", fsspec.filesystem("file"), [("a/b", "/src/b", 3, 1.5)], label="ds")
    back = MountSpec.from_json(manifest.to_json())
    assert back == manifest and back.filesystem == {"protocol": "file", "storage_options": {}}
    with pytest.raises(MountError, match="exactly one"):
        MountSpec(mountpoint="/mnt/x", filesystem={"protocol": "file"})
    with pytest.raises(MountError, match="read-only"):
        MountSpec(mountpoint="/m", filesystem={"protocol": "file"}, manifest=(), writable=True)


def test_writable_prefix_view_uploads_at_close(memfs: tuple[Any, str], tmp_path: Path) -> None:
    fs, root = memfs
    fs.pipe(f"{root}/keep.txt", b"old")
    view = PrefixView(fs, root, writable=True, staging_dir=tmp_path / "staging")
    fh = view("create", "/sub/new.bin", 0o644)
    for i in range(3):
        view("write", "/sub/new.bin", bytes([65 + i]) * 4, i * 4, fh)
    assert not fs.exists(f"{root}/sub/new.bin")  # buffered until close
    assert view("getattr", "/sub/new.bin")["st_size"] == 12
    assert "sub" not in names(view, "/")  # the object store knows nothing yet...
    view("flush", "/sub/new.bin", fh)
    view("release", "/sub/new.bin", fh)
    assert fs.cat(f"{root}/sub/new.bin") == b"AAAABBBBCCCC"
    assert "sub" in names(view, "/")  # ...now it does: a prefix with children

    fh = view("open", "/keep.txt", os.O_WRONLY | os.O_APPEND)  # existing content is fetched first
    view("write", "/keep.txt", b"+new", 3, fh)
    view("flush", "/keep.txt", fh)
    view("release", "/keep.txt", fh)
    assert fs.cat(f"{root}/keep.txt") == b"old+new"

    view("mkdir", "/empty", 0o755)  # object stores need no folder object: the view remembers it
    assert "empty" in names(view, "/")
    assert errno_of(lambda: view("mkdir", "/empty", 0o755)) == errno.EEXIST
    view("rmdir", "/empty")
    assert "empty" not in names(view, "/")
    assert errno_of(lambda: view("rmdir", "/sub")) == errno.ENOTEMPTY

    view("rename", "/keep.txt", "/sub/moved.txt")
    assert not fs.exists(f"{root}/keep.txt") and fs.cat(f"{root}/sub/moved.txt") == b"old+new"
    assert errno_of(lambda: view("rename", "/sub", "/sub2")) == errno.EXDEV
    view("unlink", "/sub/moved.txt")
    assert not fs.exists(f"{root}/sub/moved.txt")
    assert errno_of(lambda: view("getattr", "/sub/moved.txt")) == errno.ENOENT
    view("truncate", "/sub/new.bin", 2)
    assert fs.cat(f"{root}/sub/new.bin") == b"AA"
    view("chmod", "/sub/new.bin", 0o600)  # accepted, ignored
    assert errno_of(lambda: view("symlink", "/l", "/sub/new.bin")) == errno.ENOTSUP
    assert view.close() == 0
    assert list((tmp_path / "staging").iterdir()) == []


def test_read_only_prefix_view_refuses_writes(memfs: tuple[Any, str]) -> None:
    fs, root = memfs
    fs.pipe(f"{root}/a", b"x")
    view = PrefixView(fs, root)
    assert names(view, "/") == [".", "..", "a"]
    for call in (
        lambda: view("create", "/b", 0o644),
        lambda: view("open", "/a", os.O_RDWR),
        lambda: view("unlink", "/a"),
        lambda: view("mkdir", "/d", 0o755),
        lambda: view("rename", "/a", "/b"),
        lambda: view("truncate", "/a", 0),
        lambda: view("symlink", "/l", "/a"),
    ):
        assert errno_of(call) == errno.EROFS


def test_filesystem_errors_become_errnos(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        protocol = "broken"

        def _strip_protocol(self, path: str) -> str:
            return path

        def invalidate_cache(self, path: str | None = None) -> None:
            pass

        def info(self, path: str) -> dict[str, Any]:
            if path.endswith("denied"):
                raise PermissionError(path)
            if path.endswith("gone"):
                raise FileNotFoundError(path)
            raise TimeoutError("the network is down")

    view = PrefixView(Broken(), "/r")
    assert errno_of(lambda: view("getattr", "/denied")) == errno.EACCES
    assert errno_of(lambda: view("getattr", "/gone")) == errno.ENOENT
    assert errno_of(lambda: view("getattr", "/flaky")) == errno.EIO
    assert "getattr '/flaky' failed: TimeoutError: the network is down" in caplog.text


# ---------------------------------------------------------------- real mounts


@pytest.fixture
def mounts() -> Iterator[Callable[..., Mount]]:
    """``mounts(spec)`` mounts, and every mount is gone after the test, whatever happened."""
    reason = fuse_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE mounts must be tested under CI, but: {reason}")
        pytest.skip(reason)
    made: list[Mount] = []

    def make(spec: MountSpec, **kwargs: Any) -> Mount:
        m = mount(spec, **kwargs)
        made.append(m)
        return m

    yield make
    for m in made:
        try:
            m.unmount(timeout=5)
        except MountError:
            pass
        finally:
            unmount_stale(m.mountpoint)


LOCAL = fsspec.filesystem("file")


def test_manifest_mount_lists_exactly_the_manifest_and_reads_exact_bytes(
    mounts: Callable[..., Mount], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    files = {"small.txt": b"hello, world\n", "empty": b"", "big.bin": rng.randbytes(5 * 1024 * 1024)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    (src / "not-listed.txt").write_bytes(b"secret")
    layout = {"a.txt": "small.txt", "data/empty": "empty", "data/nested/big.bin": "big.bin"}
    spec = MountSpec.for_manifest(
        tmp_path / "mp",
        LOCAL,
        [(rel, str(src / name), len(files[name]), 1_700_000_000.0) for rel, name in layout.items()],
        label="ds",
    )
    mp = mounts(spec).mountpoint

    seen = {os.path.relpath(os.path.join(d, f), mp) for d, _, fs in os.walk(mp) for f in fs}
    assert seen == set(layout)
    assert sorted(os.listdir(mp / "data")) == ["empty", "nested"]
    assert (mp / "a.txt").read_bytes() == files["small.txt"]
    assert (mp / "data/empty").read_bytes() == b""
    st = os.stat(mp / "data/nested/big.bin")
    assert st.st_size == 5 * 1024 * 1024 and st.st_mtime == 1_700_000_000.0

    big = files["big.bin"]
    fd = os.open(mp / "data/nested/big.bin", os.O_RDONLY)
    try:
        spans = [(rng.randrange(len(big)), rng.randrange(1, 300_000)) for _ in range(200)]
        spans += [(len(big) - 10, 100), (0, len(big))]
        with ThreadPoolExecutor(8) as pool:  # one handle, many threads: reads must not interleave
            got = list(pool.map(lambda s: os.pread(fd, s[1], s[0]), spans))
        assert all(g == big[o : o + n] for g, (o, n) in zip(got, spans, strict=True))
    finally:
        os.close(fd)

    for call in (
        lambda: os.open(mp / "a.txt", os.O_WRONLY | os.O_APPEND),
        lambda: os.open(mp / "new.txt", os.O_WRONLY | os.O_CREAT),
        lambda: os.mkdir(mp / "d"),
        lambda: os.unlink(mp / "a.txt"),
        lambda: os.rename(mp / "a.txt", mp / "b.txt"),
    ):
        assert errno_of(call) == errno.EROFS


def test_read_only_prefix_mount_is_live(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/x.txt").write_text("x")
    m = mounts(MountSpec.for_prefix(tmp_path / "mp", LOCAL, str(src), cache_ttl=0.3))
    mp = m.mountpoint
    assert os.listdir(mp) == ["sub"]
    assert (mp / "sub/x.txt").read_text() == "x"
    assert not (mp / "sub/y.txt").exists()  # now cached as missing, for a while

    (src / "sub/y.txt").write_text("yy")
    assert sorted(os.listdir(mp / "sub")) == ["x.txt", "y.txt"]  # a listing always asks again
    (src / "z.txt").write_text("zzz")
    time.sleep(0.4)  # our cache expires; the kernel keeps nothing negative for prefix mounts
    assert (mp / "z.txt").read_text() == "zzz"
    assert errno_of(lambda: os.open(mp / "new", os.O_WRONLY | os.O_CREAT)) == errno.EROFS
    assert errno_of(lambda: os.unlink(mp / "z.txt")) == errno.EROFS


def test_writable_prefix_mount_writes_through(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "existing.txt").write_text("one\n")
    (backing / "doomed.txt").write_text("bye")
    m = mounts(MountSpec.for_prefix(tmp_path / "mp", LOCAL, str(backing), writable=True, label="out"))
    mp = m.mountpoint

    chunks = [os.urandom(300_000) for _ in range(4)]
    with open(mp / "model.bin", "wb") as f:
        for c in chunks:
            f.write(c)
            f.flush()
    assert (backing / "model.bin").read_bytes() == b"".join(chunks)  # there at close

    os.makedirs(mp / "ckpt/epoch1")
    (mp / "ckpt/epoch1/w.pt").write_bytes(b"weights")
    assert (backing / "ckpt/epoch1/w.pt").read_bytes() == b"weights"
    os.mkdir(mp / "empty")
    assert (backing / "empty").is_dir()

    with open(mp / "existing.txt", "a") as f:
        f.write("two\n")
    (mp / "metrics.json").write_text("{}")
    os.rename(mp / "metrics.json", mp / "ckpt/metrics.json")
    os.unlink(mp / "doomed.txt")
    assert (mp / "existing.txt").read_text() == "one\ntwo\n"
    assert sorted(os.listdir(mp)) == ["ckpt", "empty", "existing.txt", "model.bin"]
    os.rmdir(mp / "empty")

    m.unmount()
    assert not is_mounted(mp) and os.listdir(mp) == []
    got = {str(p.relative_to(backing)): p.read_bytes() for p in backing.rglob("*") if p.is_file()}
    assert got == {
        "model.bin": b"".join(chunks),
        "ckpt/epoch1/w.pt": b"weights",
        "ckpt/metrics.json": b"{}",
        "existing.txt": b"one\ntwo\n",
    }
    assert not (backing / "empty").exists()


def test_a_failed_upload_is_an_error_on_close(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    # We are root, so a read-only folder would not stop the upload; a path under a file does.
    m = mounts(MountSpec.for_prefix(tmp_path / "mp", LOCAL, str(tmp_path / "a-file/out"), writable=True))
    fd = os.open(m.mountpoint / "result.txt", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"lost")
    with pytest.raises(OSError) as excinfo:
        os.close(fd)
    assert excinfo.value.errno == errno.EIO
    assert "upload of '/result.txt'" in m.log_path.read_text()
    with pytest.raises(MountError, match="1 written file"):  # and the run's cleanup hears of it too
        m.unmount()
    m.unmount()


def test_unmount_is_idempotent_and_cleans_up(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    state = tmp_path / "state"
    m = mounts(MountSpec.for_prefix(tmp_path / "mp", LOCAL, str(src)), state_dir=state)
    assert not list(state.glob("*.json"))  # the helper deleted the spec (it may hold credentials)
    assert is_mounted(m.mountpoint)
    m.unmount()
    m.unmount()
    assert not is_mounted(m.mountpoint) and os.listdir(m.mountpoint) == []
    assert m.process.returncode == 0


def test_a_killed_helper_leaves_a_folder_unmount_stale_can_clean(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    m = mounts(MountSpec.for_prefix(tmp_path / "mp", LOCAL, str(src)))
    os.kill(m.pid, signal.SIGKILL)
    m.process.wait(5)
    unmount_stale(m.mountpoint)
    assert not is_mounted(m.mountpoint) and os.listdir(m.mountpoint) == []
    unmount_stale(m.mountpoint)  # not mounted: nothing to do
    m.unmount()  # read-only: nothing was lost, no error


def test_unmount_stale_clears_a_dead_mount(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    # Without auto_unmount (mount() always asks for it) a dead helper leaves a
    # mount that only answers "Transport endpoint is not connected".
    mp = tmp_path / "mp"
    mp.mkdir()
    script = textwrap.dedent(
        """
        import sys, fuse
        from runyard.data.fuse import ManifestView
        fuse.FUSE(ManifestView([]), sys.argv[1], foreground=True, ro=True)
        """
    )
    helper = subprocess.Popen([sys.executable, "-c", script, str(mp)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not is_mounted(mp):
            assert helper.poll() is None, helper.stderr.read() if helper.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        helper.kill()
        helper.wait()
        assert errno_of(lambda: os.listdir(mp)) == errno.ENOTCONN
        assert is_mounted(mp)
        unmount_stale(mp)
        assert not is_mounted(mp) and os.listdir(mp) == []
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
        unmount_stale(mp)


def test_a_helper_that_fails_is_a_mount_error_with_its_message(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    spec = MountSpec.for_prefix(tmp_path / "mp", "no-such-protocol", "/x")
    with pytest.raises(MountError) as excinfo:
        mounts(spec)
    message = str(excinfo.value)
    assert "helper exited with code 2" in message
    assert "cannot open the 'no-such-protocol' filesystem" in message
    assert not is_mounted(tmp_path / "mp")


def test_mountpoint_must_be_empty(mounts: Callable[..., Mount], tmp_path: Path) -> None:
    (tmp_path / "mp").mkdir()
    (tmp_path / "mp/file").write_text("hidden by a mount")
    with pytest.raises(MountError, match="not empty"):
        mounts(MountSpec.for_prefix(tmp_path / "mp", LOCAL, str(tmp_path)))
