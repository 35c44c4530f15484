"""Real storage services for the tests, each started once per session on
127.0.0.1 and stopped at its end:

- ``azurite``: Azurite's Blob service (Azure Blob Storage), from npm, pinned in
  ``tests/services/package-lock.json`` and installed there by ``./dev test``;
- ``moto_s3``: a moto server (S3), from the test requirements;
- ``gcs``: a gcp-storage-emulator (Google Cloud Storage), from the test requirements;
- ``postgres``: a PostgreSQL server in a fresh cluster (``initdb``), from
  Debian's ``postgresql`` package (``./dev test`` installs it as root), with
  psycopg from the test requirements.

And whether FUSE mounts can work here: ``fuse_available()``, and the
``requires_fuse`` mark (``@requires_fuse`` on a test or a class).

A service that cannot be started for want of something installed skips the
tests that need it, saying what to run; under CI (``CI=true``) they fail
instead: CI must never pass by silently skipping the real services. A service
that is installed but does not come up is an error, with the end of its log.

No server outlives the session: each is stopped when the session ends (also
when it is interrupted), at interpreter exit, and, on Linux, by the kernel
when the test process dies without cleaning up (even by SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import glob
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

HERE = Path(__file__).resolve().parent
SERVICES_DIR = HERE / "services"
AZURITE_BIN = SERVICES_DIR / "node_modules" / ".bin" / "azurite-blob"

#: Azurite's well-known development account and key (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

requires_fuse = pytest.mark.fuse
"""Mark for tests that mount with FUSE: they skip (fail under CI) where
``fuse_available()`` says no. Registered in pyproject.toml; applied by the
``pytest_runtest_setup`` hook below, which conftest.py imports."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the current test, or fail it under CI, where real services must run."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: tests of real services must not be skipped)", pytrace=False)
    pytest.skip(reason)


# --- processes ----------------------------------------------------------------

_running: dict[int, subprocess.Popen[bytes]] = {}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """In the child, before exec: the kernel sends it SIGTERM when the test
    process dies, even by SIGKILL, so no server is left behind."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _start(argv: Sequence[str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a server writing to ``log``; ``popen`` are more Popen arguments (``cwd``,
    ``user``: the user is switched before _die_with_parent, which a change of user
    would undo)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole; Ctrl-C does not reach it
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            **popen,
        )
    _running[proc.pid] = proc
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process and its group, then kill them if they linger."""
    _running.pop(proc.pid, None)
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Whatever it started in its group goes too, even once the leader is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@atexit.register
def _stop_all() -> None:
    for proc in list(_running.values()):
        _stop(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} before it answered on "
                               f"127.0.0.1:{port}; the end of its log:\n{_log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer on 127.0.0.1:{port} within {STARTUP_TIMEOUT:.0f} s; "
                               f"the end of its log:\n{_log_tail(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def _serve(name: str, argv_for_port: Callable[[int, Path], list[str]],
           base: Path | None = None) -> Iterator[tuple[int, Path]]:
    """Start a server on a free port in a fresh temporary folder (under
    ``base``, pytest's, so what a killed session leaves is rotated away);
    yield (port, folder) once it answers; stop it and remove the folder
    afterwards. A port taken between choosing and binding it is retried."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in itertools.count(1):
            port = free_port()
            log = tmp / f"{name}.log"
            proc = _start(argv_for_port(port, tmp), log)
            try:
                _wait_for_port(proc, port, name, log)
                break
            except RuntimeError:
                _stop(proc)
                proc = None
                tail = _log_tail(log)
                if attempt >= 3 or not ("EADDRINUSE" in tail or "in use" in tail):
                    raise
        yield port, tmp
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# --- Azurite --------------------------------------------------------------------

_CONTAINER_CHARS = re.compile(r"[^a-z0-9]+")
_names = itertools.count()


def _unique_name(prefix: str, default: str) -> str:
    """A fresh name valid as an Azure container and an S3 bucket: 3-63
    characters, lowercase letters, digits and single hyphens, starting and
    ending with a letter or digit."""
    stem = _CONTAINER_CHARS.sub("-", prefix.lower()).strip("-") or default
    suffix = f"{next(_names)}-{uuid.uuid4().hex[:10]}"
    return f"{stem[: 63 - len(suffix) - 1].rstrip('-')}-{suffix}"


@dataclass(frozen=True)
class Azurite:
    """A running Azurite Blob service."""

    host: str
    port: int
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY
    log_path: Path | None = field(default=None, compare=False)

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
                f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};")

    @property
    def storage_options(self) -> dict[str, str]:
        """What to pass to ``adlfs.AzureBlobFileSystem`` (or fsspec) to reach it."""
        return {"connection_string": self.connection_string}

    def new_container(self, prefix: str = "c") -> str:
        """Create a container with a fresh name; return the name."""
        from azure.storage.blob import BlobServiceClient

        name = _unique_name(prefix, "c")
        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.create_container(name)
        return name


def _azurite_missing() -> str | None:
    if shutil.which("node") is None:
        return "Azurite needs Node.js 20.6+ with npm (e.g. apt-get install nodejs npm), then `./dev test` installs it"
    if not AZURITE_BIN.exists():
        return "Azurite is not installed in tests/services/: run `./dev test` (it runs npm ci there)"
    try:
        import azure.storage.blob  # noqa: F401
    except ImportError:
        return "azure-storage-blob is not installed: run `./dev test` (it installs requirements/test.lock)"
    return None


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's Blob service on 127.0.0.1, for the whole session. Set
    AZURITE_DEBUG_LOG to a file name to keep its debug log there."""
    missing = _azurite_missing()
    if missing:
        unavailable(missing)

    def argv(port: int, tmp: Path) -> list[str]:
        data = tmp / "data"
        data.mkdir(exist_ok=True)
        debug = os.environ.get("AZURITE_DEBUG_LOG")  # a file to keep Azurite's request-by-request log in
        return [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
                "--skipApiVersionCheck", "--loose", "--silent", *(["--debug", debug] if debug else [])]

    with _serve("azurite", argv, tmp_path_factory.getbasetemp()) as (port, tmp):
        yield Azurite(host="127.0.0.1", port=port, log_path=tmp / "azurite.log")


