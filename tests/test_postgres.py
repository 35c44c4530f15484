"""The run history and the data catalog on a real PostgreSQL server (the
session's ``postgres`` fixture: a throwaway cluster on 127.0.0.1), each test in
a database of its own.

The history's behaviour (statuses, metrics from many processes, tags and
properties, artifacts, migrations at once, a newer schema) is tested on both
databases in test_history.py (its ``[postgres]`` tests); here: what only a
server shows (connection errors, an empty database), the data catalog, writers
racing for the same dataset, and a real run recorded in PostgreSQL.
"""

from __future__ import annotations

import multiprocessing as mp
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runyard
from runyard.errors import HistoryError, NotFoundError, SchemaVersionError
from runyard.history import RunHistory, migrate
from runyard.history.catalog import DataCatalog, RunDataRow
from runyard.history.schema import SCHEMA_VERSION
from runyard.workspace import Workspace
from services import Postgres, free_port

pytestmark = pytest.mark.timeout(120)


ALL_STEPS = list(range(1, SCHEMA_VERSION + 1))


@pytest.fixture
def url(postgres: Postgres) -> str:
    """A fresh, migrated database."""
    url = postgres.new_database()
    assert migrate(url) == ALL_STEPS
    return url


@pytest.fixture
def history(url: str) -> Iterator[RunHistory]:
    h = RunHistory.open(url)
    yield h
    h.close()


@pytest.fixture
def catalog(history: RunHistory) -> DataCatalog:
    return DataCatalog(history)


# -- the database --------------------------------------------------------------
def test_migrate_once_then_nothing_and_an_empty_database_asks_for_init(postgres: Postgres) -> None:
    url = postgres.new_database()
    with pytest.raises(SchemaVersionError, match=r"has no runyard tables.*runyard init"):
        RunHistory.open(url)
    assert migrate(url) == ALL_STEPS
    assert migrate(url) == []
    with RunHistory.open(url) as history:
        assert history.check() == SCHEMA_VERSION
        assert history.location == url  # no password to hide
        run = history.create_run("exp", status="Running")
        assert [r.id for r in history.list_runs()] == [run.id]


def test_an_unreachable_server_or_missing_database_is_a_history_error(postgres: Postgres) -> None:
    nobody_listens = f"postgresql+psycopg://{postgres.user}@127.0.0.1:{free_port()}/runyard"
    with pytest.raises(HistoryError, match=r"Cannot read the run history 'postgresql\+psycopg://") as info:
        RunHistory.open(nobody_listens)
    assert info.value.__cause__ is not None
    with pytest.raises(HistoryError, match="does not exist"):
        migrate(postgres.url("no_such_database"))


# -- datastores ----------------------------------------------------------------
def test_datastores_put_get_list_replace_remove(catalog: DataCatalog) -> None:
    assert catalog.get_datastore("lake") is None and catalog.list_datastores() == []
    first = catalog.put_datastore("lake", "s3", {"bucket": "b", "endpoint_url": "http://x"},
                                  {"secret_access_key": "env:KEY"})
    catalog.put_datastore("archive", "gcs", {"bucket": "g"}, {})
    assert catalog.get_datastore("lake") == first
    assert (first.options, first.secret_refs) == ({"bucket": "b", "endpoint_url": "http://x"},
                                                  {"secret_access_key": "env:KEY"})
    with pytest.raises(HistoryError, match=r"'lake' is already registered.*--replace"):
        catalog.put_datastore("lake", "s3", {"bucket": "other"}, {})
    assert catalog.get_datastore("lake") == first  # unchanged by the refused call

    again = catalog.put_datastore("lake", "azureblob", {"container": "c"}, {"account_key": "stored"}, replace=True)
    assert (again.kind, again.options, again.created) == ("azureblob", {"container": "c"}, first.created)
    assert again.updated >= first.updated
    assert catalog.get_datastore("lake") == again
    assert [d.name for d in catalog.list_datastores()] == ["archive", "lake"]
    assert catalog.remove_datastore("lake") is True
    assert catalog.remove_datastore("lake") is False
    assert [d.name for d in catalog.list_datastores()] == ["archive"]


