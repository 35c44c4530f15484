"""The ``runyard`` command: parse, call the library, render.

Imports stay light here: the heavy parts of the library are imported inside
the commands that need them, so ``runyard --help`` and ``snapshot ls`` start
fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from runyard.cli_common import _Failure, _Group, _limit_advice, _open_workspace, _tags_opt, _workspace_opt
from runyard.errors import RunyardError


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--workspace",
    "workspace",
    metavar="PATH",
    help="Workspace folder (default: .runyard/ here or above, else ~/.runyard). Env: RUNYARD_WORKSPACE.",
)
@click.version_option(package_name="runyard", prog_name="runyard")
@click.pass_context
def main(ctx: click.Context, workspace: str | None) -> None:
    """runyard: reproducible ML experiment runs on infrastructure you own.

    A run starts from a snapshot of its source directory: what is in it follows
    .amlignore/.gitignore exactly as git does, within limits of 300 MiB and
    2000 files by default.
    """
    # RUNYARD_WORKSPACE is read by find_workspace, not by click, so that an
    # error about a bad path names where the path came from.
    ctx.ensure_object(dict)["workspace"] = workspace


@main.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init_cmd(directory: str) -> None:
    """Make a workspace in DIRECTORY/.runyard (default: here)."""
    from runyard.workspace import Workspace, find_workspace

    d = os.path.abspath(directory)
    try:
        existed = find_workspace(d) == (d if os.path.basename(d) == ".runyard" else os.path.join(d, ".runyard"))
    except RunyardError:
        existed = False
    ws = Workspace.create(directory)
    click.echo(f"{'Workspace already at' if existed else 'Made workspace'} {ws.path}")


# -- config -------------------------------------------------------------------


@main.group("config", cls=_Group)
def config_group() -> None:
    """Read and change workspace settings (config.toml)."""


@config_group.command("list")
@click.pass_context
def config_list(ctx: click.Context) -> None:
    """Show every setting of the workspace."""
    ws = _open_workspace(ctx)
    for section, table in sorted(ws.config.items()):
        if isinstance(table, dict):
            for key, value in sorted(table.items()):
                click.echo(f"{section}.{key} = {value}")


@config_group.command("get")
@click.argument("key")
@click.pass_context
def config_get(ctx: click.Context, key: str) -> None:
    """Print one setting (exit 1 when it is not set)."""
    value = _open_workspace(ctx).get_setting(key)
    if value is None:
        raise _Failure(f"'{key}' is not set in this workspace.")
    click.echo(str(value))


@config_group.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE, e.g. 'snapshot.max_bytes 1GiB' or 'snapshot.max_files 5000'."""
    ws = _open_workspace(ctx)
    ws.set_setting(key, value)
    click.echo(f"{key} = {ws.get_setting(key)}")


@config_group.command("unset")
@click.argument("key")
@click.pass_context
def config_unset(ctx: click.Context, key: str) -> None:
    """Remove KEY (its default applies again)."""
    _open_workspace(ctx).set_setting(key, None)


# -- snapshot -----------------------------------------------------------------


@main.group("snapshot", cls=_Group)
def snapshot_group() -> None:
    """List, explain, take, show, restore and compare snapshots."""


def _listing_excludes(ctx: click.Context) -> tuple[str, ...]:
    from runyard.workspace import workspace_for_source_listing

    ws = workspace_for_source_listing(_workspace_opt(ctx))
    return (ws,) if ws else ()


@snapshot_group.command("ls")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("-z", "nul", is_flag=True, help="End each path with NUL instead of a newline.")
@click.option("--excluded", is_flag=True, help="List excluded paths with the deciding rule (file:line:pattern).")
@click.pass_context
def snapshot_ls(ctx: click.Context, directory: str, nul: bool, excluded: bool) -> None:
    """List the paths a snapshot of DIRECTORY would hold, one per line, raw.

    With --excluded, list what is left out instead, as 'git check-ignore -v'
    does: 'file:line:pattern<TAB>path' (an excluded directory once, with '/').
    """
    from runyard.snapshot.walk import walk

    w = walk(directory, exclude_dirs=_listing_excludes(ctx), collect_excluded=excluded, want_stat=False)
    out = sys.stdout.buffer
    end = b"\0" if nul else b"\n"
    if excluded:
        for path, rule in w.excluded:
            if nul:
                out.write(f"{rule.source}\0{rule.lineno}\0{rule.pattern}\0{path}\0".encode("utf-8", "surrogateescape"))
            else:
                out.write(f"{rule.describe()}\t{path}\n".encode("utf-8", "surrogateescape"))
    else:
        out.write(b"".join(f.path.encode("utf-8") + end for f in w.files))
    out.flush()
    _warn_issues(w.issues, only_errors=True)


