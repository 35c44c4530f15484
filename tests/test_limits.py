"""Snapshot limits: the boundary, where a limit comes from, bad values, the
over-limit message, and that following its advice works."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runyard.config import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    Limits,
    MiB,
    parse_count,
    parse_size,
    resolve_limits,
)
from runyard.errors import ConfigError, SnapshotLimitError
from runyard.snapshot.report import over_limit_message
from runyard.snapshot.walk import FileEntry
from runyard.workspace import Workspace

if TYPE_CHECKING:
    from conftest import Cli


def write_files(root: Path, files: dict[str, int | bytes]) -> Path:
    """Make ``root`` with files of the given sizes (or contents)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(what if isinstance(what, bytes) else b"x" * what)
    return root


def stored(ws: Workspace) -> tuple[int, int]:
    """(blobs, snapshots) in the workspace's store."""
    store = os.path.join(ws.path, "store")
    blobs = sum(len(f) for _, _, f in os.walk(os.path.join(store, "blobs")))
    snaps = len(os.listdir(os.path.join(store, "snapshots"))) if os.path.isdir(os.path.join(store, "snapshots")) else 0
    return blobs, snaps


def suggested_lines(message: str) -> list[str]:
    lines = message.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("To leave them out, add these lines to "))
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        out.append(line[2:])
    return out


def section(message: str, title: str) -> list[str]:
    lines = message.splitlines()
    start = lines.index(title)
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        out.append(line.split()[-1])
    return out


# -- resolving the limits -------------------------------------------------------------


def test_defaults() -> None:
    assert resolve_limits(env={}) == Limits(300 * MiB, 2000, "default", "default")
    assert (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES) == (314572800, 2000)


def test_precedence_argument_environment_config_default() -> None:
    config = {"snapshot": {"max_bytes": "1GiB", "max_files": 10}}
    env = {"RUNYARD_SNAPSHOT_MAX_BYTES": "2MiB", "RUNYARD_SNAPSHOT_MAX_FILES": "20"}
    assert resolve_limits(config=config, env={}) == Limits(1 << 30, 10, "workspace config (snapshot.max_bytes)",
                                                           "workspace config (snapshot.max_files)")
    got = resolve_limits(config=config, env=env)
    assert (got.max_bytes, got.max_files) == (2 * MiB, 20)
    assert got.max_bytes_from == "environment (RUNYARD_SNAPSHOT_MAX_BYTES)"
    got = resolve_limits(max_bytes="3MiB", max_files=30, config=config, env=env)
    assert (got.max_bytes, got.max_files, got.max_bytes_from) == (3 * MiB, 30, "argument")
    # Each limit is resolved on its own.
    got = resolve_limits(max_files=0, config=config, env={"RUNYARD_SNAPSHOT_MAX_BYTES": "5"})
    assert (got.max_bytes, got.max_files) == (5, 0)
    # An empty variable is not set.
    assert resolve_limits(env={"RUNYARD_SNAPSHOT_MAX_BYTES": " "}).max_bytes == DEFAULT_MAX_BYTES


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("1000", 1000), ("1000b", 1000), ("1KB", 1000), ("1 KiB", 1024), ("300MiB", 300 * MiB),
     ("1.5GB", 1_500_000_000), ("2gib", 2 << 30), (" 7 ", 7), (512, 512)],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text, "x") == expected


@pytest.mark.parametrize("bad", ["abc", "", "-5", "1.2.3", "10 parsecs", "MiB", True, -1])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ConfigError, match="--max-bytes"):
        parse_size(bad, "--max-bytes")


@pytest.mark.parametrize("bad", ["many", "1.5", "1e3", "-1", "", False, -3])
def test_parse_count_rejects(bad: object) -> None:
    with pytest.raises(ConfigError, match="--max-files"):
        parse_count(bad, "--max-files")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"env": {"RUNYARD_SNAPSHOT_MAX_BYTES": "abc"}},
         r"RUNYARD_SNAPSHOT_MAX_BYTES is 'abc', which is not a size\. Use bytes"),
        ({"env": {"RUNYARD_SNAPSHOT_MAX_FILES": "lots"}},
         r"RUNYARD_SNAPSHOT_MAX_FILES is 'lots', which is not a whole number"),
        ({"env": {}, "config": {"snapshot": {"max_bytes": "huge"}}},
         r"snapshot\.max_bytes in the workspace config is 'huge'"),
        ({"env": {}, "max_files": "-2"}, r"--max-files is -2; a count cannot be negative\. Use 0 to turn"),
    ],
)
def test_bad_values_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_limits(**kwargs)  # type: ignore[arg-type]


