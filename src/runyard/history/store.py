"""The run history: experiments, runs, metrics, tags, properties and the
artifact index, in one SQL database.

Every method is one short transaction; writes on SQLite take the write lock
up front (``BEGIN IMMEDIATE``) and are retried if the database stays locked
(see :mod:`runyard.history.db`). Inputs are checked before a transaction
starts, so a lock is held only for the statements themselves.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar, Unpack

from sqlalchemy import Row, Table, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from runyard.errors import HistoryError, NotFoundError, PropertyConflictError, StatusTransitionError
from runyard.history import schema as t
from runyard.history.db import BUSY_TIMEOUT, Database, insert_ignore, upsert
from runyard.history.migrations import check_version, migrate
from runyard.history.model import (
    ACTIVE_STATUSES,
    Artifact,
    Experiment,
    MetricInput,
    MetricPoint,
    RunFields,
    RunRecord,
    RunStatus,
    check_experiment_name,
    check_key,
    check_run_fields,
    check_run_id,
    check_string_map,
    check_transition,
    decode_metric,
    encode_metric,
    new_run_id,
)

T = TypeVar("T")

_SHOWN: Final = 10
"""Runs named in an error about an ambiguous run id prefix."""
_IN_CHUNK: Final = 500
"""Ids per ``IN (...)`` list: far under SQLite's and PostgreSQL's parameter limits."""
_PLAIN_COLUMNS: Final = tuple(
    c.name for c in t.runs.columns
    if c.name not in ("status", "arguments", "git_dirty", "channel_offset", "environment")
)


class RunHistory:
    """The run history of a workspace (or of any database URL).

    The constructor only parses ``location`` (a SQLite file path, or a URL
    such as ``postgresql+psycopg://user@host/runyard``); the first call checks
    that the database is on this runyard's schema version. Make or upgrade the
    schema with :meth:`migrate` (what ``runyard init`` does).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.db")
    >>> history = RunHistory(path)
    >>> history.migrate()
    [1, 2]
    >>> run = history.create_run("mnist", script="train.py", arguments=["--epochs", "2"])
    >>> history.set_status(run.id, "Running").status
    <RunStatus.RUNNING: 'Running'>
    >>> history.log_metrics(run.id, [("loss", 0.9, 0), ("loss", 0.4, 1), ("acc", [0.5, 0.8])])
    3
    >>> history.get_metrics(run.id)
    {'acc': [[0.5, 0.8]], 'loss': [0.9, 0.4]}
    >>> history.set_status(run.id, "Completed", exit_code=0).ended is not None
    True
    >>> history.close()
    """

    def __init__(self, location: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self._db = Database(location, busy_timeout=busy_timeout)
        self._checked = False

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT) -> RunHistory:
        """Open a history and check its schema version now.

        Raises :class:`~runyard.history.SchemaVersionError` when the database
        is missing or not migrated (run ``runyard init``) or newer than this
        runyard (upgrade runyard).
        """
        history = cls(location, busy_timeout=busy_timeout)
        history.check()
        return history

    def __repr__(self) -> str:
        return f"RunHistory({self.location!r})"

    def __enter__(self) -> RunHistory:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def location(self) -> str:
        """The database, for messages: a SQLite path, or the URL without its password."""
        return self._db.display

    @property
    def database(self) -> Database:
        return self._db

    # -- schema -------------------------------------------------------------
    def check(self) -> int:
        """Check the schema version (see :meth:`open`); return it."""
        version = check_version(self._db)
        self._checked = True
        return version

    def migrate(self) -> list[int]:
        """Bring the schema up to date; return the versions applied. See
        :func:`runyard.history.migrate`."""
        applied = migrate(self._db)
        self._checked = True
        return applied

    def close(self) -> None:
        """Close this process's connections; the object stays usable."""
        self._db.dispose()

    def _read(self, work: Callable[[Connection], T]) -> T:
        if not self._checked:
            self.check()
        return self._db.read(work)

    def _write(self, work: Callable[[Connection], T]) -> T:
        if not self._checked:
            self.check()
        return self._db.write(work)

    # -- experiments --------------------------------------------------------
    def create_experiment(self, name: str) -> Experiment:
        """Create the experiment ``name`` unless it exists; return it either way.

        Names are 1-255 letters, digits, ``_``, ``.`` and ``-``, starting with a
        letter or digit (:data:`~runyard.history.NAME_PATTERN`).
        """
        check_experiment_name(name)
        now = time.time()

        def work(conn: Connection) -> Experiment:
            insert_ignore(conn, t.experiments, [{"name": name, "created": now}])
            row = conn.execute(select(t.experiments).where(t.experiments.c.name == name)).one()
            return Experiment(row.name, row.created)

        return self._write(work)

    def get_experiment(self, name: str) -> Experiment:
        """The experiment ``name``; :class:`~runyard.errors.NotFoundError` names
        the experiments there are (the closest first) when it does not exist."""
        check_experiment_name(name)

        def work(conn: Connection) -> Experiment | None:
            row = conn.execute(select(t.experiments).where(t.experiments.c.name == name)).first()
            return None if row is None else Experiment(row.name, row.created)

        found = self._read(work)
        if found is not None:
            return found
        import difflib

        names = [e.name for e in self.list_experiments()]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        if not names:
            hint = "There are no experiments yet: a run makes its experiment (runyard run -e NAME SCRIPT)."
        elif close:
            hint = f"Did you mean {' or '.join(repr(c) for c in close)}? Experiments: {_some(names)}."
        else:
            hint = f"Experiments: {_some(names)}."
        raise NotFoundError(f"No experiment '{name}' in the run history at '{self.location}'. {hint}")

    def list_experiments(self) -> list[Experiment]:
        """Every experiment, by name."""
        def work(conn: Connection) -> list[Experiment]:
            rows = conn.execute(select(t.experiments).order_by(t.experiments.c.name))
            return [Experiment(r.name, r.created) for r in rows]

        return self._read(work)

    # -- runs ---------------------------------------------------------------
    @staticmethod
    def new_run_id(experiment: str) -> str:
        """A fresh run id ``<experiment>_<unix-seconds>_<8 hex>`` (see :func:`runyard.history.new_run_id`)."""
        return new_run_id(experiment)

    def create_run(
        self,
        experiment: str,
        *,
        run_id: str | None = None,
        status: RunStatus | str = RunStatus.NOT_STARTED,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        created: float | None = None,
        **fields: Unpack[RunFields],
    ) -> RunRecord:
        """Record a new run (and its experiment, if new) and return it.

        ``run_id`` defaults to a fresh :meth:`new_run_id`; an id that exists is
        refused. ``status`` is any status that has not ended (a run starting
        Running gets ``started`` now). ``parent_run_id`` names the run this one
        reruns. ``fields`` are the other columns (:class:`RunFields`): script,
        arguments, snapshot_id, host, git_commit and so on.
        """
        check_experiment_name(experiment)
        initial = RunStatus.parse(status)
        if initial.is_terminal:
            raise StatusTransitionError(
                f"A new run cannot start as {initial.value}. Create it as NotStarted (or Queued, Preparing, "
                "Running), then set its final status."
            )
        now = time.time() if created is None else created
        rid = new_run_id(experiment, now=now) if run_id is None else check_run_id(run_id)
        if parent_run_id is not None:
            check_run_id(parent_run_id)
        tag_rows = [{"run_id": rid, "key": k, "value": v} for k, v in check_string_map(tags or {}, "tag").items()]
        prop_rows = [{"run_id": rid, "key": k, "value": v}
                     for k, v in check_string_map(properties or {}, "property").items()]
        row: dict[str, Any] = {
            "id": rid, "experiment": experiment, "status": initial.value, "created": now, "heartbeat": now,
            "arguments": "[]", "parent_run_id": parent_run_id, **check_run_fields(fields),
        }
        if initial is RunStatus.RUNNING and row.get("started") is None:
            row["started"] = now

        def work(conn: Connection) -> RunRecord:
            if conn.execute(select(t.runs.c.id).where(t.runs.c.id == rid)).first() is not None:
                raise HistoryError(f"A run with id '{rid}' already exists. Leave run_id out to get a fresh id.")
            if parent_run_id is not None:
                self._require(conn, parent_run_id)
            insert_ignore(conn, t.experiments, [{"name": experiment, "created": now}])
            conn.execute(insert(t.runs).values(row))
            insert_ignore(conn, t.tags, tag_rows)
            insert_ignore(conn, t.properties, prop_rows)
            return self._load(conn, rid)

        return self._write(work)

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``, with its tags and properties.

        Raises :class:`~runyard.errors.NotFoundError` when there is no such run.
        """
        return self._read(lambda conn: self._load(conn, run_id))

    def resolve_run_id(self, ref: str, *, missing_ok: bool = False) -> str:
        """The full id of the run ``ref`` names: its id, or a prefix of exactly one run's id.

        A prefix that several runs share raises :class:`~runyard.errors.NotFoundError`
        listing them (give more characters); one that no run has raises it too,
        unless ``missing_ok``, which gives ``ref`` back unchanged (for a run
        that is about to be recorded).

        >>> history.resolve_run_id("mnist_1767225600_1a")  # doctest: +SKIP
        'mnist_1767225600_1a2b3c4d'
        """
        if not isinstance(ref, str):
            raise TypeError(f"a run id is a string, not {type(ref).__name__}")
        ref = check_run_id(ref.strip())  # a prefix is made of the same characters
        r = t.runs.c

        def work(conn: Connection) -> list[str]:
            if conn.execute(select(r.id).where(r.id == ref)).first() is not None:
                return [ref]
            # substr, not LIKE: exact and case-sensitive in SQLite and PostgreSQL alike.
            query = select(r.id).where(func.substr(r.id, 1, len(ref)) == ref).order_by(r.id).limit(_SHOWN + 1)
            return list(conn.execute(query).scalars())

        hits = self._read(work)
        if len(hits) == 1:
            return hits[0]
        if not hits:
            if missing_ok:
                return ref
            raise NotFoundError(f"No run '{ref}' (nor one whose id starts with it) in the run history at "
                                f"'{self.location}'. List runs with: runyard runs ls")
        count = f"more than {_SHOWN}" if len(hits) > _SHOWN else str(len(hits))
        listed = "\n".join(f"  {h}" for h in hits[:_SHOWN]) + ("\n  ..." if len(hits) > _SHOWN else "")
        raise NotFoundError(f"'{ref}' is ambiguous: the ids of {count} runs start with it:\n{listed}\n"
                            "Give more of the id.")

    def list_runs(
        self,
        experiment: str | None = None,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        *,
        tags: Mapping[str, str | None] | None = None,
        limit: int | None = 100,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally of one experiment, in some statuses and
        with some tags; the database does the filtering.

        ``tags`` maps a tag to the value a run must have, or to None for "has
        this tag, whatever its value"; a run must have all of them.
        ``limit=None`` returns them all. An experiment with no runs (or that
        does not exist) gives ``[]``.

        >>> history.list_runs("mnist", "Completed", tags={"lr": "0.1"}, limit=10)  # doctest: +SKIP
        """
        if experiment is not None:
            check_experiment_name(experiment)
        if limit is not None and limit < 1:
            raise HistoryError(f"limit is {limit}; ask for at least 1 run (limit=None lists them all).")
        query = select(t.runs)
        if experiment is not None:
            query = query.where(t.runs.c.experiment == experiment)
        if status is not None:
            query = query.where(t.runs.c.status.in_([s.value for s in _statuses(status)]))
        for key, value in (tags or {}).items():
            check_key(key, "tag")
            has = select(t.tags.c.run_id).where(t.tags.c.run_id == t.runs.c.id, t.tags.c.key == key)
            if value is not None:
                has = has.where(t.tags.c.value == value)
            query = query.where(has.exists())
        query = query.order_by(t.runs.c.created.desc(), t.runs.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return self._read(lambda conn: self._records(conn, list(conn.execute(query))))

    def set_status(self, run_id: str, status: RunStatus | str, **fields: Unpack[RunFields]) -> RunRecord:
        """Move a run to ``status``, updating ``fields`` in the same transaction;
        return the run as it is now.

        Allowed moves are in :data:`~runyard.history.TRANSITIONS`: forward
        through NotStarted, Queued, Preparing, Running, Finalizing; Completed
        only from Running or Finalizing; Failed or Canceled from any status that
        has not ended. A terminal status is final. Anything else raises
        :class:`~runyard.history.StatusTransitionError`. Setting a run that has
        not ended to its own status just updates the fields.

        Running records ``started`` (first time only), a terminal status records
        ``ended`` (unless given), and every change refreshes ``heartbeat``.
        """
        new = RunStatus.parse(status)
        changes = check_run_fields(fields)

        def work(conn: Connection) -> RunRecord:
            row = conn.execute(
                select(t.runs.c.status, t.runs.c.started).where(t.runs.c.id == run_id).with_for_update(key_share=True)
            ).first()
            if row is None:
                raise self._not_found(run_id)
            check_transition(run_id, RunStatus(row.status), new)
            now = time.time()
            values: dict[str, Any] = {"status": new.value, "heartbeat": now, **changes}
            if new is RunStatus.RUNNING and row.started is None:
                values.setdefault("started", now)
            if new.is_terminal:
                values.setdefault("ended", now)
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(values))
            return self._load(conn, run_id)

        return self._write(work)

    def delete_runs(self, run_ids: Iterable[str]) -> list[str]:
        """Delete ended runs with everything the history keeps of them (metrics, tags,
        properties, artifact records, their inputs and outputs); returns the ids deleted. A
        run that has not ended is left (checked in the same transaction). Datasets a run
        registered stay (their versions no longer name it); reruns of it keep their own record."""
        wanted = list(dict.fromkeys(run_ids))
        ended = [s.value for s in RunStatus if s.is_terminal]

        def work(conn: Connection) -> list[str]:
            gone: list[str] = []
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                ids = [r[0] for r in conn.execute(select(t.runs.c.id).where(t.runs.c.id.in_(chunk),
                                                                          t.runs.c.status.in_(ended)))]
                if ids:
                    conn.execute(delete(t.runs).where(t.runs.c.id.in_(ids)))
                gone.extend(ids)
            return gone

        return self._write(work)

    def heartbeat(self, run_id: str, *, now: float | None = None) -> RunStatus:
        """Record a sign of life from the run's supervisor; return the run's status.

        The status tells a supervisor whether someone else ended the run (for
        example canceled it) in the meantime. A run that has ended keeps its
        last heartbeat.
        """
        def work(conn: Connection) -> RunStatus:
            row = conn.execute(
                select(t.runs.c.status).where(t.runs.c.id == run_id).with_for_update(key_share=True)
            ).first()
            if row is None:
                raise self._not_found(run_id)
            current = RunStatus(row.status)
            if not current.is_terminal:
                beat = time.time() if now is None else now
                conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(heartbeat=beat))
            return current

        return self._write(work)

    def find_lost_runs(
        self,
        older_than: float,
        *,
        now: float | None = None,
        statuses: Iterable[RunStatus | str] | None = None,
    ) -> list[RunRecord]:
        """Runs that have not ended and whose heartbeat is more than ``older_than``
        seconds old (oldest heartbeat first): their supervisor is likely gone.

        ``statuses`` narrows the search (default: every status that has not
        ended). The heartbeat is set when a run is created and on every status
        change, so a run that never got a supervisor is found too.
        """
        if older_than < 0:
            raise HistoryError(f"older_than is {older_than}; use a number of seconds, 0 or more.")
        cutoff = (time.time() if now is None else now) - older_than
        wanted = [s for s in (ACTIVE_STATUSES if statuses is None else _statuses(statuses)) if not s.is_terminal]
        query = (
            select(t.runs)
            .where(t.runs.c.status.in_([s.value for s in wanted]), t.runs.c.heartbeat < cutoff)
            .order_by(t.runs.c.heartbeat, t.runs.c.id)
        )
        return self._read(lambda conn: self._records(conn, list(conn.execute(query))))

    # -- metrics ------------------------------------------------------------
    def log_metrics(
        self, run_id: str, metrics: Iterable[MetricInput], *, pid: int | None = None, now: float | None = None
    ) -> int:
        """Append metric values to a run in one transaction; return how many.

        Each item is ``(name, value)``, ``(name, value, step)`` or
        ``(name, value, step, kind)``; ``kind`` is ``scalar`` (a number, bool or
        string), ``list`` or ``row`` (a mapping), inferred from the value when
        left out. ``pid`` (default: this process) records the writer, so the
        values of every process of a run are kept side by side.
        """
        when = time.time() if now is None else now
        writer = os.getpid() if pid is None else pid
        rows = [_metric_row(run_id, item, when, writer) for item in metrics]
        if not rows:
            return 0

        def work(conn: Connection) -> int:
            self._require(conn, run_id)
            conn.execute(insert(t.metrics), rows)
            note_latest(conn, rows)
            return len(rows)

        return self._write(work)

    def get_metrics(self, run_id: str, names: Iterable[str] | None = None) -> dict[str, list[Any]]:
        """Every value of each metric of a run, in the order they were logged.

        Whole numbers come back as ints (values logged before runyard kept
        them apart come back as floats), other numbers as floats; lists, rows,
        strings and bools as logged.
        """
        wanted = None if names is None else list(names)

        def work(conn: Connection) -> dict[str, list[Any]]:
            self._require(conn, run_id)
            m = t.metrics.c
            query = select(m.name, m.value, m.value_json).where(m.run_id == run_id)
            if wanted is not None:
                query = query.where(m.name.in_(wanted))
            out: dict[str, list[Any]] = {}
            for name, value, value_json in conn.execute(query.order_by(m.name, m.id)):
                out.setdefault(name, []).append(decode_metric(value, value_json))
            return out

        return self._read(work)

    def get_metric_points(self, run_id: str, name: str | None = None) -> list[MetricPoint]:
        """Every logged value of a run (or of one metric) with its step, time and
        writer pid, in the order they were committed."""
        def work(conn: Connection) -> list[MetricPoint]:
            self._require(conn, run_id)
            m = t.metrics.c
            query = select(t.metrics).where(m.run_id == run_id)
            if name is not None:
                query = query.where(m.name == name)
            return [
                MetricPoint(r.name, decode_metric(r.value, r.value_json), r.kind, r.step, r.time, r.pid)
                for r in conn.execute(query.order_by(m.id))
            ]

        return self._read(work)

    # -- tags and properties ------------------------------------------------
    def add_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run; a tag that exists gets the new value."""
        rows = [{"run_id": run_id, "key": k, "value": v} for k, v in check_string_map(tags, "tag").items()]

        def work(conn: Connection) -> None:
            self._require(conn, run_id)
            upsert(conn, t.tags, rows)

        self._write(work)

    def remove_tags(self, run_id: str, keys: Iterable[str]) -> None:
        """Remove tags from a run; keys that are not set are ignored."""
        wanted = [check_key(k, "tag") for k in keys]

        def work(conn: Connection) -> None:
            self._require(conn, run_id)
            if wanted:
                conn.execute(delete(t.tags).where(t.tags.c.run_id == run_id, t.tags.c.key.in_(wanted)))

        self._write(work)

    def add_properties(self, run_id: str, properties: Mapping[str, str]) -> None:
        """Add properties to a run. Properties are add-only, as in Azure ML:
        adding a key again with the same value does nothing, with another value
        raises :class:`~runyard.history.PropertyConflictError` and adds none of
        ``properties``."""
        props = check_string_map(properties, "property")
        rows = [{"run_id": run_id, "key": k, "value": v} for k, v in props.items()]

        def work(conn: Connection) -> None:
            self._require(conn, run_id)
            if not rows:
                return
            insert_ignore(conn, t.properties, rows)
            p = t.properties.c
            stored = dict(conn.execute(select(p.key, p.value).where(p.run_id == run_id, p.key.in_(list(props)))).all())
            clashes = sorted(k for k, v in props.items() if stored.get(k) != v)
            if clashes:
                desc = "; ".join(f"'{k}' is {stored.get(k)!r}, not {props[k]!r}" for k in clashes)
                raise PropertyConflictError(
                    f"Run '{run_id}' already has properties with other values ({desc}). Properties cannot change "
                    "once set; use a tag for a value that changes."
                )

        self._write(work)

    # -- artifacts ----------------------------------------------------------
    def upsert_artifacts(self, run_id: str, artifacts: Iterable[Artifact]) -> int:
        """Record a run's files (name, size, blob digest, mtime); a name recorded
        before gets the new values. Returns how many were given."""
        rows = []
        for a in artifacts:
            if not isinstance(a, Artifact):
                raise TypeError(f"artifacts are runyard.history.Artifact records, not {type(a).__name__}")
            a.checked()
            rows.append({"run_id": run_id, "name": a.name, "size": a.size, "digest": a.digest, "mtime": a.mtime})

        def work(conn: Connection) -> int:
            self._require(conn, run_id)
            upsert(conn, t.artifacts, rows)
            return len(rows)

        return self._write(work)

    def list_artifacts(self, run_id: str, *, prefix: str | None = None) -> list[Artifact]:
        """A run's files by name, optionally only those under ``prefix`` (``outputs/``)."""
        def work(conn: Connection) -> list[Artifact]:
            self._require(conn, run_id)
            a = t.artifacts.c
            query = select(a.name, a.size, a.digest, a.mtime).where(a.run_id == run_id)
            if prefix:
                query = query.where(a.name.startswith(prefix, autoescape=True))
            return [Artifact(r.name, r.size, r.digest, r.mtime) for r in conn.execute(query.order_by(a.name))]

        return self._read(work)

    # -- helpers ------------------------------------------------------------
    def _not_found(self, run_id: str) -> NotFoundError:
        return NotFoundError(
            f"No run '{run_id}' in the run history at '{self.location}'. List runs with: runyard runs ls"
        )

    def _require(self, conn: Connection, run_id: str) -> None:
        if conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is None:
            raise self._not_found(run_id)

    def _load(self, conn: Connection, run_id: str) -> RunRecord:
        row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
        if row is None:
            raise self._not_found(run_id)
        return self._records(conn, [row])[0]

    def _records(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[RunRecord]:
        ids = [r.id for r in rows]
        tags = _key_values(conn, t.tags, ids)
        props = _key_values(conn, t.properties, ids)
        return [_to_record(r, tags.get(r.id, {}), props.get(r.id, {})) for r in rows]


def _some(names: Sequence[str], n: int = 20) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _statuses(value: RunStatus | str | Iterable[RunStatus | str]) -> list[RunStatus]:
    if isinstance(value, str):  # a RunStatus is a str too
        return [RunStatus.parse(value)]
    return [RunStatus.parse(v) for v in value]


def _key_values(conn: Connection, table: Table, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        query = select(table.c.run_id, table.c.key, table.c.value).where(table.c.run_id.in_(chunk))
        for run_id, key, value in conn.execute(query.order_by(table.c.run_id, table.c.key)):
            out.setdefault(run_id, {})[key] = value
    return out


def _to_record(row: Row[Any], tags: dict[str, str], props: dict[str, str]) -> RunRecord:
    m = row._mapping
    plain = {name: m[name] for name in _PLAIN_COLUMNS}
    dirty = m["git_dirty"]
    return RunRecord(
        **plain,
        status=RunStatus(m["status"]),
        arguments=tuple(json.loads(m["arguments"])),
        git_dirty=None if dirty is None else bool(dirty),
        environment=None if m["environment"] is None else json.loads(m["environment"]),
        tags=tags,
        properties=props,
    )


def note_latest(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Keep ``latest_metrics`` up to date with metric rows just inserted in this transaction
    (in the order logged): each metric's last row replaces what was there."""
    last: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        last[(row["run_id"], row["name"])] = row
    upsert(conn, t.latest_metrics, [
        {"run_id": r["run_id"], "name": r["name"], "kind": r["kind"], "step": r.get("step"), "value": r.get("value"),
         "value_json": r.get("value_json"), "time": r["time"]} for r in last.values()])


def _metric_row(run_id: str, item: MetricInput, when: float, writer: int) -> dict[str, Any]:
    if not isinstance(item, tuple) or not 2 <= len(item) <= 4:
        raise TypeError(f"a metric is (name, value), (name, value, step) or (name, value, step, kind), not {item!r}")
    name, value, *rest = item
    step = rest[0] if rest else None
    kind = rest[1] if len(rest) > 1 else None
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise TypeError(f"metric {name!r} has step {step!r}; a step is a whole number or None")
    if kind is not None and not isinstance(kind, str):
        raise TypeError(f"metric {name!r} has kind {kind!r}; a kind is 'scalar', 'list' or 'row'")
    stored_kind, number, text = encode_metric(name, value, kind)
    return {"run_id": run_id, "name": name, "kind": stored_kind, "step": step, "value": number,
            "value_json": text, "time": when, "pid": writer}


__all__ = ["RunHistory"]
