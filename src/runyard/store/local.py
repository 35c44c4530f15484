"""The object store in a local folder: plain ``os`` calls, no fsspec import.

This is the default store and the hot path of ``snapshot create``, so it
avoids everything that costs: one read of each file, hashed in memory and
written once to a temporary name, then renamed into place.
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from typing import Final

from runyard.errors import BlobNotFoundError, StoreError
from runyard.store.base import (
    ObjectStore,
    blob_key,
    check_digest,
    hash_bytes,
    new_hasher,
    parse_store_config,
    store_config,
)

STREAM_ABOVE: Final = 64 << 20
"""Files bigger than this are streamed in chunks instead of read whole."""
CHUNK: Final = 8 << 20
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
BLOB_MODE: Final = 0o444


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
        self._tmp = os.path.join(root, "tmp")

    @classmethod
    def open(cls, root: str, *, create: bool = True) -> LocalStore:
        root = os.path.abspath(root)
        cfg = os.path.join(root, "store.json")
        try:
            with open(cfg, encoding="utf-8") as fh:
                return cls(root, parse_store_config(fh.read(), root))
        except FileNotFoundError:
            if not create:
                raise StoreError(f"No runyard store at {root}. Create one by taking a snapshot.") from None
        except OSError as exc:
            raise StoreError(f"Cannot read the store at {root}: {exc.strerror}.") from exc
        try:
            for sub in ("blobs", "snapshots", "tmp"):
                os.makedirs(os.path.join(root, sub), exist_ok=True)
            tmp = os.path.join(root, "tmp", f"store.json.{uuid.uuid4().hex}")
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(store_config(uuid.uuid4().hex))
            try:
                os.link(tmp, cfg)  # never replaces a store.json another process made first
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            with open(cfg, encoding="utf-8") as fh:
                return cls(root, parse_store_config(fh.read(), root))
        except OSError as exc:
            raise StoreError(f"Cannot create a store at {root}: {exc.strerror}. Check the path and permissions.") from exc

    @property
    def store_id(self) -> str:
        return self._id

    def _path(self, digest: str) -> str:
        return os.path.join(self.root, blob_key(digest))

    def has(self, digest: str) -> bool:
        return os.path.exists(self._path(digest))

    def _tmp_name(self, digest: str) -> str:
        return os.path.join(self._tmp, f"{digest[:16]}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}")

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
        tmp = self._tmp_name(digest)
        try:
            fd = os.open(tmp, _OPEN_FLAGS, BLOB_MODE)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            self._install(tmp, digest)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StoreError(f"Cannot write to the store at {self.root}: {exc.strerror}.") from exc
        return digest, True

    def put_file(self, path: str) -> tuple[str, int, bool]:
        with open(path, "rb", buffering=0) as src:
            if os.fstat(src.fileno()).st_size <= STREAM_ABOVE:
                data = src.readall()
                digest, new = self.put_bytes(data)
                return digest, len(data), new
            return self._put_stream(src)

    def _put_stream(self, src: io.FileIO) -> tuple[str, int, bool]:
        h = new_hasher()
        tmp = os.path.join(self._tmp, f"stream.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}")
        size = 0
        try:
            fd = os.open(tmp, _OPEN_FLAGS, BLOB_MODE)
            try:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while True:
                    n = src.readinto(buf)
                    if not n:
                        break
                    h.update(view[:n])
                    _write_all(fd, view[:n])
                    size += n
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
            raise BlobNotFoundError(
                f"Blob {digest[:12]} is missing from the store at {self.root}. "
                "Take the snapshot again from its source directory to restore it."
            ) from None
        except OSError as exc:
            raise StoreError(f"Cannot read blob {digest[:12]} from {self.root}: {exc.strerror}.") from exc
        return self._verify(digest, data)

    def _read_text(self, key: str) -> str | None:
        try:
            with open(os.path.join(self.root, key), encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"Cannot read {key} in the store at {self.root}: {exc.strerror}.") from exc

    def _write_text(self, key: str, text: str) -> None:
        final = os.path.join(self.root, key)
        tmp = os.path.join(self._tmp, f"text.{os.getpid()}.{uuid.uuid4().hex}")
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


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
