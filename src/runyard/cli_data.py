"""``runyard datastore ...`` and ``runyard dataset ...``: parse, call
:mod:`runyard.data`, render. Registered on the main command by cli.py."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from runyard.cli_common import _Failure, _Group, _open_workspace
from runyard.config import format_size, plural


def _secret_help(what: str) -> str:
    return f"{what} (a value, or env:NAME to read it from that environment variable when used)."


@click.group("datastore", cls=_Group)
def datastore_group() -> None:
    """Register datastores (local folders, Azure Blob, S3, GCS) and move files to and from them."""


@datastore_group.command("register")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["local", "azureblob", "s3", "gcs"]),
              help="What kind of storage it is.")
@click.option("--path", help="local: the folder.")
@click.option("--account-name", help="azureblob: the storage account.")
@click.option("--container", help="azureblob: the container.")
@click.option("--endpoint", help="azureblob: the blob endpoint URL (Azurite, sovereign clouds); default: the "
                                 "account's.")
@click.option("--account-key", help=_secret_help("azureblob: the account key"))
@click.option("--sas-token", help=_secret_help("azureblob: a SAS token"))
@click.option("--connection-string", help=_secret_help("azureblob: a connection string"))
@click.option("--bucket", help="s3/gcs: the bucket.")
@click.option("--prefix", help="A folder inside the container or bucket to use as the datastore's root.")
@click.option("--endpoint-url", help="s3/gcs: the service URL (MinIO, moto, a GCS emulator); default: the cloud's.")
@click.option("--region", help="s3: the region.")
@click.option("--profile", help="s3: an AWS profile to take credentials from.")
@click.option("--access-key-id", help=_secret_help("s3: the access key id"))
@click.option("--secret-access-key", help=_secret_help("s3: the secret access key"))
@click.option("--session-token", help=_secret_help("s3: a session token"))
@click.option("--project", help="gcs: the project.")
@click.option("--token", help=_secret_help("gcs: a service-account JSON file, or 'anon'"))
@click.option("--anon", is_flag=True, help="s3/gcs: no credentials (public data).")
@click.option("--replace", is_flag=True, help="Replace a datastore of the same name.")
@click.option("--no-verify", is_flag=True, help="Do not check that the datastore can be reached now.")
@click.pass_context
def datastore_register(ctx: click.Context, /, name: str, kind: str, replace: bool, no_verify: bool,
                       anon: bool, **fields: str | None) -> None:
    """Register a datastore NAME. Credentials are kept in the workspace (mode
    0600), or read from an environment variable when given as env:NAME; they
    are never shown or recorded in the run history."""
    from runyard.data.datastore import KINDS, Datastore

    ws = _open_workspace(ctx)
    spec = KINDS[kind]
    options = {k: v for k, v in fields.items() if k in spec.options and v}
    secrets = {k: v for k, v in fields.items() if k in spec.secrets and v}
    stray = [k for k, v in fields.items() if v and k not in spec.options and k not in spec.secrets]
    if stray:
        raise _Failure(f"--{stray[0].replace('_', '-')} does not apply to a datastore of kind {kind}. Its options: "
                       + ", ".join("--" + o.replace("_", "-") for o in spec.options + spec.secrets
                                   if o not in ("credential", "anon")) + ".")
    if anon:
        options["anon"] = "true"
    if kind == "azureblob" and not secrets:
        options["credential"] = "default"
    ds = Datastore.register(ws, name, kind, options, secrets, overwrite=replace, verify=not no_verify)
    click.echo(f"Registered datastore {ds.name} ({ds.kind}): {ds.describe()}")


@datastore_group.command("ls")
@click.argument("name", required=False)
@click.argument("prefix", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def datastore_ls(ctx: click.Context, name: str | None, prefix: str, as_json: bool) -> None:
    """List the datastores; with NAME, the files in it (under PREFIX)."""
    from runyard.data.datastore import Datastore

    ws = _open_workspace(ctx)
    if name is None:
        stores = Datastore.list_all(ws)
        if as_json:
            click.echo(json.dumps([{"name": d.name, "kind": d.kind, "where": d.describe()} for d in stores],
                                  indent=1))
            return
        width = max(len(d.name) for d in stores)
        for d in stores:
            click.echo(f"{d.name:<{width}}  {d.kind:<9}  {d.describe()}")
        return
    ds = Datastore.get(ws, name)
    files = ds.list_files(prefix)
    if as_json:
        click.echo(json.dumps([{"path": f.path, "size": f.size, "fingerprint": f.fingerprint} for f in files],
                              indent=1))
        return
    for f in files:
        click.echo(f"{format_size(f.size):>10}  {f.path}")
    if not files:
        click.echo(f"(no files under '{prefix or '/'}' in {ds.name})", err=True)


@datastore_group.command("show")
@click.argument("name")
@click.pass_context
def datastore_show(ctx: click.Context, name: str) -> None:
    """Show a datastore's settings (credentials masked)."""
    from runyard.data.datastore import Datastore

    ds = Datastore.get(_open_workspace(ctx), name)
    click.echo(f"{'name:':<18} {ds.name}")
    click.echo(f"{'kind:':<18} {ds.kind}")
    click.echo(f"{'location:':<18} {ds.describe()}")
    click.echo(f"{'endpoint:':<18} {ds.endpoint}")
    for key, value in sorted(ds.masked_options().items()):
        click.echo(f"{key + ':':<18} {value}")


