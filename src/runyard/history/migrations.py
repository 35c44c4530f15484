"""Schema migrations of the run history: explicit, ordered, one transaction each.

The ``schema_version`` table has one row per applied step. :func:`migrate`
applies the steps a database lacks, each in its own write transaction that
re-reads the version first (so two ``runyard init`` at once apply each step
once) and records it in the same commit (so a step is applied completely or
not at all: SQLite and PostgreSQL both have transactional DDL).

Nothing migrates by itself: opening a history only *checks* the version
(:func:`check_version`). ``runyard init`` calls :func:`migrate`.

Adding a step: append a ``Step`` with the next version whose function makes
the change with SQLAlchemy Core, then change :mod:`runyard.history.schema` to
match and bump ``schema.SCHEMA_VERSION``. Never edit a step that has shipped:
databases out there already ran it. That is why step 1 has its own frozen
copy of the tables instead of using ``schema.py``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection

from runyard.errors import SchemaVersionError
from runyard.history import schema
from runyard.history.db import Database


@dataclass(frozen=True, slots=True)
class Step:
    """One migration: the version it makes and the function that makes it."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1(conn: Connection) -> None:
    """Version 1: experiments, runs, metrics, tags, properties, artifacts. Frozen."""
    md = MetaData(naming_convention=schema.NAMING_CONVENTION)
    run_id = String(320)
    Table(
        "experiments", md,
        Column("name", String(255), primary_key=True),
        Column("created", Double, nullable=False),
    )
    Table(
        "runs", md,
        Column("id", run_id, primary_key=True),
        Column("experiment", String(255), ForeignKey("experiments.name"), nullable=False),
        Column("status", String(16), nullable=False),
        Column("created", Double, nullable=False),
        Column("started", Double),
        Column("ended", Double),
        Column("heartbeat", Double, nullable=False),
        Column("snapshot_id", String(128)),
        Column("source_dir", Text),
        Column("script", Text),
        Column("arguments", Text, nullable=False),
        Column("command_line", Text),
        Column("host", String(255)),
        Column("supervisor_pid", Integer),
        Column("exit_code", Integer),
        Column("signal", Integer),
        Column("error", Text),
        Column("python_version", String(64)),
        Column("git_commit", String(64)),
        Column("git_branch", Text),
        Column("git_dirty", Boolean(create_constraint=False)),
        Column("parent_run_id", run_id, ForeignKey("runs.id", ondelete="SET NULL")),
        Column("compute_target", String(255)),
        Column("working_dir", Text),
        Index(None, "experiment", "created"),
        Index(None, "created"),
        Index(None, "status", "heartbeat"),
        Index(None, "parent_run_id"),
    )
    Table(
        "metrics", md,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("run_id", run_id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(255), nullable=False),
        Column("kind", String(8), nullable=False),
        Column("step", BigInteger),
        Column("value", Double),
        Column("value_json", Text),
        Column("time", Double, nullable=False),
        Column("pid", Integer),
        CheckConstraint("kind IN ('scalar', 'list', 'row')", name="kind"),
        Index(None, "run_id", "name", "id"),
    )
    for name in ("tags", "properties"):
        Table(
            name, md,
            Column("run_id", run_id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
            Column("key", String(255), nullable=False),
            Column("value", Text, nullable=False),
            PrimaryKeyConstraint("run_id", "key"),
        )
    Table(
        "artifacts", md,
        Column("run_id", run_id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(1024), nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("mtime", Double),
        PrimaryKeyConstraint("run_id", "name"),
        Index(None, "digest"),
    )
    md.create_all(conn, checkfirst=False)


def _v2(conn: Connection) -> None:
    """Version 2: datastores, datasets and their versions, and the data each run read and wrote. Frozen."""
    md = MetaData(naming_convention=schema.NAMING_CONVENTION)
    run_id = String(320)
    Table("runs", md, Column("id", run_id, primary_key=True))  # referenced only; exists since version 1
    Table(
        "datastores", md,
        Column("name", String(255), primary_key=True),
        Column("kind", String(32), nullable=False),
        Column("options", Text, nullable=False),
        Column("secret_refs", Text, nullable=False),
        Column("created", Double, nullable=False),
        Column("updated", Double, nullable=False),
    )
    Table(
        "datasets", md,
        Column("name", String(255), primary_key=True),
        Column("created", Double, nullable=False),
    )
    Table(
        "dataset_versions", md,
        Column("dataset", String(255), ForeignKey("datasets.name", ondelete="CASCADE"), nullable=False),
        Column("version", Integer, nullable=False),
        Column("created", Double, nullable=False),
        Column("description", Text),
        Column("tags", Text, nullable=False),
        Column("sources", Text, nullable=False),
        Column("files", Text, nullable=False),
        Column("file_count", Integer, nullable=False),
        Column("total_bytes", BigInteger, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("run_id", run_id, ForeignKey("runs.id", ondelete="SET NULL")),
        PrimaryKeyConstraint("dataset", "version"),
        Index(None, "run_id"),
    )
    Table(
        "run_data", md,
        Column("run_id", run_id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("direction", String(8), nullable=False),
        Column("name", String(255), nullable=False),
        Column("mode", String(16), nullable=False),
        Column("dataset", String(255)),
        Column("version", Integer),
        Column("datastore", String(255)),
        Column("path", Text),
        Column("state", String(16), nullable=False),
        Column("detail", Text),
        PrimaryKeyConstraint("run_id", "direction", "name"),
        CheckConstraint("direction IN ('input', 'output')", name="direction"),
        Index(None, "dataset", "version"),
    )
    for name in ("datastores", "datasets", "dataset_versions", "run_data"):
        md.tables[name].create(conn, checkfirst=False)


def _v3(conn: Connection) -> None:
    """Version 3: compute targets; how far into its script channel a run has been taken in. Frozen."""
    conn.execute(text("ALTER TABLE runs ADD COLUMN channel_offset BIGINT"))
    md = MetaData(naming_convention=schema.NAMING_CONVENTION)
    Table(
        "compute_targets", md,
        Column("name", String(255), primary_key=True),
        Column("kind", String(32), nullable=False),
        Column("options", Text, nullable=False),
        Column("created", Double, nullable=False),
        Column("updated", Double, nullable=False),
    ).create(conn, checkfirst=False)


def _v4(conn: Connection) -> None:
    """Version 4: registered environments; the environment each run ran with. Frozen."""
    conn.execute(text("ALTER TABLE runs ADD COLUMN environment TEXT"))
    md = MetaData(naming_convention=schema.NAMING_CONVENTION)
    Table(
        "environments", md,
        Column("name", String(255), nullable=False),
        Column("version", Integer, nullable=False),
        Column("spec", Text, nullable=False),
        Column("description", Text),
        Column("created", Double, nullable=False),
        PrimaryKeyConstraint("name", "version"),
    ).create(conn, checkfirst=False)


def _v5(conn: Connection) -> None:
    """Version 5: the last value of each metric of each run, kept as it is logged. Frozen."""
    md = MetaData(naming_convention=schema.NAMING_CONVENTION)
    table = Table(
        "latest_metrics", md,
        Column("run_id", String(320), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(255), nullable=False),
        Column("kind", String(8), nullable=False),
        Column("step", BigInteger),
        Column("value", Double),
        Column("value_json", Text),
        Column("time", Double, nullable=False),
        PrimaryKeyConstraint("run_id", "name"),
        Index(None, "name", "value"),
    )
    Table("runs", md, Column("id", String(320), primary_key=True))
    table.create(conn, checkfirst=False)
    for name in ("tags", "properties"):
        conn.execute(text(f"CREATE INDEX ix_{name}_key ON {name} (key)"))
    conn.execute(text(
        "INSERT INTO latest_metrics (run_id, name, kind, step, value, value_json, time) "
        "SELECT m.run_id, m.name, m.kind, m.step, m.value, m.value_json, m.time FROM metrics m "
        "JOIN (SELECT max(id) AS id FROM metrics GROUP BY run_id, name) last ON last.id = m.id"))


STEPS: tuple[Step, ...] = (
    Step(1, "experiments, runs, metrics, tags, properties, artifacts", _v1),
    Step(2, "datastores, datasets, dataset versions, run inputs and outputs", _v2),
    Step(3, "compute targets, the script channel's offset", _v3),
    Step(4, "environments, the environment of each run", _v4),
    Step(5, "the last value of each metric of each run", _v5),
)
LATEST = STEPS[-1].version
assert LATEST == schema.SCHEMA_VERSION, "schema.SCHEMA_VERSION must be the last migration step's version"
assert [s.version for s in STEPS] == list(range(1, LATEST + 1)), "migration steps are numbered 1, 2, 3, ..."


def current_version(conn: Connection) -> int:
    """The schema version of the database ``conn`` is on; 0 when it has no runyard tables."""
    if not inspect(conn).has_table(schema.schema_version.name):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(schema.schema_version.c.version), 0))).scalar_one())


