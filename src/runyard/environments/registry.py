"""Named, versioned environments in the workspace's history, and what a run's
``environment=`` / ``--env`` means.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from runyard.environments.spec import EnvSpec, check_env_name
from runyard.errors import EnvironmentSpecError

if TYPE_CHECKING:
    from runyard.workspace import Workspace


def register(ws: Workspace, spec: EnvSpec, description: str | None = None) -> int:
    """Register ``spec`` under its name; returns its version (a new one only when it differs)."""
    from runyard.history.environments import EnvironmentCatalog

    return EnvironmentCatalog(ws.open_history()).register(spec.name, spec.to_dict(), description).version


def get(ws: Workspace, name: str, version: int | None = None) -> tuple[EnvSpec, int]:
    from runyard.history.environments import EnvironmentCatalog

    row = EnvironmentCatalog(ws.open_history()).get(check_env_name(name), version)
    return EnvSpec.from_dict(row.spec), row.version


def latest(ws: Workspace) -> list[tuple[EnvSpec, int]]:
    from runyard.history.environments import EnvironmentCatalog

    return [(EnvSpec.from_dict(r.spec), r.version) for r in EnvironmentCatalog(ws.open_history()).latest()]


def resolve(ws: Workspace, value: Any) -> tuple[EnvSpec, int | None] | None:
    """What a run asks for as its environment: None (the Python that runs runyard), an
    ``Environment``, an ``EnvSpec``, ``NAME`` or ``NAME:VERSION`` of a registered one, or
    the path of a requirements file, a conda file (``.yml``/``.yaml``) or an interpreter."""
    if value is None:
        return None
    if isinstance(value, EnvSpec):
        return value, None
    if hasattr(value, "spec") and callable(value.spec):  # runyard.Environment
        spec = value.spec()
        return spec, getattr(value, "version", None)
    if not isinstance(value, str) or not value.strip():
        raise EnvironmentSpecError(f"{value!r} is not an environment: give an Environment, NAME[:VERSION] of a "
                                   "registered one, or the path of a requirements file.")
    text = value.strip()
    if os.path.exists(text) or os.sep in text or text.endswith((".txt", ".yml", ".yaml", ".in")):
        return from_path(text), None
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise EnvironmentSpecError(f"'{text}': write NAME or NAME:VERSION (a version is a number, e.g. sk:2).")
    return get(ws, name, int(version) if version else None)


def from_path(path: str, name: str | None = None) -> EnvSpec:
    """An environment from a file: a conda file (``.yml``/``.yaml``), an interpreter (an
    executable), else a pip requirements file. Named after the file unless ``name``."""
    if not os.path.exists(path):
        raise EnvironmentSpecError(f"There is no file {path!r}. Give a requirements file, a conda environment file "
                                   "or a Python interpreter (or the NAME of a registered environment).")
    base = os.path.basename(path.rstrip(os.sep))
    stem = os.path.splitext(base)[0]
    default = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "._-" else "-"
                      for ch in stem).strip("-._")[:255].rstrip("-._") or "env"
    if not default[0].isalnum():
        default = f"env-{default}"
    name = name or default
    if path.endswith((".yml", ".yaml")):
        return EnvSpec.from_conda_specification(name, path)
    if os.path.isfile(path) and os.access(path, os.X_OK) and not path.endswith((".txt", ".in")):
        return EnvSpec.from_interpreter(name, path)
    return EnvSpec.from_pip_requirements(name, path)


__all__ = ["from_path", "get", "latest", "register", "resolve"]