# -- datasets ------------------------------------------------------------------
FILES = [["a.csv", 4, 1.5, "e1"], ["sub/b.csv", 400, 2.5, "e2"]]
SOURCES = [{"datastore": "lake", "pattern": "raw/**/*.csv", "base": "raw"}]


def add(catalog: DataCatalog, name: str, digest: str, **kw: Any) -> tuple[int, bool]:
    row, new = catalog.add_dataset_version(name, sources=SOURCES, files=FILES, total_bytes=404, digest=digest, **kw)
    return row.version, new


def test_dataset_versions_count_up_and_the_same_files_give_the_same_version(history: RunHistory,
                                                                             catalog: DataCatalog) -> None:
    assert add(catalog, "train", "d1", description="first", tags={"team": "a"}) == (1, True)
    assert add(catalog, "train", "d1") == (1, False)  # the same file list: the latest version back
    assert add(catalog, "train", "d2") == (2, True)
    assert add(catalog, "train", "d2", reuse_same=False) == (3, True)
    run = history.create_run("exp")
    assert add(catalog, "train", "d2", run_id=run.id) == (4, True)  # a run's output is always a new version
    with pytest.raises(HistoryError, match=r"'train' is already registered \(latest version 4\)"):
        add(catalog, "train", "d9", new_version=False)
    assert add(catalog, "other", "d1", new_version=False) == (1, True)  # a new name: fine

    v1 = catalog.get_dataset_version("train", 1)
    assert (v1.description, v1.tags, v1.sources, v1.files) == ("first", {"team": "a"}, SOURCES, FILES)
    assert (v1.file_count, v1.total_bytes, v1.digest, v1.run_id) == (2, 404, "d1", None)
    latest = catalog.get_dataset_version("train")
    assert (latest.version, latest.run_id) == (4, run.id)

    assert [(name, v, n, size) for name, v, _, n, size in catalog.list_datasets()] == [("other", 1, 2, 404),
                                                                                      ("train", 4, 2, 404)]
    versions = catalog.list_versions("train")
    assert [(v, run_id) for v, _, _, _, run_id in versions] == [(1, None), (2, None), (3, None), (4, run.id)]
    assert all(isinstance(created, float) for _, created, _, _, _ in versions)
    assert catalog.list_versions("missing") == []


def test_missing_datasets_and_versions_say_what_exists(catalog: DataCatalog) -> None:
    with pytest.raises(NotFoundError, match=r"no dataset named 'train'\. No dataset is registered yet\. "
                                            r"Register one with: runyard dataset register"):
        catalog.get_dataset_version("train")
    add(catalog, "train", "d1")
    add(catalog, "train", "d2")
    add(catalog, "eval", "d3")
    with pytest.raises(NotFoundError, match=r"no dataset named 'nope'\. Registered datasets: eval, train\."):
        catalog.get_dataset_version("nope", 1)
    with pytest.raises(NotFoundError, match=r"'train' has no version 9; its versions are 1, 2\. "
                                            r"See: runyard dataset show train"):
        catalog.get_dataset_version("train", 9)


DATASET_WRITERS = 6


def _add_versions(url: str, run_ids: list[str], queue: Any) -> None:
    try:
        with RunHistory.open(url) as history:
            catalog = DataCatalog(history)
            queue.put([add(catalog, "model", "d", run_id=run_id)[0] for run_id in run_ids])
    except BaseException:
        queue.put(traceback.format_exc())


def test_runs_registering_the_same_dataset_at_once_get_versions_in_turn(url: str, history: RunHistory) -> None:
    """Runs ending together, each registering its output as a version of one dataset."""
    runs = [[history.create_run("sweep").id for _ in range(5)] for _ in range(DATASET_WRITERS)]
    ctx = mp.get_context("fork")
    queue: Any = ctx.Queue()
    procs = [ctx.Process(target=_add_versions, args=(url, ids, queue)) for ids in runs]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r for r in results if not isinstance(r, list)] == []
    total = DATASET_WRITERS * 5
    assert sorted(v for r in results for v in r) == list(range(1, total + 1))
    assert [v for v, *_ in DataCatalog(history).list_versions("model")] == list(range(1, total + 1))


