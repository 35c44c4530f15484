"""Every CLI command and option is documented in docs/cli.md, and the README
keeps its two Quick start commands in step with CI."""

from __future__ import annotations

import re
from pathlib import Path

import click

from runyard.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix: str = "runyard") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, full))
        else:
            out.append((full, cmd))
    return out


def test_every_command_and_option_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    missing = []
    for full, cmd in _commands(main):
        if f"`{full}" not in doc:
            missing.append(full)
        for param in cmd.params:
            if isinstance(param, click.Option) and not any(o in doc for o in param.opts):
                missing.append(f"{full} {param.opts[0]}")
    assert missing == [], f"undocumented in docs/cli.md: {missing}"


def test_readme_quick_start_has_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2, commands
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == commands[1]


# -- what the docs promise, checked against the code ------------------------------------------------


def _doc(name: str) -> str:
    return " ".join((ROOT / "docs" / name).read_text(encoding="utf-8").split())  # lines joined


def test_documented_defaults_are_the_code_s() -> None:
    from runyard.agent.supervisor import DEFAULT_GRACE, HEARTBEAT_EVERY
    from runyard.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, MiB
    from runyard.data.datastore import retries
    from runyard.data.materialize import DEFAULT_CACHE_MAX
    from runyard.data.transfer import DEFAULT_CONCURRENCY, LOCAL_THREADS, concurrency
    from runyard.runs.reaper import LOST_AFTER_REMOTE
    from runyard.snapshot.report import TOP_N

    cli, data, runs = _doc("cli.md"), _doc("data.md"), _doc("runs.md")
    assert (300 * MiB, 2000) == (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES)
    assert "then 300 MiB and 2000 files" in cli
    assert f"the {TOP_N} largest files and directories" in cli
    assert f"`RUNYARD_CANCEL_GRACE` seconds (default {DEFAULT_GRACE:g})" in cli
    assert f"`RUNYARD_CANCEL_GRACE`, default {DEFAULT_GRACE:g} seconds" in runs
    assert f"a heartbeat into the history every {HEARTBEAT_EVERY:g} seconds" in runs
    assert f"no heartbeat for {LOST_AFTER_REMOTE / 60:g} minutes" in runs
    assert f"(default {DEFAULT_CACHE_MAX >> 30} GiB" in data and f"default {DEFAULT_CACHE_MAX >> 30} GiB" in cli
    assert concurrency() == DEFAULT_CONCURRENCY
    assert f"`RUNYARD_TRANSFER_CONCURRENCY` (default {DEFAULT_CONCURRENCY})" in data
    assert f"a local datastore copies with {LOCAL_THREADS} threads" in data
    assert f"`RUNYARD_DATA_RETRIES` attempts in all (default {retries()})" in data


def test_the_documented_lifecycle_is_the_code_s(tmp_path: Path) -> None:
    """runs.md: every status is in the table; the snapshot comes first and a run's record starts Queued."""
    from runyard.history import RunStatus
    from runyard.runs import RunSpec, prepare, record
    from runyard.workspace import Workspace

    table = re.findall(r"^\| (\w+) \| (.*) \|$", (ROOT / "docs" / "runs.md").read_text(), re.M)
    rows = {status: meaning for status, meaning in table if status in RunStatus.__members__.values()}
    assert list(rows) == [s.value for s in RunStatus]
    assert "snapshot is being taken" not in rows["NotStarted"]
    assert "A run's record starts here" in rows["Queued"] and "snapshot that fails" in rows["Queued"]
    ws = Workspace.create(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print(1)\n")
    request = prepare(ws, RunSpec(source_directory=str(src), script="train.py"))  # the snapshot, no record yet
    with ws.open_history() as history:
        assert history.list_runs() == []
        assert record(history, request).status is RunStatus.QUEUED


def test_the_sdk_doc_says_what_a_submit_over_the_limit_does() -> None:
    sdk = _doc("sdk.md")
    assert "recorded as Failed" not in sdk
    assert "A snapshot over its limits raises `SnapshotLimitError` and records nothing" in sdk
