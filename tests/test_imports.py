"""The hot CLI paths import little: no fsspec, no cloud SDKs, no thread pools.

Like click's own import test: run a fresh interpreter and look at what got
imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "fsspec", "sqlalchemy", "ray", "azure", "boto3", "botocore", "s3fs", "adlfs", "gcsfs",
    "rich", "numpy", "pandas", "requests", "urllib3", "asyncio", "concurrent.futures", "blake3",
)

PROBE = """
import json, sys
from runyard.cli import main
try:
    main({args!r}, standalone_mode=False)
except SystemExit:
    pass
print("\\nMODULES=" + json.dumps(sorted(sys.modules)))
"""


def _modules(args: list[str], cwd: Path) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("MODULES="))
    return set(json.loads(line[len("MODULES="):]))


@pytest.mark.parametrize("args", [["--help"], ["snapshot", "ls", "."], ["snapshot", "explain", "x"]])
def test_hot_paths_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    mods = _modules(args, tmp_path)
    heavy = sorted(m for m in mods for h in HEAVY if m == h or m.startswith(h + "."))
    assert heavy == [], f"'runyard {' '.join(args)}' imported {heavy}"


def test_import_runyard_is_light(tmp_path: Path) -> None:
    code = "import json, sys, runyard; print(json.dumps(sorted(sys.modules)))"
    mods = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                         check=True, cwd=tmp_path).stdout))
    assert not any(m == h or m.startswith(h + ".") for m in mods for h in HEAVY if h != "blake3")
