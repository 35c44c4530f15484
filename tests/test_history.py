"""The run history on real SQLite files and on a real PostgreSQL server:
migrations, run ids, statuses, metrics from many processes at once, tags and
properties, artifacts, lost runs, locking, and a light import.

Tests that take ``location`` or ``history`` run on both databases (ids
``[sqlite]`` and ``[postgres]``); those that take ``db_path`` are about SQLite
itself. More on PostgreSQL in test_postgres.py."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runyard.errors import NotFoundError
from runyard.history import (
    Artifact,
    HistoryError,
    PropertyConflictError,
    RunHistory,
    RunStatus,
    SchemaVersionError,
    StatusTransitionError,
    check_experiment_name,
    migrate,
    new_run_id,
    parse_run_id,
)
from runyard.history import schema as tables
from runyard.history.db import Database
from runyard.history.schema import SCHEMA_VERSION

S = RunStatus
DIGEST = "a" * 64


ALL_STEPS = list(range(1, SCHEMA_VERSION + 1))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A migrated SQLite history file."""
    path = tmp_path / "history.db"
    assert migrate(path) == ALL_STEPS
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def empty_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A history database with nothing in it yet: an empty SQLite file, or a
    fresh database on the session's PostgreSQL server."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres").new_database()
        return url
    path = tmp_path / "history.db"
    sqlite3.connect(path).close()  # an empty file, as a concurrent `runyard init` might leave
    return str(path)


@pytest.fixture
def location(empty_location: str) -> str:
    """A migrated history database, SQLite or PostgreSQL."""
    assert migrate(empty_location) == ALL_STEPS
    return empty_location


@pytest.fixture
def history(location: str) -> Iterator[RunHistory]:
    h = RunHistory.open(location)
    yield h
    h.close()