@datastore_group.command("rm")
@click.argument("name")
@click.pass_context
def datastore_rm(ctx: click.Context, name: str) -> None:
    """Unregister a datastore and forget its credentials (its data is left alone)."""
    from runyard.data.datastore import Datastore

    Datastore.unregister(_open_workspace(ctx), name)
    click.echo(f"Removed datastore {name} (the data in it was not touched)")


@datastore_group.command("upload")
@click.argument("name")
@click.argument("src", type=click.Path(exists=True))
@click.argument("dest_path", required=False, default="")
@click.option("--overwrite", is_flag=True, help="Replace files that are already there (default: skip them).")
@click.pass_context
def datastore_upload(ctx: click.Context, name: str, src: str, dest_path: str, overwrite: bool) -> None:
    """Upload a file or folder SRC to DEST_PATH in datastore NAME."""
    import os

    from runyard.data.datastore import Datastore

    ds = Datastore.get(_open_workspace(ctx), name)
    start = time.monotonic()
    if os.path.isdir(src):
        written = ds.upload(src, dest_path, overwrite=overwrite)
    else:
        written = ds.upload_files([src], target_path=dest_path, overwrite=overwrite)
    took = time.monotonic() - start
    click.echo(f"Uploaded {plural(len(written), 'file')} to {name}:{dest_path or '/'} in {took:.1f} s")


@datastore_group.command("download")
@click.argument("name")
@click.argument("src_path")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace local files that exist (default: skip them).")
@click.pass_context
def datastore_download(ctx: click.Context, name: str, src_path: str, dest: str, overwrite: bool) -> None:
    """Download the file or folder SRC_PATH of datastore NAME into DEST."""
    from runyard.data.datastore import Datastore

    ds = Datastore.get(_open_workspace(ctx), name)
    start = time.monotonic()
    n = ds.download(dest, src_path, overwrite=overwrite)
    took = time.monotonic() - start
    click.echo(f"Downloaded {plural(n, 'file')} from {name}:{src_path or '/'} into {dest} in {took:.1f} s")


# -- datasets -----------------------------------------------------------------------
@click.group("dataset", cls=_Group)
def dataset_group() -> None:
    """Register file datasets (versioned lists of files in datastores) and inspect them."""


def _source(ws: Any, text: str) -> tuple[Any, str]:
    from runyard.data.datastore import Datastore

    store, sep, pattern = text.partition(":")
    if not sep or not store:
        raise _Failure(f"--from '{text}': write DATASTORE:PATH or DATASTORE:GLOB, e.g. default:data/**/*.csv")
    return Datastore.get(ws, store), pattern


@dataset_group.command("register")
@click.argument("name")
@click.option("--from", "sources", multiple=True, required=True, metavar="DATASTORE:GLOB",
              help="Files to include: a path or glob in a datastore (repeatable).")
