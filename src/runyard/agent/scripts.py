"""How to run a run's script, by its kind.

- ``*.py``: with the run's Python interpreter;
- a file that starts with ``#!``: with the interpreter its first line names
  (as the kernel would, whether or not the file is executable);
- ``*.sh`` / ``*.bash`` without a ``#!`` line: with ``bash``;
- a program (an ELF executable): as it is;
- a notebook (``*.ipynb``) or anything else: refused, saying what to do.

A run can also be a whole command instead of a script (Azure ML's
``ScriptRunConfig(command=[...])``): a list runs as it is, a string through
``/bin/sh -c``. In every case the run's Python is first on ``PATH``, so a
``python`` in a command or a shell script is the run's interpreter.

>>> runner_for_name("train.py", b"")
['{python}']
>>> runner_for_name("prep", b"#!/bin/bash -e\\n")
['/bin/bash', '-e']
>>> command_for(["{python}"], "train.py", ["--lr", "0.1"], "/usr/bin/python3")
['/usr/bin/python3', 'train.py', '--lr', '0.1']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from runyard.errors import RunError

PYTHON: Final = "{python}"
"""Stands for the run's Python interpreter in a runner."""
_HEAD: Final = 512


def runner_for_name(script: str, head: bytes) -> list[str]:
    """The runner for ``script`` whose file starts with ``head``; raises ``RunError`` for what runyard cannot run."""
    ext = os.path.splitext(script)[1].lower()
    if ext in (".py", ".pyw"):
        return [PYTHON]
    if ext == ".ipynb":
        raise RunError(
            f"'{script}' is a notebook, not a script. Convert it and run the .py file "
            f"(jupyter nbconvert --to script {script}), or run it with a command, e.g. "
            f"ScriptRunConfig(command=['papermill', '{script}', 'outputs/{os.path.basename(script)}']).")
    if head.startswith(b"\x7fELF"):
        return []  # a program: it runs itself
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip()
        parts = line.decode("utf-8", "surrogateescape").split(None, 1)
        if not parts:
            raise RunError(f"'{script}' starts with '#!' but names no interpreter. Complete its first line "
                           "(e.g. '#!/usr/bin/env bash').")
        return [p.strip() for p in parts]
    if ext in (".sh", ".bash"):
        return ["bash"]
    raise RunError(
        f"runyard does not know how to run '{script}': it is not a Python file (.py), a shell script (.sh), a "
        "program, or a file with a '#!' line. Add a first line naming its interpreter (e.g. '#!/usr/bin/env "
        f"Rscript'), or run it with a command: runyard run --command 'Rscript {script}', or "
        f"ScriptRunConfig(command=['Rscript', '{script}']).")


def runner_for(path: str, script: str) -> list[str]:
    """The runner for the script file at ``path`` (named ``script`` in the source)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
    except OSError as exc:
        raise RunError(f"Cannot read the script '{script}': {exc.strerror}. Check the file and its permissions.") \
            from exc
    runner = runner_for_name(script, head)
    if not runner and not os.access(path, os.X_OK):
        raise RunError(f"'{script}' is a program but is not executable. Make it executable (chmod +x {script}).")
    return runner


def command_for(runner: Sequence[str], script: str, arguments: Sequence[str], python: str) -> list[str]:
    """The command line that runs ``script`` with ``runner`` (an empty runner: the script is a program)."""
    if not runner:
        return [os.path.join(".", script), *arguments]
    return [python if part == PYTHON else part for part in runner] + [script, *arguments]


def command_line(command: str | Sequence[str]) -> list[str]:
    """A run's whole command (``ScriptRunConfig(command=...)``) as the argv to execute."""
    if isinstance(command, str):
        if not command.strip():
            raise RunError("The run's command is empty. Give a command, e.g. command=['python', 'train.py'].")
        return ["/bin/sh", "-c", command]
    argv = [str(a) for a in command]
    if not argv or not argv[0]:
        raise RunError("The run's command is empty. Give a command, e.g. command=['python', 'train.py'].")
    return argv


def path_with(python: str, path: str | None) -> str:
    """``PATH`` with the folder of ``python`` first."""
    first = os.path.dirname(python)
    rest = [p for p in (path or os.defpath).split(os.pathsep) if p and p != first]
    return os.pathsep.join([first, *rest])


__all__ = ["PYTHON", "command_for", "command_line", "path_with", "runner_for", "runner_for_name"]