# -- import ------------------------------------------------------------------
def test_import_history_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    code = (
        "import json, sys, runyard, runyard.history\n"
        "from runyard.history import RunStatus, RunRecord, Artifact, new_run_id, HistoryError\n"
        "light = 'sqlalchemy' not in sys.modules\n"
        "runyard.history.RunHistory\n"
        "print(json.dumps([light, 'sqlalchemy' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    light, loaded_on_use = json.loads(out.stdout)
    assert light, "importing runyard.history imported sqlalchemy"
    assert loaded_on_use


# -- migrations --------------------------------------------------------------
def test_migrate_from_empty_makes_every_table_in_wal_mode(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names == {"schema_version", "experiments", "runs", "metrics", "tags", "properties", "artifacts",
                         "datastores", "datasets", "dataset_versions", "run_data", "compute_targets",
                         "environments", "latest_metrics"}
        assert [v for (v,) in con.execute("SELECT version FROM schema_version")] == ALL_STEPS
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_migrate_is_idempotent_and_safe_to_run_at_once(empty_location: str) -> None:
    ctx = mp.get_context("fork")
    queue: Any = ctx.Queue()
    procs = [ctx.Process(target=_migrate_worker, args=(empty_location, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [r for r in results if not r.startswith("[")] == []
    applied = [v for r in results for v in json.loads(r)]
    assert sorted(applied) == ALL_STEPS, results  # every step applied once, by whichever process came first
    assert migrate(empty_location) == []
    assert RunHistory.open(empty_location).check() == SCHEMA_VERSION


def _migrate_worker(path: str, queue: Any) -> None:
    try:
        queue.put(json.dumps(migrate(path)))
    except BaseException:
        queue.put(traceback.format_exc())


def test_migrated_schema_is_the_schema_the_code_uses(location: str) -> None:
    """schema.py and the migration steps must describe the same tables, down to the types."""
    from sqlalchemy import inspect

    db = Database(location)
    engine = db.engine
    try:
        insp = inspect(engine)
        assert set(insp.get_table_names()) == set(tables.metadata.tables)
        for table in tables.metadata.sorted_tables:
            cols = insp.get_columns(table.name)
            assert [(c["name"], c["nullable"]) for c in cols] == [(c.name, c.nullable) for c in table.columns]
            assert [str(c["type"]) for c in cols] == [
                str(c.type.compile(engine.dialect)) for c in table.columns], table.name
            assert insp.get_pk_constraint(table.name)["constrained_columns"] == [c.name for c in table.primary_key]
            assert sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table.name)) == sorted(
                (i.name, tuple(c.name for c in i.columns)) for i in table.indexes
            )
            reflected_fks = sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                 (f.get("options") or {}).get("ondelete"))
                for f in insp.get_foreign_keys(table.name)
            )
            declared_fks = sorted(
                (tuple(c.name for c in fk.columns), fk.referred_table.name,
                 tuple(e.column.name for e in fk.elements), fk.ondelete)
                for fk in table.foreign_key_constraints
            )
            assert reflected_fks == declared_fks, table.name
    finally:
        db.dispose()


def test_a_newer_database_asks_to_upgrade_runyard(location: str) -> None:
    from sqlalchemy import insert

    db = Database(location)
    db.write(lambda conn: conn.execute(insert(tables.schema_version).values(
        version=99, applied=0, runyard_version="9.9", description="from the future")))
    db.dispose()
    with pytest.raises(SchemaVersionError, match=r"newer runyard.*pip install -U runyard"):
        RunHistory.open(location)
    with pytest.raises(SchemaVersionError, match="newer runyard"):
        migrate(location)
    with pytest.raises(SchemaVersionError, match="newer runyard"):
        RunHistory(location).list_runs()  # the first use checks too


def test_a_database_that_was_not_migrated_asks_for_runyard_init(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    with pytest.raises(SchemaVersionError, match="runyard init"):
        RunHistory.open(missing)
    assert not missing.exists(), "checking must not create the database"

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE unrelated (x)").connection.close()
    with pytest.raises(SchemaVersionError, match=r"no runyard tables.*runyard init"):
        RunHistory.open(empty)
    with pytest.raises(SchemaVersionError, match="runyard init"):
        RunHistory(empty).create_run("exp")


def test_constructor_does_no_io(tmp_path: Path) -> None:
    RunHistory(tmp_path / "nowhere" / "history.db")
    Database(tmp_path / "nowhere" / "history.db")
    assert list(tmp_path.iterdir()) == []


def test_database_errors_become_history_errors(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="folder exists") as info:
        migrate(tmp_path / "no" / "such" / "dir" / "history.db")
    assert info.value.__cause__ is not None
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    with pytest.raises(HistoryError, match="not a usable run history"):
        migrate(junk)
    with pytest.raises(HistoryError, match="SQLite or PostgreSQL"):
        RunHistory("mysql://db/runs")


# -- ids and names -----------------------------------------------------------
def test_run_ids_have_the_documented_form_and_are_unique() -> None:
    rid = new_run_id("mnist-cnn_v2.1", now=1767225600.7)
    assert re.fullmatch(r"mnist-cnn_v2\.1_1767225600_[0-9a-f]{8}", rid)
    assert parse_run_id(rid) == ("mnist-cnn_v2.1", 1767225600, rid[-8:])
    assert len({new_run_id("e", now=1.0) for _ in range(5000)}) == 5000


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "_x", "a b", "a/b", "ü", "x" * 256, "a\n"])
def test_bad_experiment_names_are_refused_with_the_rule(name: str, history: RunHistory) -> None:
    with pytest.raises(HistoryError, match="letters, digits"):
        check_experiment_name(name)
    with pytest.raises(HistoryError, match="not a valid experiment name"):
        history.create_run(name)


def test_experiments_are_created_once(history: RunHistory) -> None:
    first = history.create_experiment("exp")
    assert history.create_experiment("exp") == first
    history.create_run("other")  # a run makes its experiment
    assert [e.name for e in history.list_experiments()] == ["exp", "other"]


def test_a_run_id_is_never_reused(history: RunHistory) -> None:
    run = history.create_run("exp", run_id="exp_1_deadbeef")
    assert run.id == "exp_1_deadbeef"
    with pytest.raises(HistoryError, match="already exists"):
        history.create_run("exp", run_id=run.id)
    with pytest.raises(NotFoundError, match="runyard runs ls"):
        history.create_run("exp", parent_run_id="exp_2_00000000")


