"""Compute targets in a run history's database (the ``compute_targets`` table).

Only what defines a target is kept: its kind and its options (never a
secret). What a kind means is :mod:`runyard.compute`'s business.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from runyard.errors import HistoryError
from runyard.history import schema as t
from runyard.history.db import upsert
from runyard.history.lite import ComputeRow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

    from runyard.history.store import RunHistory


class ComputeCatalog:
    """Compute targets in a run history."""

    def __init__(self, history: RunHistory) -> None:
        self.history = history

    def put(self, name: str, kind: str, options: Mapping[str, Any], *, replace: bool = False) -> ComputeRow:
        now = time.time()

        def work(conn: Connection) -> ComputeRow:
            old = conn.execute(select(t.compute_targets.c.created).where(t.compute_targets.c.name == name)).first()
            if old is not None and not replace:
                raise HistoryError(f"A compute target named '{name}' exists already. Pick another name, or "
                                   f"replace it: runyard compute add {name} --replace ...")
            created = old[0] if old is not None else now
            upsert(conn, t.compute_targets, [{"name": name, "kind": kind,
                                              "options": json.dumps(dict(options), sort_keys=True),
                                              "created": created, "updated": now}])
            return ComputeRow(name, kind, dict(options), created, now)

        return self.history._write(work)

    def get(self, name: str) -> ComputeRow | None:
        def work(conn: Connection) -> ComputeRow | None:
            row = conn.execute(select(t.compute_targets).where(t.compute_targets.c.name == name)).first()
            return _row(row) if row is not None else None

        return self.history._read(work)

    def list(self) -> list[ComputeRow]:
        return self.history._read(lambda conn: [
            _row(r) for r in conn.execute(select(t.compute_targets).order_by(t.compute_targets.c.name))])

    def remove(self, name: str) -> bool:
        def work(conn: Connection) -> bool:
            return conn.execute(delete(t.compute_targets).where(t.compute_targets.c.name == name)).rowcount > 0

        return self.history._write(work)


def _row(row: Row[Any]) -> ComputeRow:
    return ComputeRow(row.name, row.kind, json.loads(row.options), row.created, row.updated)


__all__ = ["ComputeCatalog", "ComputeRow"]