# --- moto S3 --------------------------------------------------------------------

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@dataclass(frozen=True)
class MotoS3:
    """A running moto server, used for S3."""

    host: str
    port: int
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"
    log_path: Path | None = field(default=None, compare=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def storage_options(self) -> dict[str, object]:
        """What to pass to ``s3fs.S3FileSystem`` (or fsspec) to reach it. The
        region goes in botocore's config, not in client_kwargs: with
        client_kwargs' region_name, s3fs's mkdir sends a LocationConstraint,
        which S3 (and moto) reject for us-east-1."""
        return {"key": self.access_key, "secret": self.secret_key,
                "client_kwargs": {"endpoint_url": self.endpoint_url},
                "config_kwargs": {"region_name": self.region}}

    def client(self) -> Any:
        """A boto3 S3 client for it."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def new_bucket(self, prefix: str = "b") -> str:
        """Create a bucket with a fresh name; return the name."""
        name = _unique_name(prefix, "b")
        client = self.client()
        try:
            # No CreateBucketConfiguration: a LocationConstraint of us-east-1 is an error.
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name


def _moto_missing() -> str | None:
    if not MOTO_SERVER.exists():
        return (f"moto_server is not installed next to {sys.executable}: "
                "run `./dev test` (moto[server] is in requirements/test.lock)")
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed: run `./dev test` (it installs requirements/test.lock)"
    return None


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server on 127.0.0.1, for the whole session."""
    missing = _moto_missing()
    if missing:
        unavailable(missing)

    def argv(port: int, tmp: Path) -> list[str]:
        return [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)]

    with _serve("moto", argv, tmp_path_factory.getbasetemp()) as (port, tmp):
        yield MotoS3(host="127.0.0.1", port=port, log_path=tmp / "moto.log")


# --- GCS (gcp-storage-emulator) ---------------------------------------------------

GCS_EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"


