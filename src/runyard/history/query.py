"""Runs selected, ordered and paged by the database (the filter language of
:mod:`runyard.history.filters`), with chosen metric, tag and property columns: what
``runyard runs ls`` and the web UI's runs table show.

A metric's value is the last one logged (kept in ``latest_metrics`` as points
are written, indexed by name and value). Runs
without the field sort last either way and never match a comparison.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, literal, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from runyard.errors import FilterError
from runyard.history import schema as t
from runyard.history.filters import And, Compare, Expr, Field, Not, Or, SortKey, parse_filter, parse_sort

if TYPE_CHECKING:
    from runyard.history.model import RunRecord
    from runyard.history.store import RunHistory

_PLAIN_COLUMNS = {"id": t.runs.c.id, "experiment": t.runs.c.experiment, "status": t.runs.c.status,
                  "script": t.runs.c.script, "target": t.runs.c.compute_target, "host": t.runs.c.host,
                  "arguments": t.runs.c.arguments, "created": t.runs.c.created, "started": t.runs.c.started,
                  "ended": t.runs.c.ended, "exit_code": t.runs.c.exit_code}


@dataclass
class RunPage:
    """One page of runs: the records, the chosen columns' values by run id, whether more follow."""

    runs: list[RunRecord]
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Run id -> {"metrics.acc": 0.93, "tags.team": "vision", ...}."""
    more: bool = False


def value_of(f: Field) -> ColumnElement[Any]:
    """The SQL expression of a field's value for the run of the outer query."""
    runs = t.runs.c
    if f.kind == "duration":
        return runs.ended - runs.started
    if f.kind in _PLAIN_COLUMNS:
        return _PLAIN_COLUMNS[f.kind]
    if f.kind == "metrics":
        return _last_metric(f, t.latest_metrics.c.value)
    table = t.tags if f.kind == "tags" else t.properties
    return (select(table.c.value).where(table.c.run_id == runs.id, table.c.key == f.name)
            .scalar_subquery())


def _last_metric(f: Field, column: Any) -> ColumnElement[Any]:
    """``column`` of the run's last point of metric ``f`` (``latest_metrics``: one key lookup)."""
    lm = t.latest_metrics.c
    return select(column).where(lm.run_id == t.runs.c.id, lm.name == f.name).scalar_subquery()


def _metric_text(f: Field) -> ColumnElement[Any]:
    return _last_metric(f, t.latest_metrics.c.value_json)


def compile_filter(expr: Expr) -> ColumnElement[bool]:
    if isinstance(expr, And):
        return and_(*(compile_filter(e) for e in expr.items))
    if isinstance(expr, Or):
        return or_(*(compile_filter(e) for e in expr.items))
    if isinstance(expr, Not):
        return not_(compile_filter(expr.item))
    return _compare(expr)


def _compare(c: Compare) -> ColumnElement[bool]:
    f = c.field
    if f.kind in ("tags", "properties") and c.op in ("null", "notnull"):
        table = t.tags if f.kind == "tags" else t.properties
        has = exists().where(table.c.run_id == t.runs.c.id, table.c.key == f.name)
        return not_(has) if c.op == "null" else has
    column = value_of(f)
    if f.kind == "metrics" and isinstance(c.value, str) and c.op in ("=", "!=", "in", "like"):
        column = _metric_text(f)  # a text metric: its JSON
        if c.op == "like":  # (its JSON is quoted: "pat%" matches "pattern")
            return column.like(json.dumps(c.value))
        values = [json.dumps(c.value)] if c.op != "in" else [json.dumps(v) for v in c.value or ()]
        return column.in_(values) if c.op != "!=" else and_(column.isnot(None), column != values[0])
    if f.kind == "metrics" and c.op in ("null", "notnull"):
        lm = t.latest_metrics.c
        has = exists().where(lm.run_id == t.runs.c.id, lm.name == f.name)
        return not_(has) if c.op == "null" else has
    if f.kind == "metrics" and isinstance(c.value, float | int | tuple) and c.op != "like":
        # The runs whose last value matches, found through the (name, value) index, not run by run.
        lm = t.latest_metrics.c
        cond: ColumnElement[bool]
        if c.op == "in":
            cond = lm.value.in_([float(v) for v in c.value or () if isinstance(v, float | int)])  # type: ignore[union-attr]
        else:
            cond = {"=": lm.value == c.value, "!=": lm.value != c.value, "<": lm.value < c.value,
                    "<=": lm.value <= c.value, ">": lm.value > c.value, ">=": lm.value >= c.value}[c.op]
        return t.runs.c.id.in_(select(lm.run_id).where(lm.name == f.name, cond))
    if f.kind in ("tags", "properties") and c.op in ("=", "in"):
        table = t.tags if f.kind == "tags" else t.properties
        values = [_as_text(v) for v in (c.value if isinstance(c.value, tuple) else (c.value,))]
        return t.runs.c.id.in_(select(table.c.run_id).where(table.c.key == f.name, table.c.value.in_(values)))
    if c.op == "null":
        return column.is_(None)
    if c.op == "notnull":
        return column.isnot(None)
    if f.kind == "arguments" and c.op not in ("like", "=", "!="):
        raise FilterError("arguments are text: use like (e.g. arguments like \"%--lr 0.1%\"), = or !=.")
    if f.kind == "arguments" and c.op in ("=", "!="):
        target = json.dumps(str(c.value).split())
        return column == target if c.op == "=" else column != target
    if c.op == "like":
        if f.kind == "arguments":
            return func.replace(func.replace(func.replace(column, '", "', " "), '["', ""), '"]', "").like(
                str(c.value))
        return column.like(str(c.value))
    value: Any = c.value
    if f.kind in ("tags", "properties"):
        value = _as_text(value) if not isinstance(value, tuple) else tuple(_as_text(v) for v in value)
    elif f.kind == "metrics" and not isinstance(value, float | int | tuple):
        raise FilterError(f"{f} {c.op} {value!r}: compare a metric with a number, or a text one with = or like.")
    if c.op == "in":
        return and_(column.isnot(None), column.in_(list(value or ())))
    ops = {"=": column.__eq__, "!=": column.__ne__, "<": column.__lt__, "<=": column.__le__, ">": column.__gt__,
           ">=": column.__ge__}
    return and_(column.isnot(None), ops[c.op](literal(value)))