# -- the boundary, on real trees --------------------------------------------------------


def test_exactly_the_byte_limit_passes_one_more_byte_fails(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {"a.bin": 600, "d/b.bin": 400})
    r = workspace.snapshot(src, max_bytes=1000)
    assert r.total_bytes == 1000
    before = stored(workspace)
    (src / "d" / "c.txt").write_bytes(b"!")
    with pytest.raises(SnapshotLimitError) as info:
        workspace.snapshot(src, max_bytes=1000)
    assert stored(workspace) == before  # nothing new stored
    assert str(info.value).startswith(
        f"While attempting to take snapshot of {src}\nYour total snapshot size exceeds the limit of 0.0 MB\n"
    )
    assert "The snapshot would hold 3 files, 1001 B (1001 bytes); the limits are 2000 files (default) and " \
           "1000 B (argument)." in str(info.value)


def test_exactly_the_file_limit_passes_one_more_fails(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {f"f{i}": i for i in range(5)})
    assert workspace.snapshot(src, max_files=5).files == 5
    (src / "sub").mkdir()
    (src / "sub" / "one-more").write_bytes(b"")
    before = stored(workspace)
    with pytest.raises(SnapshotLimitError, match=r"^While attempting to take snapshot of .*\n"
                                                 r"Your project exceeds the file limit of 5\.\n"):
        workspace.snapshot(src, max_files=5)
    assert stored(workspace) == before


def test_nothing_is_stored_when_over(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {f"d{i}/f{j}": 100 + i * 10 + j for i in range(4) for j in range(4)})
    with pytest.raises(SnapshotLimitError):
        workspace.snapshot(src, max_bytes=1000)
    assert stored(workspace) == (0, 0)
    assert os.listdir(workspace.cache_dir) == []


def test_excluded_paths_do_not_count(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {
        "a.py": 500, "data/big.bin": 5000, ".git/objects/pack": 5000, "x/__pycache__/m.pyc": 5000,
        ".amlignore": b"data/\n",
    })
    r = workspace.snapshot(src, max_bytes=506, max_files=2)
    assert (r.files, r.total_bytes) == (2, 506)


