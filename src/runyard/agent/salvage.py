"""What a run left on disk when its supervisor died, taken into the store.

The live sync (:mod:`runyard.agent.journal`) has stored most of it already;
this takes the rest: every file of ``./outputs`` and ``./logs`` as it is now
(written whole or not: the script is dead, so this is what the run wrote), the
log mirror's copies of logs the run deleted, and the driver log, made again
from the script's raw output (:func:`runyard.agent.capture.rebuild_driver_log`)
so that even a last line without a newline is kept.

Where the files are depends on how far the run got and what happened to the
machine: in the working directory (a copy, or an overlay still mounted when
only the supervisor died), or, after a reboot took the overlay away, in the
overlay's upper layer, which holds exactly what the run wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runyard.agent.folder import DRIVER_LOG_ARTIFACT, RunFolder
from runyard.history import Artifact

if TYPE_CHECKING:
    from runyard.agent.artifacts import ArtifactRecord
    from runyard.store.base import ObjectStore

WD = "wd"
UPPER = os.path.join("layers", "upper")


def shipped_files(store: ObjectStore, snapshot_id: str) -> dict[str, str]:
    """Files the snapshot itself has under ``outputs/`` and ``logs/``: name -> digest.

    Such a file, unchanged, came in with the source: it is not something the
    run wrote, so it is not one of the run's artifacts.
    """
    from runyard.snapshot import manifest as mf
    from runyard.snapshot.engine import load_manifest

    try:
        manifest = load_manifest(store, snapshot_id)
    except Exception:  # the working directory was made from it: this does not fail in practice
        return {}
    return {e.path: e.hash for e in manifest.entries
            if e.type == mf.FILE and e.path.startswith(("outputs/", "logs/"))}


def own_artifacts(records: list[ArtifactRecord], shipped: dict[str, str]) -> list[Artifact]:
    """``records`` as artifacts, without the files that came unchanged with the snapshot."""
    out = [Artifact(r.name, r.size, r.digest, r.mtime_ns / 1e9 if r.mtime_ns else None) for r in records]
    return [a for a in out if shipped.get(a.name) != a.digest]


def files_root(folder: RunFolder) -> str | None:
    """Where the run's files are now: the working directory, its overlay's upper layer, or None."""
    if not folder.owns(folder.work):
        return None  # swapped for a link (by the script?): not followed
    wd = os.path.join(folder.work, WD)
    upper = os.path.join(folder.work, UPPER)
    if os.path.isdir(wd) and (os.path.ismount(wd) or not os.path.isdir(upper)):
        return wd  # a copy, or an overlay still mounted
    if os.path.isdir(upper):
        return upper  # the overlay is gone (a reboot): its upper layer is what the run wrote
    return None


@dataclass
class Salvaged:
    """What :func:`salvage` took: every artifact of the run, and what went wrong."""

    artifacts: list[Artifact] = field(default_factory=list)
    recovered: int = 0
    """Files that were not in the journal yet (the live sync had not taken them)."""
    read: int = 0
    """Files read from disk (those the journal vouches for, unchanged, are not)."""
    problems: list[str] = field(default_factory=list)
    working_dir: str | None = None


def salvage(store: ObjectStore, folder: RunFolder, snapshot_id: str | None) -> Salvaged:
    """Store what the run left and return all of its artifacts (the journal's and the rest)."""
    from runyard.agent.artifacts import ArtifactRecord, OutputsSync
    from runyard.agent.capture import rebuild_driver_log
    from runyard.agent.journal import read_journal, read_journal_keys

    result = Salvaged()
    known = {a.name: a for a in read_journal(folder.journal) if store.has(a.digest)}
    keyed = {name: (key, ArtifactRecord(a.name, a.size, a.digest, key[1]))
             for name, (a, key) in read_journal_keys(folder.journal).items() if name in known}
    found: dict[str, Artifact] = {}
    shipped = shipped_files(store, snapshot_id) if snapshot_id else {}
    root = files_root(folder)
    result.working_dir = root
    sources: list[tuple[str, str]] = []
    if root is not None:
        sources += [(root, "outputs"), (root, "logs")]
    if os.path.isdir(folder.logs_mirror) and folder.owns(folder.logs_mirror):
        sources.append((folder.path, "logs"))  # the mirror: logs the run deleted (the working directory wins)
    for base, prefix in sources:
        try:
            sync = OutputsSync(store, base, prefix=prefix)
            if base != folder.path:
                sync.preload(keyed)  # what the live sync stored and has not changed since is not read again
            sync.scan(final=True)
            result.read += sync.read_files
        except Exception as exc:
            result.problems.append(f"salvaging {prefix} from {base} failed: {exc}")
            continue
        for art in own_artifacts(sync.records, shipped):
            found.setdefault(art.name, art)
    try:
        if rebuild_driver_log(folder.raw_output, folder.driver_log) or os.path.exists(folder.driver_log):
            digest, size, _ = store.put_file(folder.driver_log)
            found[DRIVER_LOG_ARTIFACT] = Artifact(DRIVER_LOG_ARTIFACT, size, digest,
                                                  os.path.getmtime(folder.driver_log))
    except Exception as exc:
        result.problems.append(f"salvaging the driver log failed: {exc}")
    merged = {**known, **found}
    result.recovered = sum(1 for name, art in found.items()
                           if name != DRIVER_LOG_ARTIFACT and known.get(name) != art)
    result.artifacts = [merged[n] for n in sorted(merged)]
    return result


__all__ = ["Salvaged", "files_root", "own_artifacts", "salvage", "shipped_files"]
