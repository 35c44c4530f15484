"""A run's environment on the supervisor's side: built (or found in the cache) before
the script starts, held in use while it runs, and what the run records of it.

The script's ``from runyard import Run`` works in every environment: ``PYTHONPATH``
holds a folder with runyard's own package in it and nothing else (runyard's
script side needs none of its dependencies), so the environment's packages are
exactly what it asked for.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from runyard.agent.sandbox import Sandbox
    from runyard.environments.build import BuiltEnv, Pruned
    from runyard.workspace import Workspace

ENVS_CACHE: Final = "envs"
DEFAULT_ENVS_MAX: Final = 20 << 30
"""The most the environment cache holds before the least recently used go (``env.cache_max_bytes``)."""
CLIENT_CACHE: Final = "client"


def cache_of(ws: Workspace) -> str:
    return os.path.join(ws.cache_dir, ENVS_CACHE)


def client_path(ws: Workspace) -> tuple[str, str]:
    """(a folder holding only a link ``runyard`` to this runyard's package, the package's folder)."""
    import zlib  # (not hashlib: importing it costs a run 5 ms)

    import runyard

    package = os.path.dirname(os.path.abspath(runyard.__file__))
    folder = os.path.join(ws.cache_dir, CLIENT_CACHE, f"{zlib.crc32(package.encode()):08x}{len(package):04x}")
    link = os.path.join(folder, "runyard")
    if os.path.realpath(link) != package:
        os.makedirs(folder, exist_ok=True)
        tmp = f"{link}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(package, tmp)
        os.replace(tmp, link)
    return folder, package


def build_for_run(ws: Workspace, environment: dict[str, Any], box: Sandbox | None, say: Callable[[str], None],
                  stop: Callable[[], bool]) -> tuple[BuiltEnv, int | None, dict[str, Any]]:
    """The run's environment, built if need be (its lines go to the driver log), held in use;
    and what the run records of it."""
    from runyard.environments.build import acquire
    from runyard.environments.spec import EnvSpec

    spec = EnvSpec.from_dict(environment["spec"])
    usable = None
    if box is not None:
        from runyard.agent.sandbox import reachable

        usable = reachable  # the sandbox's user must be able to start it
    built, held = acquire(cache_of(ws), spec, usable=usable, progress=say, stop=stop)
    if box is not None and spec.user_managed and not reachable(built.python):
        raise PermissionError(f"the sandbox's user cannot reach the interpreter {built.python}: a folder above it "
                              "is closed to other users (chmod o+x), or use another interpreter")
    record = {"name": spec.name, "version": environment.get("version"), "spec": spec.to_dict(), **built.record()}
    return built, held, record


def sandbox_binds(built: BuiltEnv, client: str, package: str) -> list[str]:
    """What a sandboxed script needs read-only to run in ``built``."""
    needed = [built.path, client, package]
    base_prefix = os.path.dirname(os.path.dirname(os.path.realpath(built.base)))
    if not base_prefix.startswith("/usr") and base_prefix != "/":
        needed.append(base_prefix)
    return sorted(set(needed))


def prune_envs(ws: Workspace, max_bytes: int | None = None, *, dry_run: bool = False) -> list[Pruned]:
    """Remove half-made environments, then the least recently used until the cache holds at
    most ``max_bytes`` (0: remove every one not in use). Default: the workspace's
    ``env.cache_max_bytes``, else 20 GiB, where 0 turns pruning off. Environments in use
    are never removed."""
    from runyard.config import parse_size
    from runyard.environments.build import prune

    if max_bytes is None:
        setting = ws.get_setting("env.cache_max_bytes")
        max_bytes = DEFAULT_ENVS_MAX if setting is None else parse_size(setting, "env.cache_max_bytes")
        if max_bytes == 0:
            max_bytes = 1 << 62
    return prune(cache_of(ws), keep_bytes=max_bytes, dry_run=dry_run)


def own_record(ws: Workspace) -> dict[str, Any]:
    """What a run without an environment ran with: the Python that runs runyard and its
    packages. Listing them takes tens of milliseconds, so the list is kept in the cache and
    used while runyard's interpreter and its site-packages folders are unchanged (an install
    changes a folder's time); a run pays for a few ``stat`` and a small file read."""
    import json

    sites = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    stamp = [sys.executable, sys.prefix]
    for site in sites:
        with contextlib.suppress(OSError):
            stamp.append(f"{site}:{os.stat(site).st_mtime_ns}")
    path = os.path.join(ws.cache_dir, CLIENT_CACHE, "own-python.json")
    try:
        with open(path, encoding="utf-8") as fh:
            kept = json.load(fh)
        if kept.get("stamp") == stamp:
            return dict(kept["record"])
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    from runyard.environments.build import installed, platform_tag

    record = {"name": None, "version": None, "spec": None, "python": sys.executable,
              "python_version": ".".join(str(p) for p in sys.version_info[:3]), "platform": platform_tag(),
              "packages": installed(sys.prefix), "user_managed": True, "path": sys.prefix,
              "base": os.path.realpath(sys.executable)}
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"stamp": stamp, "record": record}, fh)
        os.replace(tmp, path)
    return record


def sandbox_record(ws: Workspace, python: str) -> dict[str, Any] | None:
    """What a sandboxed run without an environment ran with, when it is not runyard's own
    interpreter (the system's Python of the same version, with runyard's packages)."""
    import json
    import subprocess

    record = own_record(ws)
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return record
    st = os.stat(python)
    path = os.path.join(ws.cache_dir, CLIENT_CACHE, f"version-{st.st_ino}-{st.st_mtime_ns}.json")
    try:
        with open(path, encoding="utf-8") as fh:
            version = str(json.load(fh)["version"])
    except (OSError, ValueError, KeyError):
        done = subprocess.run([python, "-I", "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
                              capture_output=True, text=True, timeout=30, check=True)
        version = done.stdout.strip()
        with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as fh:
            json.dump({"version": version, "python": python}, fh)
    return {**record, "python": python, "python_version": version, "base": os.path.realpath(python)}


__all__ = ["build_for_run", "cache_of", "client_path", "own_record", "prune_envs", "sandbox_binds",
           "sandbox_record"]
