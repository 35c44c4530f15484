"""``runyard compute``: register, list, show and remove compute targets (thin over
:mod:`runyard.compute.base`)."""

from __future__ import annotations

from typing import Any

import click

from runyard.cli_common import _Failure, _Group, _open_workspace


@click.group("compute", cls=_Group)
def compute_group() -> None:
    """Compute targets: where runs run (local, or a sandbox with limits)."""


@compute_group.command("add")
@click.argument("name")
@click.option("--kind", "kind_name", required=True, type=click.Choice(["local", "sandbox"]),
              help="What kind of target: sandbox runs the script under bubblewrap as an unprivileged user.")
@click.option("--network/--no-network", default=None, help="sandbox: let the script reach the network (default: no).")
@click.option("--memory", metavar="SIZE", help="sandbox: the most memory the script may use (e.g. 8GiB).")
@click.option("--cpus", type=int, metavar="N", help="sandbox: how many CPUs the script may use.")
@click.option("--pids", type=int, metavar="N", help="sandbox: the most processes the script may have (default 1024).")
@click.option("--time", "time_limit", metavar="SECONDS", help="sandbox: stop a run that goes on longer (wall time).")
@click.option("--gpus", is_flag=True, default=None, help="sandbox: pass the GPUs (NVIDIA, DRI devices) through.")
@click.option("--user", metavar="USER", help="sandbox: the unprivileged user to run as (default: nobody under root, "
                                            "else you).")
@click.option("--replace", is_flag=True, help="Replace a target of that name.")
@click.pass_context
def compute_add(ctx: click.Context, name: str, kind_name: str, network: bool | None, memory: str | None,
                cpus: int | None, pids: int | None, time_limit: str | None, gpus: bool | None, user: str | None,
                replace: bool) -> None:
    """Register compute target NAME (its options are checked, and a sandbox is tried here first)."""
    from runyard.compute.base import add_target

    options: dict[str, Any] = {k: v for k, v in {
        "network": network, "memory": memory, "cpus": cpus, "pids": pids, "time": time_limit, "gpus": gpus,
        "user": user}.items() if v is not None}
    target = add_target(_open_workspace(ctx), name, kind_name, options, replace=replace)
    click.echo(f"Added compute target {target.describe()}")


@compute_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def compute_ls(ctx: click.Context, as_json: bool) -> None:
    """List the workspace's compute targets (the default marked with *)."""
    from runyard.compute.base import default_target_name, list_targets

    ws = _open_workspace(ctx)
    targets = list_targets(ws)
    default = default_target_name(ws)
    if as_json:
        import json

        click.echo(json.dumps([{"name": t.name, "kind": t.kind, "options": t.options, "default": t.name == default}
                               for t in targets], indent=1))
        return
    for t in targets:
        click.echo(f"{'*' if t.name == default else ' '} {t.describe()}")


@compute_group.command("show")
@click.argument("name")
@click.pass_context
def compute_show(ctx: click.Context, name: str) -> None:
    """Show compute target NAME and whether it can run here now (its preflight)."""
    from runyard.compute.base import get_target, kind

    target = get_target(_open_workspace(ctx), name)
    click.echo(f"name: {target.name}\nkind: {target.kind}")
    for key, value in sorted(target.options.items()):
        click.echo(f"{key}: {value}")
    problem = kind(target.kind).preflight(target)
    click.echo("ready: yes" if problem is None else f"ready: no: {problem}")


@compute_group.command("rm")
@click.argument("name")
@click.pass_context
def compute_rm(ctx: click.Context, name: str) -> None:
    """Remove compute target NAME (runs that used it keep its name in their record)."""
    from runyard.compute.base import remove_target

    if not remove_target(_open_workspace(ctx), name):
        raise _Failure(f"There is no compute target '{name}'. List them with: runyard compute ls")
    click.echo(f"Removed compute target {name}")
