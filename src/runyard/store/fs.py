"""The object store on any fsspec filesystem (``memory://``, ``s3://``, ...).

fsspec and the backend's package are imported only when such a store is
opened. On a filesystem each write goes to ``tmp/`` first and is moved into
place, so a blob appears under its final name only when complete. Object
stores (S3, GCS, Azure Blob) show an object only once its upload completed,
so there a blob is written under its final name directly.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from typing import Any, Final

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

STREAM_ABOVE: Final = 64 << 20
OBJECT_STORES: Final = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_HINTS: Final = {
    "s3": "pip install 'runyard[s3]' (s3fs)",
    "s3a": "pip install 'runyard[s3]' (s3fs)",
    "az": "pip install 'runyard[azure]' (adlfs)",
    "abfs": "pip install 'runyard[azure]' (adlfs)",
    "abfss": "pip install 'runyard[azure]' (adlfs)",
    "gs": "pip install 'runyard[gcs]' (gcsfs)",
    "gcs": "pip install 'runyard[gcs]' (gcsfs)",
}


class FsspecStore(ObjectStore):
    """A store at an fsspec URL."""

    def __init__(self, fs: Any, root: str, url: str, store_id: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url
        self._id = store_id

    @classmethod
    def open(cls, url: str, *, create: bool = True, storage_options: dict[str, Any] | None = None) -> FsspecStore:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
            raise StoreError("fsspec is not installed: pip install fsspec") from exc
        proto = url.split("://", 1)[0] if "://" in url else "file"
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except ImportError as exc:
            hint = _HINTS.get(proto, f"install the fsspec backend for '{proto}://'")
            raise StoreError(f"The store URL {url} needs a package that is not installed: {hint}.") from exc
        except ValueError as exc:
            raise StoreError(f"The store URL {url} is not usable: {exc}. Use a local path or an fsspec URL.") from exc
        return cls.on(fs, root, url, create=create)

    @classmethod
    def on(cls, fs: Any, root: str, url: str, *, create: bool = True) -> FsspecStore:
        """The store at ``root`` of an fsspec filesystem made already (a datastore's)."""
        store = cls(fs, root, url, "")
        key = store._key("store.json")
        try:
            text = fs.cat_file(key).decode("utf-8")
        except FileNotFoundError:
            if not create:
                raise StoreError(f"No runyard store at {url}. Create one by taking a snapshot.") from None
            store._write_text("store.json", store_config(uuid.uuid4().hex))
            text = fs.cat_file(key).decode("utf-8")
        except OSError as exc:
            raise StoreError(f"Cannot reach the store at {url}: {exc}. Check the URL and credentials.") from exc
        store._id = parse_store_config(text, url)
        return store

    @property
    def store_id(self) -> str:
        return self._id

    def _key(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def has(self, digest: str) -> bool:
        return bool(self.fs.exists(self._key(blob_key(digest))))

    @property
    def _direct(self) -> bool:
        """Object stores make an object visible only once its upload is complete,
        so a blob is written under its final name at once: the copy a move
        costs there (and the emulators that lack a server-side move) is saved."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple | list) else (self.fs.protocol,)
        return any(p in OBJECT_STORES for p in protocols)

    def _put_at(self, key: str, data: bytes) -> None:
        if self._direct:
            try:
                self.fs.pipe_file(self._key(key), data)
            except OSError as exc:
                raise StoreError(f"Cannot write {key} to the store at {self.url}: {exc}.") from exc
            return
        tmp = self._key(f"tmp/{uuid.uuid4().hex}")
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, self._key(key))
        except OSError as exc:
            self._remove_quietly(tmp)
            raise StoreError(f"Cannot write {key} to the store at {self.url}: {exc}.") from exc

    def _remove_quietly(self, key: str) -> None:
        """Drop a partial upload under tmp/ (best effort: it never has a final name)."""
        try:
            self.fs.rm_file(key)
        except OSError:
            pass

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        digest = hash_bytes(data)
        if self.has(digest):
            return digest, False
        self._put_at(blob_key(digest), data)
        return digest, True

    def put_reader(self, src: io.FileIO) -> tuple[str, int, bool]:
        if os.fstat(src.fileno()).st_size <= STREAM_ABOVE:
            data = src.readall()
            digest, new = self.put_bytes(data)
            return digest, len(data), new
        # Copy while hashing, so what is uploaded is exactly what was hashed.
        h = new_hasher()
        size = 0
        with tempfile.NamedTemporaryFile(prefix="runyard-blob-") as tmp:
            while chunk := src.read(8 << 20):
                h.update(chunk)
                tmp.write(chunk)
                size += len(chunk)
            tmp.flush()
            digest = h.hexdigest()
            if self.has(digest):
                return digest, size, False
            final = self._key(blob_key(digest))
            tkey = final if self._direct else self._key(f"tmp/{uuid.uuid4().hex}")
            try:
                self.fs.put_file(tmp.name, tkey)
                if tkey != final:
                    self.fs.mv(tkey, final)
            except OSError as exc:
                self._remove_quietly(tkey)
                raise StoreError(f"Cannot upload {src.name} to the store at {self.url}: {exc}.") from exc
            return digest, size, True

    def get_bytes(self, digest: str) -> bytes:
        check_digest(digest)
        try:
            data = self.fs.cat_file(self._key(blob_key(digest)))
        except FileNotFoundError:
            raise self._missing(digest) from None
        except OSError as exc:
            raise StoreError(f"Cannot read blob {digest[:12]} from {self.url}: {exc}.") from exc
        return self._verify(digest, bytes(data))

    def _quarantine(self, digest: str) -> None:
        self.fs.mv(self._key(blob_key(digest)), self._key(f"quarantine/{digest}"))

    def _exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._key(key)))

    def _read_text(self, key: str) -> str | None:
        try:
            return bytes(self.fs.cat_file(self._key(key))).decode("utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"Cannot read {key} from the store at {self.url}: {exc}.") from exc

    def _write_text(self, key: str, text: str) -> None:
        self._put_at(key, text.encode("utf-8"))

    def _list(self, prefix: str) -> list[str]:
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._key(prefix), detail=False)]
        except FileNotFoundError:
            return []