def _as_text(value: Any) -> str:
    """A number written in a filter, as a tag's text: 0.1 stays "0.1", 3.0 is "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sorted_query(query: Any, keys: Sequence[SortKey], *, join: bool = True) -> Any:
    """``query`` (of ``runs``) ordered by ``keys``, then newest first; runs without a field come
    last either way. ``join``: a metric, tag or property to sort by is joined once (an outer
    join: PostgreSQL sorts the page from one pass, where a lookup per run took it half a second
    on 100,000 runs); else looked up per run (SQLite's nested loops do that faster)."""
    from sqlalchemy.orm import aliased

    order: list[Any] = []
    for i, key in enumerate(keys):
        f = key.field
        if join and f.kind in ("metrics", "tags", "properties"):
            table = {"metrics": t.latest_metrics, "tags": t.tags, "properties": t.properties}[f.kind]
            joined = aliased(table, name=f"sort{i}")
            name_col = joined.c.name if f.kind == "metrics" else joined.c.key
            query = query.outerjoin(joined, and_(joined.c.run_id == t.runs.c.id, name_col == f.name))
            column: Any = joined.c.value
        else:
            column = value_of(f)
        order.append(column.is_(None))
        order.append(column.desc() if key.descending else column.asc())
    return query.order_by(*order, t.runs.c.created.desc(), t.runs.c.id.desc())


def query_runs(history: RunHistory, *, filter: str | Expr | None = None, sort: Sequence[str] = (),
               columns: Sequence[str] = (), limit: int | None = 50, offset: int = 0,
               experiment: str | None = None) -> RunPage:
    """A page of runs matching ``filter``, ordered by ``sort`` (newest first after that), with
    the values of ``columns`` (``metrics.acc``, ``tags.team``...). ``FilterError`` for a filter,
    sort or column that cannot be read."""
    tree = parse_filter(filter) if isinstance(filter, str) else filter
    keys = parse_sort(*sort)
    from runyard.history.filters import parse_field

    wanted = [parse_field(c) for c in columns]
    base = select(t.runs)
    if experiment is not None:
        base = base.where(t.runs.c.experiment == experiment)
    if tree is not None:
        base = base.where(compile_filter(tree))

    def work(conn: Any) -> RunPage:
        query = sorted_query(base, keys, join=conn.dialect.name != "sqlite").offset(offset)
        if limit is not None:
            query = query.limit(limit + 1)
        rows = list(conn.execute(query))
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        records = history._records(conn, rows)
        values: dict[str, dict[str, Any]] = {r.id: {} for r in records}
        ids = [r.id for r in records]
        for f in wanted:
            for run_id, value in _column_values(conn, f, ids).items():
                values[run_id][str(f)] = value
        return RunPage(records, values, more)

    return history._read(work)


def _column_values(conn: Any, f: Field, ids: list[str]) -> dict[str, Any]:
    if not ids:
        return {}
    if f.kind == "metrics":
        from runyard.history.model import decode_metric

        lm = t.latest_metrics.c
        rows = conn.execute(select(lm.run_id, lm.value, lm.value_json).where(lm.run_id.in_(ids), lm.name == f.name))
        return {r.run_id: decode_metric(r.value, r.value_json) for r in rows}
    if f.kind in ("tags", "properties"):
        table = t.tags if f.kind == "tags" else t.properties
        rows = conn.execute(select(table.c.run_id, table.c.value).where(table.c.run_id.in_(ids),
                                                                      table.c.key == f.name))
        return {r.run_id: r.value for r in rows}
    column = value_of(f).label("v")
    return {r.id: r.v for r in conn.execute(select(t.runs.c.id, column).where(t.runs.c.id.in_(ids)))}


def last_values(history: RunHistory, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Run id -> {metric: its last value} (from ``latest_metrics``: no series is read)."""
    from runyard.history.model import decode_metric

    lm = t.latest_metrics.c

    def work(conn: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {r: {} for r in run_ids}
        rows = conn.execute(select(lm.run_id, lm.name, lm.value, lm.value_json).where(lm.run_id.in_(list(run_ids))))
        for r in rows:
            out[r.run_id][r.name] = decode_metric(r.value, r.value_json)
        return out

    return history._read(work)


__all__ = ["RunPage", "compile_filter", "last_values", "query_runs", "sorted_query", "value_of"]
