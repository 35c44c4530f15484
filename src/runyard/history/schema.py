"""The tables of the run history as the code reads and writes them today.

SQLAlchemy Core, portable types only: the same tables live in SQLite (the
default) and PostgreSQL. Times are Unix seconds (UTC) in double precision
columns. Metric values that are not finite numbers, and every JSON value, are
JSON text (``Text``), not a dialect's JSON type, so both databases store them
alike.

This module describes the *current* schema; the database gets there only
through the ordered steps in :mod:`runyard.history.migrations`. Change a table
here and add a step there; ``tests/test_history.py`` fails when the two differ.

Importing this module imports SQLAlchemy: only database code imports it.
"""

from __future__ import annotations

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
)

from runyard.history.lite import SCHEMA_VERSION  # kept there, without SQLAlchemy: the CLI checks it before a run

NAMING_CONVENTION: Final = {
    # Named constraints make later ALTERs (and SQLite table rebuilds) possible.
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite makes an INTEGER PRIMARY KEY an alias of the rowid (autoincrementing,
# ordered); PostgreSQL gets a 64-bit identity.
ID = BigInteger().with_variant(Integer(), "sqlite")

RUN_ID_LEN: Final = 320
NAME_LEN: Final = 255

metadata = MetaData(naming_convention=NAMING_CONVENTION)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied", Double, nullable=False),
    Column("runyard_version", String(64), nullable=False),
    Column("description", Text, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("name", String(NAME_LEN), primary_key=True),
    Column("created", Double, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(RUN_ID_LEN), primary_key=True),
    Column("experiment", String(NAME_LEN), ForeignKey("experiments.name"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created", Double, nullable=False),
    Column("started", Double),
    Column("ended", Double),
    Column("heartbeat", Double, nullable=False),
    Column("snapshot_id", String(128)),
    Column("source_dir", Text),
    Column("script", Text),
    Column("arguments", Text, nullable=False),  # JSON list of strings
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
    Column("parent_run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="SET NULL")),
    Column("compute_target", String(255)),
    Column("working_dir", Text),
    Column("channel_offset", BigInteger),  # bytes of the run's script channel taken in (version 3)
    Column("environment", Text),  # JSON: the environment the run ran with, its exact packages (version 4)
    Index(None, "experiment", "created"),  # runs of an experiment, newest first
    Index(None, "created"),  # all runs, newest first
    Index(None, "status", "heartbeat"),  # active runs; lost runs (stale heartbeat)
    Index(None, "parent_run_id"),  # reruns of a run
)

metrics = Table(
    "metrics",
    metadata,
    # The id orders values as they were committed, across every process of a run.
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(NAME_LEN), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("step", BigInteger),
    Column("value", Double),  # finite numbers
    Column("value_json", Text),  # everything else, as JSON; an int also here, exactly
    Column("time", Double, nullable=False),
    Column("pid", Integer),  # the process that logged it
    CheckConstraint("kind IN ('scalar', 'list', 'row')", name="kind"),
    Index(None, "run_id", "name", "id"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    # The last value logged of each metric of each run (version 5): what the runs table filters
    # and sorts by, without reading a run's whole series.
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(NAME_LEN), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("step", BigInteger),
    Column("value", Double),
    Column("value_json", Text),
    Column("time", Double, nullable=False),
    PrimaryKeyConstraint("run_id", "name"),
    Index(None, "name", "value"),  # runs by a metric's value: filtered and sorted
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(NAME_LEN), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "key"),
    Index(None, "key"),  # runs by a tag or property (version 5; not the value too: PostgreSQL's index rows are capped)
)

properties = Table(
    "properties",
    metadata,
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(NAME_LEN), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "key"),
    Index(None, "key"),  # runs by a tag or property (version 5; not the value too: PostgreSQL's index rows are capped)
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),  # blake3 hex of the blob
    Column("mtime", Double),
    PrimaryKeyConstraint("run_id", "name"),
    Index(None, "digest"),  # is a blob still referenced (store garbage collection)
)

# -- data (version 2) ---------------------------------------------------------
datastores = Table(
    "datastores",
    metadata,
    Column("name", String(NAME_LEN), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("options", Text, nullable=False),  # JSON object of strings; never a secret
    Column("secret_refs", Text, nullable=False),  # JSON: field -> "stored" | "env:NAME"
    Column("created", Double, nullable=False),
    Column("updated", Double, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(NAME_LEN), primary_key=True),
    Column("created", Double, nullable=False),
)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("dataset", String(NAME_LEN), ForeignKey("datasets.name", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created", Double, nullable=False),
    Column("description", Text),
    Column("tags", Text, nullable=False),  # JSON object
    Column("sources", Text, nullable=False),  # JSON list of {datastore, pattern, base}
    Column("files", Text, nullable=False),  # JSON list of the resolved files (see runyard.data.dataset)
    Column("file_count", Integer, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),  # blake3 of the canonical file list
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="SET NULL")),  # the producing run
    PrimaryKeyConstraint("dataset", "version"),
    Index(None, "run_id"),
)

run_data = Table(
    "run_data",
    metadata,
    Column("run_id", String(RUN_ID_LEN), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("name", String(NAME_LEN), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("dataset", String(NAME_LEN)),
    Column("version", Integer),
    Column("datastore", String(NAME_LEN)),
    Column("path", Text),
    Column("state", String(16), nullable=False),
    Column("detail", Text),  # JSON: files, bytes, path on compute
    PrimaryKeyConstraint("run_id", "direction", "name"),
    CheckConstraint("direction IN ('input', 'output')", name="direction"),
    Index(None, "dataset", "version"),
)

# -- compute (version 3) ------------------------------------------------------
compute_targets = Table(
    "compute_targets",
    metadata,
    Column("name", String(NAME_LEN), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("options", Text, nullable=False),  # JSON object; never a secret
    Column("created", Double, nullable=False),
    Column("updated", Double, nullable=False),
)

environments = Table(
    "environments",
    metadata,
    Column("name", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", Text, nullable=False),  # JSON: runyard.environments.spec.EnvSpec.to_dict()
    Column("description", Text),
    Column("created", Double, nullable=False),
    PrimaryKeyConstraint("name", "version"),
)

__all__ = [
    "SCHEMA_VERSION",
    "artifacts",
    "compute_targets",
    "dataset_versions",
    "datasets",
    "datastores",
    "environments",
    "experiments",
    "latest_metrics",
    "metadata",
    "metrics",
    "properties",
    "run_data",
    "runs",
    "schema_version",
    "tags",
]