def _warn_issues(issues: list[Any], only_errors: bool = False) -> None:
    from runyard.snapshot.walk import ERROR_KINDS

    for i in issues:
        if only_errors and i.kind not in ERROR_KINDS:
            continue
        click.echo(f"runyard: {i.path}: {i.detail}", err=True)


@snapshot_group.command("explain")
@click.argument("args", nargs=-1, required=True)
@click.pass_context
def snapshot_explain(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Say whether each PATH is in a snapshot of DIR, and why.

    Usage: explain [DIR] PATH...  With one argument it is a PATH and DIR is the
    current directory; with more, the first is DIR. A PATH is relative to DIR
    (or absolute, or starting with DIR).
    """
    from runyard.snapshot.explain import explain

    if len(args) == 1:
        directory, paths = ".", list(args)
    else:
        directory, paths = args[0], list(args[1:])
    for verdict in explain(directory, paths, exclude_dirs=_listing_excludes(ctx)):
        click.echo(verdict.render())


_SECRETS_OPT = click.option(
    "--secrets", type=click.Choice(["warn", "refuse"], case_sensitive=False), default=None,
    help="Likely secrets (.env, keys, credential files) in the snapshot: warn (store them and say so) or "
         "refuse (store nothing). Default: RUNYARD_SNAPSHOT_SECRETS, else snapshot.secrets, else warn.")


@snapshot_group.command("create")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--max-bytes", metavar="SIZE", help="Size limit (e.g. 500MiB; 0 = none). Default 300 MiB.")
@click.option("--max-files", metavar="N", help="File-count limit (0 = none). Default 2000.")
@_SECRETS_OPT
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the report.")
@click.pass_context
def snapshot_create(ctx: click.Context, directory: str, max_bytes: str | None, max_files: str | None,
                    secrets: str | None, as_json: bool) -> None:
    """Take a snapshot of DIRECTORY; print a preflight report, then the id as the last line."""
    from runyard._progress import progress_for_stderr
    from runyard.snapshot.render import render_create

    ws = _open_workspace(ctx)
    with _limit_advice("snapshot"):
        result = ws.snapshot(directory, max_bytes=max_bytes, max_files=max_files, secrets=secrets,
                             progress=None if as_json else progress_for_stderr("storing"))
    if as_json:
        import json

        click.echo(json.dumps(result.as_json(), indent=1, sort_keys=True))
    else:
        click.echo(render_create(result))


@snapshot_group.command("list")
@click.pass_context
def snapshot_list(ctx: click.Context) -> None:
    """List the snapshots in the workspace's store, newest first."""
    from runyard.config import plural

    store = _open_workspace(ctx).open_store()
    rows = []
    for sid in store.list_snapshots():
        rec = store.get_snapshot_record(sid) or {}
        rows.append((str(rec.get("created", "")), sid, rec))
    for created, sid, rec in sorted(rows, reverse=True):
        files = rec.get("files")
        count = plural(files, "file") if isinstance(files, int) else "? files"
        click.echo(f"{sid[:12]}  {created}  {count:>11}  {rec.get('source', '')}")


@snapshot_group.command("show")
@click.argument("snapshot_id")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def snapshot_show(ctx: click.Context, snapshot_id: str, as_json: bool) -> None:
    """Show a snapshot: where it came from and every entry."""
    from runyard.snapshot.engine import load_manifest
    from runyard.snapshot.render import render_show

    store = _open_workspace(ctx).open_store()
    sid = store.resolve_snapshot(snapshot_id)
    manifest = load_manifest(store, sid)
    if as_json:
        sys.stdout.buffer.write(manifest.encode() + b"\n")
        return
    click.echo(render_show(sid, store.get_snapshot_record(sid), manifest))


@snapshot_group.command("restore")
@click.argument("snapshot_id")
@click.argument("dest", type=click.Path(file_okay=False))
@click.pass_context
def snapshot_restore(ctx: click.Context, snapshot_id: str, dest: str) -> None:
    """Make the snapshot's tree in DEST (a new or empty folder), byte for byte.

    SNAPSHOT_ID may also be a run id, or a unique prefix of one: its snapshot is restored."""
    from runyard.config import format_size, plural
    from runyard.errors import HistoryError, NotFoundError
    from runyard.history import parse_run_id
    from runyard.runs import get_run

    ws = _open_workspace(ctx)
    run_ref = snapshot_id if parse_run_id(snapshot_id) is not None else None
    if run_ref is None:
        try:
            snapshot_id = ws.open_store().resolve_snapshot(snapshot_id)
        except NotFoundError as not_a_snapshot:
            try:  # a run id, or a prefix of one? (an ambiguous prefix says so)
                run_ref = ws.open_history().resolve_run_id(snapshot_id, missing_ok=True)
            except HistoryError:  # not even made of a run id's characters
                raise not_a_snapshot from None
            try:
                get_run(ws, run_ref)
            except NotFoundError:
                raise not_a_snapshot from None
    if run_ref is not None:  # restore the run's snapshot
        run = get_run(ws, run_ref)
        if run.snapshot_id is None:
            raise _Failure(f"Run {run.id} has no snapshot (it failed before one was taken).")
        snapshot_id = run.snapshot_id
    r = ws.restore_snapshot(snapshot_id, dest)
    click.echo(f"Restored {plural(r.files, 'file')}, {plural(r.links, 'link')}, "
               f"{plural(r.dirs, 'empty directory', 'empty directories')} ({format_size(r.bytes)}) into {r.dest}")


@snapshot_group.command("diff")
@click.argument("id1")
@click.argument("id2")
@click.pass_context
def snapshot_diff(ctx: click.Context, id1: str, id2: str) -> None:
    """List what changed from ID1 to ID2: A added, D deleted, M modified,
    X executable bit, T type (file/link/dir)."""
    from runyard.snapshot.engine import diff, load_manifest

    store = _open_workspace(ctx).open_store()
    a = load_manifest(store, store.resolve_snapshot(id1))
    b = load_manifest(store, store.resolve_snapshot(id2))
    for change in diff(a, b):
        click.echo(f"{change.status}\t{change.path}")


# -- runs -----------------------------------------------------------------------


def _follow_to_end(ws: Any, run_id: str, supervisor_pid: int, banner: str = "") -> int:
    """Stream a run's driver log to stdout until it ends; Ctrl-C cancels it.

    Returns the exit code. The end comes from the supervisor's end file, so
    this never has to load the run history, unless the supervisor died.
    """
    from runyard.agent.folder import RunFolder
    from runyard.history import RunStatus
    from runyard.run import LogPosition, stream_log
    from runyard.runs import exit_code_for, exit_code_of, get_run, read_end, request_cancel

    folder = RunFolder.of(ws.path, run_id)

    def ended() -> bool:  # its end is written, or nobody looks after it any more (the supervisor died)
        return read_end(ws, run_id) is not None or folder.attended() is not True

    import signal

    pos = LogPosition()
    try:
        # Ctrl-C was held back while the run was handed over (see below): from
        # here on it cancels the run.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if banner:
            click.echo(banner, err=True)
        stream_log(ws, run_id, sys.stdout, pos, ended=ended)
    except KeyboardInterrupt:
        try:
            request_cancel(ws, run_id, supervisor_pid)  # at once: a file and a signal, no history needed
            click.echo(f"\nrunyard: canceling run {run_id} (Ctrl-C again to stop waiting)...", err=True)
            stream_log(ws, run_id, sys.stdout, pos, ended=ended)
        except KeyboardInterrupt:
            click.echo(f"runyard: stopped waiting; run {run_id} is still being canceled.", err=True)
            raise SystemExit(130) from None
    end = read_end(ws, run_id)
    if end is None:  # the supervisor died: the history says what became of the run
        run = get_run(ws, run_id)  # reaps it: the driver log is made again to its last byte
        stream_log(ws, run_id, sys.stdout, pos, ended=lambda: True)
        status, code, sig, exit_code = run.status.value, exit_code_of(run), run.signal, run.exit_code
        error = run.error
    else:
        status, sig, exit_code, error = end.status, end.signal, end.exit_code, end.error
        code = exit_code_for(RunStatus(status), exit_code, sig)
    detail = ""
    if status == "Failed":
        if sig:
            import signal as _signal

            detail = f" (killed by {_signal.Signals(sig).name})"
        elif exit_code is not None:
            detail = f" (exit code {exit_code})"
    click.echo(f"runyard: run {run_id} {status}{detail}. See: runyard runs show {run_id}", err=True)
    if status == "Failed" and error and not error.startswith("Traceback"):  # runyard's reason, not the script's
        click.echo(f"runyard: {error.strip().splitlines()[0]}", err=True)
    return code


def _warn_flagged(request: Any) -> None:
    """Likely secrets and links leaving the source, on stderr (the run records them too)."""
    message = request.flag_message()
    if message is not None:
        click.echo("runyard: " + message, err=True)


def _start_and_follow(ws: Any, spec: Any, detach: bool) -> None:
    from runyard.compute.local import Prefork
    from runyard.config import format_size, plural
    from runyard.runs import prepare, record, start

    if detach:
        request = prepare(ws, spec)
        claim, request.claim = request.claim, None
        try:
            _warn_flagged(request)
            with ws.open_history() as history:  # recorded now, so that the id printed can be looked up at once
                record(history, request)
        except BaseException:
            if claim is not None:
                os.close(claim)
            raise
        start(ws, request, fork=True, claim=claim)
        click.echo(request.run_id)
        return
    # Forked by runyard._main before the arguments were parsed (or now): it
    # loads the run history while the snapshot is taken.
    early = click.get_current_context().find_root().obj.get("prefork")
    supervisor = early if isinstance(early, Prefork) else Prefork()
    try:
        request = prepare(ws, spec)
    except BaseException:
        supervisor.abandon()
        raise
    _warn_flagged(request)
    rec = ws.open_store().get_snapshot_record(request.snapshot_id) or {}
    banner = (f"runyard: run {request.run_id} (snapshot {request.snapshot_id[:12]}, "
              f"{plural(int(rec.get('files', 0)), 'file')}, "
              f"{format_size(int(rec.get('bytes', 0)))})")
    import signal

    # A Ctrl-C between handing the run over and following it would leave it
    # running unwatched: hold it back until _follow_to_end can cancel the run.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    claim, request.claim = request.claim, None
    pid = start(ws, request, claim=claim, prefork=supervisor)
    raise SystemExit(_follow_to_end(ws, request.run_id, pid, banner))


@main.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--source-dir", default=".", type=click.Path(file_okay=False), show_default=True,
              help="The directory to snapshot and run in (the script is relative to it).")