@dataclass(frozen=True)
class GcsEmulator:
    """A running gcp-storage-emulator (in memory), used for Google Cloud Storage."""

    host: str
    port: int
    project: str = "runyard-test"
    log_path: Path | None = field(default=None, compare=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def filesystem(self) -> Any:
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.endpoint_url, token="anon", project=self.project,
                                   skip_instance_cache=True)

    def new_bucket(self, prefix: str = "g") -> str:
        name = _unique_name(prefix, "g")
        self.filesystem().mkdir(name)
        return name


def _gcs_missing() -> str | None:
    if not GCS_EMULATOR.exists():
        return (f"gcp-storage-emulator is not installed next to {sys.executable}: "
                "run `./dev test` (it is in requirements/test.lock)")
    return None


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A GCS emulator on 127.0.0.1, for the whole session.

    gcsfs asks a gRPC endpoint for a bucket's type unless
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT is false; an emulator has none (60 s
    timeout), so it is set false here, before gcsfs is imported."""
    missing = _gcs_missing()
    if missing:
        unavailable(missing)
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

    def argv(port: int, tmp: Path) -> list[str]:
        return [str(GCS_EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]

    with _serve("gcs", argv, tmp_path_factory.getbasetemp()) as (port, tmp):
        yield GcsEmulator(host="127.0.0.1", port=port, log_path=tmp / "gcs.log")


# --- PostgreSQL -------------------------------------------------------------------

PG_SUPERUSER = "runyard"
"""The cluster's superuser (initdb -U); it connects without a password (trust) over 127.0.0.1."""
PG_PROGRAMS = ("initdb", "pg_ctl", "postgres")
#: The account PostgreSQL runs as when the tests run as root: initdb and postgres refuse
#: root. nobody, as in tests/unprivileged.py.
NOBODY_UID = NOBODY_GID = 65534


def pg_bindir() -> Path | None:
    """The folder of PostgreSQL's server programs: the newest Debian
    ``/usr/lib/postgresql/N/bin`` (they are not on PATH there), else where
    ``pg_ctl`` is on PATH (other systems); None when there is none."""
    found: list[tuple[int, str]] = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(d).parent.name
        if version.isdigit() and all(os.access(os.path.join(d, p), os.X_OK) for p in PG_PROGRAMS):
            found.append((int(version), d))
    if found:
        return Path(max(found)[1])
    on_path = shutil.which("pg_ctl")
    if on_path and all(os.access(os.path.join(os.path.dirname(on_path), p), os.X_OK) for p in PG_PROGRAMS):
        return Path(on_path).parent
    return None


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server (a throwaway cluster, no fsync)."""

    host: str
    port: int
    user: str = PG_SUPERUSER
    socket_dir: Path | None = field(default=None, compare=False)
    log_path: Path | None = field(default=None, compare=False)

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy URL of a database on it: ``postgresql+psycopg://USER@HOST:PORT/DBNAME``."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        """A psycopg connection (autocommit) to a database on it."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=dbname, autocommit=True,
                               connect_timeout=10)

    def new_database(self, prefix: str = "runyard") -> str:
        """Create a database with a fresh name; return its URL."""
        from psycopg import sql

        name = _unique_name(prefix, "db").replace("-", "_")  # at most 63 characters, as PostgreSQL allows
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def _postgres_missing() -> str | None:
    if pg_bindir() is None:
        return ("PostgreSQL's server (initdb, pg_ctl, postgres) is not installed: run `./dev test` as root "
                "(it installs Debian's postgresql), or apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: run `./dev test` (it installs requirements/test.lock)"
    return None


def _pg_owner() -> dict[str, Any]:
    """Popen arguments that run a PostgreSQL program as nobody when we are root; none otherwise."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY_UID, "group": NOBODY_GID, "extra_groups": []}


def _pg_stop(bindir: Path, data: Path, proc: subprocess.Popen[bytes]) -> None:
    """``pg_ctl stop -m fast`` (clients disconnected, clean shutdown), then make sure: the
    server's process group is killed if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w",
                            "-t", str(int(STOP_TIMEOUT))], cwd=data.parent, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=STOP_TIMEOUT + 5, **_pg_owner())
    _stop(proc)