# -- runs and statuses -------------------------------------------------------
def test_a_run_keeps_what_it_was_created_with(history: RunHistory) -> None:
    parent = history.create_run("exp")
    run = history.create_run(
        "exp", parent_run_id=parent.id, snapshot_id="b" * 64, source_dir="/src", script="train.py",
        arguments=["--lr", "0.1"], command_line="python train.py --lr 0.1", host="node1", supervisor_pid=42,
        python_version="3.11.7", git_commit="c" * 40, git_branch="main", git_dirty=False,
        compute_target="local", working_dir="/tmp/w", tags={"team": "a"}, properties={"azureml.runsource": "x"},
    )
    got = history.get_run(run.id)
    assert got == run
    assert (got.status, got.arguments, got.git_dirty, got.parent_run_id) == (S.NOT_STARTED, ("--lr", "0.1"), False,
                                                                             parent.id)
    assert (dict(got.tags), dict(got.properties)) == ({"team": "a"}, {"azureml.runsource": "x"})
    assert got.heartbeat == got.created and got.started is None and got.ended is None
    with pytest.raises(NotFoundError, match=r"No run 'nope'.*runyard runs ls"):
        history.get_run("nope")
    with pytest.raises(TypeError, match="one per argument"):
        history.create_run("exp", arguments="--lr 0.1")
    with pytest.raises(TypeError, match="unknown run field"):
        history.create_run("exp", colour="red")  # type: ignore[call-arg]


def test_the_lifecycle_records_start_and_end(history: RunHistory) -> None:
    run = history.create_run("exp")
    for status in (S.QUEUED, S.PREPARING, S.RUNNING, S.FINALIZING):
        run = history.set_status(run.id, status)
        assert run.status is status
    assert run.started is not None and run.ended is None
    started = run.started
    run = history.set_status(run.id, "finalizing", exit_code=0)  # the same status again: fields only
    assert run.exit_code == 0 and run.started == started
    done = history.set_status(run.id, S.COMPLETED)
    assert done.ended is not None and done.ended >= started and done.duration is not None
    failed = history.set_status(history.create_run("exp", status="Running").id, "failed", exit_code=1, signal=9,
                                error="Traceback...\nKeyError: 'x'")
    assert (failed.status, failed.exit_code, failed.signal) == (S.FAILED, 1, 9)
    assert failed.error == "Traceback...\nKeyError: 'x'"
    assert failed.ended is not None


_ORDER = [S.NOT_STARTED, S.QUEUED, S.PREPARING, S.RUNNING, S.FINALIZING]
_PATH = {s: _ORDER[1 : i + 1] for i, s in enumerate(_ORDER)} | {
    S.COMPLETED: [S.RUNNING, S.COMPLETED], S.FAILED: [S.FAILED], S.CANCELED: [S.CANCELED],
}


def _allowed(current: RunStatus, new: RunStatus) -> bool:
    """The rule, stated independently of the code's table."""
    if current in (S.COMPLETED, S.FAILED, S.CANCELED):
        return False
    if new in (S.FAILED, S.CANCELED):
        return True
    if new in (S.COMPLETED, S.FINALIZING):  # only a run that ran completes or finalizes
        return current in (S.RUNNING, S.FINALIZING)
    return _ORDER.index(new) >= _ORDER.index(current)


def test_every_status_transition_is_allowed_or_refused_by_the_rule(history: RunHistory) -> None:
    for current in RunStatus:
        for new in RunStatus:
            run = history.create_run("exp")
            for step in _PATH[current]:
                history.set_status(run.id, step)
            if _allowed(current, new):
                assert history.set_status(run.id, new).status is new
            else:
                with pytest.raises(StatusTransitionError, match=f"Run '{run.id}'"):
                    history.set_status(run.id, new)
                assert history.get_run(run.id).status is current
    with pytest.raises(StatusTransitionError, match="cannot start as Completed"):
        history.create_run("exp", status=S.COMPLETED)
    with pytest.raises(HistoryError, match="not a run status"):
        history.set_status(run.id, "Done")


