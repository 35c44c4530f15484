"""Chaos in the suite: runs killed at random moments lose nothing (see tests/chaos.py).

A few trials of every kind of kill per run of the suite; ``bench/bench_chaos.py``
runs hundreds and prints the figures for docs/benchmarks.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaos import KINDS, Chaos, summary
from runyard.workspace import Workspace

pytestmark = pytest.mark.timeout(600)

TRIALS = int(os.environ.get("RUNYARD_CHAOS_TRIALS", "6"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_killed_at_random_loses_nothing_written_before(kind: str, tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    chaos = Chaos(ws.path, tmp_path)
    trials = [chaos.run(kind, seed) for seed in range(TRIALS)]
    print(summary(trials))
    bad = [(t.run_id, t.when, t.violations) for t in trials if t.violations]
    assert not bad, summary(trials) + "\n" + "\n".join(map(str, bad))
    assert sum(t.checked_files for t in trials) > 0  # the kills did not all land before anything was written


@pytest.mark.parametrize("kind", ["supervisor", "host"])
def test_the_same_with_a_copied_working_directory(kind: str, tmp_path: Path) -> None:
    """A store that is not a local folder store: the working directory is a copy, not an overlay."""
    ws = Workspace.create(tmp_path / "ws")
    ws.set_setting("store.url", f"file://{tmp_path / 'fsstore'}")
    chaos = Chaos(ws.path, tmp_path)
    trials = [chaos.run(kind, 100 + seed) for seed in range(TRIALS // 2)]
    bad = [(t.run_id, t.when, t.violations) for t in trials if t.violations]
    assert not bad, summary(trials) + "\n" + "\n".join(map(str, bad))
    assert not os.path.exists(os.path.join(ws.path, "store"))  # (every run used the file:// store)
