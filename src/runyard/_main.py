"""The ``runyard`` command's entry point.

For ``runyard run`` (without ``--detach``), the run's supervisor is forked
here, before the command parses its arguments, so that it loads its modules
while the command starts up and takes the snapshot. Every other command goes
straight to :mod:`runyard.cli`.
"""

from __future__ import annotations

import sys

_GLOBAL_OPTIONS_WITH_VALUES = frozenset({"--workspace"})


def _is_foreground_run(argv: list[str]) -> bool:
    """Whether ``argv`` is ``[global options] run ...`` with no ``--detach``, ``-h`` or ``--help``.

    Decided before anything is imported (click alone would cost this fork its
    head start), and so without knowing which of ``run``'s options take a value:
    a ``--detach`` or ``--help`` anywhere means no early fork. That is never
    wrong, only slower when the token was the script's own argument (the
    supervisor is forked a moment later then). So there is no list of options
    here to fall out of date with the command.
    """
    args = list(argv)
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in _GLOBAL_OPTIONS_WITH_VALUES and args:
            args.pop(0)
        elif opt.split("=", 1)[0] not in _GLOBAL_OPTIONS_WITH_VALUES:
            return False  # --help, --version: not a run
    if not args or args.pop(0) != "run":
        return False
    return not any(a in ("--detach", "-h", "--help") for a in args)


def main() -> None:
    obj: dict[str, object] = {}
    if _is_foreground_run(sys.argv[1:]):
        from runyard.compute.local import Prefork

        obj["prefork"] = Prefork()
    from runyard.cli import main as cli

    cli(obj=obj)
