"""Traps a new user met in daily use (issue 10, item 5): the workspace kept out
of git, limit advice for the command typed, what ``runs show`` and ``runs ls``
say, whole-number metrics and steps, run id prefixes, the home workspace made
by the SDK, the offline run, and "1 files".

Real workspaces in ``tmp_path``, real SQLite, real git; runs are recorded
through the history (no supervisor needed to read them back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import runyard
from conftest import Cli, git
from runyard.cli import main
from runyard.errors import HistoryError, NotFoundError, RunError, SnapshotLimitError
from runyard.history import RunHistory
from runyard.workspace import Workspace
from trees import write_tree


def finished(history: RunHistory, experiment: str = "exp", status: str = "Completed", **fields: object) -> str:
    """A run recorded as it would be after it ran; returns its id."""
    run = history.create_run(experiment, status="Running", **fields)  # type: ignore[arg-type]
    if status == "Completed":
        history.set_status(run.id, "Completed", exit_code=0)
    else:
        history.set_status(run.id, status)
    return run.id


# -- the workspace keeps itself out of git --------------------------------------------------


def test_init_keeps_the_workspace_out_of_git(tmp_path: Path) -> None:
    proj = write_tree(tmp_path / "proj", {"train.py": "print(1)\n", ".env": "AWS_SECRET_ACCESS_KEY=x\n"})
    git(proj, "init", "-q", ".")
    r = CliRunner().invoke(main, ["init", str(proj)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    ws = proj / ".runyard"
    assert (ws / ".gitignore").read_text().splitlines()[-1] == "*"
    (ws / "credentials.json").write_text("{}")  # what a datastore registration writes
    (ws / "store" / "blobs").mkdir(parents=True, exist_ok=True)
    (ws / "store" / "blobs" / "ab").write_bytes(b"a copy of .env")
    git(proj, "add", "-A")
    added = git(proj, "diff", "--cached", "--name-only").split()
    assert "train.py" in added
    assert [p for p in added if p.startswith(".runyard")] == []


def test_init_on_an_existing_workspace_adds_the_gitignore_and_keeps_one_you_wrote(tmp_path: Path) -> None:
    proj = write_tree(tmp_path / "proj", {"a.py": "a"})
    ws = Workspace.create(proj)
    ignore = Path(ws.path) / ".gitignore"
    ignore.unlink()  # a workspace made by an older runyard
    r = CliRunner().invoke(main, ["init", str(proj)], catch_exceptions=False)
    assert r.exit_code == 0 and "Workspace already at" in r.output
    assert ignore.read_text().splitlines()[-1] == "*"
    git(proj, "init", "-q", ".")
    git(proj, "add", "-A")
    assert git(proj, "diff", "--cached", "--name-only").split() == ["a.py"]
    ignore.write_text("history.db\n")  # the user's own choice
    Workspace.create(proj)
    assert ignore.read_text() == "history.db\n"


# -- the SDK says it made the home workspace --------------------------------------------------


def test_from_config_says_once_that_it_made_the_home_workspace(capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace.from_config()
    assert ws.path == os.path.join(os.path.expanduser("~"), ".runyard")
    err = capsys.readouterr().err
    assert err == f"runyard: created the workspace {ws.path} (make a project one with: runyard init)\n"
    Workspace.from_config()
    assert capsys.readouterr().err == ""  # once: it exists now


def test_from_config_quiet_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Workspace.from_config(quiet=True)
    assert capsys.readouterr().err == ""


# -- over the limit: the advice names the command typed --------------------------------------


def many_files(root: Path) -> Path:
    """cache/ holds the most files, weights/ the most bytes."""
    files: dict[str, str | bytes] = {f"cache/{i:02}.npy": b"x" for i in range(6)}
    files |= {"weights/model.bin": b"w" * 5000, "logs/a.txt": b"l", "logs/b.txt": b"l", "train.py": "print(1)\n"}
    return write_tree(root, files)


def section(message: str, title: str) -> list[str]:
    lines = message.splitlines()
    start = lines.index(title)
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.split()[-1])
    return out


def test_run_over_the_file_limit_suggests_run_max_files_and_lists_the_fullest_folders(
    tmp_path: Path, cli: Cli, workspace: Workspace
) -> None:
    src = many_files(tmp_path / "src")
    r = cli("run", "--detach", "--source-dir", str(src), "--max-files", "5", "train.py")
    assert r.exit_code == 1
    assert r.stderr.startswith(f"While attempting to take snapshot of {src}\nYour project exceeds the file limit of 5.")
    assert "runyard run --max-files 5000 ... SCRIPT" in r.stderr
    assert "snapshot create" not in r.stderr and "ws.snapshot" not in r.stderr
    assert section(r.stderr, "Directories with the most files:") == ["cache/", "logs/", "weights/"]
    assert "Largest files:" not in r.stderr  # size is not what is over
    assert "       6 files" in r.stderr
    with workspace.open_history() as history:
        assert history.list_runs() == []  # nothing recorded


def test_snapshot_create_and_the_sdk_each_name_their_own_option(tmp_path: Path, cli: Cli,
                                                               workspace: Workspace) -> None:
    src = many_files(tmp_path / "src")
    r = cli("snapshot", "create", str(src), "--max-files", "5")
    assert r.exit_code == 1
    assert "runyard snapshot create --max-files 5000 ..." in r.stderr and "runyard run" not in r.stderr
    with pytest.raises(SnapshotLimitError) as info:
        workspace.snapshot(src, max_files=5)
    assert "ws.snapshot(source_dir, max_files=5000)" in str(info.value)
    assert "runyard snapshot create" not in str(info.value)
    assert info.value.over_files and not info.value.over_bytes


def test_submit_over_the_limit_raises_names_scriptrunconfig_and_records_nothing(tmp_path: Path,
                                                                              workspace: Workspace) -> None:
    """docs/sdk.md: a submit over the limit raises SnapshotLimitError and records nothing."""
    src = many_files(tmp_path / "src")
    config = runyard.ScriptRunConfig(source_directory=str(src), script="train.py", max_bytes=1000)
    with pytest.raises(SnapshotLimitError) as info:
        runyard.Experiment(workspace, "limits").submit(config)
    message = str(info.value)
    assert 'ScriptRunConfig(..., max_bytes="1GiB")' in message and "runyard snapshot create" not in message
    assert section(message, "Largest files:")[0] == "weights/model.bin"
    with workspace.open_history() as history:
        assert history.list_runs() == [] and history.list_experiments() == []
    assert not os.path.exists(workspace.runs_dir) or os.listdir(workspace.runs_dir) == []


def test_a_one_file_tree_over_the_size_limit_says_1_file(tmp_path: Path, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"big.bin": b"x" * 2000})
    with pytest.raises(SnapshotLimitError, match=r"would hold 1 file, 2.0 KiB \(2000 bytes\); the limits are "
                                                 r"2000 files \(default\) and 1000 B \(argument\)"):
        workspace.snapshot(src, max_bytes=1000)
    with pytest.raises(SnapshotLimitError, match=r"the limits are 1 file \(argument\) and no size limit"):
        workspace.snapshot(write_tree(tmp_path / "two", {"a": "a", "b": "b"}), max_files=1, max_bytes=0)


# -- runs show: everything the history has -------------------------------------------------------


def test_runs_show_has_tags_python_command_line_parent_ints_and_steps(cli: Cli, workspace: Workspace) -> None:
    with workspace.open_history() as history:
        parent = finished(history)
        rid = finished(history, tags={"lr": "0.1", "baseline": ""}, python_version="3.11.2",
                       command_line="/usr/bin/python3 train.py --lr 0.1", parent_run_id=parent,
                       script="train.py", arguments=["--lr", "0.1"])
        history.log_metrics(rid, [("epochs", 84), ("loss", 0.5, 0), ("loss", 0.25, 1), ("big", 2**53 + 1),
                                  ("acc", 0.75, 7)] + [("lr", 0.1 / (i + 1), i) for i in range(8)])
    r = cli("runs", "show", rid)
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "tags: baseline, lr=0.1\n" in out
    assert "python: 3.11.2\n" in out
    assert "command: /usr/bin/python3 train.py --lr 0.1\n" in out
    assert f"rerun of: {parent}\n" in out
    assert "  epochs: 84\n" in out and f"  big: {2**53 + 1}\n" in out  # not 84.0
    assert "  loss: [0.5, 0.25] (steps 0, 1)\n" in out
    assert "  acc: 0.75 (step 7)\n" in out
    assert "  lr: 0.0125 (step 7; last of 8)\n" in out

    shown = json.loads(cli("runs", "show", "--json", rid).stdout)
    assert shown["tags"] == {"lr": "0.1", "baseline": ""}
    assert (shown["pythonVersion"], shown["commandLine"], shown["parentRunId"]) == (
        "3.11.2", "/usr/bin/python3 train.py --lr 0.1", parent)
    assert shown["metrics"]["epochs"] == 84 and shown["metrics"]["big"] == 2**53 + 1
    assert shown["metricSteps"]["loss"] == [0, 1] and "epochs" not in shown["metricSteps"]


def test_get_details_and_metric_points(workspace: Workspace) -> None:
    with workspace.open_history() as history:
        rid = finished(history, python_version="3.11.2", command_line="python x.py")
        history.log_metrics(rid, [("n", 3), ("loss", 0.5, 4)])
    run = runyard.Run(workspace, rid)
    details = run.get_details()
    assert (details["pythonVersion"], details["commandLine"], details["parentRunId"]) == ("3.11.2", "python x.py",
                                                                                          None)
    assert run.get_metrics() == {"loss": 0.5, "n": 3} and type(run.get_metrics()["n"]) is int
    assert [(p.name, p.value, p.step) for p in run.get_metric_points()] == [("n", 3, None), ("loss", 0.5, 4)]
    assert [p.step for p in run.get_metric_points("loss")] == [4]


# -- runs ls -------------------------------------------------------------------------------------


@pytest.fixture
def listed(workspace: Workspace) -> dict[str, str]:
    """Five runs in two experiments, with tags and statuses; name -> id."""
    with workspace.open_history() as history:
        ids = {
            "a1": finished(history, "alpha", tags={"lr": "0.1", "kind": "base"}, script="train.py",
                           arguments=["--lr", "0.1"], created=1000.0),
            "a2": finished(history, "alpha", "Failed", tags={"lr": "0.2"}, created=2000.0),
            "a3": finished(history, "alpha", "Canceled", tags={"lr": "0.1"}, created=3000.0),
            "b1": finished(history, "beta", tags={"kind": "probe"}, created=4000.0),
            "b2": finished(history, "beta", created=5000.0),
        }
    return ids


def test_runs_ls_has_a_header_and_json(cli: Cli, listed: dict[str, str]) -> None:
    r = cli("runs", "ls")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["RUN", "ID", "STATUS", "CREATED", "DURATION", "SCRIPT"]
    assert [line.split()[0] for line in lines[1:]] == [listed[k] for k in ("b2", "b1", "a3", "a2", "a1")]
    assert lines[-1].rstrip().endswith("train.py --lr 0.1")
    rows = json.loads(cli("runs", "ls", "--json").stdout)
    assert [row["runId"] for row in rows] == [listed[k] for k in ("b2", "b1", "a3", "a2", "a1")]
    assert rows[-1]["tags"] == {"kind": "base", "lr": "0.1"} and rows[-1]["arguments"] == ["--lr", "0.1"]
    assert rows[-1]["experiment"] == "alpha" and rows[-1]["status"] == "Completed"
    assert rows[-1]["createdTimeUtc"] == "1970-01-01T00:16:40.000Z"


def ids_of(cli: Cli, *args: str) -> list[str]:
    r = cli("runs", "ls", "--json", *args)
    assert r.exit_code == 0, r.stderr
    return [row["runId"] for row in json.loads(r.stdout)]


def test_runs_ls_filters_by_tag_status_and_experiment(cli: Cli, listed: dict[str, str]) -> None:
    assert ids_of(cli, "--tag", "lr=0.1") == [listed["a3"], listed["a1"]]
    assert ids_of(cli, "--tag", "lr=0.1", "--tag", "kind=base") == [listed["a1"]]
    assert ids_of(cli, "--tag", "kind") == [listed["b1"], listed["a1"]]  # any value
    assert ids_of(cli, "--status", "Failed", "--status", "canceled") == [listed["a3"], listed["a2"]]
    assert ids_of(cli, "-e", "beta", "--tag", "kind") == [listed["b1"]]
    assert ids_of(cli, "-n", "2") == [listed["b2"], listed["b1"]]
    assert len(ids_of(cli, "-n", "0")) == 5  # 0 = all
    r = cli("runs", "ls", "--tag", "nope=1")
    assert r.exit_code == 0 and r.stdout == "" and "no runs match" in r.stderr


def test_runs_ls_of_an_experiment_that_does_not_exist_says_which_do(cli: Cli, listed: dict[str, str]) -> None:
    r = cli("runs", "ls", "-e", "alpah")
    assert r.exit_code == 1
    assert "No experiment 'alpah'" in r.stderr and "Did you mean 'alpha'?" in r.stderr
    assert "Experiments: alpha, beta." in r.stderr and "Traceback" not in r.stderr


def test_tag_filters_are_done_by_the_database(workspace: Workspace) -> None:
    """A limit applies after the filter: the 2 tagged runs among 30 are found with limit=2."""
    with workspace.open_history() as history:
        tagged = [finished(history, tags={"keep": "yes"}, created=float(i)) for i in range(2)]
        for i in range(28):
            finished(history, tags={"keep": "no"}, created=100.0 + i)
        assert [r.id for r in history.list_runs(tags={"keep": "yes"}, limit=2)] == tagged[::-1]
        assert history.list_runs(tags={"keep": None}, limit=None).__len__() == 30
        assert history.list_runs(tags={"other": None}) == []


def test_a_bad_tag_or_limit_is_a_clear_error(cli: Cli, workspace: Workspace) -> None:
    r = cli("runs", "ls", "--tag", "=x")
    assert r.exit_code == 1 and "has no key: write KEY=VALUE" in r.stderr
    r = cli("runs", "ls", "-n", "-1")
    assert r.exit_code == 2 and "None" not in r.stderr
    with workspace.open_history() as history, pytest.raises(HistoryError, match=r"limit=None lists them all"):
        history.list_runs(limit=0)


# -- run id prefixes -------------------------------------------------------------------------------


def test_a_unique_prefix_names_a_run_and_an_ambiguous_one_lists_them(workspace: Workspace) -> None:
    with workspace.open_history() as history:
        a = finished(history, run_id="exp_1767225600_aaaa0001")
        b = finished(history, run_id="exp_1767225600_aaaa0002")
        c = finished(history, run_id="exp_1767225601_bbbb0001")
        short = finished(history, run_id="exp_17")  # an id that is also a prefix of the others
        assert history.resolve_run_id("exp_1767225601") == c
        assert history.resolve_run_id(a) == a
        assert history.resolve_run_id("exp_17") == short  # an exact id wins
        with pytest.raises(NotFoundError) as info:
            history.resolve_run_id("exp_1767225600_aaaa")
        assert f"\n  {a}\n  {b}\n" in str(info.value) and "Give more of the id" in str(info.value)
        with pytest.raises(NotFoundError, match="nor one whose id starts with it"):
            history.resolve_run_id("exp_9")
        assert history.resolve_run_id("exp_9", missing_ok=True) == "exp_9"
        with pytest.raises(NotFoundError, match="nor one whose id starts with it"):
            history.resolve_run_id("EXP_1767225601")  # case counts, in SQLite too
        with pytest.raises(HistoryError, match="not a valid run id"):
            history.resolve_run_id("../x")


def test_every_command_taking_a_run_id_takes_a_unique_prefix(tmp_path: Path, cli: Cli,
                                                           workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"train.py": "print(1)\n"})
    snap = workspace.snapshot(src)
    with workspace.open_history() as history:
        rid = finished(history, run_id="pfx_1767225600_0a1b2c3d", snapshot_id=snap.id, script="train.py")
        finished(history, run_id="pfx_1767225600_0a1b9999")
    prefix = "pfx_1767225600_0a1b2"
    r = cli("runs", "show", prefix)
    assert r.exit_code == 0 and f"runId: {rid}\n" in r.stdout
    assert cli("artifacts", "ls", prefix).exit_code == 0
    assert cli("logs", prefix).exit_code == 0
    r = cli("cancel", prefix)
    assert r.stdout == f"run {rid}: already Completed\n"
    r = cli("snapshot", "restore", prefix, str(tmp_path / "restored"))
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "restored" / "train.py").read_text() == "print(1)\n"
    r = cli("runs", "show", "pfx_1767225600_0a1b")
    assert r.exit_code == 1 and "ambiguous" in r.stderr and "pfx_1767225600_0a1b9999" in r.stderr
    r = cli("snapshot", "restore", "pfx_1767225600_0a1b", str(tmp_path / "r2"))
    assert r.exit_code == 1 and "ambiguous" in r.stderr
    r = cli("snapshot", "restore", "ffff", str(tmp_path / "r3"))
    assert r.exit_code == 1 and "No snapshot id starts with 'ffff'" in r.stderr


# -- ints end to end ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 84, -7, 2**53 + 1, -(2**63) - 1, 10**400])
def test_whole_numbers_come_back_as_the_same_int(workspace: Workspace, value: int) -> None:
    with workspace.open_history() as history:
        rid = finished(history)
        history.log_metrics(rid, [("n", value), ("f", 84.0), ("b", True)])
        got = history.get_metrics(rid)
        assert got["n"] == [value] and type(got["n"][0]) is int
        assert type(got["f"][0]) is float and got["b"] == [True]
        assert history.get_metric_points(rid, "n")[0].value == value


# -- the offline run --------------------------------------------------------------------------------


def test_every_method_of_the_offline_run_works(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = runyard.Run.get_context()
    assert isinstance(run, runyard.run.OfflineRun)
    run.log("epochs", 3)
    run.log("loss", 0.5, step=2)
    run.log_list("acc", [0.1, 0.2])
    run.log_row("table", a=1)
    run.tag("kind", "smoke")
    run.set_tags({"lr": 0.1})  # type: ignore[dict-item]
    run.add_properties({"owner": "me"})
    with pytest.raises(runyard.PropertyConflictError):
        run.add_properties({"owner": "you"})
    run.upload_file("outputs/x", __file__)
    details = run.get_details()
    assert details["status"] == "Running" and details["target"] == "offline"
    assert details["tags"] == {"kind": "smoke", "lr": "0.1"} and details["properties"] == {"owner": "me"}
    assert details["pythonVersion"] == sys.version.split()[0]
    assert run.get_metrics() == {"acc": [0.1, 0.2], "epochs": 3, "loss": 0.5, "table": {"a": 1}}
    assert [(p.name, p.step) for p in run.get_metric_points("loss")] == [("loss", 2)]
    assert run.get_tags() == {"kind": "smoke", "lr": "0.1"} and run.get_properties() == {"owner": "me"}
    assert run.get_status() == "Running" and run.experiment == "offline"
    assert run.get_file_names() == [] and run.download_files(output_directory=str(tmp_path)) == []
    with pytest.raises(NotFoundError, match="offline run has no artifact"):
        run.download_file("outputs/x")
    run.cancel()
    assert run.wait_for_completion()["status"] == "Running"
    assert run.input_datasets == {} and run.output_datasets == {}
    with pytest.raises(RunError, match="runyard run SCRIPT"):
        run.history  # noqa: B018
    assert "epochs = 3" in capsys.readouterr().err


def test_the_offline_run_overrides_every_public_method_that_needs_a_workspace() -> None:
    from runyard.run import OfflineRun, Run

    needs_history = {name for name, member in vars(Run).items()
                     if not name.startswith("_") and callable(member) and name not in ("get_context",)}
    missing = sorted(name for name in needs_history if name not in vars(OfflineRun))
    assert missing == []


def test_offline_get_details_in_a_fresh_process() -> None:
    """The report that started it: OfflineRun().get_details() died with AttributeError."""
    out = subprocess.run([sys.executable, "-c", "import runyard; print(runyard.Run.get_context().get_details()"
                          "['status'])"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Running\n"

