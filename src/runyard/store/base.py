"""The content-addressed object store: what every backend provides.

Layout (scheme 1), relative to the store's root::

    store.json                  {"format": "runyard-store", "scheme": 1, "hash": "blake3", "id": ...}
    blobs/ab/cdef...            a blob, named by the blake3 hex digest of its bytes
    snapshots/<id>.json         a snapshot's record (source, time, counts); the
                                manifest itself is the blob named <id>
    tmp/                        partial writes, renamed into place when complete

Writes are atomic (a blob appears under its final name only when complete), a
blob already present is not written again, and every read checks the hash.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
from abc import ABC, abstractmethod
from typing import Any, Final

import blake3

from runyard.errors import BlobNotFoundError, NotFoundError, StoreError

SCHEME: Final = 1
HASH_NAME: Final = "blake3"
DIGEST_LEN: Final = 64
_HEX: Final = re.compile(r"[0-9a-f]+")
BIG_INPUT: Final = 1 << 20
"""Inputs at least this big are hashed with all cores."""


def hash_bytes(data: bytes | memoryview) -> str:
    """The store's content hash of ``data`` (blake3, hex).

    >>> hash_bytes(b"")[:16]
    'af1349b9f5f9a1a6'
    """
    if len(data) >= BIG_INPUT:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    return blake3.blake3(data).hexdigest()


def new_hasher() -> Any:
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a full blob name, else raise."""
    if len(digest) != DIGEST_LEN or not _HEX.fullmatch(digest):
        raise StoreError(f"'{digest}' is not a blob name (64 lowercase hex digits).")
    return digest


