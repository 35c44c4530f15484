"""The canonical manifest of a snapshot, and its id.

A manifest is UTF-8 JSON with sorted keys and no spaces, one entry per path,
sorted by the path's UTF-8 bytes (git's order)::

    {"entries":[
      {"exec":false,"hash":"<blake3>","path":"a.py","size":12,"type":"file"},
      {"path":"docs","type":"dir"},                 # an empty directory
      {"path":"latest","target":"a.py","type":"link"}
     ],"format":"runyard-manifest/1","hash":"blake3"}

The snapshot id is the blake3 digest of these bytes, so any change of a path,
a mode, a link target or a byte of content gives another id (renaming an empty
directory too). The manifest is stored as the blob named by that id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from runyard.errors import StoreError
from runyard.paths import name_problem
from runyard.store.base import HASH_NAME, check_digest, hash_bytes

FORMAT: Final = "runyard-manifest/1"
_NEEDS_ESCAPE: Final = re.compile(r'["\\\x00-\x1f]')
FILE: Final = "file"
LINK: Final = "link"
DIR: Final = "dir"


@dataclass(slots=True)  # not frozen: a frozen dataclass is 4x slower to make, and there is one per path
class Entry:
    path: str
    type: str
    size: int = 0
    executable: bool = False
    hash: str = ""
    target: str = ""

    def as_json(self) -> dict[str, Any]:
        if self.type == FILE:
            return {"path": self.path, "type": FILE, "size": self.size, "exec": self.executable, "hash": self.hash}
        if self.type == LINK:
            return {"path": self.path, "type": LINK, "target": self.target}
        return {"path": self.path, "type": DIR}


@dataclass(frozen=True, slots=True)
class Manifest:
    entries: tuple[Entry, ...]

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == FILE]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def encode(self) -> bytes:
        """The canonical bytes (whose hash is the snapshot id).

        Exactly ``json.dumps(doc, ensure_ascii=False, sort_keys=True,
        separators=(",", ":"))`` of the document (a test holds the two equal),
        written out by hand because this runs on every snapshot.
        """
        def s(text: str, ensure_ascii: bool = False) -> str:
            # json.dumps(text, ensure_ascii=False), without its cost when
            # nothing needs escaping (almost every path).
            return json.dumps(text, ensure_ascii=False) if _NEEDS_ESCAPE.search(text) else f'"{text}"'

        parts = []
        for e in self.entries:
            if e.type == FILE:
                parts.append(f'{{"exec":{"true" if e.executable else "false"},"hash":"{e.hash}",'
                             f'"path":{s(e.path, ensure_ascii=False)},"size":{e.size},"type":"file"}}')
            elif e.type == LINK:
                parts.append(f'{{"path":{s(e.path, ensure_ascii=False)},'
                             f'"target":{s(e.target, ensure_ascii=False)},"type":"link"}}')
            else:
                parts.append(f'{{"path":{s(e.path, ensure_ascii=False)},"type":"dir"}}')
        body = ",".join(parts)
        return f'{{"entries":[{body}],"format":"{FORMAT}","hash":"{HASH_NAME}"}}'.encode()

    def encode_reference(self) -> bytes:
        """``encode`` through the json module; the definition ``encode`` must match."""
        doc = {"format": FORMAT, "hash": HASH_NAME, "entries": [e.as_json() for e in self.entries]}
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def id(self) -> str:
        return hash_bytes(self.encode())


def build(entries: list[Entry]) -> Manifest:
    """A manifest from entries in any order."""
    # Code-point order of the str is the byte order of its UTF-8 (no surrogates
    # reach a manifest), so sorting the str needs no encoding.
    return Manifest(tuple(sorted(entries, key=_path_of)))


def _path_of(e: Entry) -> str:
    return e.path


def check_path(path: str) -> str:
    """Reject a manifest path that could escape the folder it is restored into
    (a backslash is an ordinary character of a POSIX file name: kept)."""
    problem = name_problem(path, backslash=True)
    if problem is not None:
        raise StoreError(f"The manifest holds an unsafe path {path!r} ({problem}); the snapshot is damaged or "
                         "forged, and nothing of it was restored. Take the snapshot again from its source "
                         "directory (runyard snapshot create DIR) and use the new id.")
    return path


def parse(data: bytes, snapshot_id: str | None = None) -> Manifest:
    """Parse and validate manifest bytes (and check them against the id)."""
    if snapshot_id is not None and hash_bytes(data) != snapshot_id:
        raise StoreError(f"The manifest of snapshot {snapshot_id[:12]} does not match its id; the store is damaged.")
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise StoreError("The snapshot's manifest is not valid JSON; the store is damaged.") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise StoreError(f"Unknown manifest format {fmt!r}; this runyard reads {FORMAT}. Upgrade runyard.")
    out: list[Entry] = []
    kinds: dict[str, str] = {}
    try:
        for raw in doc["entries"]:
            path = check_path(str(raw["path"]))
            kind = raw["type"]
            if kind == FILE:
                out.append(Entry(path, FILE, int(raw["size"]), bool(raw["exec"]), check_digest(str(raw["hash"]))))
            elif kind == LINK:
                out.append(Entry(path, LINK, target=str(raw["target"])))
            elif kind == DIR:
                out.append(Entry(path, DIR))
            else:
                raise StoreError(f"Unknown entry type {kind!r} in the manifest. Upgrade runyard.")
            if path in kinds:
                raise StoreError(f"The manifest lists {path!r} twice; the snapshot is damaged.")
            kinds[path] = kind
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"The snapshot's manifest is malformed ({exc}); the store is damaged.") from exc
    # Nothing may live below a file or a link: restoring it would write
    # through the link (or fail).
    for path in kinds:
        i = path.find("/")
        while i > 0:
            parent = kinds.get(path[:i])
            if parent is not None and parent != DIR:
                raise StoreError(
                    f"The manifest puts {path!r} below the {parent} {path[:i]!r}; the snapshot is damaged or forged."
                )
            i = path.find("/", i + 1)
    return Manifest(tuple(out))
