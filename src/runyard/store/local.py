"""The object store in a local folder: plain ``os`` calls, no fsspec import.

This is the default store and the hot path of ``snapshot create``, so it
avoids everything that costs: one read of each file, hashed in memory and
written once to a temporary name, then renamed into place.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Final

from runyard.errors import StoreError
from runyard.store.base import (
    ObjectStore,
    blob_key,
    check_digest,
    hash_bytes,
    new_hasher,
    parse_store_config,
    store_config,
)

CHUNK: Final = 8 << 20
"""Files up to this size are read whole into a reused buffer; bigger ones are streamed."""
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
BLOB_MODE: Final = 0o644
"""Blobs are never written in place by runyard. They are 0644 (not read-only)
so that a run's working directory can be a hardlinked lower layer of an
overlay mount with the modes the manifest asks for; runs never write them."""


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class LocalStore(ObjectStore):
    """A store in a local directory. ``LocalStore.open(path)`` creates it if needed.

    >>> import tempfile
    >>> s = LocalStore.open(tempfile.mkdtemp())
    >>> d, new = s.put_bytes(b"hello")
    >>> s.get_bytes(d)
    b'hello'
    """

    def __init__(self, root: str, store_id: str) -> None:
        self.root = root
        self.url = root
        self._id = store_id
        self._made: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._tmp = os.path.join(root, "tmp")

    @classmethod
    def open(cls, root: str, *, create: bool = True) -> LocalStore:
        root = os.path.abspath(root)
        cfg = os.path.join(root, "store.json")
        try:
            with open(cfg, "rb") as fh:
                return cls(root, parse_store_config(fh.read().decode("utf-8", "replace"), root))
        except FileNotFoundError:
            if not create:
                raise StoreError(f"No runyard store at {root}. Create one by taking a snapshot.") from None
        except OSError as exc:
            raise StoreError(
                f"Cannot read the store at {root}: {exc.strerror}. Check the path and permissions."
            ) from exc
        try:
            for sub in ("blobs", "snapshots", "tmp"):
                os.makedirs(os.path.join(root, sub), exist_ok=True)
            tmp = os.path.join(root, "tmp", f"store.json.{os.urandom(16).hex()}")
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(store_config(os.urandom(16).hex()))
            try:
                os.link(tmp, cfg)  # never replaces a store.json another process made first
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            with open(cfg, "rb") as fh:
                return cls(root, parse_store_config(fh.read().decode("utf-8", "replace"), root))
        except OSError as exc:
            raise StoreError(
                f"Cannot create a store at {root}: {exc.strerror}. Check the path and permissions."
            ) from exc

    @property
    def store_id(self) -> str:
        return self._id

    def _path(self, digest: str) -> str:
        return os.path.join(self.root, blob_key(digest))

    def has(self, digest: str) -> bool:
        return os.path.exists(self._path(digest))

    def _tmp_name(self, digest: str) -> str:
        return os.path.join(self._tmp, f"{digest[:16]}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}")

    def _install(self, tmp: str, digest: str) -> None:
        final = self._path(digest)
        parent = os.path.dirname(final)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            with self._lock:
                self._made.add(parent)
        os.replace(tmp, final)

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        digest = hash_bytes(data)
        if self.has(digest):
            return digest, False
        self._write_new(digest, data)
        return digest, True

    def _write_new(self, digest: str, data: bytes | memoryview) -> None:
        tmp = self._tmp_name(digest)
        try:
            fd = os.open(tmp, _OPEN_FLAGS, BLOB_MODE)
            os.fchmod(fd, BLOB_MODE)  # exactly, whatever the umask
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            self._install(tmp, digest)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StoreError(f"Cannot write to the store at {self.root}: {exc.strerror}.") from exc

    def _buffer(self) -> memoryview:
        # One reused buffer per thread: fresh multi-megabyte allocations for
        # every file cost page faults that dominate on some VMs.
        buf: memoryview | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = memoryview(bytearray(CHUNK))
        return buf

    def put_reader(self, src: io.FileIO) -> tuple[str, int, bool]:
        view = self._buffer()
        n = _read_full(src, view)
        if n < len(view):
            # The whole file is in the buffer: hash it, write it only if new.
            data = view[:n]
            digest = hash_bytes(data)
            if self.has(digest):
                return digest, n, False
            self._write_new(digest, data)
            return digest, n, True
        return self._put_stream(src, view, n)

    def _put_stream(self, src: io.FileIO, view: memoryview, first: int) -> tuple[str, int, bool]:
        """Hash and write chunk by chunk; what is stored is exactly what was hashed."""
        h = new_hasher()
        tmp = os.path.join(self._tmp, f"stream.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}")
        size = 0
        try:
            fd = os.open(tmp, _OPEN_FLAGS, BLOB_MODE)
            os.fchmod(fd, BLOB_MODE)  # exactly, whatever the umask
            try:
                n = first
                while n:
                    h.update(view[:n])
                    _write_all(fd, view[:n])
                    size += n
                    n = _read_full(src, view)
            finally:
                os.close(fd)
            digest: str = h.hexdigest()
            if self.has(digest):
                os.unlink(tmp)
                return digest, size, False
            self._install(tmp, digest)
            return digest, size, True
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StoreError(f"Cannot write to the store at {self.root}: {exc.strerror}.") from exc

    def get_bytes(self, digest: str) -> bytes:
        check_digest(digest)
        try:
            with open(self._path(digest), "rb", buffering=0) as fh:
                data = fh.readall()
        except FileNotFoundError:
            raise self._missing(digest) from None
        except OSError as exc:
            raise StoreError(f"Cannot read blob {digest[:12]} from {self.root}: {exc.strerror}.") from exc
        return self._verify(digest, data)

    def _quarantine(self, digest: str) -> None:
        os.makedirs(os.path.join(self.root, "quarantine"), exist_ok=True)
        os.replace(self._path(digest), os.path.join(self.root, "quarantine", digest))

    def _exists(self, key: str) -> bool:
        return os.path.exists(os.path.join(self.root, key))

    def _read_text(self, key: str) -> str | None:
        try:
            with open(os.path.join(self.root, key), encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise StoreError(f"{key} in the store at {self.root} is damaged (not UTF-8). "
                             "Restore or delete it.") from exc
        except OSError as exc:
            raise StoreError(f"Cannot read {key} in the store at {self.root}: {exc.strerror}.") from exc

    def _write_text(self, key: str, text: str) -> None:
        final = os.path.join(self.root, key)
        tmp = os.path.join(self._tmp, f"text.{os.getpid()}.{os.urandom(16).hex()}")
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, final)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StoreError(f"Cannot write {key} in the store at {self.root}: {exc.strerror}.") from exc

    def _list(self, prefix: str) -> list[str]:
        try:
            return os.listdir(os.path.join(self.root, prefix))
        except FileNotFoundError:
            return []


def _read_full(src: io.FileIO, view: memoryview) -> int:
    """Fill ``view`` from ``src``; fewer bytes only at the end of the file."""
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