@click.option("-e", "--experiment", default="default", show_default=True, help="The experiment to record the run in.")
@click.option("--detach", is_flag=True, help="Print the run id and return; the run goes on in the background.")
@click.option("--max-bytes", metavar="SIZE", help="Snapshot size limit for this run (0 = none).")
@click.option("--max-files", metavar="N", help="Snapshot file-count limit for this run (0 = none).")
@_SECRETS_OPT
@click.option("--input", "inputs", multiple=True, metavar="NAME=SOURCE[@MODE]",
              help="A named input: NAME=dataset:DATASET[:VERSION] or NAME=DATASTORE:PATH, then @download "
                   "(default) or @mount. Repeatable.")
@click.option("--output", "outputs", multiple=True, metavar="NAME[=DATASTORE:PATH][@MODE]",
              help="A declared output folder, stored at DATASTORE:PATH (default default:dataset/{run-id}/"
                   "{output-name}) at the end (@upload, default) or as written (@mount). Repeatable.")
@click.option("--register-output", "registers", multiple=True, metavar="NAME=DATASET",
              help="Register output NAME as a new version of DATASET if the run completes. Repeatable.")
@click.option("--overwrite-output", "overwrites", multiple=True, metavar="NAME",
              help="Let output NAME write over files already at its destination. Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Tag the run (KEY alone: an empty value). Repeatable.")
