"""The ``runyard`` command's entry point.

For ``runyard run`` (without ``--detach``), the run's supervisor is forked
here, before anything else is imported, so that it loads the run history
(SQLAlchemy takes about 0.2 s to import) while the command parses its
arguments and takes the snapshot. Every other command goes straight to
:mod:`runyard.cli`.
"""

from __future__ import annotations

import sys

_RUN_OPTIONS_WITH_VALUES = frozenset({"--source-dir", "-e", "--experiment", "--max-bytes", "--max-files", "--secrets",
                                      "--tag"})


def _is_foreground_run(argv: list[str]) -> bool:
    """Whether ``argv`` is ``[global options] run [run options] SCRIPT ...`` without --detach or --help.

    Only the options before the script count: what follows it is the script's.
    """
    args = list(argv)
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "--workspace" and args:
            args.pop(0)
        elif not opt.startswith("--workspace="):
            return False  # --help, --version: not a run
    if not args or args.pop(0) != "run":
        return False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("--detach", "-h", "--help"):
            return False
        if opt in _RUN_OPTIONS_WITH_VALUES and args:
            args.pop(0)
    return bool(args)


def main() -> None:
    obj: dict[str, object] = {}
    if _is_foreground_run(sys.argv[1:]):
        from runyard.compute.local import Prefork

        obj["prefork"] = Prefork()
    from runyard.cli import main as cli

    cli(obj=obj)
