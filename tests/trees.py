"""Building test trees: ``write_tree(root, {path: content})``, and
``write_script(folder, name, code)`` for the scripts runs run.

Content is ``str`` or ``bytes`` (a 0644 file), ``Exe(bytes)`` (a 0755 file),
``Link(target)`` (a symlink) or ``EMPTY_DIR``.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Exe:
    data: bytes


EMPTY_DIR = object()
Spec = dict[str, Any]


def write_tree(root: Path, spec: Spec) -> Path:
    """Make ``root`` from {path: bytes | str | Exe | Link | EMPTY_DIR}."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if what is EMPTY_DIR:
            p.mkdir(exist_ok=True)
        elif isinstance(what, Link):
            os.symlink(what.target, p)
        elif isinstance(what, Exe):
            p.write_bytes(what.data)
            p.chmod(0o755)
        else:
            p.write_bytes(what.encode() if isinstance(what, str) else what)
            p.chmod(0o644)
    return root


def write_script(src: Path, name: str, code: str) -> None:
    """Write a script (indented code is dedented) at ``src/name``."""
    (src / name).parent.mkdir(parents=True, exist_ok=True)
    (src / name).write_text(textwrap.dedent(code))