@click.option("--command", "shell_command", metavar="COMMAND",
              help="Run this shell command (through /bin/sh -c) in the working directory instead of a script.")
@click.option("--compute", "compute_target", metavar="NAME",
              help="The compute target to run on (default: the workspace's compute.default, else local).")
@click.option("--network/--no-network", default=None,
              help="Let the script reach the network, or not (a sandbox target has none by default).")
@click.option("--env", "environment", metavar="NAME[:VERSION]|FILE",
              help="The environment to run in: a registered one (runyard env ls), or a requirements file, a conda "
                   "file (.yml) or a Python interpreter. Default: the Python that runs runyard.")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_cmd(ctx: click.Context, source_dir: str, experiment: str, detach: bool, max_bytes: str | None,
            max_files: str | None, inputs: tuple[str, ...], outputs: tuple[str, ...], registers: tuple[str, ...],
            overwrites: tuple[str, ...], script: str | None, args: tuple[str, ...], secrets: str | None = None,
            tags: tuple[str, ...] = (), shell_command: str | None = None, compute_target: str | None = None,
            network: bool | None = None, environment: str | None = None) -> None:
    """Run SCRIPT from a snapshot of the source directory, in an isolated
    working directory; ARGS go to the script unchanged, except that
    ${{inputs.NAME}} and ${{outputs.NAME}} become the local paths of an
    input or output. With --command, run that shell command instead.
    Exits with the script's exit code (128+N if signal N killed it, 130 if
    canceled)."""
    from runyard.runs import RunSpec

    if shell_command is not None and (script is not None or args):
        raise _Failure("Give a script (with its arguments) or --command, not both. To pass arguments with "
                       "--command, put them in the command: --command 'python train.py --lr 0.1'.")
    if shell_command is None and script is None:
        raise _Failure("Nothing to run: give a script (runyard run train.py) or a command "
                       "(runyard run --command 'make train').")
    ws = _open_workspace(ctx)
    arguments: list[str] = list(args)
    ins: list[Any] = []
    outs: list[Any] = []
    if inputs or outputs or registers or overwrites or any("${{" in a for a in [*arguments, shell_command or ""]):
        from runyard.data.inputs import collect, parse_input, parse_output

        ins = [parse_input(ws, text) for text in inputs]
        outs = [parse_output(ws, text) for text in outputs]
        by_name = {o.name: o for o in outs}
        for text in registers:
            name, sep, dataset = text.partition("=")
            if not sep or name not in by_name:
                raise _Failure(f"--register-output '{text}': write NAME=DATASET for an output given with --output "
                               f"NAME (outputs: {', '.join(by_name) or 'none'}).")
            by_name[name].register_on_complete(dataset)
        for name in overwrites:
            if name not in by_name:
                raise _Failure(f"--overwrite-output {name}: there is no --output {name}.")
            by_name[name].overwrite = True
        arguments, ins, outs = collect(arguments, ins, outs)
    spec = RunSpec(source_directory=source_dir, script=script or "", arguments=arguments, experiment=experiment,
                   max_bytes=max_bytes, max_files=max_files, inputs=ins, outputs=outs, secrets=secrets,
                   tags=_tags_opt(tags), command=shell_command, compute_target=compute_target, network=network,
                   environment=environment)
    with _limit_advice("run"):
        _start_and_follow(ws, spec, detach)


