"""Compute targets as a user meets them: ``runyard compute add|ls|show|rm``, ``--compute``,
``ScriptRunConfig(compute_target=...)``, the workspace's default, and what a kind costs to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import runyard
import runyard.runs
from conftest import Cli
from runyard.compute.base import ComputeTarget, add_target, get_target, list_targets
from runyard.errors import ComputeError
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    write_script(d, "hello.py", "print('hello from', __file__)\n")
    return d


def test_local_is_in_every_workspace_and_cannot_be_changed(workspace: Workspace, cli: Cli) -> None:
    listed = cli("compute", "ls", "--json")
    assert json.loads(listed.output) == [{"name": "local", "kind": "local", "options": {}, "default": True}]
    for args, said in ((("add", "local", "--kind", "sandbox"), "built in"), (("rm", "local"), "built in"),
                       (("rm", "nothing-here"), "no compute target 'nothing-here'")):
        got = cli("compute", *args)
        assert got.exit_code != 0 and said in got.output, got.output
    shown = cli("compute", "show", "local")
    assert shown.exit_code == 0 and "ready: yes" in shown.output


@pytest.mark.parametrize("name", ["../up", "a/b", "", "-x", "a b", "x" * 300])
def test_hostile_target_names_are_refused(workspace: Workspace, name: str) -> None:
    with pytest.raises(ComputeError, match="cannot name a compute target"):
        add_target(workspace, name, "local", {})
    assert [t.name for t in list_targets(workspace)] == ["local"]


def test_a_kind_that_does_not_exist_and_options_a_kind_does_not_take(workspace: Workspace) -> None:
    with pytest.raises(ComputeError, match=r"no compute target kind 'kube'\. Kinds: local, sandbox"):
        add_target(workspace, "k", "kube", {})
    with pytest.raises(ComputeError, match="local target takes no options"):
        add_target(workspace, "l2", "local", {"memory": "1GiB"})


def test_add_replace_ls_show_rm_through_the_cli(workspace: Workspace, cli: Cli) -> None:
    made = cli("compute", "add", "cpu", "--kind", "local")
    assert made.exit_code == 0, made.output
    again = cli("compute", "add", "cpu", "--kind", "local")
    assert again.exit_code != 0 and "--replace" in again.output, again.output
    assert cli("compute", "add", "cpu", "--kind", "local", "--replace").exit_code == 0
    assert "cpu (local)" in cli("compute", "ls").output
    assert ComputeTarget(workspace, "cpu") == ComputeTarget(name="cpu", kind="local")
    removed = cli("compute", "rm", "cpu")
    assert removed.exit_code == 0 and [t.name for t in list_targets(workspace)] == ["local"]
    with pytest.raises(ComputeError, match=r"no compute target 'cpu'.*runyard compute add cpu"):
        ComputeTarget(workspace, "cpu")


def test_a_run_names_its_target_and_an_unknown_one_stores_nothing(workspace: Workspace, src: Path) -> None:
    add_target(workspace, "cpu", "local", {})
    exp = runyard.Experiment(workspace, "t")
    for target in ("cpu", ComputeTarget(workspace, "cpu")):
        run = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="hello.py",
                                                 compute_target=target))
        details = run.wait_for_completion()
        assert details["status"] == "Completed" and details["target"] == "cpu"
    default = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="hello.py"))
    assert default.wait_for_completion()["target"] == "local"
    before = len(workspace.open_history().list_runs())
    with pytest.raises(ComputeError, match=r"no compute target 'gpu' in this workspace\. Targets: local, cpu"):
        exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="hello.py", compute_target="gpu"))
    assert len(workspace.open_history().list_runs()) == before


def test_the_workspace_default_and_removing_it(workspace: Workspace, cli: Cli, src: Path) -> None:
    add_target(workspace, "cpu", "local", {})
    assert cli("config", "set", "compute.default", "cpu").exit_code == 0
    assert get_target(Workspace(workspace.path)).name == "cpu"
    assert "* cpu (local)" in cli("compute", "ls").output
    ran = cli("run", "--source-dir", str(src), "hello.py")
    assert ran.exit_code == 0, ran.output
    assert "hello from" in ran.output
    run_id = ran.output.split()[2]
    assert runyard.runs.get_run(workspace, run_id).compute_target == "cpu", ran.output
    refused = cli("compute", "rm", "cpu")
    assert refused.exit_code != 0 and "compute.default" in refused.output, refused.output
    assert cli("config", "unset", "compute.default").exit_code == 0
    assert cli("compute", "rm", "cpu").exit_code == 0


def test_a_local_run_imports_no_other_kind(workspace: Workspace, src: Path) -> None:
    code = (
        "import sys, runyard\n"
        f"ws = runyard.Workspace({workspace.path!r})\n"
        "cfg = runyard.ScriptRunConfig(source_directory=sys.argv[1], script='hello.py')\n"
        "runyard.Experiment(ws, 't').submit(cfg).wait_for_completion()\n"
        "print(sorted(m for m in sys.modules if m.startswith('runyard.compute.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip().splitlines()[-1] == "['runyard.compute.base', 'runyard.compute.local']"