# -- lineage -------------------------------------------------------------------
def test_run_data_is_upserted_and_found_by_dataset(history: RunHistory, catalog: DataCatalog) -> None:
    reader, writer = history.create_run("exp"), history.create_run("exp")
    add(catalog, "train", "d1")
    catalog.record_run_data([
        RunDataRow(reader.id, "input", "train", "download", "train", 1, "lake", "raw", "read", {"files": 2}),
        RunDataRow(writer.id, "input", "train", "mount", "train", 1, "lake", "raw", "read"),
        RunDataRow(writer.id, "output", "model", "upload", None, None, "lake", "out/model", "pending"),
    ])
    # Recorded again (a reader records the end after the supervisor): the row is replaced, not doubled.
    catalog.record_run_data([RunDataRow(writer.id, "output", "model", "upload", None, None, "lake", "out/model",
                                        "stored", {"files": 1, "bytes": 7})])
    assert [(r.direction, r.name, r.state, r.detail) for r in catalog.run_data(writer.id)] == [
        ("input", "train", "read", {}), ("output", "model", "stored", {"files": 1, "bytes": 7})]
    version, _ = add(catalog, "model", "d9", run_id=writer.id)
    catalog.set_run_data_state(writer.id, "output", "model", "registered", version=version, dataset="model")
    out = catalog.run_data(writer.id)[1]
    assert (out.state, out.dataset, out.version, out.detail) == ("registered", "model", 1, {"files": 1, "bytes": 7})

    assert sorted(r.run_id for r in catalog.dataset_runs("train")) == sorted([reader.id, writer.id])
    assert [r.run_id for r in catalog.dataset_runs("train", 2)] == []
    assert [(r.run_id, r.direction) for r in catalog.dataset_runs("model", 1)] == [(writer.id, "output")]
    assert catalog.run_data(reader.id)[0].detail == {"files": 2}
    catalog.record_run_data([])  # nothing to record: fine


# -- a real run ----------------------------------------------------------------
def test_a_run_records_its_status_and_metrics_in_postgresql(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database()
    ws = Workspace.create(tmp_path / "ws")
    ws.set_setting("history.url", url)
    assert ws.migrate() == ALL_STEPS
    src = tmp_path / "proj"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent("""
        import runyard
        run = runyard.Run.get_context()
        for step in range(3):
            run.log("loss", 1.0 / (step + 1), step=step)
        run.log_list("acc", [0.5, 0.75])
        run.tag("stage", "test")
    """))
    (src / "crash.py").write_text('raise ValueError("bad\\x00byte")\n')  # a NUL in the traceback
    experiment = runyard.Experiment(ws, "pg")
    run = experiment.submit(runyard.ScriptRunConfig(source_directory=str(src), script="train.py"))
    details = run.wait_for_completion()
    assert (details["status"], details["exitCode"]) == ("Completed", 0)
    assert run.get_metrics() == {"loss": [1.0, 0.5, pytest.approx(1 / 3)], "acc": [0.5, 0.75]}
    crashed = experiment.submit(runyard.ScriptRunConfig(source_directory=str(src), script="crash.py"))
    details = crashed.wait_for_completion(raise_on_error=False)
    assert (details["status"], details["exitCode"]) == ("Failed", 1)
    assert "ValueError: bad\ufffdbyte" in details["error"]
    # It is all in PostgreSQL, not in the workspace's own SQLite file.
    with RunHistory.open(url) as history:
        stored = history.get_run(run.id)
        assert (stored.status.value, stored.exit_code, dict(stored.tags)) == ("Completed", 0, {"stage": "test"})
        assert history.get_metrics(run.id)["loss"][:2] == [1.0, 0.5]
        assert "runyard_logs/driver_log.txt" in {a.name for a in history.list_artifacts(run.id)}
    with RunHistory.open(Path(ws.path) / "history.db") as local:
        assert local.list_runs() == []