@main.command("rerun")
@click.argument("run_id")
@click.option("--detach", is_flag=True, help="Print the new run id and return.")
@_SECRETS_OPT
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Tag the new run (the old run's tags are not copied). Repeatable.")
@click.pass_context
def rerun_cmd(ctx: click.Context, run_id: str, detach: bool, secrets: str | None = None,
              tags: tuple[str, ...] = ()) -> None:
    """Run RUN_ID again: the same snapshot, script and arguments, as a new run.

    The snapshot is reused as it is: likely secrets in it are flagged again
    (and refused under --secrets refuse / snapshot.secrets = refuse)."""
    from runyard.runs import rerun_spec

    ws = _open_workspace(ctx)
    _start_and_follow(ws, rerun_spec(ws, run_id, secrets=secrets, tags=_tags_opt(tags)), detach)


@main.command("cancel")
@click.argument("run_id")
@click.pass_context
def cancel_cmd(ctx: click.Context, run_id: str) -> None:
    """Cancel a run: its script gets SIGTERM, a grace period, then SIGKILL.

    RUN_ID may be a unique prefix of the id."""
    from runyard.runs import cancel

    run = cancel(_open_workspace(ctx), run_id)
    if run is not None and run.is_terminal:
        click.echo(f"run {run.id}: already {run.status.value}")
    else:
        click.echo(f"run {run.id if run is not None else run_id}: cancel requested")


@main.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows, until the run ends.")
@click.pass_context
def logs_cmd(ctx: click.Context, run_id: str, follow: bool) -> None:
    """Print a run's driver log (the script's stdout and stderr)."""
    from runyard.agent.folder import DRIVER_LOG_ARTIFACT, RunFolder
    from runyard.run import stream_log
    from runyard.runs import get_run

    ws = _open_workspace(ctx)
    run = get_run(ws, run_id)
    run_id = run.id  # RUN_ID may be a unique prefix
    live = RunFolder.of(ws.path, run.id).driver_log
    if follow and (os.path.exists(live) or not run.is_terminal):
        stream_log(ws, run_id, sys.stdout)
        return
    if os.path.exists(live):
        with open(live, "rb") as fh:
            sys.stdout.buffer.write(fh.read())
        return
    arts = {a.name: a for a in ws.open_history().list_artifacts(run.id)}
    if DRIVER_LOG_ARTIFACT in arts:
        sys.stdout.buffer.write(ws.open_store().get_bytes(arts[DRIVER_LOG_ARTIFACT].digest))


@main.group("artifacts", cls=_Group)
def artifacts_group() -> None:
    """List and download a run's files (outputs/, logs/, runyard_logs/)."""


@artifacts_group.command("ls")
@click.argument("run_id")
@click.pass_context
def artifacts_ls(ctx: click.Context, run_id: str) -> None:
    """List a run's artifacts: size and name."""
    from runyard.runs import get_run

    ws = _open_workspace(ctx)
    run_id = get_run(ws, run_id).id  # RUN_ID may be a unique prefix
    for a in ws.open_history().list_artifacts(run_id):
        click.echo(f"{a.size:>12}  {a.name}")


@artifacts_group.command("download")
@click.argument("run_id")
@click.argument("pattern", required=False)
@click.option("-o", "--output", "output", type=click.Path(file_okay=False),
              help="Directory to download into (names are kept: outputs/model.pt -> DIR/outputs/model.pt). "
                   "Default: the workspace's downloads/RUN_ID/, which no snapshot takes in.")
@click.pass_context
def artifacts_download(ctx: click.Context, run_id: str, pattern: str | None, output: str | None) -> None:
    """Download a run's artifacts (those matching the glob PATTERN) into a directory.

    Without -o they go to downloads/RUN_ID/ in the workspace, not into the
    current folder: there the next snapshot of the source would take them in,
    and the next run would carry the old run's outputs."""
    from runyard.config import plural
    from runyard.run import Run
    from runyard.runs import get_run

    ws = _open_workspace(ctx)
    run_id = get_run(ws, run_id).id  # RUN_ID may be a unique prefix
    where = output if output is not None else os.path.join(ws.downloads_dir, run_id)
    paths = Run(ws, run_id).download_files(output_directory=where, pattern=pattern)
    if not paths:
        raise _Failure(f"No artifact of run {run_id} matches {pattern!r}. "
                       f"List them with: runyard artifacts ls {run_id}")
    for p in paths:
        click.echo(p)
    note = "" if output is not None else " (in the workspace, which no snapshot takes in; -o DIR puts them elsewhere)"
    click.echo(f"Downloaded {plural(len(paths), 'file')} into {os.path.abspath(where)}{note}.", err=True)


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="Only say what would be done.")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool) -> None:
    """Remove what crashed runs and writers left: reap lost runs (their outputs
    salvaged first), then remove leftover working directories and mounts,
    temporary files in the store and unused snapshot layers."""
    from runyard.cleanup import collect
    from runyard.config import format_size, plural

    report = collect(_open_workspace(ctx), dry_run=dry_run)
    verbs = {"reap": "reap", "unmount": "unmount", "remove": "remove"}
    for a in report.actions:
        verb = f"would {verbs[a.what]}" if dry_run else {"reap": "reaped", "unmount": "unmounted",
                                                          "remove": "removed"}[a.what]
        size = f" ({format_size(a.bytes)})" if a.bytes else ""
        click.echo(f"{verb} {a.path}{size}{f': {a.detail}' if a.detail else ''}")
    for problem in report.problems:
        click.echo(f"runyard: {problem}", err=True)
    if not report.actions:
        click.echo("Nothing to clean up.")
    else:
        click.echo(f"{'Would free' if dry_run else 'Freed'} {format_size(report.freed)} "
                   f"({plural(len(report.actions), 'action')}).")
    if report.problems:
        raise SystemExit(1)


def _add_data_commands() -> None:
    from runyard.cli_compute import compute_group
    from runyard.cli_data import dataset_group, datastore_group
    from runyard.cli_env import env_group
    from runyard.cli_runs import runs_group

    main.add_command(datastore_group)
    main.add_command(dataset_group)
    main.add_command(compute_group)
    main.add_command(env_group)
    main.add_command(runs_group)


_add_data_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
