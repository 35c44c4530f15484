"""``runyard runs``: list (filtered, sorted, with chosen columns), show and compare runs (thin over
:mod:`runyard.history.query` and :mod:`runyard.runs`)."""

from __future__ import annotations

from typing import Any

import click

from runyard.cli_common import _Failure, _Group, _open_workspace, _tags_opt


@click.group("runs", cls=_Group)
def runs_group() -> None:
    """List and inspect runs."""


def _fmt_time(t: float | None) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t)) if t else "-"


@runs_group.command("ls")
@click.option("-e", "--experiment", help="Only this experiment.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="Only runs with this status (e.g. Running, Failed). Repeatable: any of them.")
@click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]",
              help="Only runs with this tag (KEY alone: any value). Repeatable: all of them.")
@click.option("--filter", "where", metavar="EXPR",
              help="Only runs that match, e.g. 'metrics.acc > 0.9 and tags.team = \"vision\"' (see docs/cli.md).")
@click.option("--sort", "sort", multiple=True, metavar="FIELD",
              help="Order by FIELD (-FIELD or 'FIELD desc': descending), e.g. -metrics.acc. Repeatable. "
                   "Default: newest first.")
@click.option("-c", "--column", "columns", multiple=True, metavar="FIELD",
              help="Show FIELD too, e.g. metrics.acc, tags.team, properties.owner. Repeatable.")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(min=0),
              help="At most this many (0 = all).")
