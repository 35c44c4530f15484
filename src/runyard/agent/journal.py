"""The artifact journal: the durable record of a run's live sync.

Each time the supervisor has stored files of ``./outputs`` or ``./logs`` in the
store, it appends their records (name, size, blob digest, mtime) to
``artifacts.jsonl`` in the run's folder, one JSON object a line, and flushes the
file to disk; the run history gets the same records a moment later, off the
supervisor's loop. Should the supervisor die before the history has them,
whoever reaps the run reads the journal and records them
(:mod:`runyard.runs.reaper`). A later line for a name wins (a file written again).

The run's script can write its run folder on the local target, so nothing in
the journal is trusted: a line that is not a well-formed record (a torn last
line, a name with ``..``, a digest that is not a blake3 digest) is skipped.

>>> import tempfile, os
>>> from runyard.history import Artifact
>>> path = os.path.join(tempfile.mkdtemp(), "artifacts.jsonl")
>>> j = ArtifactJournal(path)
>>> j.add([Artifact("outputs/a.txt", 1, "0" * 64, 1.0)])
>>> j.close()
>>> [a.name for a in read_journal(path)]
['outputs/a.txt']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from runyard.errors import RunyardError
from runyard.history import Artifact

Key = tuple[int, int, int, int]
"""A file's (size, mtime_ns, ctime_ns, inode)."""


class ArtifactJournal:
    """Appends artifact records to a journal file (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def add(self, artifacts: Iterable[Artifact], keys: Mapping[str, Key | None] | None = None) -> None:
        """Append ``artifacts`` (whose blobs are in the store already) and flush them to disk.

        ``keys`` gives the stat key (size, mtime_ns, ctime_ns, inode) each
        file had when stored, so that a reaper need not read it again.
        """
        keys = keys or {}
        data = b"".join(
            json.dumps({"name": a.name, "size": a.size, "digest": a.digest, "mtime": a.mtime,
                        **({"key": list(k)} if (k := keys.get(a.name)) else {})},
                       ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"
            for a in artifacts)
        if not data:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_journal(path: str) -> list[Artifact]:
    """The artifacts a journal records (the last record of each name), sorted by name; [] without a journal."""
    return [a for a, _key in _read(path)]


def read_journal_keys(path: str) -> dict[str, tuple[Artifact, Key]]:
    """name -> (artifact, the stat key its file had when stored), for the records that have a key."""
    return {a.name: (a, key) for a, key in _read(path) if key is not None}


def _read(path: str) -> list[tuple[Artifact, Key | None]]:
    found: dict[str, tuple[Artifact, Key | None]] = {}
    try:
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
    except FileNotFoundError:
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            mtime = raw.get("mtime")
            art = Artifact(raw["name"], raw["size"], raw["digest"],
                           float(mtime) if isinstance(mtime, int | float) else None).checked()
            key = raw.get("key")
            ok = isinstance(key, list) and len(key) == 4 and all(type(k) is int for k in key)
        except (ValueError, TypeError, KeyError, AttributeError, RunyardError):
            continue  # a torn last line, or not ours
        found[art.name] = (art, (key[0], key[1], key[2], key[3]) if ok else None)
    return [found[n] for n in sorted(found)]


__all__ = ["ArtifactJournal", "Key", "read_journal", "read_journal_keys"]
