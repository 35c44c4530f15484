"""What every ``runyard`` command module shares: clean errors and finding the workspace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Any, NoReturn

import click

from runyard.errors import RunyardError


class _Failure(click.ClickException):
    """A RunyardError shown as its message alone (no 'Error:' prefix)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        # click declares exit_code on the class; ours carries the error's own code.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True)


def _fail(exc: RunyardError) -> NoReturn:
    raise _Failure(str(exc), exc.exit_code) from exc


def _pop_notice(ctx: click.Context) -> str | None:
    obj = ctx.find_root().obj
    return obj.pop("notice", None) if isinstance(obj, dict) else None


class _Group(click.Group):
    """Turns RunyardError into a clean message and exit code 1, never a traceback.

    A notice (the home workspace was just made) goes after the command's
    output or error, so an error message is always the start of stderr.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                result = super().invoke(ctx)
            except RunyardError as exc:
                _fail(exc)
        except SystemExit:  # `runyard run` exits with the script's code
            notice = _pop_notice(ctx)
            if notice:
                click.echo(notice, err=True)
            raise
        except _Failure as failure:
            notice = _pop_notice(ctx)
            if notice:
                raise _Failure(f"{failure.message}\n{notice}", failure.exit_code) from failure
            raise
        notice = _pop_notice(ctx)
        if notice:
            click.echo(notice, err=True)
        return result


def _workspace_opt(ctx: click.Context) -> str | None:
    obj = ctx.find_root().obj or {}
    ws = obj.get("workspace")
    return ws if isinstance(ws, str) else None


def _open_workspace(ctx: click.Context) -> Any:
    from runyard.workspace import Workspace, created_notice, find_workspace

    found = find_workspace(_workspace_opt(ctx))
    if found is None:
        # Said after the command's output (see _Group), not by from_config at once.
        ws = Workspace.from_config(create_default=True, quiet=True)
        ctx.find_root().obj["notice"] = created_notice(ws.path)
        return ws
    return Workspace(found)


@contextlib.contextmanager
def _limit_advice(command: str) -> Iterator[None]:
    """A snapshot over its limits says how to raise them with ``command``'s own option."""
    from runyard.errors import SnapshotLimitError

    try:
        yield
    except SnapshotLimitError as exc:
        from runyard.snapshot.report import limit_error_for

        raise limit_error_for(exc, command) from exc


def _tags_opt(texts: tuple[str, ...], filter: bool = False) -> dict[str, Any]:
    """``--tag KEY=VALUE`` options as a dict (see :func:`runyard.history.model.parse_tags`)."""
    from runyard.history.model import parse_tags

    return parse_tags(texts, filter=filter)