@click.option("--description", help="What the data is.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.pass_context
def dataset_register(ctx: click.Context, name: str, sources: tuple[str, ...], description: str | None,
                     tags: tuple[str, ...]) -> None:
    """Register the files as the next version of dataset NAME (the same files
    as its latest version give that version back)."""
    from runyard.data.dataset import FileDataset, check_dataset_name, resolve

    ws = _open_workspace(ctx)
    check_dataset_name(name)
    tag_map = {}
    for t in tags:
        k, sep, v = t.partition("=")
        if not sep or not k:
            raise _Failure(f"--tag '{t}': write KEY=VALUE.")
        tag_map[k] = v
    srcs, files = resolve([_source(ws, s) for s in sources])
    unregistered = FileDataset(ws, srcs, files)
    from runyard.data.datastore import catalog

    row, new = catalog(ws).add_dataset_version(
        name, sources=[s.as_dict() for s in srcs], files=[f.row() for f in files],
        total_bytes=unregistered.total_bytes, digest=unregistered.digest, description=description, tags=tag_map)
    if new:
        click.echo(f"Registered {name}:{row.version}: {plural(row.file_count, 'file')}, {format_size(row.total_bytes)}")
    else:
        click.echo(f"Unchanged since {name}:{row.version} ({plural(row.file_count, 'file')}, "
                   f"{format_size(row.total_bytes)}): no new version; a version keeps the description and tags "
                   "it was registered with")


@dataset_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dataset_ls(ctx: click.Context, as_json: bool) -> None:
    """List the datasets with their latest version."""
    from runyard.data.dataset import Dataset

    rows = Dataset.list(_open_workspace(ctx))
    if as_json:
        click.echo(json.dumps([{"name": n, "version": v, "created": c, "files": f, "bytes": b}
                               for n, v, c, f, b in rows], indent=1))
        return
    if not rows:
        click.echo("No datasets yet. Register one with: runyard dataset register NAME --from DATASTORE:GLOB")
        return
    for n, v, c, f, b in rows:
        click.echo(f"{n}:{v}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(c))}  {plural(f, 'file')}  "
                   f"{format_size(b)}")


@dataset_group.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--files", "show_files", is_flag=True, help="List the version's files.")
@click.option("--no-check", is_flag=True, help="Do not compare the version with what its datastores hold now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dataset_show(ctx: click.Context, ref: str, show_files: bool, no_check: bool, as_json: bool) -> None:
    """Show a dataset version: its files, whether the data changed since it
    was registered, and the runs that produced and read it."""
    from runyard.data.dataset import get_version
    from runyard.data.datastore import catalog

    ws = _open_workspace(ctx)
    ds = get_version(ws, ref)
    assert ds.name is not None and ds.version is not None
    cat = catalog(ws)
    versions = cat.list_versions(ds.name)
    runs = cat.dataset_runs(ds.name, ds.version)
    readers = sorted({r.run_id for r in runs if r.direction == "input"})
    changes = None if no_check else ds.changes()
    if as_json:
        click.echo(json.dumps({
            "name": ds.name, "version": ds.version, "created": ds.created, "description": ds.description,
            "tags": ds.tags, "files": len(ds.files), "bytes": ds.total_bytes, "digest": ds.digest,
            "sources": [s.as_dict() for s in ds.sources], "produced_by": ds.run_id, "read_by": readers,
            "versions": [v[0] for v in versions],
            "changes": None if changes is None else {"added": changes.added, "removed": changes.removed,
                                                     "changed": changes.changed},
            **({"file_list": [f.row() for f in ds.files]} if show_files else {}),
        }, indent=1))
        return
    click.echo(f"{ds.name}:{ds.version}  (versions: {', '.join(str(v[0]) for v in versions)})")
    click.echo(f"  registered:  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ds.created or 0))}")
    if ds.description:
        click.echo(f"  description: {ds.description}")
    for k, v in sorted(ds.tags.items()):
        click.echo(f"  tag:         {k}={v}")
    for s in ds.sources:
        click.echo(f"  from:        {s.datastore}:{s.pattern}")
    click.echo(f"  files:       {len(ds.files)} ({format_size(ds.total_bytes)})")
    if changes is not None:
        if changes.unchanged:
            state = "unchanged since it was registered"
        elif not (changes.changed or changes.removed):
            state = (f"unchanged since it was registered ({plural(len(changes.added), 'file')} added under its "
                     "sources since, not part of it)")
        else:
            state = f"CHANGED since it was registered: {changes.summary()}"
        click.echo(f"  data:        {state}")
    click.echo(f"  produced by: {ds.run_id or '- (registered by hand)'}")
    click.echo(f"  read by:     {', '.join(readers) if readers else '-'}")
    if show_files:
        for f in ds.files:
            click.echo(f"  {format_size(f.size):>10}  {f.rel}  ({f.datastore}:{f.path}, {f.fingerprint})")


@dataset_group.command("download")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace local files that exist.")
@click.pass_context
def dataset_download(ctx: click.Context, ref: str, dest: str, overwrite: bool) -> None:
    """Download a dataset version into DEST (refused if its data changed since it was registered)."""
    from runyard.data.dataset import get_version

    ds = get_version(_open_workspace(ctx), ref)
    paths = ds.download(dest, overwrite=overwrite)
    click.echo(f"Downloaded {plural(len(paths), 'file')} of {ds.name}:{ds.version} into {dest}")


__all__ = ["dataset_group", "datastore_group"]
