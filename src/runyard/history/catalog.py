"""The data catalog in the run history: registered datastores, datasets and
their versions, and which runs read and wrote which data (lineage).

It shares the history's database (and so its transactions, migrations and
PostgreSQL support): a team that shares a history shares its datastores and
datasets too. Credentials are never here; the workspace keeps them (see
:mod:`runyard.data.credentials`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from runyard.errors import HistoryError, NotFoundError
from runyard.history import schema as t
from runyard.history.db import insert_ignore, upsert
from runyard.history.store import RunHistory


@dataclass(frozen=True)
class DatastoreRow:
    name: str
    kind: str
    options: dict[str, str]
    secret_refs: dict[str, str]
    created: float
    updated: float


@dataclass(frozen=True)
class DatasetVersionRow:
    dataset: str
    version: int
    created: float
    description: str | None
    tags: dict[str, str]
    sources: list[dict[str, Any]]
    files: list[list[Any]]
    file_count: int
    total_bytes: int
    digest: str
    run_id: str | None


@dataclass(frozen=True)
class RunDataRow:
    run_id: str
    direction: str
    name: str
    mode: str
    dataset: str | None
    version: int | None
    datastore: str | None
    path: str | None
    state: str
    detail: dict[str, Any] = field(default_factory=dict)


class DataCatalog:
    """Datastores, datasets and lineage in a run history's database."""

    def __init__(self, history: RunHistory) -> None:
        self.history = history

    # -- datastores ---------------------------------------------------------
    def put_datastore(self, name: str, kind: str, options: Mapping[str, str], secret_refs: Mapping[str, str],
                      *, replace: bool = False) -> DatastoreRow:
        now = time.time()

        def work(conn: Connection) -> DatastoreRow:
            old = conn.execute(select(t.datastores.c.created).where(t.datastores.c.name == name)).first()
            if old is not None and not replace:
                raise HistoryError(f"A datastore named '{name}' is already registered. Pick another name, or "
                                   f"replace it: runyard datastore register {name} --replace ...")
            created = old[0] if old is not None else now
            upsert(conn, t.datastores, [{
                "name": name, "kind": kind, "options": json.dumps(dict(options), sort_keys=True),
                "secret_refs": json.dumps(dict(secret_refs), sort_keys=True), "created": created, "updated": now,
            }])
            return DatastoreRow(name, kind, dict(options), dict(secret_refs), created, now)

        return self.history._write(work)

    def get_datastore(self, name: str) -> DatastoreRow | None:
        def work(conn: Connection) -> DatastoreRow | None:
            row = conn.execute(select(t.datastores).where(t.datastores.c.name == name)).first()
            return _datastore(row) if row is not None else None

        return self.history._read(work)

    def list_datastores(self) -> list[DatastoreRow]:
        return self.history._read(
            lambda conn: [_datastore(r) for r in conn.execute(select(t.datastores).order_by(t.datastores.c.name))])

    def remove_datastore(self, name: str) -> bool:
        def work(conn: Connection) -> bool:
            return bool(conn.execute(delete(t.datastores).where(t.datastores.c.name == name)).rowcount)

        return self.history._write(work)

    # -- datasets -----------------------------------------------------------
    def add_dataset_version(
        self, dataset: str, *, sources: Sequence[Mapping[str, Any]], files: Sequence[Sequence[Any]],
        total_bytes: int, digest: str, description: str | None = None, tags: Mapping[str, str] | None = None,
        run_id: str | None = None, new_version: bool = True, reuse_same: bool = True,
    ) -> tuple[DatasetVersionRow, bool]:
        """Add the next version of ``dataset``; return it and whether it is new.

        With ``reuse_same`` a file list identical to the latest version's gives
        that version back instead of a copy. Without ``new_version`` a dataset
        that exists is an error (the SDK's ``create_new_version=False``).
        """
        now = time.time()
        files_json = json.dumps([list(f) for f in files], separators=(",", ":"))
        sources_json = json.dumps([dict(s) for s in sources], sort_keys=True)
        tags_json = json.dumps(dict(tags or {}), sort_keys=True)

        def work(conn: Connection) -> tuple[DatasetVersionRow, bool]:
            # The dataset's row, made if missing, then locked: writers of one dataset take
            # turns, so two never take the same next version (SQLite's BEGIN IMMEDIATE
            # already serializes writers; PostgreSQL needs the row lock).
            insert_ignore(conn, t.datasets, [{"name": dataset, "created": now}])
            conn.execute(select(t.datasets.c.name).where(t.datasets.c.name == dataset).with_for_update())
            latest = conn.execute(
                select(t.dataset_versions).where(t.dataset_versions.c.dataset == dataset)
                .order_by(t.dataset_versions.c.version.desc()).limit(1)).first()
            if latest is not None:
                if not new_version:
                    raise HistoryError(
                        f"A dataset named '{dataset}' is already registered (latest version {latest.version}). "
                        "Register a new version with create_new_version=True, or pick another name.")
                if reuse_same and latest.digest == digest and run_id is None:
                    return _version(latest), False
            version = (latest.version if latest is not None else 0) + 1
            conn.execute(insert(t.dataset_versions).values(
                dataset=dataset, version=version, created=now, description=description, tags=tags_json,
                sources=sources_json, files=files_json, file_count=len(files), total_bytes=total_bytes,
                digest=digest, run_id=run_id))
            return DatasetVersionRow(dataset, version, now, description, dict(tags or {}),
                                     json.loads(sources_json), [list(f) for f in files], len(files), total_bytes,
                                     digest, run_id), True

        return self.history._write(work)

    def get_dataset_version(self, dataset: str, version: int | None = None) -> DatasetVersionRow:
        """A version (the latest when ``version`` is None); NotFoundError says what exists."""
        def work(conn: Connection) -> DatasetVersionRow:
            q = select(t.dataset_versions).where(t.dataset_versions.c.dataset == dataset)
            q = (q.where(t.dataset_versions.c.version == version) if version is not None
                 else q.order_by(t.dataset_versions.c.version.desc()).limit(1))
            row = conn.execute(q).first()
            if row is not None:
                return _version(row)
            versions = [r[0] for r in conn.execute(
                select(t.dataset_versions.c.version).where(t.dataset_versions.c.dataset == dataset)
                .order_by(t.dataset_versions.c.version))]
            if not versions:
                names = [r[0] for r in conn.execute(select(t.datasets.c.name).order_by(t.datasets.c.name))]
                known = f"Registered datasets: {', '.join(names)}." if names else "No dataset is registered yet."
                raise NotFoundError(f"There is no dataset named '{dataset}'. {known} "
                                    "Register one with: runyard dataset register NAME --from DATASTORE:GLOB")
            raise NotFoundError(f"Dataset '{dataset}' has no version {version}; its versions are "
                                f"{', '.join(map(str, versions))}. See: runyard dataset show {dataset}")

        return self.history._read(work)

    def list_datasets(self) -> list[tuple[str, int, float, int, int]]:
        """(name, latest version, its time, its file count, its bytes) of every dataset."""
        def work(conn: Connection) -> list[tuple[str, int, float, int, int]]:
            v = t.dataset_versions
            latest = (select(v.c.dataset, func.max(v.c.version).label("version")).group_by(v.c.dataset)
                      .subquery())
            rows = conn.execute(
                select(v.c.dataset, v.c.version, v.c.created, v.c.file_count, v.c.total_bytes)
                .join(latest, (v.c.dataset == latest.c.dataset) & (v.c.version == latest.c.version))
                .order_by(v.c.dataset))
            return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

        return self.history._read(work)

    def list_versions(self, dataset: str) -> list[tuple[int, float, int, int, str | None]]:
        """(version, created, file count, bytes, producing run) of each version, oldest first."""
        def work(conn: Connection) -> list[tuple[int, float, int, int, str | None]]:
            v = t.dataset_versions
            rows = conn.execute(select(v.c.version, v.c.created, v.c.file_count, v.c.total_bytes, v.c.run_id)
                                .where(v.c.dataset == dataset).order_by(v.c.version))
            return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

        return self.history._read(work)

    # -- lineage ------------------------------------------------------------
    def record_run_data(self, rows: Iterable[RunDataRow]) -> None:
        items = [{
            "run_id": r.run_id, "direction": r.direction, "name": r.name, "mode": r.mode, "dataset": r.dataset,
            "version": r.version, "datastore": r.datastore, "path": r.path, "state": r.state,
            "detail": json.dumps(r.detail, sort_keys=True),
        } for r in rows]
        if items:
            self.history._write(lambda conn: upsert(conn, t.run_data, items))

    def set_run_data_state(self, run_id: str, direction: str, name: str, state: str, *,
                           version: int | None = None, dataset: str | None = None) -> None:
        values: dict[str, Any] = {"state": state}
        if version is not None:
            values["version"] = version
        if dataset is not None:
            values["dataset"] = dataset
        c = t.run_data.c
        self.history._write(lambda conn: conn.execute(
            update(t.run_data).where((c.run_id == run_id) & (c.direction == direction) & (c.name == name))
            .values(**values)))

    def run_data(self, run_id: str) -> list[RunDataRow]:
        c = t.run_data.c
        return self.history._read(lambda conn: [_run_data(r) for r in conn.execute(
            select(t.run_data).where(c.run_id == run_id).order_by(c.direction, c.name))])

    def dataset_runs(self, dataset: str, version: int | None = None) -> list[RunDataRow]:
        """Every run that read or wrote ``dataset`` (one version, or all)."""
        c = t.run_data.c
        q = select(t.run_data).where(c.dataset == dataset)
        if version is not None:
            q = q.where(c.version == version)
        return self.history._read(lambda conn: [_run_data(r) for r in conn.execute(q.order_by(c.run_id))])


def _datastore(row: Row[Any]) -> DatastoreRow:
    return DatastoreRow(row.name, row.kind, json.loads(row.options), json.loads(row.secret_refs), row.created,
                        row.updated)


def _version(row: Row[Any]) -> DatasetVersionRow:
    return DatasetVersionRow(row.dataset, row.version, row.created, row.description, json.loads(row.tags),
                             json.loads(row.sources), json.loads(row.files), row.file_count, row.total_bytes,
                             row.digest, row.run_id)


def _run_data(row: Row[Any]) -> RunDataRow:
    return RunDataRow(row.run_id, row.direction, row.name, row.mode, row.dataset, row.version, row.datastore,
                      row.path, row.state, json.loads(row.detail) if row.detail else {})


__all__ = ["DataCatalog", "DatasetVersionRow", "DatastoreRow", "RunDataRow"]