@click.option("--offset", default=0, type=click.IntRange(min=0), help="Skip this many first (paging).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of runs instead of the table.")
@click.pass_context
def runs_ls(ctx: click.Context, experiment: str | None, statuses: tuple[str, ...], tags: tuple[str, ...],
            where: str | None, sort: tuple[str, ...], columns: tuple[str, ...], limit: int, offset: int,
            as_json: bool) -> None:
    """List runs, newest first (or as sorted): id, status, creation time, duration, script and arguments,
    and the columns asked for."""
    from runyard.history.query import query_runs
    from runyard.run import run_summary
    from runyard.runs import reap_lost, runs_filter

    ws = _open_workspace(ctx)
    history = ws.open_history()
    problems: list[str] = []
    reap_lost(history, ws=ws, problems=problems)
    for problem in problems:
        click.echo(f"runyard: {problem} (it is tried again at the next read; see runyard gc)", err=True)
    if experiment is not None:
        history.get_experiment(experiment)  # a name that does not exist: say which do
    page = query_runs(history, filter=runs_filter(where, statuses, _tags_opt(tags, filter=True)), sort=sort,
                      columns=columns, limit=limit or None, offset=offset, experiment=experiment)
    runs = page.runs
    if as_json:
        import json

        click.echo(json.dumps([{**run_summary(r), **page.columns.get(r.id, {})} for r in runs], indent=1,
                              sort_keys=True, default=str))
        return
    if not runs:
        filtered = experiment is not None or statuses or tags or where or offset
        click.echo("runyard: no runs match." if filtered else
                   "runyard: no runs yet. Start one with: runyard run SCRIPT", err=True)
        return
    width = max(len("RUN ID"), *(len(r.id) for r in runs))
    extra = [(c, max(len(c), *(len(_cell(page.columns[r.id].get(c))) for r in runs))) for c in columns]
    head = "".join(f"  {c:>{w}}" for c, w in extra)
    click.echo(f"{'RUN ID':<{width}}  {'STATUS':<10}  {'CREATED':<19}  {'DURATION':>8}{head}  SCRIPT")
    for r in runs:
        took = f"{r.duration:.1f}s" if r.duration is not None else "-"
        what = " ".join([r.script or "", *r.arguments]).strip()
        cells = "".join(f"  {_cell(page.columns[r.id].get(c)):>{w}}" for c, w in extra)
        click.echo(f"{r.id:<{width}}  {r.status.value:<10}  {_fmt_time(r.created):<19}  {took:>8}{cells}  {what}")
    if page.more:
        click.echo(f"runyard: more runs match: --offset {offset + len(runs)} shows the next ones.", err=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _show_flagged(properties: dict[str, str]) -> None:
    """The flags a run's snapshot got: likely secrets, links leaving the source."""
    import json

    from runyard.runs import LINKS_OUTSIDE_PROPERTY, SECRETS_PROPERTY

    for key, label in ((SECRETS_PROPERTY, "likely secrets in its snapshot"),
                       (LINKS_OUTSIDE_PROPERTY, "links leaving the source")):
        raw = properties.get(key)
        if not raw:
            continue
        try:
            paths = [str(p) for p in json.loads(raw)]
        except (ValueError, TypeError):
            paths = [raw]
        click.echo(f"{label}: {', '.join(paths)}")


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run's details as JSON.")
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show a run: status, times, exit, snapshot, tags, metrics, artifacts.

    RUN_ID may be a unique prefix of the id."""
    from runyard.config import format_size, plural
    from runyard.run import Run
    from runyard.runs import get_run

    ws = _open_workspace(ctx)
    run = Run(ws, get_run(ws, run_id).id)
    details = run.get_details()
    metrics = run.get_metrics()
    steps: dict[str, list[int | None]] = {}
    for point in run.get_metric_points():
        steps.setdefault(point.name, []).append(point.step)
    steps = {name: s for name, s in steps.items() if any(x is not None for x in s)}  # only where a step was given
    artifacts = run.history.list_artifacts(run.id)
    if as_json:
        import json

        details["metrics"] = metrics
        details["metricSteps"] = steps
        details["artifacts"] = [{"name": a.name, "size": a.size, "digest": a.digest} for a in artifacts]
        click.echo(json.dumps(details, indent=1, sort_keys=True, default=str))
        return
    for key in ("runId", "experiment", "status", "startTimeUtc", "endTimeUtc", "target", "script", "snapshotId",
                "exitCode", "signal", "host"):
        if details.get(key) not in (None, ""):
            click.echo(f"{key}: {details[key]}")
    if details["arguments"]:
        click.echo(f"arguments: {details['arguments']}")
    for label, key in (("command", "commandLine"), ("python", "pythonVersion"), ("rerun of", "parentRunId")):
        if details.get(key):
            click.echo(f"{label}: {details[key]}")
    if details.get("environment"):
        click.echo(f"environment: {_environment_text(details['environment'])}")
    if details["tags"]:
        click.echo("tags: " + ", ".join(f"{k}={v}" if v else k for k, v in sorted(details["tags"].items())))
    git = details["git"]
    if git["commit"]:
        click.echo(f"git: {git['commit'][:12]} on {git['branch']}{' (dirty)' if git['dirty'] else ''}")
    _show_flagged(details["properties"])
    if details["error"]:
        click.echo("error:\n  " + details["error"].replace("\n", "\n  "))
    for label, key in (("inputs", "inputDatasets"), ("outputs", "outputDatasets")):
        if details[key]:
            click.echo(f"{label}:")
        for d in details[key]:
            what = f"dataset {d['dataset']}:{d['version']}" if d["dataset"] and d["version"] else (
                f"{d['datastore']}:{d['path']}" if d["datastore"] else "an unregistered dataset")
            where = f" -> {d['datastore']}:{d['path']}" if key == "outputDatasets" and d["version"] else ""
            size = (f", {plural(d['files'], 'file')}, {format_size(d['bytes'] or 0)}" if d.get("files") is not None
                    else "")
            click.echo(f"  {d['name']}: {what}{where} ({d['mode']}, {d['state']}{size})")
    if metrics:
        click.echo("metrics:")
        for name, value in sorted(metrics.items()):
            click.echo(f"  {name}: {_metric_text(value, steps.get(name))}")
    if artifacts:
        total = sum(a.size for a in artifacts)
        click.echo(f"artifacts: {plural(len(artifacts), 'file')}, {format_size(total)} "
                   f"(runyard artifacts ls {run.id})")


def _environment_text(env: dict[str, Any]) -> str:
    """A run's environment in ``runs show``: its name and version, its Python, its packages."""
    packages = list(env.get("packages") or [])
    name = f"{env['name']}:{env['version']}" if env.get("name") and env.get("version") else (
        env.get("name") or "the Python that runs runyard")
    shown = ", ".join(packages[:8]) + (f", ... ({len(packages)} in all: --json lists them)" if len(packages) > 8
                                        else "")
    if not env.get("python_version"):  # asked for, never built (the run ended before it ran)
        return f"{name} (not built)"
    return f"{name} (Python {env.get('python_version')}, {env.get('platform')}): {shown or 'no packages'}"


def _metric_text(value: Any, steps: list[int | None] | None) -> str:
    """A metric in ``runs show``: its value, or the last of a long series, with
    the step of each value shown (``steps``: one per logged value, None when
    no value of the metric was given one)."""
    if steps is None:
        return str(value) if not isinstance(value, list) or len(value) <= 5 else f"{value[-1]} (last of {len(value)})"
    if len(steps) == 1:
        return f"{value} (step {steps[0]})"
    if len(steps) <= 5:
        return f"{value} (steps {', '.join('-' if s is None else str(s) for s in steps)})"
    return f"{value[-1]} (step {'-' if steps[-1] is None else steps[-1]}; last of {len(steps)})"


@runs_group.command("compare")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN RUN [RUN...]")
@click.option("--diff", "only_diff", is_flag=True, help="Show only the rows that differ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runs_compare(ctx: click.Context, run_ids: tuple[str, ...], only_diff: bool, as_json: bool) -> None:
    """Compare runs side by side (2-200): what they ran, how they ended, tags, properties, metrics
    (the last value), packages that differ; rows that differ are marked *. For two runs of different
    snapshots, which files differ."""
    from runyard.runs.compare import compare_runs

    cmp = compare_runs(_open_workspace(ctx), run_ids)
    rows = [r for r in cmp.rows if r.differs or not only_diff]
    if as_json:
        import json

        click.echo(json.dumps({"runs": [r.id for r in cmp.runs],
                               "rows": [{"field": r.label, "values": r.values, "differs": r.differs} for r in rows],
                               "snapshotChanges": cmp.snapshot_changes}, indent=1, default=str))
        return
    label_w = max([len("FIELD"), *(len(r.label) for r in rows)])
    widths = [max(len(run.id), *(len(_cell(r.values[i])) for r in rows)) for i, run in enumerate(cmp.runs)]
    head = "  ".join(f"{run.id:<{w}}" for run, w in zip(cmp.runs, widths, strict=True))
    click.echo(f"  {'FIELD':<{label_w}}  {head}")
    for r in rows:
        cells = "  ".join(f"{_cell(v):<{w}}" for v, w in zip(r.values, widths, strict=True))
        click.echo(f"{'*' if r.differs else ' '} {r.label:<{label_w}}  {cells}".rstrip())
    if cmp.snapshot_changes is not None:
        click.echo(f"snapshot {cmp.runs[0].id} -> {cmp.runs[1].id}: "
                   f"{len(cmp.snapshot_changes)} change{'s' if len(cmp.snapshot_changes) != 1 else ''}")
        for status, path in cmp.snapshot_changes:
            click.echo(f"  {status} {path}")


@runs_group.command("rm")
@click.argument("run_ids", nargs=-1, metavar="[RUN...]")
@click.option("--older-than", metavar="AGE", help="Runs that ended more than AGE ago (e.g. 30d, 12h, 90m).")
@click.option("--filter", "where", metavar="EXPR", help="Only runs that match (as runs ls --filter).")
@click.option("-e", "--experiment", help="Only this experiment's runs.")
@click.option("--dry-run", is_flag=True, help="Say which runs would go; remove nothing.")
@click.option("--yes", is_flag=True, help="Remove runs chosen by --older-than/--filter/-e without asking.")
@click.pass_context
def runs_rm(ctx: click.Context, run_ids: tuple[str, ...], older_than: str | None, where: str | None,
            experiment: str | None, dry_run: bool, yes: bool) -> None:
    """Remove ended runs from the history, with their folders: the ones named, or those chosen by
    age and filter. A run still going is kept (cancel it first). Stored files stay for runyard gc."""
    from runyard.history.filters import parse_filter
    from runyard.runs.remove import parse_age, remove_runs, select_runs

    ws = _open_workspace(ctx)
    runs = select_runs(ws, run_ids, older_than=None if older_than is None else parse_age(older_than),
                       where=None if where is None else parse_filter(where), experiment=experiment)
    chosen = not run_ids
    if chosen and not dry_run and not yes:
        for run in runs:
            click.echo(f"would remove {run.id} ({run.status.value})")
        raise _Failure(f"{len(runs)} run{'s' if len(runs) != 1 else ''} match. Add --yes to remove "
                       f"{'them' if len(runs) != 1 else 'it'} (or --dry-run to only list).")
    done = remove_runs(ws, runs, dry_run=dry_run)
    for run in done.removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {run.id} ({run.status.value})")
    for run_id, why in done.kept:
        click.echo(f"runyard: kept {run_id}: {why}", err=True)
    if not done.removed and not done.kept:
        click.echo("No runs match.")
    if done.kept:
        raise SystemExit(1)


__all__ = ["runs_group"]