def test_heartbeat_reports_the_status_and_stops_at_the_end(history: RunHistory) -> None:
    run = history.create_run("exp", status="Running")
    assert history.heartbeat(run.id, now=run.created + 5) is S.RUNNING
    assert history.get_run(run.id).heartbeat == run.created + 5
    history.set_status(run.id, "Canceled")  # e.g. by `runyard runs cancel` in another process
    last = history.get_run(run.id).heartbeat
    assert history.heartbeat(run.id, now=last + 100) is S.CANCELED
    assert history.get_run(run.id).heartbeat == last
    with pytest.raises(NotFoundError):
        history.heartbeat("exp_1_00000000")


def test_list_runs_newest_first_with_filters(history: RunHistory) -> None:
    a1 = history.create_run("a", created=100.0)
    b1 = history.create_run("b", created=200.0, status="Running")
    a2 = history.create_run("a", created=300.0, status="Queued", tags={"k": "v"})
    assert [r.id for r in history.list_runs()] == [a2.id, b1.id, a1.id]
    assert [r.id for r in history.list_runs("a")] == [a2.id, a1.id]
    assert [r.id for r in history.list_runs(status="running")] == [b1.id]
    assert [r.id for r in history.list_runs(status=[S.RUNNING, S.QUEUED], limit=1)] == [a2.id]
    assert history.list_runs("a", limit=1)[0].tags == {"k": "v"}
    assert history.list_runs("missing") == []
    with pytest.raises(HistoryError, match="at least 1"):
        history.list_runs(limit=0)


def test_lost_runs_are_those_with_an_old_heartbeat(history: RunHistory) -> None:
    now = 10_000.0
    fresh = history.create_run("exp", status="Running", created=now - 10)
    stale = history.create_run("exp", status="Running", created=now - 500)
    queued = history.create_run("exp", status="Queued", created=now - 900)
    ended = history.create_run("exp", status="Running", created=now - 1000)
    history.set_status(ended.id, "Failed")  # refreshes its heartbeat, but it has ended anyway
    revived = history.create_run("exp", status="Running", created=now - 800)
    history.heartbeat(revived.id, now=now - 1)
    assert [r.id for r in history.find_lost_runs(60, now=now)] == [queued.id, stale.id]
    assert [r.id for r in history.find_lost_runs(60, now=now, statuses=["Running"])] == [stale.id]
    assert [r.id for r in history.find_lost_runs(0, now=now)] == [queued.id, stale.id, fresh.id, revived.id]
    with pytest.raises(HistoryError, match="0 or more"):
        history.find_lost_runs(-1)


# -- metrics -----------------------------------------------------------------
def test_metrics_of_every_kind_come_back_in_order(history: RunHistory) -> None:
    run = history.create_run("exp")
    assert history.log_metrics(run.id, [
        ("loss", 0.5, 0), ("loss", 0.25, 1), ("loss", 3, 2),
        ("acc", [0.1, 0.2]), ("table", {"epoch": 1, "f1": 0.5}), ("note", "warmup done"), ("flag", True),
        ("bad", float("nan")), ("big", float("inf")), ("forced", [1, 2], None, "list"),
    ], pid=1234, now=50.0) == 10
    history.log_metrics(run.id, [("loss", 0.125, 3)])
    got = history.get_metrics(run.id)
    assert got["loss"] == [0.5, 0.25, 3.0, 0.125]
    assert (got["acc"], got["table"], got["note"], got["flag"]) == ([[0.1, 0.2]], [{"epoch": 1, "f1": 0.5}],
                                                                     ["warmup done"], [True])
    assert got["bad"][0] != got["bad"][0] and got["big"] == [float("inf")]
    assert history.get_metrics(run.id, ["acc"]) == {"acc": [[0.1, 0.2]]}
    points = history.get_metric_points(run.id, "loss")
    assert [(p.step, p.pid, p.time, p.kind) for p in points[:2]] == [(0, 1234, 50.0, "scalar"),
                                                                      (1, 1234, 50.0, "scalar")]
    assert points[-1].pid == os.getpid()
    assert [p.kind for p in history.get_metric_points(run.id) if p.name in ("acc", "table")] == ["list", "row"]
    assert history.log_metrics(run.id, []) == 0


