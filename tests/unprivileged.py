"""Running Python as ``nobody`` from tests that run as root (as CI does).

The venv's interpreter may live where nobody cannot read (under root's home,
e.g. pyenv); a system Python of the same version can import runyard from its
source with the venv's packages on PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3

NOBODY = ("--reuid=65534", "--regid=65534", "--clear-groups")


def nobody_python(probe: str) -> tuple[list[str], dict[str, str]] | None:
    """A command prefix running Python as nobody that can ``import probe``; None
    when this is not root, there is no setpriv, or no such Python."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    import runyard

    src = str(Path(runyard.__file__).resolve().parents[1])
    deps = str(Path(blake3.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, deps]), "HOME": "/tmp"}
    prefix = [setpriv, *NOBODY]
    for py in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        if os.path.exists(py) and subprocess.run([*prefix, py, "-c", f"import {probe}"],
                                                 capture_output=True, env=env, cwd="/").returncode == 0:
            return [*prefix, py], env
    return None
