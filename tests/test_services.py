"""The real storage services the data layer is tested against (tests/services.py)
start, answer the filesystems runyard uses, and leave nothing running; and
FUSE mounts work where fuse_available() says so."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import services
from services import Azurite, MotoS3, fuse_available, requires_fuse

VALID_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")  # containers and buckets alike


def test_azurite_blob_round_trip_with_adlfs(azurite: Azurite) -> None:
    from adlfs import AzureBlobFileSystem

    assert azurite.host == "127.0.0.1"
    assert azurite.account_name == "devstoreaccount1"
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
    assert azurite.connection_string == (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={azurite.account_key};BlobEndpoint={azurite.blob_endpoint};")

    container = azurite.new_container()
    assert VALID_NAME.match(container), container
    fs = AzureBlobFileSystem(connection_string=azurite.connection_string, skip_instance_cache=True)
    fs.pipe(f"{container}/dir/hello.txt", b"hello azurite\n")
    with fs.open(f"{container}/dir/big.bin", "wb") as f:
        f.write(os.urandom(10) * 100_000)
    assert fs.cat(f"{container}/dir/hello.txt") == b"hello azurite\n"
    assert fs.size(f"{container}/dir/big.bin") == 1_000_000
    assert sorted(fs.ls(f"{container}/dir", detail=False)) == [f"{container}/dir/big.bin", f"{container}/dir/hello.txt"]

    other = azurite.new_container()
    assert other != container
    assert fs.ls(other, detail=False) == []


def test_moto_s3_round_trip_with_s3fs(moto_s3: MotoS3) -> None:
    from s3fs import S3FileSystem

    assert moto_s3.endpoint_url == f"http://127.0.0.1:{moto_s3.port}"
    assert (moto_s3.access_key, moto_s3.secret_key, moto_s3.region) == ("testing", "testing", "us-east-1")

    bucket = moto_s3.new_bucket()
    assert VALID_NAME.match(bucket), bucket
    fs = S3FileSystem(key=moto_s3.access_key, secret=moto_s3.secret_key,
                      client_kwargs={"endpoint_url": moto_s3.endpoint_url}, skip_instance_cache=True)
    fs.pipe(f"{bucket}/dir/hello.txt", b"hello moto\n")
    assert fs.cat(f"{bucket}/dir/hello.txt") == b"hello moto\n"
    assert fs.ls(f"{bucket}/dir", detail=False) == [f"{bucket}/dir/hello.txt"]

    # The same object, seen by boto3 and through storage_options.
    client = moto_s3.client()
    try:
        assert client.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == b"hello moto\n"
    finally:
        client.close()
    fs2 = S3FileSystem(**moto_s3.storage_options, skip_instance_cache=True)  # type: ignore[arg-type]
    assert fs2.cat(f"{bucket}/dir/hello.txt") == b"hello moto\n"
    made = services._unique_name("s3fs", "b")
    fs2.mkdir(made)  # the region is in botocore's config, so no LocationConstraint, which moto would reject
    assert fs2.exists(made)


@pytest.mark.parametrize("prefix", ["c", "b", "", "My_Data..Set--v2", "-x-", "a" * 100, "ÄÖ ü"])
def test_new_names_are_valid_containers_and_buckets(prefix: str) -> None:
    names = {services._unique_name(prefix, "c") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert VALID_NAME.match(name), name


def test_unavailable_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no widget"):
        services.unavailable("no widget")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no widget.*CI=true"):
        services.unavailable("no widget")


def test_a_service_is_stopped_when_its_context_ends() -> None:
    def argv(port: int, tmp: Path) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(tmp)]

    with services._serve("http", argv) as (_port, tmp):
        (proc,) = [p for p in services._running.values() if p.args == argv(_port, tmp)]
        assert proc.poll() is None
    assert proc.poll() is not None
    assert not tmp.exists()


def test_a_service_dies_with_a_test_process_killed_without_cleanup(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import services
        proc = services._start([sys.executable, "-c", "import time; time.sleep(120)"], {str(tmp_path / "log")!r})
        print(proc.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the service outlived the killed test process")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


FUSE_SCRIPT = textwrap.dedent("""
    import errno, stat, sys
    from fuse import FUSE, FuseOSError, Operations

    DATA = b"hello fuse\\n"

    class One(Operations):
        def getattr(self, path, fh=None):
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if path == "/hello.txt":
                return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": len(DATA)}
            raise FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            return [".", "..", "hello.txt"]

        def read(self, path, size, offset, fh):
            return DATA[offset:offset + size]

    FUSE(One(), sys.argv[1], foreground=True, nothreads=True, ro=True)
""")


def test_fuse_available_here() -> None:
    ok, reason = fuse_available()
    assert isinstance(ok, bool) and reason
    if not ok:
        services.unavailable(f"FUSE: {reason}")  # fails under CI


@requires_fuse
def test_a_fusepy_filesystem_mounts_and_reads(shared_dir: Path) -> None:
    mnt = shared_dir / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", FUSE_SCRIPT, str(mnt)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"the FUSE filesystem exited with {proc.returncode} before mounting:\n{out}")
            assert time.monotonic() < deadline, "the FUSE filesystem did not mount within 20 s"
            time.sleep(0.05)
        assert os.listdir(mnt) == ["hello.txt"]
        assert (mnt / "hello.txt").read_bytes() == b"hello fuse\n"
        _unmount(mnt)
        assert proc.wait(10) == 0
    finally:
        if os.path.ismount(mnt):
            _unmount(mnt, lazy=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _unmount(mnt: Path, lazy: bool = False) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        subprocess.run([tool, "-u", *(["-z"] if lazy else []), str(mnt)], check=True)
    else:
        subprocess.run(["umount", *(["-l"] if lazy else []), str(mnt)], check=True)