def _too_new(db: Database, version: int) -> SchemaVersionError:
    from runyard import __version__

    return SchemaVersionError(
        f"The run history '{db.display}' has schema version {version}, made by a newer runyard; this runyard "
        f"({__version__}) knows versions up to {LATEST}. Upgrade runyard: pip install -U runyard"
    )


def check_version(db: Database) -> int:
    """Check that the database is on exactly the version this code uses; return it.

    Raises :class:`SchemaVersionError` saying to run ``runyard init`` when the
    database is missing, empty or older, and to upgrade runyard when it is newer.
    """
    path = db.sqlite_path
    if path is not None and not os.path.exists(path):
        # Checked first: connecting would create an empty file.
        raise SchemaVersionError(f"There is no run history at '{path}'. Create it with: runyard init")
    version = db.read(current_version)
    if version > LATEST:
        raise _too_new(db, version)
    if version < LATEST:
        what = "has no runyard tables" if version == 0 else f"has schema version {version}; this runyard needs {LATEST}"
        raise SchemaVersionError(
            f"The run history '{db.display}' {what}. Migrate it with: runyard init "
            "(safe to run on an existing workspace; it only adds what is missing)."
        )
    return version


def migrate(target: Database | str | os.PathLike[str]) -> list[int]:
    """Apply the migration steps the database lacks, one transaction each;
    return the versions applied (``[]`` when it was up to date).

    ``target`` is a :class:`Database`, a path to a SQLite file (created if
    missing; its folder must exist) or a database URL.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.db")
    >>> migrate(path), migrate(path)
    ([1], [])
    """
    db = target if isinstance(target, Database) else Database(target)
    try:
        applied: list[int] = []
        for step in STEPS:
            if db.write(functools.partial(_apply, db=db, step=step)):
                applied.append(step.version)
        return applied
    finally:
        if db is not target:
            db.dispose()


_PG_LOCK_KEY: Final = 0x72756E79617264  # "runyard": the advisory lock migrations of a PostgreSQL database take


def _apply(conn: Connection, db: Database, step: Step) -> bool:
    if conn.dialect.name == "postgresql":
        # Migrations take turns, as BEGIN IMMEDIATE makes them on SQLite. Without
        # the lock two `runyard init` at once both read the old version and
        # create the same tables; one fails on a duplicate key. Released at commit.
        conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    schema.schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    if version > LATEST:
        raise _too_new(db, version)
    if version >= step.version:
        return False
    step.apply(conn)
    from runyard import __version__

    conn.execute(insert(schema.schema_version).values(
        version=step.version, applied=time.time(), runyard_version=__version__, description=step.description,
    ))
    return True


__all__ = ["LATEST", "STEPS", "Step", "check_version", "current_version", "migrate"]
