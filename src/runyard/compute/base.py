"""Compute targets: named places where runs run, each of a kind.

A target is registered in the workspace (its history, so every machine that
shares the history sees it) with a kind and options:
``runyard compute add gpu --kind sandbox --memory 16GiB --gpus``. ``local``
exists in every workspace and cannot be changed. A run names its target
(``runyard run --compute NAME``, ``ScriptRunConfig(compute_target=...)``), else
the workspace's ``compute.default``, else ``local``.

Every kind implements :class:`Kind`: check its options, say whether it can work
here (a preflight, fast, with what to do when it cannot), start a run's
supervisor, ask it to cancel, say where the run's files live, and tell whether
the supervisor still looks after the run. Kinds are
registered by name and imported on first use (no Ray for a local run).

>>> kind("local").name
'local'
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from runyard.errors import ComputeError

if TYPE_CHECKING:
    from runyard.workspace import Workspace

LOCAL: Final = "local"
DEFAULT_SETTING: Final = "compute.default"
KINDS: Final = {"local": "runyard.compute.local:LocalKind", "sandbox": "runyard.compute.sandbox:SandboxKind"}
"""Kind name -> "module:class", imported when first used."""


@dataclass(frozen=True, init=False)
class ComputeTarget:
    """A registered target: its name, its kind and the kind's options.

    ``ComputeTarget(ws, "gpu")`` (or ``workspace=ws, name="gpu"``, as in Azure ML)
    is the target registered as ``gpu`` in ``ws``; ``ComputeError`` when there is
    none. Without a workspace it is a description: ``ComputeTarget(name=..., kind=...,
    options=...)``.
    """

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __init__(self, workspace: Workspace | None = None, name: str = LOCAL, *, kind: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        if workspace is not None:
            if kind is not None or options is not None:
                raise ComputeError("ComputeTarget(workspace, name) looks a target up; to register one, use "
                                   "runyard compute add NAME --kind KIND (or runyard.compute.base.add_target).")
            found = get_target(workspace, name)
            kind, options = found.kind, found.options
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", kind or (LOCAL if name == LOCAL else ""))
        object.__setattr__(self, "options", dict(options or {}))
        if not self.kind:
            raise ComputeError(f"ComputeTarget '{name}': give its workspace to look it up (ComputeTarget(ws, "
                               f"'{name}')), or its kind.")

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()) if v not in (None, False))
        return f"{self.name} ({self.kind}{': ' + shown if shown else ''})"


class Kind(ABC):
    """What every kind of target does (see the module docstring)."""

    name: str = ""

    @abstractmethod
    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options, checked and made canonical; ``ComputeError`` naming the bad one and what to give."""

    def preflight(self, target: ComputeTarget, ws: Workspace | None = None) -> str | None:
        """Why runs cannot run on ``target`` here (and what to do), or None when they can (``ws``:
        where a kind may remember a success)."""
        return None

    def isolation(self, target: ComputeTarget, overrides: dict[str, Any]) -> dict[str, Any] | None:
        """What the supervisor needs to isolate the script (kept in the run's request), or None."""
        return None

    @abstractmethod
    def start(self, ws: Workspace, run_id: str, *, fork: bool = False, claim: int | None = None,
              prefork: Any = None) -> int:
        """Start the run's supervisor (it takes the run over from ``claim``, which is closed then);
        returns its pid. ``prefork``: a supervisor this process forked ahead of time, to use if
        the kind starts supervisors on this machine (else it is abandoned)."""

    @abstractmethod
    def cancel(self, ws: Workspace, run_id: str, pid: int | None = None) -> bool:
        """Ask the run's supervisor to stop the run, at once and without the history (it records
        the cancel itself). ``pid``: the supervisor's, as the history has it. Returns whether a
        live supervisor was told; False leaves the caller to record the cancel."""

    def folder(self, ws: Workspace, run_id: str) -> str:
        """Where the run's files live while it goes (its request, end, logs, channel: see
        :class:`runyard.agent.folder.RunFolder`), as this machine reaches them."""
        from runyard.agent.folder import RunFolder

        return RunFolder.of(ws.path, run_id).path

    def attended(self, ws: Workspace, run_id: str) -> bool | None:
        """Whether the run's supervisor still looks after it (see :mod:`runyard.agent.folder`)."""
        from runyard.agent.folder import RunFolder

        return RunFolder.of(ws.path, run_id).attended()