def test_zero_turns_a_limit_off(tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_files(tmp_path / "src", {f"f{i}": 100 for i in range(30)})
    workspace.set_setting("snapshot.max_bytes", "10")
    workspace.set_setting("snapshot.max_files", "3")
    with pytest.raises(SnapshotLimitError):
        workspace.snapshot(src)
    monkeypatch.setenv("RUNYARD_SNAPSHOT_MAX_BYTES", "0")
    monkeypatch.setenv("RUNYARD_SNAPSHOT_MAX_FILES", "0")
    r = workspace.snapshot(src)
    assert (r.limits.max_bytes, r.limits.max_files) == (0, 0)


def test_sdk_arguments_beat_environment_and_config(
    tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_files(tmp_path / "src", {"a": 1500})
    workspace.set_setting("snapshot.max_bytes", "1000")
    with pytest.raises(SnapshotLimitError, match=r"1000 B \(workspace config \(snapshot\.max_bytes\)\)"):
        workspace.snapshot(src)
    monkeypatch.setenv("RUNYARD_SNAPSHOT_MAX_BYTES", "2000")
    assert workspace.snapshot(src).limits.max_bytes_from == "environment (RUNYARD_SNAPSHOT_MAX_BYTES)"
    with pytest.raises(SnapshotLimitError, match=r"\(argument\)"):
        workspace.snapshot(src, max_bytes=1499)
    assert workspace.snapshot(src, max_bytes="1.5KB").limits.max_bytes == 1500


# -- the defaults and the message, through the CLI ----------------------------------------


def test_default_size_limit_message(tmp_path: Path, cli: Cli, workspace: Workspace) -> None:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "train.py").write_text("print(1)\n")
    with open(src / "model.ckpt", "wb") as fh:  # sparse: nothing is read before the limit check
        fh.truncate(300 * MiB + 1)
    r = cli("snapshot", "create", str(src))
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.startswith(
        f"While attempting to take snapshot of {src}\nYour total snapshot size exceeds the limit of 300.0 MB\n"
    )
    assert "Traceback" not in r.stderr
    assert "  /model.ckpt\n" in r.stderr
    assert "runyard snapshot create --max-bytes 1GiB" in r.stderr
    assert "RUNYARD_SNAPSHOT_MAX_BYTES=1GiB" in r.stderr
    assert "runyard config set snapshot.max_bytes 1GiB" in r.stderr
    assert "ws.snapshot(" not in r.stderr and "runyard run" not in r.stderr  # the option of the command typed
    assert stored(workspace) == (0, 0)


def test_exactly_300_mib_is_not_over() -> None:
    at = [FileEntry("a", False, 300 * MiB, False, 0, 0, 0)]
    over = [FileEntry("a", False, 300 * MiB + 1, False, 0, 0, 0)]
    assert over_limit_message("/src", at, Limits()) is None
    assert over_limit_message("/src", over, Limits()) is not None


def test_default_file_limit(tmp_path: Path, cli: Cli, workspace: Workspace) -> None:
    src = tmp_path / "proj"
    (src / "cache").mkdir(parents=True)
    for i in range(2000):
        (src / "cache" / f"{i:04}.npy").touch()
    r = cli("snapshot", "create", str(src))
    assert r.exit_code == 0, r.stderr
    (src / "one-more.py").touch()
    r = cli("snapshot", "create", str(src))
    assert r.exit_code == 1
    assert r.stderr.startswith(
        f"While attempting to take snapshot of {src}\nYour project exceeds the file limit of 2000.\n"
    )
    assert "Traceback" not in r.stderr
    assert "runyard snapshot create --max-files 5000" in r.stderr
    assert "runyard config set snapshot.max_files 5000" in r.stderr
    assert "--max-bytes" not in r.stderr  # only the limit that is over
    assert suggested_lines(r.stderr) == ["/cache/"]


def test_both_limits_over(tmp_path: Path, cli: Cli) -> None:
    src = write_files(tmp_path / "src", {f"f{i}": 100 for i in range(5)})
    r = cli("snapshot", "create", str(src), "--max-bytes", "100", "--max-files", "2")
    assert r.exit_code == 1
    assert r.stderr.startswith(
        f"While attempting to take snapshot of {src}\nYour total snapshot size exceeds the limit of 0.0 MB\n"
        "Your project exceeds the file limit of 2.\n"
    )
    assert "--max-bytes 1GiB" in r.stderr and "--max-files 5000" in r.stderr


def test_message_lists_the_ten_largest_files_and_directories(tmp_path: Path, cli: Cli) -> None:
    files: dict[str, int | bytes] = {f"d{i:02}/f{i:02}.bin": 1000 + i for i in range(12)}
    files |= {f"d{i:02}/small{i:02}.txt": 1 for i in range(12)}
    files["top.bin"] = 500
    src = write_files(tmp_path / "src", files)
    r = cli("snapshot", "create", str(src), "--max-bytes", "1000")
    assert r.exit_code == 1
    assert section(r.stderr, "Largest files:") == [f"d{i:02}/f{i:02}.bin" for i in range(11, 1, -1)]
    assert section(r.stderr, "Largest directories:") == [f"d{i:02}/" for i in range(11, 1, -1)]
    assert "\n      1012 B       2 files  d11/\n" in r.stderr


@pytest.mark.parametrize(
    ("how", "args", "env"),
    [
        ("flag", ["--max-bytes", "2KB"], {}),
        ("env", [], {"RUNYARD_SNAPSHOT_MAX_BYTES": "2KB"}),
        ("flag beats env", ["--max-bytes", "2KB"], {"RUNYARD_SNAPSHOT_MAX_BYTES": "10"}),
        ("env beats config", [], {"RUNYARD_SNAPSHOT_MAX_BYTES": "0"}),
    ],
)
def test_cli_overrides(tmp_path: Path, cli: Cli, how: str, args: list[str], env: dict[str, str]) -> None:
    src = write_files(tmp_path / "src", {"a": 1500})
    assert cli("config", "set", "snapshot.max_bytes", "1000").exit_code == 0
    assert cli("snapshot", "create", str(src)).exit_code == 1
    r = cli("snapshot", "create", str(src), *args, env=env)
    assert r.exit_code == 0, (how, r.stderr)


def test_cli_config_override(tmp_path: Path, cli: Cli) -> None:
    src = write_files(tmp_path / "src", {"a": 1500})
    assert cli("snapshot", "create", str(src), "--max-bytes", "1000").exit_code == 1
    assert cli("config", "set", "snapshot.max_bytes", "1GiB").exit_code == 0
    assert cli("config", "get", "snapshot.max_bytes").stdout == f"{1 << 30}\n"
    assert cli("snapshot", "create", str(src), "--max-files", "1").exit_code == 0
    assert cli("config", "set", "snapshot.max_files", "0").exit_code == 0
    assert cli("config", "unset", "snapshot.max_bytes").exit_code == 0
    big = write_files(tmp_path / "big", {f"f{i}": 0 for i in range(2001)})
    assert cli("snapshot", "create", str(big)).exit_code == 0


@pytest.mark.parametrize(
    ("args", "env", "match"),
    [
        ([], {"RUNYARD_SNAPSHOT_MAX_BYTES": "abc"}, "RUNYARD_SNAPSHOT_MAX_BYTES is 'abc', which is not a size."),
        ([], {"RUNYARD_SNAPSHOT_MAX_FILES": "2k"}, "RUNYARD_SNAPSHOT_MAX_FILES is '2k', which is not a whole number."),
        (["--max-bytes", "lots"], {}, "--max-bytes is 'lots', which is not a size."),
        (["--max-files", "-1"], {}, "--max-files is -1; a count cannot be negative."),
    ],
)
def test_cli_bad_values(tmp_path: Path, cli: Cli, workspace: Workspace, args: list[str], env: dict[str, str],
                        match: str) -> None:
    src = write_files(tmp_path / "src", {"a": 10})
    r = cli("snapshot", "create", str(src), *args, env=env)
    assert r.exit_code == 1
    assert r.stderr.startswith(match)
    assert "Traceback" not in r.stderr
    assert stored(workspace) == (0, 0)


def test_cli_bad_config_values(cli: Cli, workspace: Workspace, tmp_path: Path) -> None:
    r = cli("config", "set", "snapshot.max_bytes", "huge")
    assert r.exit_code == 1
    assert r.stderr.startswith("snapshot.max_bytes is 'huge', which is not a size.")
    assert workspace.get_setting("snapshot.max_bytes") is None
    # A bad value written by hand is named when it is used.
    Path(workspace.config_path).write_text('[snapshot]\nmax_files = "many"\n')
    src = write_files(tmp_path / "src", {"a": 10})
    r = cli("snapshot", "create", str(src))
    assert r.exit_code == 1
    assert "snapshot.max_files in the workspace config is 'many'" in r.stderr


# -- following the advice --------------------------------------------------------------


def follow_advice(ws: Workspace, src: Path, **limits: int) -> list[str]:
    """Take the snapshot, add the suggested lines to .amlignore as told, take it again."""
    with pytest.raises(SnapshotLimitError) as info:
        ws.snapshot(src, **limits)
    message = str(info.value)
    lines = suggested_lines(message)
    assert lines
    aml = src / ".amlignore"
    if not aml.exists() and (src / ".gitignore").exists():
        assert "(create it by copying" in message
        shutil.copyfile(src / ".gitignore", aml)
    with open(aml, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
    r = ws.snapshot(src, **limits)  # no longer over
    if limits.get("max_bytes"):
        assert r.total_bytes <= limits["max_bytes"]
    if limits.get("max_files"):
        assert r.files + r.links <= limits["max_files"]
    return lines


def test_advice_names_the_big_directory(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {
        "train.py": 200, "model.py": 300,
        "data/raw/a.csv": 3000, "data/raw/b.csv": 3000, "data/clean/c.csv": 2500,
        "notebooks/explore.ipynb": 800,
    })
    assert follow_advice(workspace, src, max_bytes=2000) == ["/data/"]


def test_advice_names_one_dominant_file(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {"a.py": 100, "assets/logo.png": 50, "assets/weights.bin": 5000})
    assert follow_advice(workspace, src, max_bytes=1000) == ["/assets/weights.bin"]


def test_advice_for_too_many_files(tmp_path: Path, workspace: Workspace) -> None:
    files: dict[str, int | bytes] = {f"wandb/run-{i}/log.txt": 1 for i in range(30)}
    files |= {f"src/m{i}.py": 10 for i in range(5)}
    src = write_files(tmp_path / "src", files)
    assert follow_advice(workspace, src, max_files=10) == ["/wandb/"]


def test_advice_at_the_boundary_counts_the_new_ignore_file(tmp_path: Path, workspace: Workspace) -> None:
    """One file over: writing .amlignore adds a file, so one line is not enough."""
    src = write_files(tmp_path / "src", {f"f{i:02}.txt": 10 for i in range(11)})
    assert len(follow_advice(workspace, src, max_files=10)) == 2


def test_advice_at_the_byte_boundary_counts_the_lines(tmp_path: Path, workspace: Workspace) -> None:
    """Small files with long names: each line saves only part of its file's bytes."""
    name = "a_quite_long_file_name_number_{:02}.txt"
    src = write_files(tmp_path / "src", {name.format(i): 60 for i in range(20)})
    assert len(follow_advice(workspace, src, max_bytes=20 * 60 - 25)) == 2


def test_no_advice_when_lines_would_not_help(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {f"a_long_name_for_a_tiny_file_{i:02}.txt": 5 for i in range(20)})
    with pytest.raises(SnapshotLimitError) as info:
        workspace.snapshot(src, max_bytes=99)
    assert "add these lines" not in str(info.value)
    assert "Or raise the limit (0 turns it off):" in str(info.value)


def test_advice_with_an_existing_gitignore(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {
        ".gitignore": b"*.log\n", "run.log": 10_000, "train.py": 100, "data/x.bin": 3000, "data/y.bin": 3000,
    })
    follow_advice(workspace, src, max_bytes=2000)
    # The .gitignore rules still hold through the copy.
    r = workspace.snapshot(src, max_bytes=2000)
    assert "run.log" not in [p for p, _ in r.largest]


def test_advice_with_an_existing_amlignore_and_odd_names(tmp_path: Path, workspace: Workspace) -> None:
    src = write_files(tmp_path / "src", {
        ".amlignore": b"# mine\n!important*\n",  # no newline at the end of the last line would be fine too
        "data [v1]*?.bin": 4000,
        "back\\slash.bin": 4000,
        "trailing space ": 4000,
        "#hash.bin": 4000,
        "!bang.bin": 4000,
        "keep.py": 10,
    })
    lines = follow_advice(workspace, src, max_bytes=1000)
    assert len(lines) == 5
    r = workspace.snapshot(src, max_bytes=1000)
    assert sorted(p for p, _ in r.largest) == [".amlignore", "keep.py"]


def test_advice_when_both_limits_are_over(tmp_path: Path, workspace: Workspace) -> None:
    files: dict[str, int | bytes] = {f"cache/{i}.npy": 10 for i in range(40)}
    files |= {"weights.bin": 9000, "train.py": 100}
    src = write_files(tmp_path / "src", files)
    lines = follow_advice(workspace, src, max_bytes=1000, max_files=10)
    assert sorted(lines) == ["/cache/", "/weights.bin"]


def test_a_suggested_line_for_a_name_with_a_newline_still_matches_it(tmp_path: Path) -> None:
    from runyard.config import Limits
    from runyard.snapshot.report import suggest_ignore_lines
    from runyard.snapshot.walk import walk

    src = tmp_path / "src"
    src.mkdir()
    (src / "big\nname.bin").write_bytes(b"x" * 5000)
    (src / "small.txt").write_bytes(b"y" * 10)
    limits = Limits(max_bytes=1000, max_files=0)
    lines = suggest_ignore_lines(walk(src).files, limits)
    assert lines == ["/big?name.bin"]
    (src / ".amlignore").write_text("\n".join(lines) + "\n")
    assert [f.path for f in walk(src).files] == [".amlignore", "small.txt"]
