"""The ``runyard`` command, in-process on real trees and real workspaces."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from runyard.cli import main
from runyard.workspace import Workspace

if TYPE_CHECKING:
    from conftest import Cli

ID_RX = re.compile(r"[0-9a-f]{64}")


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


Run = Callable[..., Result]


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The CLI with no --workspace, run from an empty directory (HOME is an empty dir too)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return run


def home_workspace() -> Path:
    return Path(os.environ["HOME"]) / ".runyard"


def create_id(r: Result) -> str:
    assert r.exit_code == 0, r.stderr
    last = r.stdout.rstrip("\n").splitlines()[-1]
    assert ID_RX.fullmatch(last), r.stdout
    return last


PROJECT = {
    ".amlignore": "*.log\ndata/\n!keep.log\n",
    "train.py": "print('hi')\n",
    "run.log": "noise\n",
    "keep.log": "kept\n",
    "data/big.bin": "x" * 100,
    "pkg/a b.py": "",
    "pkg/é.py": "",
    "pkg/__pycache__/x.pyc": "",
}


# -- snapshot ls and explain (no workspace needed) -------------------------------------


def test_ls_lists_raw_paths_sorted(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", PROJECT)
    r = bare("snapshot", "ls", str(src))
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == b".amlignore\nkeep.log\npkg/a b.py\npkg/\xc3\xa9.py\ntrain.py\n"
    assert not home_workspace().exists()


def test_ls_nul_terminated(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "", "new\nline.py": "", "tab\there.py": ""})
    r = bare("snapshot", "ls", "-z", str(src))
    assert r.stdout_bytes == b"a.py\0new\nline.py\0tab\there.py\0"


def test_ls_excluded_in_check_ignore_form(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", PROJECT)
    r = bare("snapshot", "ls", "--excluded", str(src))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert ".amlignore:2:data/\tdata/" in lines  # a directory once, with '/', nothing below it
    assert ".amlignore:1:*.log\trun.log" in lines
    assert "<runyard defaults>:1:__pycache__/\tpkg/__pycache__/" in lines
    assert not any(line.endswith(("keep.log", "big.bin", "x.pyc")) for line in lines)
    z = bare("snapshot", "ls", "--excluded", "-z", str(src))
    assert b".amlignore\x001\x00*.log\x00run.log\x00" in z.stdout_bytes


def test_ls_excluded_matches_git_check_ignore(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {
        ".gitignore": "# build output\n*.o\n/build/\ndocs/*.html\n!docs/index.html\n",
        "a.o": "", "main.c": "", "build/x": "", "docs/a.html": "", "docs/index.html": "", "sub/b.o": "",
    })
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    paths = ["a.o", "main.c", "build", "docs/a.html", "docs/index.html", "sub/b.o"]
    git = subprocess.run(["git", "-c", "core.excludesFile=/dev/null", "check-ignore", "-v", *paths],
                         cwd=src, capture_output=True, text=True)
    # git also shows the negative rule that keeps docs/index.html in, and names a directory without '/'.
    expected = sorted(line.replace("\tbuild", "\tbuild/") for line in git.stdout.splitlines()
                      if ":!" not in line.split("\t")[0])
    assert len(expected) == 4
    r = bare("snapshot", "ls", "--excluded", str(src))
    ours = sorted(line for line in r.stdout.splitlines() if not line.startswith("<runyard>"))
    assert ours == expected


def test_ls_leaves_out_the_workspace_it_finds(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": ""})
    Workspace.create(src)
    r = bare("snapshot", "ls", str(src))
    assert r.stdout == "a.py\n"


def test_ls_with_a_bad_workspace_setting_still_lists(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": ""})
    r = bare("--workspace", str(tmp_path / "nope"), "snapshot", "ls", str(src))
    assert (r.exit_code, r.stdout) == (0, "a.py\n")


def test_ls_of_a_missing_directory(tmp_path: Path, bare: Run) -> None:
    r = bare("snapshot", "ls", str(tmp_path / "missing"))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Cannot read the source directory '{tmp_path / 'missing'}'")


def test_ls_and_explain_default_to_the_current_directory(tmp_path: Path, bare: Run,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", PROJECT)
    monkeypatch.chdir(src)
    assert bare("snapshot", "ls").stdout.splitlines()[0] == ".amlignore"
    r = bare("snapshot", "explain", "run.log")
    assert r.stdout == "excluded  run.log  (excluded by .amlignore:1:*.log)\n"
    assert not home_workspace().exists()
    assert not (src / ".runyard").exists()


def test_explain(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", PROJECT)
    os.symlink("pkg", src / "lnk")
    r = bare("snapshot", "explain", str(src), "train.py", "run.log", "keep.log", "data/big.bin",
             str(src / "pkg" / "a b.py"), ".git/config", "lnk/x.py", "../elsewhere", "nothing/here.py")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [
        "included  train.py  (no ignore rule matches it)",
        "excluded  run.log  (excluded by .amlignore:1:*.log)",
        "included  keep.log  (re-included by .amlignore:3:!keep.log)",
        "excluded  data/big.bin  (its directory data/ is excluded by .amlignore:2:data/; "
        "nothing below an excluded directory can be re-included)",
        "included  pkg/a b.py  (no ignore rule matches it)",
        "excluded  .git/config  (it is inside .git/, and .git/ is always left out)",
        "excluded  lnk/x.py  (it is below the symlink lnk, which is kept as a link; "
        "what it points to is not snapshotted)",
        f"excluded  ../elsewhere  (it is outside the source directory {src})",
        "included  nothing/here.py  (no ignore rule matches it; it does not exist, judged as a file)",
    ]
    assert not home_workspace().exists()


def test_explain_agrees_with_ls(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", PROJECT)
    listed = set(bare("snapshot", "ls", str(src)).stdout.splitlines())
    every = [str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()]
    r = bare("snapshot", "explain", str(src), *every)
    verdicts = {line.split("  ")[1]: line.startswith("included") for line in r.stdout.splitlines()}
    assert verdicts == {p: p in listed for p in every}


# -- snapshot create, show, list, restore, diff --------------------------------------------


def test_create_reports_then_prints_the_id_last(tmp_path: Path, cli: Cli, workspace: Workspace) -> None:
    outside = write_tree(tmp_path / "outside", {"shared.py": ""})
    src = write_tree(tmp_path / "src", {
        "train.py": "x" * 2000, ".env": "TOKEN=1", "certs/server.pem": "k", "keys/id_rsa": "k",
        "keys/id_rsa.pub": "public", "aws_credentials.json": "{}", ".env.example": "TOKEN=",
    })
    os.symlink(str(outside / "shared.py"), src / "shared.py")
    os.symlink("../outside", src / "up")
    os.symlink("missing.py", src / "dangling")
    r = cli("snapshot", "create", str(src))
    sid = create_id(r)
    out = r.stdout
    assert out.startswith(f"Snapshot of {src}\n")
    assert "  files:  10 of 2000 (0%)  (3 links)" in out
    secrets = out.split("Possible secrets (leave them out with .amlignore if they should not travel):\n")[1]
    # .env.example and id_rsa.pub are not secrets.
    assert secrets.split("\n")[:5] == ["  .env", "  aws_credentials.json", "  certs/server.pem", "  keys/id_rsa",
                                       "Links that leave the source directory (kept as links; they will dangle "
                                       "elsewhere):"]
    assert "Links that leave the source directory (kept as links; they will dangle elsewhere):" in out
    assert f"  shared.py  -> {outside / 'shared.py'} (an absolute target will dangle on another machine)" in out
    assert "  up  -> ../outside (points outside the source directory)" in out
    assert "Broken links (kept as links):\n  dangling  -> missing.py (a broken link)" in out
    assert cli("snapshot", "list").stdout.startswith(sid[:12] + "  ")


def test_create_and_ls_with_odd_files(tmp_path: Path, cli: Cli, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    os.mkfifo(src / "pipe")
    os.symlink("loop", src / "loop")
    with open(os.path.join(os.fsencode(src), b"caf\xe9.py"), "wb") as fh:  # Latin-1, not UTF-8
        fh.write(b"x")
    r = cli("snapshot", "create", str(src))
    create_id(r)
    assert "Skipped special files:\n  pipe  a FIFO is not snapshotted\n" in r.stdout
    assert "Skipped names that are not UTF-8:\n  caf\\xe9.py  the name is not valid UTF-8; rename it\n" in r.stdout
    assert "Broken links (kept as links):\n  loop  -> loop (a link loop)\n" in r.stdout
    ls = bare("snapshot", "ls", str(src))
    assert (ls.exit_code, ls.stdout_bytes) == (0, b"a.py\nloop\n")


def test_create_json(tmp_path: Path, cli: Cli) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a", ".env": "x"})
    os.symlink("/etc/hostname", src / "host")
    r = cli("snapshot", "create", "--json", str(src))
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert ID_RX.fullmatch(doc["id"])
    assert (doc["files"], doc["links"], doc["source"]) == (2, 1, str(src))
    assert doc["secrets"] == [".env"]
    assert doc["issues"] == [{"kind": "link-outside", "path": "host",
                              "detail": "-> /etc/hostname (an absolute target will dangle on another machine)"}]
    assert doc["limits"]["max_bytes"] == 300 * 1024 * 1024
    # The same tree again: the same id.
    assert json.loads(cli("snapshot", "create", "--json", str(src)).stdout)["id"] == doc["id"]


def test_create_defaults_to_the_current_directory(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    monkeypatch.chdir(src)
    r = cli("snapshot", "create")
    create_id(r)
    assert r.stdout.startswith(f"Snapshot of {src}\n")


def test_show_list_restore_diff(tmp_path: Path, cli: Cli) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "one", "run.sh": "#!/bin/sh\n", "empty/": b""})
    (src / "empty").unlink()
    (src / "empty").mkdir()
    (src / "run.sh").chmod(0o755)
    os.symlink("a.py", src / "b.py")
    first = create_id(cli("snapshot", "create", str(src)))
    (src / "a.py").write_text("two")
    (src / "new.py").write_text("")
    second = create_id(cli("snapshot", "create", str(src)))

    show = cli("snapshot", "show", first[:10])
    assert show.exit_code == 0, show.stderr
    lines = show.stdout.splitlines()
    assert lines[0] == f"snapshot {first}"
    assert f"source: {src}" in lines
    assert "files: 2  links: 1  empty directories: 1  size: 13 B" in lines
    assert any(re.fullmatch(r"644 +3 [0-9a-f]{12}  a\.py", line) for line in lines)
    assert any(re.fullmatch(r"755 +10 [0-9a-f]{12}  run\.sh", line) for line in lines)
    assert any(re.fullmatch(r"lnk +b\.py -> a\.py", line) for line in lines)
    assert any(re.fullmatch(r"dir +empty/", line) for line in lines)
    raw = cli("snapshot", "show", "--json", first)
    assert json.loads(raw.stdout)["format"] == "runyard-manifest/1"

    listed = cli("snapshot", "list").stdout.splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted([first[:12], second[:12]])
    assert all(f"  {src}" in line for line in listed)

    dest = tmp_path / "restored"
    r = cli("snapshot", "restore", first[:8], str(dest))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"Restored 2 files, 1 link, 1 empty directory (13 B) into {dest}\n"  # number agreement
    assert (dest / "a.py").read_text() == "one"
    assert os.access(dest / "run.sh", os.X_OK)
    assert os.readlink(dest / "b.py") == "a.py"
    assert (dest / "empty").is_dir()

    r = cli("snapshot", "restore", second, str(dest))
    assert r.exit_code == 1
    assert r.stderr == f"Cannot restore into '{dest}': it is not empty. Give a new or empty folder.\n"
    assert (dest / "a.py").read_text() == "one"

    d = cli("snapshot", "diff", first, second[:6])
    assert d.stdout == "M\ta.py\nA\tnew.py\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["snapshot", "show", "deadbeef"], "No snapshot id starts with 'deadbeef' in the store at "),
        (["snapshot", "show", "xyz"], "'xyz' is not a snapshot id: give the id (64 hex digits) or at least"),
        (["snapshot", "restore", "deadbeef", "out"], "No snapshot id starts with 'deadbeef'"),
        (["snapshot", "diff", "dead", "beef"], "No snapshot id starts with 'dead'"),
        (["snapshot", "create", "/no/such/dir"], "Cannot read the source directory '/no/such/dir'"),
        (["config", "get", "snapshot.max_bytes"], "'snapshot.max_bytes' is not set in this workspace."),
        (["config", "set", "snapshot.colour", "red"], "Unknown setting 'snapshot.colour'. Known settings: "),
    ],
)
def test_errors_are_one_clean_message(cli: Cli, args: list[str], message: str) -> None:
    r = cli(*args)
    assert r.exit_code == 1
    assert r.stderr.startswith(message)
    assert "Traceback" not in r.stderr and not r.stderr.startswith("Error:")


def test_restore_with_a_missing_blob_fails_cleanly(tmp_path: Path, cli: Cli, workspace: Workspace) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a", "b.py": "b"})
    sid = create_id(cli("snapshot", "create", str(src)))
    blobs = Path(workspace.path, "store", "blobs")
    victim = next(p for p in blobs.rglob("*") if p.is_file() and p.read_bytes() == b"b")
    victim.unlink()
    r = cli("snapshot", "restore", sid, str(tmp_path / "dest"))
    assert r.exit_code == 1
    assert "is missing from the store" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dest").exists()


# -- workspaces ---------------------------------------------------------------------------


def test_init_and_config(tmp_path: Path, bare: Run) -> None:
    proj = tmp_path / "proj"
    r = bare("init", str(proj))
    assert r.exit_code == 0
    assert r.stdout == f"Made workspace {proj / '.runyard'}\n"
    assert bare("init", str(proj)).stdout == f"Workspace already at {proj / '.runyard'}\n"
    ws = ["--workspace", str(proj)]
    assert bare(*ws, "config", "set", "snapshot.max_bytes", "1GiB").stdout == "snapshot.max_bytes = 1073741824\n"
    assert bare(*ws, "config", "set", "snapshot.max_files", "5000").exit_code == 0
    assert bare(*ws, "config", "set", "store.url", str(tmp_path / "elsewhere")).exit_code == 0
    assert bare(*ws, "config", "get", "snapshot.max_files").stdout == "5000\n"
    assert bare(*ws, "config", "list").stdout.splitlines() == [
        "snapshot.max_bytes = 1073741824", "snapshot.max_files = 5000", f"store.url = {tmp_path / 'elsewhere'}",
        "workspace.format = 1",
    ]
    assert bare(*ws, "config", "unset", "snapshot.max_files").exit_code == 0
    assert bare(*ws, "config", "get", "snapshot.max_files").exit_code == 1
    # The setting is used: snapshots go to the configured store.
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    sid = create_id(bare(*ws, "snapshot", "create", str(src)))
    assert (tmp_path / "elsewhere" / "snapshots" / f"{sid}.json").is_file()
    assert not home_workspace().exists()


def test_bad_explicit_workspace(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    r = bare("--workspace", str(tmp_path / "typo"), "snapshot", "create", str(src))
    assert r.exit_code == 1
    assert r.stderr == (f"No runyard workspace at '{tmp_path / 'typo'}' (from --workspace). "
                        f"Create one with: runyard init '{tmp_path / 'typo'}'\n")
    assert not home_workspace().exists()


def test_bad_workspace_from_the_environment(tmp_path: Path, bare: Run) -> None:
    r = bare("snapshot", "list", env={"RUNYARD_WORKSPACE": str(tmp_path / "typo" / ".runyard")})
    assert r.exit_code == 1
    assert r.stderr == (f"No runyard workspace at '{tmp_path / 'typo' / '.runyard'}' (from RUNYARD_WORKSPACE). "
                        f"Create one with: runyard init '{tmp_path / 'typo'}'\n")


def test_workspace_discovery_order(tmp_path: Path, bare: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    home = Workspace.create(home_workspace().parent)
    upward = Workspace.create(tmp_path / "proj")
    env_ws = Workspace.create(tmp_path / "envws")
    explicit = Workspace.create(tmp_path / "explicit")
    deep = tmp_path / "proj" / "x" / "y"
    deep.mkdir(parents=True)

    def where(*args: str, env: dict[str, str] | None = None) -> str:
        r = bare(*args, "snapshot", "create", "--json", str(src), env=env)
        assert r.exit_code == 0, r.stderr
        sid = json.loads(r.stdout)["id"]
        found = [w for w in (home, upward, env_ws, explicit)
                 if (Path(w.path) / "store" / "snapshots" / f"{sid}.json").exists()]
        for w in found:
            os.unlink(Path(w.path) / "store" / "snapshots" / f"{sid}.json")
        assert len(found) == 1
        return found[0].path

    assert where() == home.path  # nothing else: ~/.runyard
    monkeypatch.chdir(deep)
    assert where() == upward.path  # .runyard/ upward from the current directory
    assert where(env={"RUNYARD_WORKSPACE": env_ws.path}) == env_ws.path
    assert where("--workspace", explicit.path, env={"RUNYARD_WORKSPACE": env_ws.path}) == explicit.path
    # The folder holding .runyard/ is accepted too.
    assert where("--workspace", str(tmp_path / "explicit")) == explicit.path


def test_home_workspace_is_made_on_first_use(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    assert bare("snapshot", "list").exit_code == 0
    assert (home_workspace() / "config.toml").is_file()
    r = bare("snapshot", "create", str(src))
    create_id(r)
    assert "runyard: created the workspace" not in r.stderr  # only the first time


def test_home_workspace_creation_is_announced(tmp_path: Path, bare: Run) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a"})
    r = bare("snapshot", "create", str(src))
    create_id(r)
    assert r.stderr == f"runyard: created the workspace {home_workspace()} (make a project one with: runyard init)\n"


def test_home_workspace_notice_never_comes_before_an_error(tmp_path: Path, bare: Run) -> None:
    """On a fresh machine the over-limit message is still the start of stderr."""
    src = write_tree(tmp_path / "src", {"a.py": "a" * 2000})
    r = bare("snapshot", "create", "--max-bytes", "1000", str(src))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"While attempting to take snapshot of {src}\n")
    assert r.stderr.endswith(f"runyard: created the workspace {home_workspace()} "
                             "(make a project one with: runyard init)\n")
    r = bare("config", "get", "snapshot.max_bytes", env={"HOME": str(tmp_path / "home2")})
    assert r.exit_code == 1
    assert r.stderr.startswith("'snapshot.max_bytes' is not set in this workspace.\nrunyard: created the workspace")


# -- as a program --------------------------------------------------------------------------


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.py": "a" * 2000})
    ws = Workspace.create(tmp_path / "ws")
    env = {**os.environ, "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "runyard.cli", "--workspace", ws.path, "snapshot", "create",
                        str(src), "--max-bytes", "1000"], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert p.stderr.startswith(f"While attempting to take snapshot of {src}\n"
                               "Your total snapshot size exceeds the limit of 0.0 MB\n")
    assert "Traceback" not in p.stderr
    ok = subprocess.run([sys.executable, "-m", "runyard.cli", "--workspace", ws.path, "snapshot", "create",
                         str(src)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ID_RX.fullmatch(ok.stdout.splitlines()[-1])


def test_config_set_never_rewrites_what_it_cannot_represent(cli: Cli, workspace: Workspace) -> None:
    cfg = Path(workspace.path, "config.toml")
    cfg.write_text(cfg.read_text() + '\n[history.options]\ntimeout = 1.5\n["my key"]\nx = 2\n')
    before = cfg.read_text()
    r = cli("config", "set", "snapshot.max_files", "5")
    assert r.exit_code == 1 and "cannot rewrite" in r.stderr and "Traceback" not in r.output
    assert cfg.read_text() == before
    assert not list(Path(workspace.path).glob("config.toml.*.tmp"))


def test_config_quotes_keys_and_refuses_unknown_unset(cli: Cli, workspace: Workspace) -> None:
    assert cli("config", "set", "snapshot.max_bytes", "0.5").exit_code == 0
    assert cli("config", "get", "snapshot.max_bytes").stdout.strip() == "1"  # a fraction of a byte is a byte
    r = cli("config", "unset", "snapshot.max_byte")
    assert r.exit_code == 1 and "Unknown setting 'snapshot.max_byte'" in r.stderr
