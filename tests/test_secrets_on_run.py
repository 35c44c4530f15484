"""Likely secrets and links leaving the source are flagged on every path that
takes (or reuses) a snapshot for a run: ``runyard run``, ``rerun`` and the
SDK's submit. Flagged before anything is stored, named with the ignore line
that leaves each out, recorded on the run; with ``snapshot.secrets = refuse``
(or the per-run flag) nothing is stored and no run is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import runyard
from runyard.errors import RunyardError, SecretsWarning, SnapshotSecretsError
from runyard.workspace import Workspace
from trees import write_script

pytestmark = pytest.mark.timeout(120)

SECRETS_PROPERTY = "runyard.secrets"
LINKS_PROPERTY = "runyard.links_outside"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A project with an AWS key in .env and a private key beside the script."""
    d = tmp_path / "proj"
    (d / "keys").mkdir(parents=True)
    (d / ".env").write_text("AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=abc123\n")
    (d / "keys" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (d / "keys" / "id_rsa.pub").write_text("ssh-ed25519 AAAA not a secret\n")
    (d / ".env.example").write_text("AWS_ACCESS_KEY_ID=\n")
    write_script(d, "train.py", "print('trained')\n")
    return d


def cli(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The installed command's path (`run` forks its supervisor before parsing).
    return subprocess.run([sys.executable, "-m", "runyard", "--workspace", ws.path, *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def stored(ws: Workspace) -> set[str]:
    """Every blob and snapshot record in the workspace's store."""
    root = Path(ws.path) / "store"
    return {str(p.relative_to(root)) for sub in ("blobs", "snapshots") for p in (root / sub).rglob("*")
            if p.is_file()}


def runs_of(ws: Workspace) -> list[str]:
    with ws.open_history() as h:
        return [r.id for r in h.list_runs(limit=None)]


def run_id_of(r: subprocess.CompletedProcess[str], ws: Workspace) -> str:
    """The id `runyard run` announced, once the run's record is in the history."""
    from runyard.runs import get_run, wait

    run_id = r.stderr.split("runyard: run ", 1)[1].split()[0]
    get_run(ws, run_id)  # recorded (Queued) if its supervisor has not yet
    assert wait(ws, run_id, timeout=60).is_terminal  # the supervisor records its end a moment later
    return run_id


def assert_names_secrets_and_lines(text: str, src: Path) -> None:
    for line in ("  .env", "  keys/id_rsa", "  /.env", "  /keys/id_rsa"):
        assert f"{line}\n" in text + "\n", (line, text)
    assert f"add these lines to {src / '.amlignore'}" in text
    assert "id_rsa.pub" not in text and ".env.example" not in text  # look-alikes are not flagged


def test_run_warns_naming_each_secret_and_its_ignore_line_and_records_the_flag(
        workspace: Workspace, src: Path) -> None:
    r = cli(workspace, "run", "--source-dir", str(src), "train.py")
    assert r.returncode == 0, r.stderr
    assert "trained" in r.stdout
    assert "holds 2 likely secrets; they are stored and go with the run" in r.stderr
    assert_names_secrets_and_lines(r.stderr, src)
    assert "runyard config set snapshot.secrets refuse" in r.stderr
    run_id = run_id_of(r, workspace)
    assert runs_of(workspace) == [run_id]

    shown = cli(workspace, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "likely secrets in its snapshot: .env, keys/id_rsa" in shown.stdout
    doc = json.loads(cli(workspace, "runs", "show", "--json", run_id).stdout)
    assert json.loads(doc["properties"][SECRETS_PROPERTY]) == [".env", "keys/id_rsa"]
    details = runyard.Run(workspace, run_id).get_details()
    assert json.loads(details["properties"][SECRETS_PROPERTY]) == [".env", "keys/id_rsa"]
    assert LINKS_PROPERTY not in details["properties"]


def test_a_clean_source_is_not_flagged(workspace: Workspace, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    write_script(clean, "train.py", "print('ok')\n")
    r = cli(workspace, "run", "--source-dir", str(clean), "train.py")
    assert r.returncode == 0, r.stderr
    assert "secret" not in r.stderr and ".amlignore" not in r.stderr
    assert SECRETS_PROPERTY not in runyard.Run(workspace, run_id_of(r, workspace)).get_properties()


def _assert_refused(ws: Workspace, r: subprocess.CompletedProcess[str], src: Path, before: set[str],
                    set_by: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "trained" not in r.stdout
    assert f"Refused to take a snapshot of '{src}': it holds 2 likely secrets" in r.stderr
    assert f"(set by {set_by})" in r.stderr and "Nothing was stored." in r.stderr
    assert_names_secrets_and_lines(r.stderr, src)
    assert "--secrets warn" in r.stderr and "runyard config set snapshot.secrets warn" in r.stderr
    assert "Traceback" not in r.stderr
    assert stored(ws) == before  # not one blob (train.py's is new), no manifest
    assert runs_of(ws) == []
    assert not os.path.isdir(ws.runs_dir) or os.listdir(ws.runs_dir) == []


def test_workspace_setting_refuse_stores_nothing_and_records_no_run(workspace: Workspace, src: Path) -> None:
    assert cli(workspace, "config", "set", "snapshot.secrets", "refuse").returncode == 0
    assert Workspace(workspace.path).get_setting("snapshot.secrets") == "refuse"
    before = stored(workspace)
    r = cli(workspace, "run", "--source-dir", str(src), "train.py")
    _assert_refused(workspace, r, src, before, "the workspace config (snapshot.secrets)")
    r = cli(workspace, "run", "--detach", "--source-dir", str(src), "train.py")
    _assert_refused(workspace, r, src, before, "the workspace config (snapshot.secrets)")

    # The per-run flag wins over the workspace: allowed, stored, flagged.
    r = cli(workspace, "run", "--secrets", "warn", "--source-dir", str(src), "train.py")
    assert r.returncode == 0, r.stderr
    assert "trained" in r.stdout and "holds 2 likely secrets" in r.stderr
    props = runyard.Run(workspace, run_id_of(r, workspace)).get_properties()
    assert json.loads(props[SECRETS_PROPERTY]) == [".env", "keys/id_rsa"]


def test_per_run_flag_and_environment_refuse(workspace: Workspace, src: Path) -> None:
    before = stored(workspace)
    r = cli(workspace, "run", "--secrets", "refuse", "--source-dir", str(src), "train.py")
    _assert_refused(workspace, r, src, before, "the --secrets option (secrets= in the SDK)")
    r = cli(workspace, "run", "--source-dir", str(src), "train.py", env={"RUNYARD_SNAPSHOT_SECRETS": "refuse"})
    _assert_refused(workspace, r, src, before, "the environment (RUNYARD_SNAPSHOT_SECRETS)")
    bad = cli(workspace, "run", "--secrets", "maybe", "--source-dir", str(src), "train.py")
    assert bad.returncode == 2 and "'maybe' is not one of 'warn', 'refuse'" in bad.stderr
    assert stored(workspace) == before and runs_of(workspace) == []


def test_config_set_checks_the_value(workspace: Workspace) -> None:
    from runyard.errors import ConfigError

    with pytest.raises(ConfigError, match=r"use 'warn'.*or 'refuse'"):
        workspace.set_setting("snapshot.secrets", "sometimes")
    workspace.set_setting("snapshot.secrets", "REFUSE")
    assert workspace.get_setting("snapshot.secrets") == "refuse"


def test_snapshot_create_follows_the_setting_too(workspace: Workspace, src: Path) -> None:
    workspace.set_setting("snapshot.secrets", "refuse")
    before = stored(workspace)
    r = cli(workspace, "snapshot", "create", str(src))
    assert r.returncode == 1 and "Refused to take a snapshot" in r.stderr
    assert stored(workspace) == before
    r = cli(workspace, "snapshot", "create", "--secrets", "warn", str(src))
    assert r.returncode == 0, r.stderr
    assert stored(workspace) != before


def test_sdk_submit_warns_records_and_refuses(workspace: Workspace, src: Path) -> None:
    exp = runyard.Experiment(workspace, "sdk")
    with pytest.warns(SecretsWarning) as caught:
        run = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="train.py"))
    flagged = [w for w in caught if issubclass(w.category, SecretsWarning)]
    assert len(flagged) == 1
    text = str(flagged[0].message)
    assert "holds 2 likely secrets" in text
    assert_names_secrets_and_lines(text, src)
    assert flagged[0].filename == __file__  # pointed at the caller's line, not runyard's
    assert run.wait_for_completion()["status"] == "Completed"
    assert json.loads(run.get_details()["properties"][SECRETS_PROPERTY]) == [".env", "keys/id_rsa"]

    before = stored(workspace)
    count = len(runs_of(workspace))
    cfg = runyard.ScriptRunConfig(source_directory=str(src), script="train.py", secrets="refuse")
    with pytest.raises(SnapshotSecretsError) as err:
        exp.submit(cfg)
    assert isinstance(err.value, RunyardError)
    assert err.value.paths == [".env", "keys/id_rsa"]
    assert_names_secrets_and_lines(str(err.value), src)
    assert 'secrets="warn"' in str(err.value)
    workspace.set_setting("snapshot.secrets", "refuse")
    with pytest.raises(SnapshotSecretsError, match=r"set by the workspace config \(snapshot.secrets\)"):
        exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="train.py"))
    assert stored(workspace) == before and len(runs_of(workspace)) == count

    with pytest.warns(SecretsWarning):  # allowed for this run
        allowed = exp.submit(runyard.ScriptRunConfig(source_directory=str(src), script="train.py", secrets="warn"))
    assert allowed.wait_for_completion()["status"] == "Completed"


def test_links_leaving_the_source_are_flagged_on_run(workspace: Workspace, tmp_path: Path) -> None:
    proj = tmp_path / "linked"
    write_script(proj, "train.py", "print('ok')\n")
    (tmp_path / "outside.txt").write_text("not in the source\n")
    os.symlink(str(tmp_path / "outside.txt"), proj / "abs")
    os.symlink("../outside.txt", proj / "up")
    os.symlink("train.py", proj / "inside")  # stays inside: not flagged
    r = cli(workspace, "run", "--source-dir", str(proj), "train.py")
    assert r.returncode == 0, r.stderr
    assert "has 2 links that leave the source directory" in r.stderr
    assert f"  abs  -> {tmp_path / 'outside.txt'}" in r.stderr and "  up  -> ../outside.txt" in r.stderr
    assert "  /abs\n" in r.stderr and "  /up\n" in r.stderr and "inside" not in r.stderr
    run_id = run_id_of(r, workspace)
    assert json.loads(runyard.Run(workspace, run_id).get_properties()[LINKS_PROPERTY]) == ["abs", "up"]
    assert "links leaving the source: abs, up" in cli(workspace, "runs", "show", run_id).stdout

    # Links store no content: the policy 'refuse' is about secrets, links are still only flagged.
    r = cli(workspace, "run", "--secrets", "refuse", "--source-dir", str(proj), "train.py")
    assert r.returncode == 0 and "has 2 links that leave the source directory" in r.stderr


def test_a_rerun_carries_the_flag_and_refuses_under_refuse(workspace: Workspace, src: Path) -> None:
    first = cli(workspace, "run", "--source-dir", str(src), "train.py")
    assert first.returncode == 0, first.stderr
    parent = run_id_of(first, workspace)
    # The source changes meanwhile: the rerun runs (and flags) the parent's snapshot as it was.
    os.remove(src / ".env")

    r = cli(workspace, "rerun", parent)
    assert r.returncode == 0, r.stderr
    assert "which this rerun reuses, holds 2 likely secrets" in r.stderr
    assert_names_secrets_and_lines(r.stderr, src)
    assert "start a new run with runyard run" in r.stderr
    child = run_id_of(r, workspace)
    assert child != parent and runyard.Run(workspace, child).history.get_run(child).parent_run_id == parent
    details = runyard.Run(workspace, child).get_details()
    assert json.loads(details["properties"][SECRETS_PROPERTY]) == [".env", "keys/id_rsa"]
    assert "likely secrets in its snapshot: .env, keys/id_rsa" in cli(workspace, "runs", "show", child).stdout

    workspace.set_setting("snapshot.secrets", "refuse")
    before, count = stored(workspace), len(runs_of(workspace))
    for args in (("rerun", parent), ("rerun", "--detach", parent)):
        r = cli(workspace, *args)
        assert r.returncode == 1, r.stderr
        assert "Refused to rerun snapshot" in r.stderr and "No run was recorded." in r.stderr
        assert_names_secrets_and_lines(r.stderr, src)
        assert "--secrets warn" in r.stderr
        assert stored(workspace) == before and len(runs_of(workspace)) == count
    r = cli(workspace, "rerun", "--secrets", "warn", parent)
    assert r.returncode == 0, r.stderr
    run_id_of(r, workspace)
    assert len(runs_of(workspace)) == count + 1
