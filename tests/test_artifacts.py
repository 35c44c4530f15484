"""Syncing ./outputs and mirroring ./logs into the store, on real folders:
the stability rule, the stat cache, content addressing, names and links that
try to escape, special and unreadable files, and logs that grow, shrink and
get rewritten."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from runyard.agent import artifacts
from runyard.agent.artifacts import (
    CLOCK_SLACK_NS,
    SKIPPED,
    UNREADABLE,
    ArtifactError,
    ArtifactIssue,
    ArtifactRecord,
    LogsMirror,
    OutputsSync,
    check_name,
)
from runyard.store.local import LocalStore
from unprivileged import nobody_python

SETTLE = 2 * CLOCK_SLACK_NS / 1e9
"""Sleep this long for a file to count as left alone before a scan."""


def h(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def blobs(store: LocalStore) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(os.path.join(store.root, "blobs")):
        out.extend(os.path.basename(dirpath) + f for f in files)
    return sorted(out)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore.open(str(tmp_path / "store"))


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    (tmp_path / "wd" / "outputs").mkdir(parents=True)
    (tmp_path / "wd" / "logs").mkdir()
    return tmp_path / "wd"


def write(p: Path, data: bytes | str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def issues_by_name(issues: list[ArtifactIssue]) -> dict[str, ArtifactIssue]:
    return {i.name: i for i in issues}


# -- the stability rule -------------------------------------------------------------


def test_a_file_is_stored_once_two_scans_saw_it_unchanged(store: LocalStore, wd: Path) -> None:
    sync = OutputsSync(store, wd)
    write(wd / "outputs" / "model.pt", b"weights")
    time.sleep(SETTLE)
    assert sync.scan() == []  # first sight
    [rec] = sync.scan()
    assert rec == ArtifactRecord("outputs/model.pt", 7, h(b"weights"), (wd / "outputs/model.pt").stat().st_mtime_ns)
    assert store.get_bytes(rec.digest) == b"weights"
    assert sync.scan() == [] and sync.records == [rec]


def test_a_file_still_being_written_waits(store: LocalStore, wd: Path) -> None:
    sync = OutputsSync(store, wd)
    log = wd / "outputs" / "growing.csv"
    write(log, "a\n")
    time.sleep(SETTLE)
    sync.scan()
    with open(log, "a") as fh:
        fh.write("b\n")
    assert sync.scan() == []  # changed since the last scan
    time.sleep(SETTLE)
    # Unchanged since, but written just before the previous scan began: one more scan.
    assert sync.scan() == []
    [rec] = sync.scan()
    assert rec.size == 4 and store.get_bytes(rec.digest) == b"a\nb\n"


def test_final_scan_stores_everything_now(store: LocalStore, wd: Path) -> None:
    sync = OutputsSync(store, wd)
    write(wd / "outputs" / "old.txt", "old")
    time.sleep(SETTLE)
    sync.scan()
    stored_early = sync.scan()
    write(wd / "outputs" / "just" / "written.bin", b"\x00" * 10)
    write(wd / "outputs" / ".hidden", "h")
    write(wd / "outputs" / "a b" / "ünï code.txt", "u")
    write(wd / "outputs" / "empty", b"")
    with open(wd / "outputs" / "old.txt", "a") as fh:
        fh.write(" and new")
    final = sync.scan(final=True)
    assert [r.name for r in stored_early] == ["outputs/old.txt"]
    assert {r.name: store.get_bytes(r.digest) for r in final} == {
        "outputs/.hidden": b"h",
        "outputs/a b/ünï code.txt": b"u",
        "outputs/empty": b"",
        "outputs/just/written.bin": b"\x00" * 10,
        "outputs/old.txt": b"old and new",
    }
    assert [r.name for r in sync.records] == sorted(r.name for r in final)
    assert sync.issues == []


def test_outputs_folder_made_later_and_a_big_file_streamed(store: LocalStore, tmp_path: Path) -> None:
    wd = tmp_path / "late"
    wd.mkdir()
    sync = OutputsSync(store, wd)
    assert sync.scan() == [] and sync.issues == []
    big = os.urandom(artifacts.SMALL * 3 + 17)
    write(wd / "outputs" / "ckpt.bin", big)
    [rec] = sync.scan(final=True)
    assert rec.size == len(big) and rec.digest == h(big) and store.get_bytes(rec.digest) == big


# -- no re-reads, no double storage ---------------------------------------------------


def test_unchanged_files_are_not_read_again_and_no_byte_is_stored_twice(store: LocalStore, wd: Path) -> None:
    sync = OutputsSync(store, wd)
    write(wd / "outputs" / "a.txt", "same")
    write(wd / "outputs" / "copy" / "b.txt", "same")
    write(wd / "outputs" / "c.txt", "other")
    time.sleep(SETTLE)
    assert len(sync.scan(final=True)) == 3
    assert sync.read_files == 3
    assert blobs(store) == sorted([h(b"same"), h(b"other")])
    # Nothing changed: nothing is read, nothing returned (running or final).
    time.sleep(SETTLE)
    assert sync.scan() == [] and sync.scan() == [] and sync.scan(final=True) == []
    assert sync.read_files == 3
    # Touched, same bytes: read again, but no new record and no new blob.
    os.utime(wd / "outputs" / "c.txt", ns=(1, 1))
    assert sync.scan(final=True) == []
    assert sync.read_files == 4 and len(blobs(store)) == 2
    # Renamed: a new name, the same blob.
    os.rename(wd / "outputs" / "c.txt", wd / "outputs" / "c2.txt")
    [rec] = sync.scan(final=True)
    assert rec.name == "outputs/c2.txt" and len(blobs(store)) == 2
    # New content under an old name: a new record and one new blob.
    write(wd / "outputs" / "a.txt", "changed")
    [rec] = sync.scan(final=True)
    assert rec.name == "outputs/a.txt" and store.get_bytes(rec.digest) == b"changed" and len(blobs(store)) == 3
    # A deleted file keeps the record it had (it was uploaded).
    os.remove(wd / "outputs" / "a.txt")
    assert sync.scan(final=True) == []
    assert "outputs/a.txt" in [r.name for r in sync.records]


def test_a_second_sync_of_the_same_outputs_stores_nothing(store: LocalStore, wd: Path) -> None:
    for i in range(40):
        write(wd / "outputs" / f"d{i % 4}" / f"f{i}.txt", f"content {i % 10}")
    first = OutputsSync(store, wd).scan(final=True)
    stored = blobs(store)
    assert len(first) == 40 and len(stored) == 10
    again = OutputsSync(store, wd).scan(final=True)  # a fresh state: reads all, stores nothing new
    assert again == first and blobs(store) == stored


# -- names and links that try to get out ---------------------------------------------


@pytest.mark.parametrize("name", [
    "outputs/../etc/passwd", "outputs/a/../../x", "/etc/passwd", "outputs//a", "outputs/./a", "outputs/",
    "outputs/a\x00b", "outputs\\..\\x", "outputs/a\\b", "", "other/a", "outputsx/a", "outputs",
    "outputs/\udcff.bin",
])
def test_the_name_validator_rejects_what_could_escape(name: str) -> None:
    with pytest.raises(ArtifactError, match="is not a safe artifact name"):
        check_name(name, "outputs")


@pytest.mark.parametrize("name", ["outputs/model.pt", "outputs/a b/c.txt", "outputs/.hidden", "outputs/ünï/..x"])
def test_the_name_validator_accepts_plain_names(name: str) -> None:
    assert check_name(name, "outputs") == name


def test_a_bad_prefix_is_refused(store: LocalStore, wd: Path) -> None:
    with pytest.raises(ArtifactError, match=r"prefix '\.\./x' is not usable"):
        OutputsSync(store, wd, prefix="../x")


def test_links_are_never_followed_out_of_the_working_directory(store: LocalStore, wd: Path) -> None:
    secret = Path("/etc/shadow") if os.path.exists("/etc/shadow") else write(wd.parent / "secret", "secret")
    write(wd / "train.py", "code")
    write(wd / "data" / "x.csv", "1,2")
    write(wd / "outputs" / "epoch9.pt", "weights")
    out = wd / "outputs"
    os.symlink(str(secret), out / "shadow")
    os.symlink("../../secret-next-to-wd", out / "up")
    os.symlink("chain1", out / "chain0")
    os.symlink("/etc/passwd", out / "chain1")
    os.symlink("/etc", out / "etc")
    os.symlink("epoch9.pt", out / "best.pt")  # inside outputs: uploaded with the target's bytes
    os.symlink("../train.py", out / "code.py")  # inside the working directory: uploaded too
    os.symlink("../data", out / "data")  # a folder: not followed
    os.symlink("nowhere", out / "broken")
    os.symlink("loop", out / "loop")
    write(wd.parent / "secret-next-to-wd", "also secret")
    sync = OutputsSync(store, wd)
    got = {r.name: store.get_bytes(r.digest) for r in sync.scan(final=True)}
    assert got == {"outputs/epoch9.pt": b"weights", "outputs/best.pt": b"weights", "outputs/code.py": b"code"}
    issues = issues_by_name(sync.issues)
    assert set(issues) == {f"outputs/{n}" for n in ("shadow", "up", "chain0", "chain1", "etc", "data", "broken",
                                                    "loop")}
    assert all(i.kind == SKIPPED for i in issues.values())
    assert "outside the working directory" in issues["outputs/shadow"].reason
    assert str(secret) in issues["outputs/shadow"].reason
    assert "links to folders are not followed" in issues["outputs/data"].reason
    assert "broken link" in issues["outputs/broken"].reason
    stored = set(blobs(store))
    assert h(b"also secret") not in stored
    if os.access(secret, os.R_OK):
        assert h(secret.read_bytes()) not in stored


def test_an_outputs_folder_that_is_a_link_uploads_nothing(store: LocalStore, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    os.symlink("/etc", wd / "outputs")
    sync = OutputsSync(store, wd)
    assert sync.scan(final=True) == []
    [issue] = sync.issues
    assert issue.kind == SKIPPED and "not a folder" in issue.reason
    assert blobs(store) == []


def test_a_folder_swapped_for_a_link_mid_scan_is_not_read(store: LocalStore, wd: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The race a hostile run could try: list ./outputs/sub, then make it a link to elsewhere."""
    write(wd / "outputs" / "sub" / "passwd", "harmless")
    elsewhere = write(tmp_path / "elsewhere" / "passwd", "SECRET")
    sync = OutputsSync(store, wd)
    walk = sync._tree.walk

    def walk_then_swap() -> object:
        listed = walk()
        shutil.rmtree(wd / "outputs" / "sub")
        os.symlink(str(elsewhere.parent), wd / "outputs" / "sub")
        return listed

    monkeypatch.setattr(sync._tree, "walk", walk_then_swap)
    assert sync.scan(final=True) == []
    assert h(b"SECRET") not in blobs(store)