def test_whole_numbers_stay_ints_exactly_and_steps_are_kept(history: RunHistory) -> None:
    run = history.create_run("exp")
    values = [84, -3, 0, 2**53 + 1, 2**63 + 5, -(2**70), 10**400]
    history.log_metrics(run.id, [("n", v, i) for i, v in enumerate(values)] + [("f", 84.0)])
    got = history.get_metrics(run.id)
    assert got["n"] == values and all(type(v) is int for v in got["n"])
    assert got["f"] == [84.0] and type(got["f"][0]) is float
    assert [(p.value, p.step) for p in history.get_metric_points(run.id, "n")] == list(zip(values, range(7),
                                                                                           strict=True))


def test_run_id_prefixes_and_tag_filters_in_the_database(history: RunHistory) -> None:
    a = history.create_run("exp", run_id="exp_1767225600_0a0a0a0a", tags={"lr": "0.1"}).id
    b = history.create_run("exp", run_id="exp_1767225600_0b0b0b0b", tags={"lr": "0.2", "k": ""}).id
    assert history.resolve_run_id("exp_1767225600_0a") == a
    with pytest.raises(NotFoundError, match="ambiguous"):
        history.resolve_run_id("exp_1767225600_0")
    with pytest.raises(NotFoundError):
        history.resolve_run_id("Exp_1767225600_0a")  # case-sensitive on both databases
    assert [r.id for r in history.list_runs(tags={"lr": "0.2"})] == [b]
    assert [r.id for r in history.list_runs(tags={"k": None})] == [b]
    assert [r.id for r in history.list_runs(tags={"lr": None}, status=["NotStarted"], limit=1)] == [b]


def test_bad_metrics_are_refused_before_anything_is_written(history: RunHistory) -> None:
    run = history.create_run("exp")
    with pytest.raises(HistoryError, match="'x' is a scalar"):
        history.log_metrics(run.id, [("ok", 1.0), ("x", object())])  # type: ignore[list-item]
    with pytest.raises(HistoryError, match="kind 'histogram'"):
        history.log_metrics(run.id, [("x", 1.0, None, "histogram")])  # type: ignore[list-item]
    with pytest.raises(HistoryError, match="must be a mapping"):
        history.log_metrics(run.id, [("x", [1], None, "row")])
    with pytest.raises(TypeError, match="step"):
        history.log_metrics(run.id, [("x", 1.0, 1.5)])  # type: ignore[list-item]
    with pytest.raises(HistoryError, match="not a valid metric name"):
        history.log_metrics(run.id, [("", 1.0)])
    assert history.get_metrics(run.id) == {}
    with pytest.raises(NotFoundError, match="runyard runs ls"):
        history.log_metrics("exp_1_00000000", [("x", 1.0)])
    with pytest.raises(NotFoundError):
        history.get_metrics("exp_1_00000000")


WORKERS = 16
PER_WORKER = 200
BATCH = 4


def _metrics_worker(path: str, shared_run: str, index: int, queue: Any) -> None:
    """One process of a run: logs metrics in small transactions to the shared
    run, drives a run of its own through its lifecycle, and heartbeats both."""
    try:
        history = RunHistory.open(path)
        own = history.create_run("own", tags={"worker": str(index)})
        for status in (S.QUEUED, S.PREPARING, S.RUNNING):
            history.set_status(own.id, status, supervisor_pid=os.getpid())
        for start in range(0, PER_WORKER, BATCH):
            steps = range(start, start + BATCH)
            history.log_metrics(shared_run, [("loss", index + s / 1000, s) for s in steps])
            history.log_metrics(own.id, [("step", s, s) for s in steps])
            if start % (BATCH * 10) == 0:
                assert history.heartbeat(shared_run) is S.RUNNING
                history.heartbeat(own.id)
                history.add_tags(shared_run, {f"worker-{index}": str(start)})
        history.set_status(own.id, S.COMPLETED, exit_code=0)
        history.close()
        queue.put("ok")
    except BaseException:
        queue.put(traceback.format_exc())