def open_regular(path: str) -> io.FileIO:
    """Open a local file for reading only if it is a regular file now.

    A symlink is not followed (``ELOOP``) and a FIFO or socket swapped in
    since it was listed does not block (``O_NONBLOCK``) and is refused with
    ``EINVAL``: what is stored is never something other than the file listed.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def blob_key(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest[2:]}"


class ObjectStore(ABC):
    """A content-addressed blob store with snapshot records."""

    url: str

    # -- identity ---------------------------------------------------------
    @property
    @abstractmethod
    def store_id(self) -> str:
        """A random id made when the store was created (keys the stat cache)."""

    # -- blobs --------------------------------------------------------------
    @abstractmethod
    def has(self, digest: str) -> bool:
        """Whether the blob is present."""

    @abstractmethod
    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; returns its digest and whether it was newly written."""

    def put_file(self, path: str) -> tuple[str, int, bool]:
        """Store a local regular file's bytes as read (a symlink is not followed).

        Returns (digest, size, newly written). What is stored is exactly what
        was hashed, even if the file changes while it is read.
        """
        with open_regular(path) as src:
            return self.put_reader(src)

    @abstractmethod
    def put_reader(self, src: io.FileIO) -> tuple[str, int, bool]:
        """Store the rest of an open file, as ``put_file`` does."""

    @abstractmethod
    def get_bytes(self, digest: str) -> bytes:
        """A blob's bytes, verified against its name."""

    def write_to(self, digest: str, dest: str, mode: int) -> None:
        """Write a verified blob to a new local file ``dest`` with ``mode``."""
        import os

        data = self.get_bytes(digest)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
        os.chmod(dest, mode)

    # -- snapshot records ---------------------------------------------------
    @abstractmethod
    def _read_text(self, key: str) -> str | None:
        """The text at ``key`` or None when absent."""

    @abstractmethod
    def _write_text(self, key: str, text: str) -> None:
        """Write ``text`` at ``key`` atomically."""

    @abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Names (not keys) directly under the folder ``prefix``."""

    @abstractmethod
    def _exists(self, key: str) -> bool:
        """Whether something is stored at ``key``."""

    def has_snapshot_record(self, snapshot_id: str) -> bool:
        return self._exists(f"snapshots/{check_digest(snapshot_id)}.json")

    def put_snapshot_record(self, snapshot_id: str, record: dict[str, Any]) -> None:
        self._write_text(f"snapshots/{check_digest(snapshot_id)}.json", json.dumps(record, sort_keys=True, indent=1))

    def get_snapshot_record(self, snapshot_id: str) -> dict[str, Any] | None:
        try:
            text = self._read_text(f"snapshots/{check_digest(snapshot_id)}.json")
        except StoreError:
            return None  # a damaged record only loses the snapshot's description, not the snapshot
        if text is None:
            return None
        try:
            rec = json.loads(text)
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None

    def list_snapshots(self) -> list[str]:
        return sorted(n[:-5] for n in self._list("snapshots") if n.endswith(".json") and len(n) == DIGEST_LEN + 5)

    def resolve_snapshot(self, ref: str) -> str:
        """A full snapshot id from an id or a unique prefix of at least 4 digits."""
        ref = ref.strip().lower()
        if len(ref) == DIGEST_LEN and _HEX.fullmatch(ref):
            if self.has_snapshot_record(ref):
                return ref
            if self.has(ref):
                raise NotFoundError(f"'{ref[:12]}...' names a file's content in the store at {self.url}, not a "
                                    "snapshot. List snapshots with 'runyard snapshot list'.")
            raise NotFoundError(f"No snapshot '{ref}' in the store at {self.url}. "
                                "List them with 'runyard snapshot list'.")
        if len(ref) < 4 or not _HEX.fullmatch(ref):
            raise NotFoundError(f"'{ref}' is not a snapshot id: give the id (64 hex digits) or "
                                "at least its first 4 digits.")
        hits = [s for s in self.list_snapshots() if s.startswith(ref)]
        if not hits:
            raise NotFoundError(f"No snapshot id starts with '{ref}' in the store at {self.url}. "
                                "List them with 'runyard snapshot list'.")
        if len(hits) > 1:
            raise NotFoundError(f"'{ref}' is ambiguous: {len(hits)} snapshots start with it "
                                f"({', '.join(h[:12] for h in hits[:5])}...). Give more digits.")
        return hits[0]

    # -- losing blobs -------------------------------------------------------
    # Stat caches vouch for a file's digest, not for its blob. When the store
    # finds a blob missing or corrupt it bumps its generation; caches are keyed
    # by it, so the next snapshot reads and stores every file again instead of
    # naming a blob the store no longer has.

    def generation(self) -> int:
        """How many times this store has noticed a lost blob."""
        try:
            text = self._read_text("generation")
            return int(text) if text else 0
        except (ValueError, StoreError):
            return 0  # damaged: treated as a change, which only costs a re-read

    def _note_lost(self) -> None:
        try:
            self._write_text("generation", f"{self.generation() + 1}\n")
        except StoreError:
            pass

    @abstractmethod
    def _quarantine(self, digest: str) -> None:
        """Move a corrupt blob out of the way (it is kept for inspection)."""

    def _missing(self, digest: str) -> BlobNotFoundError:
        self._note_lost()
        return BlobNotFoundError(
            f"Blob {digest[:12]} is missing from the store at {self.url}. "
            "Take the snapshot again from its source directory to store it again."
        )

    def quarantine_location(self, digest: str) -> str:
        """Where a corrupt blob is moved: ``<store>/quarantine/<digest>``."""
        return f"{self.url.rstrip('/')}/quarantine/{digest}"

    def _verify(self, digest: str, data: bytes) -> bytes:
        """``data`` if it hashes to ``digest``; else the blob is quarantined and
        ``CorruptBlobError`` raised. Its message gives the snapshot advice (most
        blobs are snapshot files); readers of other blobs (a run's artifacts)
        catch it and say what the blob was (``digest`` and ``quarantined`` help)."""
        from runyard.errors import CorruptBlobError

        got = hash_bytes(data)
        if got != digest:
            where: str | None = self.quarantine_location(digest)
            try:
                self._quarantine(digest)
            except OSError:
                where = None
            self._note_lost()
            moved = (f"it was moved to {where} for inspection" if where
                     else "it could not be moved to quarantine/, so it is still in place")
            err = CorruptBlobError(
                f"Blob {digest[:12]} in the store at {self.url} is corrupt (its content hashes to "
                f"{got[:12]}, not to its name); {moved}, and the stored copy is lost. If it is a file of a "
                "snapshot: Take the snapshot again from its source directory (runyard snapshot create DIR) to "
                "store the file again, then retry."
            )
            err.digest, err.quarantined = digest, where
            raise err
        return data


def store_config(store_id: str) -> str:
    return json.dumps({"format": "runyard-store", "scheme": SCHEME, "hash": HASH_NAME, "id": store_id},
                      indent=1) + "\n"


def parse_store_config(text: str, url: str) -> str:
    """The store id from ``store.json``; raises if the scheme is not ours."""
    try:
        cfg = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"The store at {url} has a damaged store.json. Restore it or use another store.") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != "runyard-store":
        raise StoreError(f"{url} is not a runyard store (store.json has no runyard format marker).")
    if cfg.get("scheme") != SCHEME or cfg.get("hash") != HASH_NAME:
        raise StoreError(
            f"The store at {url} uses scheme {cfg.get('scheme')} with {cfg.get('hash')}; this runyard "
            f"reads scheme {SCHEME} with {HASH_NAME}. Upgrade runyard or use another store."
        )
    return str(cfg.get("id", ""))