def kind(name: str) -> Kind:
    """The kind ``name``, imported now; ``ComputeError`` for a kind runyard does not have."""
    where = KINDS.get(name)
    if where is None:
        raise ComputeError(f"There is no compute target kind '{name}'. Kinds: {', '.join(sorted(KINDS))}.")
    module, _, cls = where.partition(":")
    made: Kind = getattr(importlib.import_module(module), cls)()
    return made


def default_target_name(ws: Workspace) -> str:
    """The workspace's ``compute.default``, else ``local``."""
    default = ws.get_setting(DEFAULT_SETTING)
    return str(default) if default else LOCAL


def kind_of_run(ws: Workspace, run_id: str) -> Kind:
    """The kind of the target the run was started on (its request says), ``local`` when that
    cannot be read (a run prepared by an older runyard, a target removed since)."""
    import json

    from runyard.agent.folder import RunFolder

    try:
        with open(RunFolder.of(ws.path, run_id).request, encoding="utf-8") as fh:
            name = json.load(fh).get("compute_target") or LOCAL
        return kind(get_target(ws, str(name)).kind)
    except (OSError, ValueError, AttributeError, ComputeError):
        return kind(LOCAL)


def get_target(ws: Workspace, name: str | ComputeTarget | None = None) -> ComputeTarget:
    """The target ``name`` (or the object itself), else the workspace's default, else ``local``."""
    if isinstance(name, ComputeTarget):
        return name
    if name is None:
        name = default_target_name(ws)
    if name == LOCAL:
        return ComputeTarget(name=LOCAL, kind=LOCAL)
    from runyard.history.lite import read_target

    row = read_target(ws.history_location, name)
    if row is None:
        known = [LOCAL, *(t.name for t in list_targets(ws) if t.name != LOCAL)]
        raise ComputeError(f"There is no compute target '{name}' in this workspace. Targets: {', '.join(known)}. "
                           f"Add one with: runyard compute add {name} --kind sandbox")
    return ComputeTarget(name=row.name, kind=row.kind, options=row.options)


def list_targets(ws: Workspace) -> list[ComputeTarget]:
    """Every target of the workspace, ``local`` first."""
    from runyard.history.compute import ComputeCatalog

    rows = ComputeCatalog(ws.open_history()).list()
    return [ComputeTarget(name=LOCAL, kind=LOCAL),
            *(ComputeTarget(name=r.name, kind=r.kind, options=r.options) for r in rows)]


def add_target(ws: Workspace, name: str, kind_name: str, options: dict[str, Any], *,
               replace: bool = False) -> ComputeTarget:
    """Register a target, after checking its options and that it can run here (its preflight)."""
    from runyard.history import check_experiment_name
    from runyard.history.compute import ComputeCatalog

    if name == LOCAL:
        raise ComputeError("'local' is built in and cannot be changed. Give the new target another name.")
    try:
        check_experiment_name(name)
    except Exception as exc:
        raise ComputeError(f"'{name}' cannot name a compute target: {exc}") from None
    k = kind(kind_name)
    target = ComputeTarget(name=name, kind=kind_name, options=k.check_options(dict(options)))
    problem = k.preflight(target, ws)
    if problem is not None:
        raise ComputeError(f"Compute target '{name}' cannot run here: {problem}")
    ComputeCatalog(ws.open_history()).put(name, kind_name, target.options, replace=replace)
    return target


def remove_target(ws: Workspace, name: str) -> bool:
    from runyard.history.compute import ComputeCatalog

    if name == LOCAL:
        raise ComputeError("'local' is built in and cannot be removed.")
    if default_target_name(ws) == name:
        raise ComputeError(f"'{name}' is the workspace's default target (compute.default): runs without a target "
                           f"would fail. Set another first (runyard config set {DEFAULT_SETTING} local), then "
                           "remove it.")
    return ComputeCatalog(ws.open_history()).remove(name)


__all__ = ["KINDS", "LOCAL", "ComputeTarget", "Kind", "add_target", "default_target_name", "get_target", "kind",
           "kind_of_run", "list_targets", "remove_target"]