def _pg_wait(proc: subprocess.Popen[bytes], pg: Postgres, log: Path) -> None:
    """Wait until the server accepts connections (a listening port is not enough: it
    answers "the database system is starting up" for a while)."""
    import psycopg

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with code {proc.returncode} before it accepted connections on "
                               f"127.0.0.1:{pg.port}; the end of its log:\n{_log_tail(log)}")
        try:
            with psycopg.connect(host=pg.host, port=pg.port, user=pg.user, dbname="postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres did not accept connections on 127.0.0.1:{pg.port} within "
                               f"{STARTUP_TIMEOUT:.0f} s; the end of its log:\n{_log_tail(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster in a temporary folder, served on 127.0.0.1 on a free
    port (its unix socket in that folder); stopped and removed afterwards.

    As root, the folder belongs to nobody and every PostgreSQL program runs as
    nobody. The folder is made in the system's temporary folder, not pytest's:
    root's is private, nobody could not reach it.

    ``postgres`` is started directly, as a child of this process in its own
    process group (as the other services: so the kernel stops it if this
    process dies, even by SIGKILL, and Ctrl-C does not reach it), with the
    options ``pg_ctl start -o`` would pass; ``pg_ctl stop -m fast`` stops it at
    the end, or at interpreter exit. (``pg_ctl start`` detaches the server into
    a session of its own, which nothing would stop if this process died.)
    """
    bindir = pg_bindir()
    assert bindir is not None
    owner = _pg_owner()
    tmp = Path(tempfile.mkdtemp(prefix="runyard-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    data = tmp / "data"
    stop_at_exit: Callable[[], None] | None = None
    try:
        if owner:
            os.chown(tmp, owner["user"], owner["group"])
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8",
             "--locale=C", "--no-sync"],
            cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, **owner,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed with code {initdb.returncode}:\n{initdb.stdout}{initdb.stderr}")
        for attempt in itertools.count(1):
            port = free_port()
            log = tmp / "postgres.log"
            pg = Postgres(host="127.0.0.1", port=port, socket_dir=tmp, log_path=log)
            proc = _start([str(bindir / "postgres"), "-D", str(data), "-k", str(tmp), "-h", "127.0.0.1",
                           "-p", str(port), "-F", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                          log, cwd=tmp, **owner)
            try:
                _pg_wait(proc, pg, log)
                break
            except RuntimeError:
                _pg_stop(bindir, data, proc)
                proc = None
                if attempt >= 3 or "in use" not in _log_tail(log):
                    raise
        stop_at_exit = functools.partial(_pg_stop, bindir, data, proc)
        atexit.register(stop_at_exit)
        yield pg
    finally:
        if proc is not None:
            _pg_stop(bindir, data, proc)
        if stop_at_exit is not None:
            atexit.unregister(stop_at_exit)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1, for the whole session; ``new_database()``
    gives each test a database of its own."""
    missing = _postgres_missing()
    if missing:
        unavailable(missing)
    with postgres_server() as pg:
        yield pg


# --- FUSE -----------------------------------------------------------------------


def fuse_available() -> tuple[bool, str]:
    """Whether a FUSE filesystem can be mounted here with fusepy, and if not, why."""
    if not os.path.exists("/dev/fuse"):
        return False, "no /dev/fuse (FUSE is not available in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False, "/dev/fuse is not readable and writable by this user"
    try:
        import fuse  # noqa: F401  (fusepy: loads libfuse.so.2 on import)
    except ImportError:
        return False, "fusepy is not installed: run `./dev test` (it installs requirements/test.lock)"
    except OSError as e:  # fusepy raises EnvironmentError when it finds no libfuse
        return False, f"libfuse.so.2 cannot be loaded ({e}): install libfuse2 (`./dev test` does, as root)"
    if os.geteuid() != 0 and not (shutil.which("fusermount") or shutil.which("fusermount3")):
        return False, "not root and no fusermount: install fuse3 (`./dev test` does, as root)"
    return True, "FUSE is available"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (fail under CI) tests marked ``requires_fuse`` where FUSE cannot work."""
    if item.get_closest_marker("fuse") is not None:
        ok, reason = fuse_available()
        if not ok:
            unavailable(f"FUSE: {reason}")
