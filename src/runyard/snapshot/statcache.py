"""A stat cache like git's index: skip re-reading files that did not change.

For each file it keeps the ``stat`` data seen when the file was hashed (size,
mtime, ctime, inode, executable bit) and the digest. A file whose ``stat`` is
the same on the next snapshot is not read again.

git's racy-timestamp rule applies: a file modified too close to the moment its
entry was recorded could change again within the same timestamp tick without
its ``stat`` changing, so such an entry is never trusted; the file is hashed
again next time (and only then, once the tick is safely in the past, trusted).
One cache per (source directory, store): deleting it only costs a re-read.
"""

from __future__ import annotations

import marshal
import os
import re
from typing import Final

from runyard.store.base import hash_bytes

VERSION: Final = 2
"""Bumped whenever the format changes (2: marshal instead of JSON)."""
_DIGEST: Final = re.compile("[0-9a-f]{64}")
RACY_WINDOW_NS: Final = 2_000_000_000
"""Timestamps this close to the cache's start time are not trusted: it covers
coarse kernel clocks and filesystems that keep whole (or even) seconds."""

Key = tuple[int, int, int, int, bool]
"""(size, mtime_ns, ctime_ns, inode, executable)."""


def cache_path(cache_dir: str, source: str, store_id: str) -> str:
    name = hash_bytes(f"{source}\0{store_id}".encode("utf-8", "surrogateescape"))[:32]
    return os.path.join(cache_dir, f"stat-{name}.bin")


def load(path: str) -> dict[str, tuple[Key, str]]:
    """Trusted entries of the cache at ``path``; empty if missing or damaged."""
    try:
        with open(path, "rb") as fh:
            version, started_ns, entries = marshal.loads(fh.read())
        if version != VERSION:
            return {}
        horizon = int(started_ns) - RACY_WINDOW_NS
        out: dict[str, tuple[Key, str]] = {}
        is_digest = _DIGEST.fullmatch
        for rel, (size, mtime, ctime, ino, exe, digest) in entries.items():
            if (type(rel) is not str or type(digest) is not str or not is_digest(digest) or type(size) is not int
                    or type(mtime) is not int or type(ctime) is not int or type(ino) is not int):
                return {}  # damaged (or written by something else): trust none of it
            if mtime < horizon and ctime < horizon:
                out[rel] = ((size, mtime, ctime, ino, bool(exe)), digest)
        return out
    except Exception:  # any damage means an empty cache: it only costs a re-read
        return {}


def save(path: str, entries: dict[str, tuple[Key, str]], started_ns: int) -> None:
    """Write the cache atomically; a failure to write it is not an error."""
    doc = (VERSION, started_ns, {rel: (*key, digest) for rel, (key, digest) in entries.items()})
    tmp = f"{path}.{os.urandom(8).hex()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(marshal.dumps(doc))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