def test_many_processes_log_at_once_and_nothing_is_lost(location: str) -> None:
    with RunHistory.open(location) as history:
        shared = history.create_run("shared", status="Running")
    ctx = mp.get_context("fork")
    queue: Any = ctx.Queue()
    procs = [ctx.Process(target=_metrics_worker, args=(location, shared.id, i, queue)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r for r in results if r != "ok"] == []
    assert [p.exitcode for p in procs] == [0] * WORKERS

    with RunHistory.open(location) as history:
        points = history.get_metric_points(shared.id, "loss")
        assert len(points) == WORKERS * PER_WORKER
        per_pid = Counter(p.pid for p in points)
        assert len(per_pid) == WORKERS and set(per_pid.values()) == {PER_WORKER}
        for pid in per_pid:  # each writer's values in the order it logged them
            mine = [p for p in points if p.pid == pid]
            assert [p.step for p in mine] == list(range(PER_WORKER))
            assert len({int(p.value) for p in mine}) == 1
        own = history.list_runs("own", limit=None)
        assert len(own) == WORKERS and {r.status for r in own} == {S.COMPLETED}
        for run in own:
            assert history.get_metrics(run.id)["step"] == [float(s) for s in range(PER_WORKER)]
        assert len(history.get_run(shared.id).tags) == WORKERS


def test_a_history_used_across_fork_reconnects_in_the_child(history: RunHistory) -> None:
    run = history.create_run("exp", status="Running")
    history.log_metrics(run.id, [("x", 1.0)])  # the parent has a pooled connection now
    ctx = mp.get_context("fork")
    queue: Any = ctx.Queue()
    child = ctx.Process(target=_log_from_child, args=(history, run.id, queue))
    child.start()
    assert queue.get(timeout=60) == "ok"
    child.join(timeout=60)
    history.log_metrics(run.id, [("x", 3.0)])
    assert history.get_metrics(run.id)["x"] == [1.0, 2.0, 3.0]


def _log_from_child(history: RunHistory, run_id: str, queue: Any) -> None:
    try:
        history.log_metrics(run_id, [("x", 2.0)])
        queue.put("ok")
    except BaseException:
        queue.put(traceback.format_exc())


# -- locking -----------------------------------------------------------------
def _hold_write_lock(path: Path, started: threading.Event, release: threading.Event) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    started.set()
    release.wait(timeout=60)
    con.execute("ROLLBACK")
    con.close()


def test_a_write_waits_out_a_lock_held_past_the_busy_timeout(db_path: Path) -> None:
    history = RunHistory.open(db_path, busy_timeout=0.1)
    run = history.create_run("exp")
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db_path, started, release))
    holder.start()
    started.wait()
    threading.Timer(0.4, release.set).start()
    try:
        assert history.log_metrics(run.id, [("x", 1.0)]) == 1  # busy timeout, then retried with backoff
    finally:
        release.set()
        holder.join()
    history.close()


def test_a_lock_that_never_ends_is_reported_not_hung_on(db_path: Path) -> None:
    history = RunHistory.open(db_path, busy_timeout=0.01)
    run = history.create_run("exp")
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db_path, started, release))
    holder.start()
    started.wait()
    try:
        with pytest.raises(HistoryError, match="locked by another process"):
            history.log_metrics(run.id, [("x", 1.0)])
        assert history.get_run(run.id).status is S.NOT_STARTED  # WAL: reads go on meanwhile
    finally:
        release.set()
        holder.join()
    assert history.log_metrics(run.id, [("x", 1.0)]) == 1
    history.close()


