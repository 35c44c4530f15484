"""File datasets: a named, versioned list of files in datastores.

A version is immutable. It records every file it resolved to, with its size
and content fingerprint (see :mod:`runyard.data.listing`), so a later
``show`` can tell whether the data under a version changed since it was
registered, and a run that reads a version refuses data that changed under
it instead of reading something else silently.

>>> # ds = Dataset.File.from_files([(datastore, "train/**/*.csv")])
>>> # ds = ds.register(ws, "train")              # version 1
>>> # Dataset.get_by_name(ws, "train", version=1).as_named_input("train").as_mount()
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runyard.data.datastore import Datastore, DatastoreError, catalog, clean_path
from runyard.data.inputs import Consumable
from runyard.data.listing import base_of, glob_base, has_glob, list_matching, refresh_local, relative_to
from runyard.errors import ConfigError

if TYPE_CHECKING:
    from runyard.history.catalog import DatasetVersionRow
    from runyard.workspace import Workspace


@dataclass(frozen=True)
class DatasetFile:
    """One file of a dataset: where it appears (``rel``) and where it lives."""

    rel: str
    datastore: str
    path: str
    size: int
    fingerprint: str
    mtime: float | None = None

    def row(self) -> list[Any]:
        return [self.rel, self.datastore, self.path, self.size, self.fingerprint, self.mtime]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DatasetFile:
        return cls(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]),
                   None if row[5] is None else float(row[5]))


@dataclass(frozen=True)
class Source:
    datastore: str
    pattern: str
    base: str
    exact: bool = False
    """Only the recorded files count (a run's output): files appearing later under it are not 'added'."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"datastore": self.datastore, "pattern": self.pattern, "base": self.base}
        if self.exact:
            out["exact"] = True
        return out


@dataclass
class Changes:
    """How the files under a version differ from what it recorded."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self, limit: int = 5) -> str:
        parts = []
        for label, items in (("changed", self.changed), ("removed", self.removed), ("added", self.added)):
            if items:
                shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
                parts.append(f"{len(items)} {label} ({shown})")
        return "; ".join(parts) if parts else "unchanged"


def digest_of(files: Iterable[DatasetFile]) -> str:
    """blake3 of the canonical file list (mtime left out: content identifies)."""
    from runyard.store.base import hash_bytes

    rows = [[f.rel, f.datastore, f.path, f.size, f.fingerprint] for f in sorted(files, key=lambda f: f.rel)]
    return hash_bytes(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode())


def resolve(sources: Sequence[tuple[Datastore, str]]) -> tuple[list[Source], list[DatasetFile]]:
    """List every (datastore, path or glob); each must match something."""
    out_sources: list[Source] = []
    files: dict[str, DatasetFile] = {}
    for ds, raw in sources:
        pattern = clean_path(raw, what="path or glob")
        found = list_matching(ds, pattern)
        if not found:
            what = "glob" if has_glob(pattern) else "path"
            raise DatastoreError(
                f"The {what} '{pattern}' matches no file in datastore '{ds.name}' ({ds.describe()}). Check it "
                f"against what is there: runyard datastore ls {ds.name} {glob_base(pattern) or ''}".rstrip())
        base = base_of(pattern, found)
        out_sources.append(Source(ds.name, pattern, base))
        for f in found:
            rel = relative_to(base, f.path)
            other = files.get(rel)
            if other is not None and (other.datastore, other.path) != (ds.name, f.path):
                raise ConfigError(f"Two files of the dataset would both be '{rel}': {other.datastore}:{other.path} "
                                  f"and {ds.name}:{f.path}. Narrow the patterns so that each name is one file.")
            files[rel] = DatasetFile(rel, ds.name, f.path, f.size, f.fingerprint, f.mtime)
    return out_sources, [files[k] for k in sorted(files)]


class FileDataset(Consumable):
    """Files in datastores, registered (a name and version) or not yet."""

    def __init__(self, workspace: Workspace | None, sources: Sequence[Source], files: Sequence[DatasetFile], *,
                 name: str | None = None, version: int | None = None, description: str | None = None,
                 tags: dict[str, str] | None = None, run_id: str | None = None, created: float | None = None) -> None:
        self.workspace = workspace
        self.sources = list(sources)
        self.files = list(files)
        self.name = name
        self.version = version
        self.description = description
        self.tags = dict(tags or {})
        self.run_id = run_id
        self.created = created

    def __repr__(self) -> str:
        label = f"{self.name}:{self.version}" if self.name else "unregistered"
        from runyard.config import plural

        return f"FileDataset({label}, {plural(len(self.files), 'file')}, {plural(self.total_bytes, 'byte')})"

    @property
    def id(self) -> str | None:
        return f"{self.name}:{self.version}" if self.name else None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        return digest_of(self.files)

    @classmethod
    def from_row(cls, workspace: Workspace, row: DatasetVersionRow) -> FileDataset:
        return cls(workspace, [Source(**s) for s in row.sources], [DatasetFile.from_row(r) for r in row.files],
                   name=row.dataset, version=row.version, description=row.description, tags=row.tags,
                   run_id=row.run_id, created=row.created)

    # -- registering --------------------------------------------------------
    def register(self, workspace: Workspace, name: str, description: str | None = None,
                 tags: dict[str, str] | None = None, create_new_version: bool = False) -> FileDataset:
        """Register these files as dataset ``name``: version 1, or the next version
        with ``create_new_version=True`` (the same files as the latest version give it back)."""
        check_dataset_name(name)
        row, _new = catalog(workspace).add_dataset_version(
            name, sources=[s.as_dict() for s in self.sources], files=[f.row() for f in self.files],
            total_bytes=self.total_bytes, digest=self.digest, description=description, tags=tags,
            new_version=create_new_version)
        return FileDataset.from_row(workspace, row)

    # -- reading --------------------------------------------------------------
    def to_path(self) -> list[str]:
        """The paths the files have in a download or mount (Azure ML's ``to_path``)."""
        return ["/" + f.rel for f in self.files]

    def changes(self) -> Changes:
        """Compare the recorded files with what the datastores hold now."""
        if self.workspace is None:
            raise ConfigError("This dataset has no workspace to check against.")
        return changes_of(self.workspace, self.sources, self.files)

    def download(self, target_path: str, overwrite: bool = False, show_progress: bool = True) -> list[str]:
        """Download the files into ``target_path``; refuse if the data changed under this version."""
        from runyard.data.materialize import download_dataset

        if self.workspace is None:
            raise ConfigError("This dataset has no workspace to download from.")
        return download_dataset(self.workspace, self, target_path, overwrite=overwrite, progress=show_progress)

    # -- as a run input (as_named_input, as_download, as_mount: Consumable) ------------
    def _default_name(self) -> str:
        if not self.name:
            raise ConfigError("An unregistered dataset needs a name as a run input: "
                              "dataset.as_named_input('train').as_download()")
        return self.name


def changes_of(workspace: Workspace, sources: Sequence[Source], files: Sequence[DatasetFile]) -> Changes:
    recorded = {f.rel: f for f in files}
    now: dict[str, DatasetFile] = {}
    stores: dict[str, Datastore] = {}
    for src in sources:
        ds = stores.get(src.datastore) or Datastore.get(workspace, src.datastore)
        stores[src.datastore] = ds
        if ds.kind == "local":
            known = {f.path: (f.size, f.fingerprint, f.mtime) for f in files if f.datastore == src.datastore}
            found = refresh_local(ds, known, src.pattern)
        else:
            found = list_matching(ds, src.pattern)
        for f in found:
            rel = relative_to(src.base, f.path)
            if src.exact and rel not in recorded:
                continue
            now[rel] = DatasetFile(rel, ds.name, f.path, f.size, f.fingerprint, f.mtime)
    result = Changes()
    for rel, old in recorded.items():
        new = now.get(rel)
        if new is None:
            result.removed.append(rel)
        elif (new.size, new.fingerprint) != (old.size, old.fingerprint):
            result.changed.append(rel)
    result.added = sorted(set(now) - set(recorded))
    return result


class _FileFactory:
    @staticmethod
    def from_files(path: Sequence[tuple[Datastore, str]] | tuple[Datastore, str] | Any,
                   validate: bool = True) -> FileDataset:
        """``Dataset.File.from_files([(datastore, "path/**/*.csv"), ...])``.

        The files are always listed now (``validate`` is accepted for Azure
        ML's signature): a dataset records its files, so a pattern that
        matches nothing is an error here, not in a run."""
        from runyard.data.inputs import DataPath

        items = [path] if isinstance(path, tuple | DataPath) else list(path)
        pairs: list[tuple[Datastore, str]] = []
        for item in items:
            if isinstance(item, DataPath):
                pairs.append((item.datastore, item.path))
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Datastore):
                pairs.append((item[0], str(item[1])))
            else:
                raise ConfigError(f"from_files takes (datastore, 'path or glob') pairs; got {item!r}.")
        if not pairs:
            raise ConfigError("from_files needs at least one (datastore, 'path or glob').")
        workspace = pairs[0][0].workspace
        sources, files = resolve(pairs)
        return FileDataset(workspace, sources, files)


class Dataset:
    """Azure ML's entry point: ``Dataset.File.from_files(...)``, ``Dataset.get_by_name(ws, name)``."""

    File = _FileFactory

    @staticmethod
    def get_by_name(workspace: Workspace, name: str, version: int | str = "latest") -> FileDataset:
        v = None if version in ("latest", None) else int(version)
        return FileDataset.from_row(workspace, catalog(workspace).get_dataset_version(name, v))

    @staticmethod
    def list(workspace: Workspace) -> list[tuple[str, int, float, int, int]]:
        return list(catalog(workspace).list_datasets())


def check_dataset_name(name: str) -> str:
    from runyard.data.datastore import NAME_RE

    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"'{name}' is not a valid dataset name: use letters, digits and underscores, not "
                          "starting with a digit (^[A-Za-z_][A-Za-z0-9_]*$).")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION`` (``latest`` allowed) -> (name, version or None)."""
    name, _, version = ref.partition(":")
    check_dataset_name(name)
    if not version or version == "latest":
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(f"'{ref}': a dataset version is a whole number from 1 (or 'latest').")
    return name, int(version)


def get_version(workspace: Workspace, ref: str) -> FileDataset:
    name, version = parse_ref(ref)
    return FileDataset.from_row(workspace, catalog(workspace).get_dataset_version(name, version))


__all__ = ["Changes", "Dataset", "DatasetFile", "FileDataset", "Source", "changes_of", "digest_of", "get_version",
           "parse_ref", "resolve"]
