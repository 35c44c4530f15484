"""``runyard env``: register, list, show, build and prune environments (thin over
:mod:`runyard.environments` and :mod:`runyard.agent.runenv`)."""

from __future__ import annotations

import json
from typing import Any

import click

from runyard.cli_common import _Failure, _Group, _open_workspace


@click.group("env", cls=_Group)
def env_group() -> None:
    """Environments: the Python and packages a run's script runs with (built once with uv, reused)."""


@env_group.command("create")
@click.argument("name")
@click.option("-r", "--requirements", "requirements", metavar="FILE", help="A pip requirements file.")
@click.option("--conda", metavar="FILE", help="A conda environment file (its python and pip: packages).")
@click.option("--python", "interpreter", metavar="PATH",
              help="An interpreter you manage, used as it is (nothing is installed).")
@click.option("--package", "packages", multiple=True, metavar="SPEC",
              help="A package to install (pip syntax, e.g. 'numpy==2.1.3'). Repeatable.")
@click.option("--python-version", metavar="VERSION", help="The Python to build with (e.g. 3.12; default: the "
                                                          "minor version of the Python that runs runyard).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="An environment variable for the script. Repeatable.")
@click.option("--description", help="What it is for.")
@click.option("--build", "build_now", is_flag=True, help="Build it now (else the first run on it builds it).")
@click.pass_context
def env_create(ctx: click.Context, name: str, requirements: str | None, conda: str | None, interpreter: str | None,
               packages: tuple[str, ...], python_version: str | None, variables: tuple[str, ...],
               description: str | None, build_now: bool) -> None:
    """Register environment NAME: a new version when it differs from its latest one."""
    from runyard.environments.registry import register
    from runyard.environments.spec import EnvSpec

    given = [w for w, v in (("-r", requirements), ("--conda", conda), ("--python", interpreter)) if v]
    if len(given) > 1:
        raise _Failure(f"Give one of -r, --conda and --python (got {' and '.join(given)}).")
    if not given and not packages and not python_version:
        raise _Failure("Say what the environment holds: -r requirements.txt, --conda environment.yml, --python "
                       "/path/to/python, or --package NAME (repeatable).")
    env_vars = _variables(variables)
    if requirements:
        spec = EnvSpec.from_pip_requirements(name, requirements, python=python_version)
        spec = EnvSpec(name, python=spec.python, requirements=(*spec.requirements, *packages), variables=env_vars)
    elif conda:
        spec = EnvSpec.from_conda_specification(name, conda)
        spec = EnvSpec(name, python=python_version or spec.python, requirements=(*spec.requirements, *packages),
                       variables={**spec.variables, **env_vars})
    elif interpreter:
        if packages or python_version:
            raise _Failure("--python uses an interpreter as it is: --package and --python-version do not apply.")
        spec = EnvSpec.from_interpreter(name, interpreter, env_vars)
    else:
        spec = EnvSpec(name, python=python_version, requirements=tuple(packages), variables=env_vars)
    ws = _open_workspace(ctx)
    version = register(ws, spec, description)
    click.echo(f"Registered environment {name}:{version} ({_summary(spec.to_dict())})")
    if build_now:
        _build(ws, spec)


@env_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def env_ls(ctx: click.Context, as_json: bool) -> None:
    """List the registered environments (the latest version of each)."""
    from runyard.environments.registry import latest

    found = latest(_open_workspace(ctx))
    if as_json:
        click.echo(json.dumps([{"name": s.name, "version": v, **s.to_dict()} for s, v in found], indent=1))
        return
    if not found:
        click.echo("No environments yet. Register one with: runyard env create NAME -r requirements.txt")
    for spec, version in found:
        click.echo(f"{spec.name}:{version}  {_summary(spec.to_dict())}")


@env_group.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def env_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a registered environment: its definition and its versions."""
    from runyard.history.environments import EnvironmentCatalog

    name, _, version = ref.partition(":")
    if version and not version.isdigit():
        raise _Failure(f"'{ref}': write NAME or NAME:VERSION (a version is a number).")
    catalog = EnvironmentCatalog(_open_workspace(ctx).open_history())
    row = catalog.get(name, int(version) if version else None)
    versions = [r.version for r in catalog.versions(name)]
    if as_json:
        click.echo(json.dumps({"name": row.name, "version": row.version, "versions": versions,
                               "description": row.description, **row.spec}, indent=1))
        return
    spec = row.spec
    click.echo(f"name: {row.name}\nversion: {row.version} (of {', '.join(map(str, versions))})")
    if row.description:
        click.echo(f"description: {row.description}")
    if spec.get("interpreter"):
        click.echo(f"interpreter: {spec['interpreter']} (user-managed: used as it is)")
    else:
        click.echo(f"python: {spec.get('python') or 'the minor version of the Python that runs runyard'}")
        click.echo("requirements:" + ("".join(f"\n  {line}" for line in spec.get("requirements") or ()) or " none"))
    for key, value in sorted((spec.get("variables") or {}).items()):
        click.echo(f"variable: {key}={value}")


@env_group.command("build")
@click.argument("ref", metavar="NAME[:VERSION]|FILE")
@click.pass_context
def env_build(ctx: click.Context, ref: str) -> None:
    """Build an environment into the workspace's cache now (runs on it then start at once)."""
    from runyard.environments.registry import resolve

    ws = _open_workspace(ctx)
    resolved = resolve(ws, ref)
    assert resolved is not None
    _build(ws, resolved[0])


@env_group.command("prune")
@click.option("--max-bytes", metavar="SIZE", help="Keep at most this much (default: env.cache_max_bytes, else "
                                                  "20GiB; 0 removes every environment not in use).")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@click.pass_context
def env_prune(ctx: click.Context, max_bytes: str | None, dry_run: bool) -> None:
    """Remove built environments, least recently used first (never one a run is using)."""
    from runyard.agent.runenv import prune_envs
    from runyard.config import format_size, parse_size

    limit = None if max_bytes is None else parse_size(max_bytes, "--max-bytes")
    removed = prune_envs(_open_workspace(ctx), limit, dry_run=dry_run)
    for item in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {item.path} ({format_size(item.bytes)}, "
                   f"{item.reason})")
    if not removed:
        click.echo("Nothing to remove.")


def _build(ws: Any, spec: Any) -> None:
    from runyard.agent.runenv import cache_of
    from runyard.environments.build import ensure

    built = ensure(cache_of(ws), spec, progress=lambda line: click.echo(line, err=True))
    click.echo(f"Built {spec.name}: Python {built.python_version}, {len(built.packages)} packages, in {built.path}")


def _variables(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _Failure(f"--var '{item}': write NAME=VALUE.")
        out[key] = value
    return out


def _summary(spec: dict[str, Any]) -> str:
    if spec.get("interpreter"):
        return f"interpreter {spec['interpreter']}"
    lines = [r for r in spec.get("requirements") or () if r.strip() and not r.strip().startswith("#")]
    python = spec.get("python") or "runyard's minor version"
    return f"Python {python}, {len(lines)} requirement line{'s' if len(lines) != 1 else ''}"


__all__ = ["env_group"]