# -- tags, properties, artifacts ---------------------------------------------
def test_tags_change_and_properties_are_add_only(history: RunHistory) -> None:
    run = history.create_run("exp", properties={"source": "cli"})
    history.add_tags(run.id, {"stage": "dev", "owner": "me"})
    history.add_tags(run.id, {"stage": "prod"})
    history.remove_tags(run.id, ["owner", "never-set"])
    assert history.get_run(run.id).tags == {"stage": "prod"}

    history.add_properties(run.id, {"source": "cli", "seed": "1"})  # same value again: fine
    with pytest.raises(PropertyConflictError, match=r"'source' is 'cli', not 'sdk'.*use a tag"):
        history.add_properties(run.id, {"source": "sdk", "extra": "x"})
    assert history.get_run(run.id).properties == {"source": "cli", "seed": "1"}  # nothing of the failed call
    with pytest.raises(TypeError, match="strings"):
        history.add_tags(run.id, {"n": 1})  # type: ignore[dict-item]
    with pytest.raises(NotFoundError):
        history.add_properties("exp_1_00000000", {"a": "b"})


def test_a_nul_character_is_replaced_in_run_text_and_refused_in_names_and_tags(history: RunHistory) -> None:
    """PostgreSQL's text cannot hold NUL; both databases treat it alike."""
    run = history.create_run("exp", status="Running")
    assert history.log_metrics(run.id, [("note", "a\x00b")]) == 1  # stored as JSON: kept exactly
    assert history.get_metrics(run.id) == {"note": ["a\x00b"]}
    failed = history.set_status(run.id, "Failed", exit_code=1, error="Traceback ...\nValueError: bad\x00byte")
    assert failed.error == history.get_run(run.id).error == "Traceback ...\nValueError: bad\ufffdbyte"
    with pytest.raises(HistoryError, match="tag 'k' contains a NUL character"):
        history.add_tags(run.id, {"k": "a\x00b"})
    with pytest.raises(HistoryError, match="property 'k' contains a NUL character"):
        history.add_properties(run.id, {"k": "a\x00b"})
    with pytest.raises(HistoryError, match="not a valid tag name"):
        history.add_tags(run.id, {"a\x00b": "v"})
    with pytest.raises(HistoryError, match="not a valid metric name"):
        history.log_metrics(run.id, [("a\x00b", 1.0)])
    assert (history.get_run(run.id).tags, history.get_run(run.id).properties) == ({}, {})


def test_artifacts_are_upserted_by_name(history: RunHistory) -> None:
    run = history.create_run("exp")
    assert history.upsert_artifacts(run.id, [
        Artifact("outputs/model.pt", 10, DIGEST, 1.0),
        Artifact("logs/train.log", 5, "b" * 64, 2.0),
        Artifact("outputs/a_b%c.txt", 1, "c" * 64),
        Artifact("outputsX/other", 1, "d" * 64),
    ]) == 4
    history.upsert_artifacts(run.id, [Artifact("logs/train.log", 9, "e" * 64, 3.0)])
    assert history.list_artifacts(run.id) == [
        Artifact("logs/train.log", 9, "e" * 64, 3.0),
        Artifact("outputs/a_b%c.txt", 1, "c" * 64),
        Artifact("outputs/model.pt", 10, DIGEST, 1.0),
        Artifact("outputsX/other", 1, "d" * 64),
    ]
    assert [a.name for a in history.list_artifacts(run.id, prefix="outputs/")] == ["outputs/a_b%c.txt",
                                                                                   "outputs/model.pt"]
    assert [a.name for a in history.list_artifacts(run.id, prefix="outputs/a_b%")] == ["outputs/a_b%c.txt"]
    for bad in ("/abs", "../up", "a//b", "a/./b", ""):
        with pytest.raises(HistoryError, match="not a valid artifact name"):
            history.upsert_artifacts(run.id, [Artifact(bad, 1, DIGEST)])
    with pytest.raises(HistoryError, match="64 lowercase hex"):
        history.upsert_artifacts(run.id, [Artifact("x", 1, "ABC")])
    with pytest.raises(HistoryError, match="whole number of bytes"):
        history.upsert_artifacts(run.id, [Artifact("x", -1, DIGEST)])
    with pytest.raises(NotFoundError):
        history.list_artifacts("exp_1_00000000")
