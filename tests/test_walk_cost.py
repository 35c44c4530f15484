"""An ignored directory costs nothing: the walk never opens it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runyard.snapshot import walk as walk_mod


def test_ignored_directories_are_never_entered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".gitignore").write_text(".venv/\ndata/\n*.ckpt\n")
    for d in (".venv/lib/site-packages/pkg", "data/raw", "src/pkg", "src/pkg/__pycache__", ".git/objects"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "f.py").write_text("x")
    (tmp_path / "model.ckpt").write_text("x")
    opened: list[str] = []
    real = os.scandir

    def spy(path: object) -> os.ScandirIterator[bytes]:
        opened.append(os.fsdecode(path))  # type: ignore[arg-type]
        return real(path)  # type: ignore[arg-type, return-value]

    monkeypatch.setattr(walk_mod.os, "scandir", spy)
    result = walk_mod.walk(tmp_path)
    assert sorted(f.path for f in result.files) == [".gitignore", "src/pkg/f.py"]
    rel = sorted(os.path.relpath(p, tmp_path) for p in opened)
    assert rel == [".", "src", "src/pkg"]
