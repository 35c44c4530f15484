"""Selecting, ordering and paging runs with the filter language, on SQLite and PostgreSQL,
and through ``runyard runs ls``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Cli
from runyard.errors import FilterError
from runyard.history import RunStatus
from runyard.history.filters import parse_filter, parse_sort
from runyard.history.migrations import migrate
from runyard.history.query import query_runs
from runyard.history.store import RunHistory
from runyard.workspace import Workspace


@pytest.fixture(params=["sqlite", "postgres"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunHistory]:
    """Five runs with metrics, tags, properties and arguments, SQLite or PostgreSQL."""
    if request.param == "postgres":
        location: str = request.getfixturevalue("postgres").new_database()
    else:
        location = str(tmp_path / "history.db")
        sqlite3.connect(location).close()
    migrate(location)
    h = RunHistory.open(location)
    rows = [  # id, experiment, status, acc values, team, created, args
        ("a", "mnist", "Completed", [0.5, 0.7], "vision", 1000.0, ["--lr", "0.1"]),
        ("b", "mnist", "Completed", [0.95], "vision", 2000.0, ["--lr", "0.01"]),
        ("c", "mnist", "Failed", [0.99, 0.2], "nlp", 3000.0, ["--lr", "0.1"]),
        ("d", "cifar", "Completed", [], "vision", 4000.0, []),
        ("e", "cifar", "Running", [0.91], None, 5000.0, ["--epochs", "3"]),
    ]
    for run_id, exp, status, accs, team, created, args in rows:
        tags = {"team": team} if team else {}
        h.create_run(exp, run_id=f"{exp}_{int(created)}_{run_id}", status=RunStatus.RUNNING, created=created,
                     tags=tags, properties={"owner": run_id.upper()}, script="train.py", arguments=args,
                     started=created + 1)
        for step, acc in enumerate(accs):
            h.log_metrics(f"{exp}_{int(created)}_{run_id}", [("acc", acc, step)])
        if status != "Running":
            h.set_status(f"{exp}_{int(created)}_{run_id}", status, ended=created + 1 + 10 * len(run_id * 3))
    h.log_metrics("mnist_1000_a", [("stage", "warm-up", None)])
    yield h
    h.close()


def ids(page: object) -> list[str]:
    return [r.id.rsplit("_", 1)[1] for r in page.runs]  # type: ignore[attr-defined]


@pytest.mark.parametrize("text, expected", [
    ("metrics.acc > 0.9", ["e", "b"]),  # the last value: c's is 0.2
    ("metrics.acc > 0.9 and tags.team = vision", ["b"]),
    ('tags.team = "vision" or status = Failed', ["d", "c", "b", "a"]),
    ("not tags.team = vision", ["e", "c"]),  # not: everything else, the run without the tag too
    ("tags.team != vision", ["c"]),  # a comparison: only runs that have the tag
    ("tags.team is null", ["e"]),
    ("tags.team is not null and experiment = cifar", ["d"]),
    ("status in (Failed, running)", ["e", "c"]),
    ("metrics.acc is null", ["d"]),
    ('arguments like "%--lr 0.1%"', ["c", "a"]),
    ('arguments = "--lr 0.01"', ["b"]),
    ("created >= 3000 and created < 5000", ["d", "c"]),
    ('created >= "1970-01-01T00:50:00"', ["e", "d", "c"]),
    ("duration > 15", ["d", "c", "b", "a"]),
    ("properties.owner = B or properties.owner = 'D'", ["d", "b"]),
    ('metrics.stage = "warm-up"', ["a"]),
    ('metrics.stage like "warm%"', ["a"]),
    ("(metrics.acc >= 0.5 or tags.team = nlp) and not (experiment = cifar)", ["c", "b", "a"]),
    ("metrics.`acc` <= 0.7", ["c", "a"]),
])
def test_filters(history: RunHistory, text: str, expected: list[str]) -> None:
    assert ids(query_runs(history, filter=text)) == expected


def test_sorting_paging_and_columns(history: RunHistory) -> None:
    page = query_runs(history, sort=["-metrics.acc"], columns=["metrics.acc", "tags.team", "duration"], limit=2)
    assert ids(page) == ["b", "e"] and page.more
    assert page.columns[page.runs[0].id] == {"metrics.acc": 0.95, "tags.team": "vision", "duration": 30.0}
    rest = query_runs(history, sort=["-metrics.acc"], limit=2, offset=2)
    assert ids(rest) == ["a", "c"] and rest.more  # then d, which has no acc: last either way
    assert ids(query_runs(history, sort=["metrics.acc"])) == ["c", "a", "e", "b", "d"]
    assert ids(query_runs(history, sort=["tags.team desc", "created"])) == ["a", "b", "d", "c", "e"]
    assert ids(query_runs(history, experiment="cifar")) == ["e", "d"]


@pytest.mark.parametrize("text, said", [
    ("metrics.acc >", "expected more at position 14"),
    ("metric.acc > 1", "'metric.acc' is not a field. Fields: id, experiment"),
    ("metrics > 1", "name the metric"),
    ("status = Finished", "Finished"),
    ("created > yesterday", "ISO date"),
    ("duration > soon", "is a number"),
    ("tags.team = vision tags.x = 1", "unexpected 'tags.x' at position 20"),
    ("tags.team ~ vision", "cannot read the filter at position 11"),
    ("(status = Failed", "expected )"),
    ("arguments > 3", "arguments are text"),
    ("metrics.acc > 'high'", "compare a metric with a number"),
])
def test_bad_filters_say_where_and_what(history: RunHistory, text: str, said: str) -> None:
    with pytest.raises(FilterError, match=said.replace("(", r"\(").replace(")", r"\)")):
        query_runs(history, filter=text)


def test_sort_keys() -> None:
    keys = parse_sort("-metrics.acc, created", "tags.team desc")
    assert [(str(k.field), k.descending) for k in keys] == [("metrics.acc", True), ("created", False),
                                                             ("tags.team", True)]
    with pytest.raises(FilterError, match="sort by FIELD"):
        parse_sort("metrics.acc sideways")
    assert parse_filter("  ") is None


def test_injection_is_just_text(history: RunHistory) -> None:
    hostile = "tags.team = \"x' OR 1=1; DROP TABLE runs; --\""
    assert ids(query_runs(history, filter=hostile)) == []
    assert len(query_runs(history).runs) == 5


def test_runs_ls_filters_sorts_and_shows_columns(workspace: Workspace, tmp_path: Path) -> None:
    import runyard
    from trees import write_script

    src = tmp_path / "src"
    src.mkdir()
    write_script(src, "t.py", "import sys\nfrom runyard import Run\nRun.get_context().log('acc', float(sys.argv[1]))\n")
    exp = runyard.Experiment(workspace, "q")
    for acc, team in (("0.5", "vision"), ("0.95", "vision"), ("0.8", "nlp")):
        run = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="t.py", arguments=[acc],
                                                 tags={"team": team}))
        assert run.wait_for_completion()["status"] == "Completed"
    cli = Cli(workspace)
    shown = cli("runs", "ls", "--filter", 'metrics.acc > 0.6 and tags.team = "vision"', "-c", "metrics.acc")
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("q_") == 1 and "0.95" in shown.output and "metrics.acc" in shown.output
    listed = json.loads(cli("runs", "ls", "--sort", "-metrics.acc", "-c", "metrics.acc", "--json").output)
    assert [r["metrics.acc"] for r in listed] == [0.95, 0.8, 0.5]
    paged = cli("runs", "ls", "--sort", "metrics.acc", "-n", "2")
    assert paged.output.count("q_") == 2 and "--offset 2" in paged.output
    bad = cli("runs", "ls", "--filter", "metrics.acc >")
    assert bad.exit_code == 1 and "expected more at position 14" in bad.output and "Traceback" not in bad.output
    mixed = cli("runs", "ls", "--status", "Completed", "--tag", "team=nlp", "--filter", "metrics.acc < 1")
    assert mixed.output.count("q_") == 1


def test_runs_compare(workspace: Workspace, tmp_path: Path) -> None:
    import runyard
    from trees import write_script

    src = tmp_path / "src"
    src.mkdir()
    write_script(src, "t.py", "import sys\nfrom runyard import Run\nRun.get_context().log('acc', float(sys.argv[1]))\n")
    exp = runyard.Experiment(workspace, "cmp")
    first = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="t.py", arguments=["0.5"],
                                               tags={"team": "vision"}))
    first.wait_for_completion()
    (src / "t.py").write_text((src / "t.py").read_text() + "# tuned\n")
    second = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="t.py", arguments=["0.9"],
                                                tags={"team": "vision"}))
    second.wait_for_completion()
    cli = Cli(workspace)
    shown = cli("runs", "compare", first.id, second.id)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert any(ln.startswith("* metrics.acc") and "0.5" in ln and "0.9" in ln for ln in lines)
    assert any(ln.startswith("  tags.team") for ln in lines)  # the same: not marked
    assert "M t.py" in shown.output
    only = cli("runs", "compare", first.id, second.id, "--diff")
    assert "tags.team" not in only.output and "* arguments" in only.output
    doc = json.loads(cli("runs", "compare", first.id, second.id, "--json").output)
    assert doc["runs"] == [first.id, second.id] and ["M", "t.py"] in doc["snapshotChanges"]
    one = cli("runs", "compare", first.id)
    assert one.exit_code == 1 and "Compare 2 to 200 runs" in one.output
    twice = cli("runs", "compare", first.id, first.id)
    assert twice.exit_code == 1 and "named twice" in twice.output


def test_delete_runs_takes_everything_of_ended_runs_only(history: RunHistory) -> None:
    gone = history.delete_runs(["mnist_1000_a", "cifar_5000_e", "no_such_run"])
    assert gone == ["mnist_1000_a"]  # e is Running: kept
    assert ids(query_runs(history)) == ["e", "d", "c", "b"]
    with history.database.engine.connect() as conn:  # the cascade took its metric points
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM metrics WHERE run_id = 'mnist_1000_a'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM tags WHERE run_id = 'mnist_1000_a'")).scalar() == 0
    assert history.get_run("cifar_5000_e").status is RunStatus.RUNNING


def test_runs_rm(workspace: Workspace, tmp_path: Path) -> None:
    import os
    import time

    import runyard
    from trees import write_script

    src = tmp_path / "src"
    src.mkdir()
    write_script(src, "t.py", "import sys, time\nfrom runyard import Run\nRun.get_context().log('x', 1)\n"
                              "time.sleep(float(sys.argv[1]))\n")
    exp = runyard.Experiment(workspace, "rm")
    done = [exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="t.py", arguments=["0"]))
            for _ in range(3)]
    for run in done:
        run.wait_for_completion()
    going = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="t.py", arguments=["60"]))
    deadline = time.monotonic() + 30
    while going.get_status() != "Running" and time.monotonic() < deadline:
        time.sleep(0.05)
    cli = Cli(workspace)
    folder = Path(workspace.runs_dir) / done[0].id
    gone = cli("runs", "rm", done[0].id)
    assert gone.exit_code == 0 and f"removed {done[0].id}" in gone.output, gone.output
    assert not folder.exists()
    with pytest.raises(runyard.NotFoundError):
        workspace.open_history().get_run(done[0].id)
    kept = cli("runs", "rm", going.id)
    assert kept.exit_code == 1 and "cancel it first" in kept.output
    asked = cli("runs", "rm", "--older-than", "0s", "-e", "rm")
    assert asked.exit_code == 1 and "Add --yes" in asked.output and "would remove" in asked.output
    listed = cli("runs", "rm", "--older-than", "0s", "--filter", "status = Completed", "--dry-run")
    assert listed.output.count("would remove") == 2
    assert len(workspace.open_history().list_runs("rm")) == 3
    young = cli("runs", "rm", "--older-than", "1d", "--yes")
    assert "No runs match" in young.output
    removed = cli("runs", "rm", "--older-than", "0s", "--yes")
    assert removed.output.count("removed") == 2, removed.output
    assert [r.id for r in workspace.open_history().list_runs("rm")] == [going.id]
    for args, said in ((["--older-than", "soon"], "not an age"), ([], "Say which runs"),
                       ([going.id, "--older-than", "1d"], "not both")):
        bad = cli("runs", "rm", *args)
        assert bad.exit_code == 1 and said in bad.output, bad.output
    going.cancel()
    going.wait_for_completion(raise_on_error=False)
    assert os.path.isdir(workspace.runs_dir)
