"""The ``runyard`` command's entry point.

For ``runyard run`` (without ``--detach``), the run's supervisor is forked
here, before the command parses its arguments, so that it loads its modules
while the command starts up and takes the snapshot. Every other command goes
straight to :mod:`runyard.cli`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click


def _taking_values(command: click.Command) -> set[str]:
    """The option names of ``command`` that take a value (read from its own parameters, so never out of date)."""
    import click

    out: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and not param.count and param.nargs != 0:
            out.update(param.opts)
    return out


def _is_foreground_run(argv: list[str]) -> bool:
    """Whether ``argv`` is ``[global options] run [run options] SCRIPT ...`` without --detach or --help.

    Only the options before the script count: what follows it is the script's.
    """
    from runyard.cli import main, run_cmd

    global_values = _taking_values(main)
    run_values = _taking_values(run_cmd)
    args = list(argv)
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in global_values and args:
            args.pop(0)
        elif opt.split("=", 1)[0] not in global_values:
            return False  # --help, --version: not a run
    if not args or args.pop(0) != "run":
        return False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("--detach", "-h", "--help"):
            return False
        if opt in run_values and args:
            args.pop(0)
    return bool(args)


def main() -> None:
    obj: dict[str, object] = {}
    if _is_foreground_run(sys.argv[1:]):
        from runyard.compute.local import Prefork

        obj["prefork"] = Prefork()
    from runyard.cli import main as cli

    cli(obj=obj)
