"""Registered environments in a run history's database (the ``environments`` table).

Versioned like datasets: registering a definition that differs from the latest
version of its name makes the next version; registering the same one again gives
the existing version (as Azure ML's ``Environment.register``). What a definition
means is :mod:`runyard.environments`' business; here it is JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from runyard.errors import NotFoundError
from runyard.history import schema as t
from runyard.history.db import insert_ignore

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from runyard.history.store import RunHistory


@dataclass(frozen=True)
class EnvironmentRow:
    name: str
    version: int
    spec: dict[str, Any]
    description: str | None
    created: float


class EnvironmentCatalog:
    """Registered environments in a run history."""

    def __init__(self, history: RunHistory) -> None:
        self.history = history

    def register(self, name: str, spec: dict[str, Any], description: str | None = None) -> EnvironmentRow:
        """The version of ``name`` whose definition is ``spec``: the latest if it is the same, else a new one.

        Writers registering one name at once take versions in turn. SQLite's ``BEGIN
        IMMEDIATE`` serializes them already; on PostgreSQL there may be no row to lock
        yet (a new name), so the next version is claimed with ``ON CONFLICT DO
        NOTHING`` (which waits for a writer claiming the same one) and read back: when
        another writer took it, the latest is read again."""
        text = json.dumps(spec, sort_keys=True)
        c = t.environments.c

        def work(conn: Connection) -> EnvironmentRow:
            while True:
                latest = conn.execute(select(t.environments).where(c.name == name).order_by(c.version.desc())
                                      .limit(1)).first()
                if latest is not None and latest.spec == text:
                    return _row(latest)
                version = (latest.version if latest is not None else 0) + 1
                insert_ignore(conn, t.environments, [{"name": name, "version": version, "spec": text,
                                                      "description": description, "created": time.time()}])
                claimed = conn.execute(select(t.environments).where(c.name == name, c.version == version)).one()
                if claimed.spec == text:  # ours, or the same definition registered by another at once
                    return _row(claimed)

        return self.history._write(work)

    def get(self, name: str, version: int | None = None) -> EnvironmentRow:
        """Version ``version`` of ``name`` (the latest when None); ``NotFoundError`` naming what there is."""
        c = t.environments.c

        def work(conn: Connection) -> EnvironmentRow:
            query = select(t.environments).where(c.name == name)
            query = query.where(c.version == version) if version is not None else query.order_by(
                c.version.desc()).limit(1)
            row = conn.execute(query).first()
            if row is not None:
                return _row(row)
            versions = [r[0] for r in conn.execute(select(c.version).where(c.name == name).order_by(c.version))]
            if versions:
                raise NotFoundError(f"Environment '{name}' has no version {version}; it has "
                                    f"{', '.join(map(str, versions))}.")
            names = [r[0] for r in conn.execute(select(c.name).distinct().order_by(c.name).limit(20))]
            known = f" Registered: {', '.join(names)}." if names else " None is registered yet."
            raise NotFoundError(f"There is no environment named '{name}'.{known} Register one with: runyard env "
                                f"create {name} -r requirements.txt")

        return self.history._read(work)

    def latest(self) -> list[EnvironmentRow]:
        """The latest version of every name, by name."""
        c = t.environments.c

        def work(conn: Connection) -> list[EnvironmentRow]:
            newest = select(c.name, func.max(c.version).label("v")).group_by(c.name).subquery()
            rows = conn.execute(select(t.environments).join(
                newest, (c.name == newest.c.name) & (c.version == newest.c.v)).order_by(c.name))
            return [_row(r) for r in rows]

        return self.history._read(work)

    def versions(self, name: str) -> list[EnvironmentRow]:
        c = t.environments.c
        return self.history._read(lambda conn: [
            _row(r) for r in conn.execute(select(t.environments).where(c.name == name).order_by(c.version))])


def _row(row: Any) -> EnvironmentRow:
    return EnvironmentRow(row.name, row.version, json.loads(row.spec), row.description, row.created)


__all__ = ["EnvironmentCatalog", "EnvironmentRow"]
