"""Content-addressed object stores: a local folder, or any fsspec URL.

>>> import tempfile
>>> store = open_store(tempfile.mkdtemp())
>>> digest, _ = store.put_bytes(b"data")
>>> store.get_bytes(digest)
b'data'
"""

from __future__ import annotations

from runyard.store.base import ObjectStore, hash_bytes


def is_local_url(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def open_store(url: str, *, create: bool = True) -> ObjectStore:
    """Open (and by default create) the store at a local path or fsspec URL.

    Local paths use a plain-``os`` implementation; anything with a scheme goes
    through fsspec, imported only then.
    """
    if "://" not in url:
        from runyard.store.local import LocalStore

        return LocalStore.open(url, create=create)
    if url.startswith("file://"):
        from runyard.store.local import LocalStore

        return LocalStore.open(url[len("file://") :], create=create)
    from runyard.store.fs import FsspecStore

    return FsspecStore.open(url, create=create)


__all__ = ["ObjectStore", "hash_bytes", "is_local_url", "open_store"]
