"""Shared fixtures: every test runs with its own HOME, no RUNYARD_* settings
from the outside, and git configured to read no global or system files."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runyard.cli import main
from runyard.workspace import Workspace
from services import azurite, gcs, moto_s3, postgres, pytest_runtest_setup

# Real storage services, PostgreSQL and the FUSE mark, for every test.
__all__ = ["azurite", "gcs", "moto_s3", "postgres", "pytest_runtest_setup"]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    home = tmp_path_factory.mktemp("home")
    for key in list(os.environ):
        if key.startswith("RUNYARD_") or key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    yield


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder nobody can reach too (pytest's tmp_path is private to root);
    removed afterwards even where a test made parts of it unreadable."""
    d = Path(tempfile.mkdtemp(prefix="runyard-shared-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for dirpath, dirnames, _ in os.walk(d):
            for n in dirnames:
                os.chmod(os.path.join(dirpath, n), 0o755, follow_symlinks=False)
        shutil.rmtree(d)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh workspace outside any source tree the test makes."""
    return Workspace.create(tmp_path / "wsroot")


TARGETS = ("local", "sandbox")
"""The compute target kinds the run conformance suite runs against (tests that take ``target_workspace``)."""


@pytest.fixture(params=TARGETS)
def target_workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """A fresh workspace whose default compute target is of each kind in turn."""
    if request.param == "local":
        yield Workspace.create(tmp_path / "wsroot")
        return
    with sandboxed_workspace() as ws:
        yield ws


@pytest.fixture
def sandbox_workspace() -> Iterator[Workspace]:
    """A fresh workspace whose default compute target is a sandbox."""
    with sandboxed_workspace() as ws:
        yield ws


@contextlib.contextmanager
def sandboxed_workspace() -> Iterator[Workspace]:
    """A workspace whose default target, ``box``, is a sandbox; skipped (failed under CI) where none
    can be made. The sandbox's user (nobody) must reach the workspace, so it is in a folder every
    user can enter (pytest's own are closed to others)."""
    from runyard.agent.sandbox import preflight, user_ids

    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the sandbox suite runs as root here (it drops to nobody); under CI it must run")
    uid, gid = user_ids(None)
    problem = preflight(uid, gid)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the sandbox cannot run here: {problem}")
        pytest.skip(f"the sandbox cannot run here: {problem}")
    d = Path(tempfile.mkdtemp(prefix="runyard-sandbox-"))
    d.chmod(0o755)
    ws = Workspace.create(d / "wsroot")
    try:
        from runyard.compute.base import add_target

        add_target(ws, "box", "sandbox", {})
        ws.set_setting("compute.default", "box")
        yield ws
    finally:
        from runyard.cleanup import collect

        collect(Workspace(ws.path))
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cli(workspace: Workspace) -> Cli:
    return Cli(workspace)


class Cli:
    """Runs the runyard CLI in-process against a workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(main, ["--workspace", self.workspace.path, *args], env=env, catch_exceptions=False)


def git(cwd: Path, *args: str) -> str:
    """Run git with no user or system config; return stdout."""
    return subprocess.run(
        ["git", "-c", "core.excludesFile=/dev/null", "-c", "core.quotePath=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


def git_included(root: Path) -> list[str]:
    """What git lists as untracked, not ignored, under ``root`` (a fresh repo there)."""
    if not (root / ".git").exists():
        git(root, "init", "-q", ".")
    out = subprocess.run(
        ["git", "-c", "core.excludesFile=/dev/null", "ls-files", "-z", "--others", "--exclude-standard"],
        cwd=root, check=True, capture_output=True,
    ).stdout
    return sorted(p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p)
