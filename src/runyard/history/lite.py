"""Reads on the CLI's hot path, without SQLAlchemy (importing it costs ``runyard run`` a
third of a second before its run can start): plain ``sqlite3`` when the history is a
SQLite file, the full history otherwise."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from runyard.errors import HistoryError, SchemaVersionError

SCHEMA_VERSION = 5
"""The schema version this code reads and writes (:mod:`runyard.history.schema` takes it from here)."""


@dataclass(frozen=True)
class ComputeRow:
    """A registered compute target as the history keeps it."""

    name: str
    kind: str
    options: dict[str, Any]
    created: float
    updated: float


def read_target(location: str, name: str) -> ComputeRow | None:
    """Compute target ``name`` from the history at ``location``, or None when there is none."""
    if "://" in location or not os.path.isfile(location):
        from runyard.history.compute import ComputeCatalog
        from runyard.history.store import RunHistory

        return ComputeCatalog(RunHistory.open(location)).get(name)
    try:
        con = sqlite3.connect(f"file:{location}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise HistoryError(f"Cannot read the run history at {location}: {exc}") from exc
    try:
        row = con.execute("SELECT name, kind, options, created, updated FROM compute_targets WHERE name = ?",
                          (name,)).fetchone()
    except sqlite3.OperationalError as exc:  # no such table: a history from before compute targets
        raise HistoryError(f"The run history at {location} has no compute targets yet: run `runyard init` to "
                           f"migrate it ({exc}).") from exc
    finally:
        con.close()
    return None if row is None else ComputeRow(row[0], row[1], json.loads(row[2]), row[3], row[4])

def check_schema(location: str) -> None:
    """For a SQLite history: ``SchemaVersionError`` unless it is on this code's schema, said
    before a run starts (the supervisor could not record it). Other histories are checked when
    opened."""
    if "://" in location or not os.path.isfile(location):
        return
    try:
        con = sqlite3.connect(f"file:{location}?mode=ro", uri=True, timeout=30)
        try:
            (version,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return  # no table, locked, damaged: opening it says what is wrong
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"The run history '{location}' has schema version {version}; this runyard needs {SCHEMA_VERSION}. "
            "Migrate it with: runyard init (safe to run on an existing workspace; it only adds what is missing).")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"The run history '{location}' has schema version {version}, made by a newer "
                                 "runyard. Upgrade runyard: pip install -U runyard")


__all__ = ["SCHEMA_VERSION", "ComputeRow", "check_schema", "read_target"]