def test_fifos_sockets_and_devices_are_skipped(store: LocalStore, wd: Path) -> None:
    out = wd / "outputs"
    os.mkfifo(out / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(out / "sock"))
    write(out / "real.txt", "real")
    expected = {"outputs/fifo": "a FIFO", "outputs/sock": "a socket"}
    if os.geteuid() == 0:
        os.mknod(out / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        expected["outputs/null"] = "a device file"
    os.symlink("fifo", out / "to-fifo")
    try:
        sync = OutputsSync(store, wd)
        assert [r.name for r in sync.scan(final=True)] == ["outputs/real.txt"]  # and no hang on the FIFO
        issues = issues_by_name(sync.issues)
        for name, kind in expected.items():
            assert issues[name].kind == SKIPPED and kind in issues[name].reason
        assert "a link to a FIFO" in issues["outputs/to-fifo"].reason
    finally:
        sock.close()


def test_an_unreadable_file_is_reported_not_fatal(store: LocalStore, wd: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES simulated for one path (root reads everything); the real thing runs as nobody below."""
    write(wd / "outputs" / "ok.txt", "ok")
    locked = write(wd / "outputs" / "locked.txt", "no")
    real_open = os.open

    def deny(path: str, flags: int, *args: object, **kw: object) -> int:
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(artifacts.os, "open", deny)
    sync = OutputsSync(store, wd)
    assert [r.name for r in sync.scan(final=True)] == ["outputs/ok.txt"]
    assert sync.issues == [ArtifactIssue("outputs/locked.txt", UNREADABLE, "Permission denied")]
    monkeypatch.setattr(artifacts.os, "open", real_open)
    assert [r.name for r in sync.scan(final=True)] == ["outputs/locked.txt"]  # retried, then stored
    assert sync.issues == []


def test_names_that_cannot_be_artifact_names_are_skipped(store: LocalStore, wd: Path) -> None:
    write(wd / "outputs" / "back\\slash.txt", "b")
    with open(os.path.join(os.fsencode(wd / "outputs"), b"latin1-\xe9.txt"), "wb") as fh:
        fh.write(b"l")
    write(wd / "outputs" / "fine.txt", "f")
    sync = OutputsSync(store, wd)
    records = sync.scan(final=True)
    assert [r.name for r in records] == ["outputs/fine.txt"]
    for r in records:
        check_name(r.name, "outputs")
    reasons = sorted(i.reason for i in sync.issues)
    assert reasons == ["its name has a backslash, which artifact names cannot hold", "its name is not valid UTF-8"]
    assert "outputs/latin1-\\xe9.txt" in [i.name for i in sync.issues]


# -- as an unprivileged user (real permission errors) ---------------------------------

AS_USER = r"""
import json, sys
from runyard.agent.artifacts import OutputsSync
from runyard.store.local import LocalStore
sync = OutputsSync(LocalStore.open(sys.argv[1]), sys.argv[2])
recs = sync.scan(final=True)
print(json.dumps({"records": [r.name for r in recs], "issues": [[i.name, i.kind, i.reason] for i in sync.issues]}))
"""


def test_really_unreadable_files_and_folders_as_nobody(shared_dir: Path) -> None:
    cmd = nobody_python("runyard.agent.artifacts")
    if cmd is None:
        pytest.skip("needs root, setpriv and a Python nobody can run (the simulated EACCES test covers the rest)")
    prefix, env = cmd
    wd = shared_dir / "wd"
    write(wd / "outputs" / "ok.txt", "ok")
    write(wd / "outputs" / "secret.txt", "secret").chmod(0o600)
    write(wd / "outputs" / "locked" / "inner.txt", "inner")
    (wd / "outputs" / "locked").chmod(0o700)
    for d in (wd, wd / "outputs"):
        d.chmod(0o755)
    store_root = shared_dir / "store"
    LocalStore.open(str(store_root))
    subprocess.run(["chown", "-R", "65534:65534", str(store_root)], check=True)
    p = subprocess.run([*prefix, "-c", AS_USER, str(store_root), str(wd)], capture_output=True, text=True,
                       env=env, cwd="/", timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["records"] == ["outputs/ok.txt"]
    assert out["issues"] == [["outputs/locked/", UNREADABLE, "Permission denied"],
                             ["outputs/secret.txt", UNREADABLE, "Permission denied"]]


# -- ./logs --------------------------------------------------------------------------


@pytest.fixture
def mirror(wd: Path, tmp_path: Path) -> LogsMirror:
    return LogsMirror(wd / "logs", tmp_path / "mirror")


def test_logs_are_appended_as_they_grow(mirror: LogsMirror, wd: Path, tmp_path: Path) -> None:
    log = wd / "logs" / "train.log"
    write(log, "epoch 1\n")
    assert mirror.scan() == ["logs/train.log"]
    assert (tmp_path / "mirror" / "train.log").read_bytes() == b"epoch 1\n"
    with open(log, "ab") as fh:
        fh.write(b"epoch 2\nhalf a li")  # the partial line is mirrored too
    assert mirror.scan() == ["logs/train.log"]
    assert (tmp_path / "mirror" / "train.log").read_bytes() == b"epoch 1\nepoch 2\nhalf a li"
    time.sleep(SETTLE)
    mirror.scan()
    assert mirror.scan() == []  # quiet: not even opened
    assert mirror.resent == 0


def test_appending_writes_only_the_new_bytes(mirror: LogsMirror, wd: Path, tmp_path: Path) -> None:
    log = wd / "logs" / "a.log"
    write(log, "one\n")
    mirror.scan()
    mirrored = tmp_path / "mirror" / "a.log"
    ino = mirrored.stat().st_ino
    # If the mirror were rewritten from the source, these marker bytes would vanish.
    with open(mirrored, "r+b") as fh:
        fh.write(b"ONE")
    with open(log, "ab") as fh:
        fh.write(b"two\n")
    mirror.scan()
    assert mirrored.read_bytes() == b"ONE\ntwo\n" and mirrored.stat().st_ino == ino


def test_a_truncated_log_is_sent_again(mirror: LogsMirror, wd: Path, tmp_path: Path) -> None:
    log = write(wd / "logs" / "a.log", "a long first version\n")
    mirror.scan()
    with open(log, "wb") as fh:  # truncate and write less
        fh.write(b"short\n")
    assert mirror.scan() == ["logs/a.log"]
    assert (tmp_path / "mirror" / "a.log").read_bytes() == b"short\n" and mirror.resent == 1


def test_a_rewritten_log_is_sent_again(mirror: LogsMirror, wd: Path, tmp_path: Path) -> None:
    log = write(wd / "logs" / "a.log", "aaaa\n")
    mirror.scan()
    with open(log, "r+b") as fh:  # same inode, longer, other first bytes
        fh.write(b"bbbbbbbbbb\n")
    mirror.scan()
    assert (tmp_path / "mirror" / "a.log").read_bytes() == b"bbbbbbbbbb\n" and mirror.resent == 1
    # Same first bytes, but the end of what was copied changed (the tail window catches it).
    body = b"H" * (artifacts.WINDOW * 2)
    write(log, body + b"x")
    mirror.scan()
    with open(log, "r+b") as fh:
        fh.seek(len(body))
        fh.write(b"y and more\n")
    mirror.scan()
    assert (tmp_path / "mirror" / "a.log").read_bytes() == body + b"y and more\n"
    # Replaced by another file (another inode).
    tmp = write(wd / "logs" / ".tmp", "replaced " * 100)
    os.replace(tmp, log)
    mirror.scan()
    assert (tmp_path / "mirror" / "a.log").read_bytes() == b"replaced " * 100


def test_hidden_and_nested_logs_and_their_records(mirror: LogsMirror, wd: Path, tmp_path: Path,
                                                  store: LocalStore) -> None:
    write(wd / "logs" / ".hidden.log", "h\n")
    write(wd / "logs" / "rank0" / "worker.log", "w\n")
    write(wd / "logs" / "gone.log", "seen live\n")
    assert sorted(mirror.scan()) == ["logs/.hidden.log", "logs/gone.log", "logs/rank0/worker.log"]
    os.remove(wd / "logs" / "gone.log")  # deleted before the end: stored from the mirror
    with open(wd / "logs" / "rank0" / "worker.log", "a") as fh:
        fh.write("last line, no newline")
    records = mirror.finalize(store)
    assert [r.name for r in records] == ["logs/.hidden.log", "logs/gone.log", "logs/rank0/worker.log"]
    got = {r.name: store.get_bytes(r.digest) for r in records}
    assert got == {"logs/.hidden.log": b"h\n", "logs/gone.log": b"seen live\n",
                   "logs/rank0/worker.log": b"w\nlast line, no newline"}
    assert all(r.size == len(got[r.name]) for r in records)
    assert (tmp_path / "mirror" / "rank0" / "worker.log").read_bytes() == b"w\nlast line, no newline"


def test_finalize_stores_the_exact_file_even_if_a_rewrite_escaped_the_checks(
        mirror: LogsMirror, wd: Path, tmp_path: Path, store: LocalStore) -> None:
    body = b"0123456789" * 2000
    log = write(wd / "logs" / "a.log", body)
    mirror.scan()
    with open(log, "r+b") as fh:  # change a byte between the head and tail windows; same size
        fh.seek(10000)
        fh.write(b"X")
    mirror.scan()
    [rec] = mirror.finalize(store)
    assert store.get_bytes(rec.digest) == log.read_bytes()
    assert (tmp_path / "mirror" / "a.log").read_bytes() == log.read_bytes()


def test_logs_follow_the_same_link_rules(mirror: LogsMirror, wd: Path, tmp_path: Path, store: LocalStore) -> None:
    write(wd / "train.log", "inside the working directory\n")
    os.symlink("/etc/passwd", wd / "logs" / "passwd")
    os.symlink("../train.log", wd / "logs" / "driver.log")
    os.mkfifo(wd / "logs" / "fifo")
    assert mirror.scan() == ["logs/driver.log"]
    assert not (tmp_path / "mirror" / "passwd").exists()
    assert {i.name: i.kind for i in mirror.issues} == {"logs/passwd": SKIPPED, "logs/fifo": SKIPPED}
    assert [r.name for r in mirror.finalize(store)] == ["logs/driver.log"]


def test_logs_mirror_can_be_tailed_by_another_process(mirror: LogsMirror, wd: Path, tmp_path: Path) -> None:
    log = wd / "logs" / "live.log"
    write(log, "")
    mirror.scan()
    reader = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "f = open(sys.argv[1], 'rb'); got = b''\n"
        "deadline = time.time() + 20\n"
        "while b'line 49' not in got and time.time() < deadline:\n"
        "    got += f.read(); time.sleep(0.01)\n"
        "print(got.count(b'\\n'))\n"), str(tmp_path / "mirror" / "live.log")], stdout=subprocess.PIPE, text=True)
    with open(log, "a") as fh:
        for i in range(50):
            fh.write(f"line {i}\n")
            fh.flush()
            mirror.scan()
    out, _ = reader.communicate(timeout=30)
    assert out.strip() == "50"


# -- on a real overlay working directory ---------------------------------------------


def test_outputs_and_logs_of_an_overlay_working_directory(tmp_path: Path, store: LocalStore) -> None:
    from runyard.agent.workdir import OVERLAY, materialize, overlay_available
    from runyard.workspace import Workspace

    if not overlay_available(tmp_path):
        pytest.skip("needs root and overlayfs")
    src = write(tmp_path / "src" / "train.py", "print(1)\n").parent
    ws = Workspace.create(tmp_path / "ws")
    wdir = materialize(ws.open_store(), ws.snapshot(src).id, tmp_path / "run")
    try:
        assert wdir.method == OVERLAY
        write(Path(wdir.path) / "outputs" / "m.bin", b"model")
        os.symlink("../train.py", Path(wdir.path) / "outputs" / "code.py")
        write(Path(wdir.path) / "logs" / "l.log", "log\n")
        recs = OutputsSync(store, wdir.path).scan(final=True)
        assert {r.name: store.get_bytes(r.digest) for r in recs} == {"outputs/m.bin": b"model",
                                                                     "outputs/code.py": b"print(1)\n"}
        logs = LogsMirror(os.path.join(wdir.path, "logs"), tmp_path / "mirror")
        assert [r.name for r in logs.finalize(store)] == ["logs/l.log"]
    finally:
        wdir.cleanup()


def test_a_mirror_that_cannot_be_written_is_reported_and_the_record_still_exact(
        mirror: LogsMirror, wd: Path, tmp_path: Path, store: LocalStore) -> None:
    write(wd / "logs" / "a.log", "line\n")
    write(wd / "logs" / "b.log", "fine\n")
    (tmp_path / "mirror" / "a.log").mkdir(parents=True)  # something in the way on runyard's side
    assert mirror.scan() == ["logs/b.log"]
    [issue] = mirror.issues
    assert issue.name == "logs/a.log" and issue.kind == artifacts.NOT_MIRRORED and "mirror" in issue.reason
    got = {r.name: store.get_bytes(r.digest) for r in mirror.finalize(store)}
    assert got == {"logs/a.log": b"line\n", "logs/b.log": b"fine\n"}
