"""Taking a run's script channel into the history: its lines and how far they go, in one
transaction (see :mod:`runyard.agent.channel`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from runyard.errors import HistoryError
from runyard.history import schema as t
from runyard.history.db import insert_ignore, upsert
from runyard.history.model import check_key, encode_metric

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from runyard.history.model import Artifact
    from runyard.history.model import ChannelEntry as Entry
    from runyard.history.store import RunHistory


def channel_offset(history: RunHistory, run_id: str) -> int:
    """How far into its channel the run has been taken in (0 before anything)."""
    def work(conn: Connection) -> int:
        row = conn.execute(select(t.runs.c.channel_offset).where(t.runs.c.id == run_id)).first()
        if row is None:
            raise history._not_found(run_id)
        return int(row[0] or 0)

    return history._read(work)


def apply_channel(history: RunHistory, run_id: str, entries: Sequence[Entry], uploads: Mapping[str, Artifact],
                  start: int, end: int) -> list[str]:
    """Write ``entries`` (the channel from ``start`` to ``end``) and move the run's offset to
    ``end``, in one transaction; nothing when the offset is no longer ``start`` (taken in by
    another process meanwhile). Returns problems with single lines (skipped, not fatal)."""
    problems: list[str] = []
    metrics: list[dict[str, Any]] = []
    tags: dict[str, str] = {}
    props: dict[str, str] = {}
    artifacts: list[dict[str, Any]] = []
    for e in entries:
        try:
            if e.kind == "m":
                stored, number, text = encode_metric(e.name, e.value, e.metric_kind)
                metrics.append({"run_id": run_id, "name": e.name, "kind": stored, "step": e.step, "value": number,
                                "value_json": text, "time": e.time, "pid": e.pid})
            elif e.kind == "t":
                tags[check_key(e.name, "tag")] = str(e.value)
            elif e.kind == "p":
                for k, v in dict(e.value).items():
                    props.setdefault(check_key(k, "property"), v)
            elif e.kind == "u" and e.file in uploads:
                a = uploads[e.file]
                artifacts.append({"run_id": run_id, "name": a.name, "size": a.size, "digest": a.digest,
                                  "mtime": a.mtime})
        except (HistoryError, TypeError, ValueError) as exc:
            problems.append(f"a value the script reported was not kept: {exc}")

    def work(conn: Connection) -> None:
        c = t.runs.c
        moved = conn.execute(
            update(t.runs).where(c.id == run_id, (c.channel_offset == start) if start else
                                 ((c.channel_offset.is_(None)) | (c.channel_offset == 0)))
            .values(channel_offset=end))
        if moved.rowcount != 1:
            return  # taken in by somebody else meanwhile (or the run is gone)
        if metrics:
            from runyard.history.store import note_latest

            conn.execute(insert(t.metrics), metrics)
            note_latest(conn, metrics)
        if tags:
            upsert(conn, t.tags, [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()])
        if props:  # add-only: a key set before keeps its first value
            insert_ignore(conn, t.properties, [{"run_id": run_id, "key": k, "value": v} for k, v in props.items()])
        if artifacts:
            upsert(conn, t.artifacts, artifacts)

    history._write(work)
    return problems


__all__ = ["apply_channel", "channel_offset"]
