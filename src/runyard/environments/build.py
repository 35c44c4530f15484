"""Building environments once per content, with uv, into a cache; using and pruning them.

The cache (the workspace's ``cache/envs``) holds one folder per built environment,
named by its key (:meth:`EnvSpec.content_key`: the interpreter's exact version, the
requirement lines, the platform). A folder is a virtual environment that uv made,
with the requirements it was built from and ``runyard-env.json``, written last:
without that file a folder is half-made (a build that crashed) and is built again.

Locks (``fcntl.flock``, released by the kernel when a process dies):

- ``KEY.build``: exclusive while the environment is built. Two runs asking for the
  same new environment at once: one builds, the other waits and finds it built.
- ``KEY.lock``: shared by every run using the environment, for as long as it runs;
  pruning takes it exclusively without waiting, so an environment in use is never
  removed.

A cached environment costs a run a hash, a lock and a file read: uv is not run, and
nothing goes to the network. Packages come from wherever uv is configured to look
(``UV_INDEX_URL``/``UV_DEFAULT_INDEX``, ``UV_EXTRA_INDEX_URL``, ``UV_FIND_LINKS``,
``uv.toml``); ``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL`` and ``PIP_FIND_LINKS``
are passed on as their uv equivalents when those are not set. No index is named
by runyard, and uv never downloads a Python (``UV_PYTHON_DOWNLOADS=never``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final

from runyard.environments.spec import EnvSpec
from runyard.errors import EnvironmentBuildError, EnvironmentSpecError

ENV_FILE: Final = "runyard-env.json"
REQUIREMENTS_FILE: Final = "requirements.txt"
PYTHONS_FILE: Final = "pythons.json"
USED_FILE: Final = "last-used"
SITE_STAMP_FILE: Final = "site-stamp.json"
# (pip's variable, uv's equivalent, uv's newer name for it, how uv separates a list). pip
# separates the locations of a list with whitespace; UV_FIND_LINKS wants commas.
_PIP_TO_UV: Final = (("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX", " "),
                     ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX", " "),
                     ("PIP_FIND_LINKS", "UV_FIND_LINKS", "UV_FIND_LINKS", ","))


@dataclass(frozen=True)
class BuiltEnv:
    """An environment ready to run with."""

    key: str
    path: str
    """Its folder (the virtual environment), or the interpreter's prefix when user-managed."""
    python: str
    """The interpreter a run's script starts with."""
    python_version: str
    platform: str
    packages: tuple[str, ...]
    """Every package installed, as ``name==version``, sorted."""
    base: str
    """The interpreter the environment was made from (what it links to)."""
    user_managed: bool = False
    built_in_s: float = 0.0

    def record(self) -> dict[str, Any]:
        """What a run records of the environment it ran with."""
        out = asdict(self)
        out["packages"] = list(self.packages)
        return out


def platform_tag() -> str:
    """The platform an environment is built for, e.g. ``linux-x86_64-glibc2.36``."""
    libc, version = platform.libc_ver()
    return f"{sysconfig.get_platform()}-{libc or 'libc'}{version}"


def python_request(spec: EnvSpec) -> str:
    """The interpreter version asked for: the spec's, else the minor version of the Python that runs runyard."""
    return spec.python or f"{sys.version_info[0]}.{sys.version_info[1]}"


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentBuildError("uv is not installed, and runyard builds environments with it. Install runyard's "
                                "dependencies again (pip install runyard), or uv itself (pip install uv).")


def uv_environ() -> dict[str, str]:
    """The environment uv runs in: the caller's, pip's index settings passed on, no Python downloads."""
    env = dict(os.environ)
    for pip_name, uv_name, newer, sep in _PIP_TO_UV:
        if env.get(pip_name) and not env.get(uv_name) and not env.get(newer):
            env[uv_name] = sep.join(env[pip_name].split())
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.setdefault("UV_NO_PROGRESS", "1")
    return env


# --------------------------------------------------------------------------
# Interpreters


def satisfies(version: str, request: str) -> bool:
    """Whether ``version`` (``3.11.7``) is what ``request`` asks: ``3.11``, ``3.11.7``, ``>=3.10,<3.13``."""
    have = _parts(version)
    for clause in filter(None, (c.strip() for c in request.split(","))):
        m = re.fullmatch(r"(==|>=|<=|!=|~=|>|<)?\s*([0-9][0-9.]*)", clause)
        if m is None:
            raise EnvironmentSpecError(f"'{request}' is not a Python version this can read; write 3.11, 3.11.7 or "
                                       ">=3.10,<3.13.")
        op, want = m.group(1) or "==", _parts(m.group(2))
        head = have[: len(want)]
        ok = {"==": head == want, "!=": head != want, ">=": have >= want, "<=": head <= want, ">": head > want,
              "<": have < want, "~=": have >= want and have[: len(want) - 1] == want[:-1]}[op]
        if not ok:
            return False
    return True


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _signature(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def find_python(cache_dir: str, request: str, usable: Callable[[str], bool] | None = None) -> tuple[str, str]:
    """(path, exact version) of an interpreter for ``request`` that ``usable`` accepts (a
    sandbox's user must reach it, say): the Python that runs runyard when it fits,
    else one uv finds here. Remembered in the cache until that file changes."""
    own = os.path.realpath(sys.executable)
    own_version = ".".join(str(p) for p in sys.version_info[:3])
    if satisfies(own_version, request) and (usable is None or usable(own)):
        return own, own_version
    mode = f"{request}|{'usable' if usable else 'any'}"
    remembered = _read_json(os.path.join(cache_dir, PYTHONS_FILE)) or {}
    hit = remembered.get(mode)
    if isinstance(hit, dict):
        with contextlib.suppress(OSError, KeyError):
            if _signature(hit["path"]) == hit["sig"]:
                return str(hit["path"]), str(hit["version"])
    found = _discover(request, usable)
    remembered[mode] = {"path": found[0], "version": found[1], "sig": _signature(found[0])}
    with contextlib.suppress(OSError):
        _write_json(os.path.join(cache_dir, PYTHONS_FILE), remembered)
    return found


def _discover(request: str, usable: Callable[[str], bool] | None) -> tuple[str, str]:
    argv = [uv_bin(), "python", "list", "--only-installed", "--output-format", "json", "--no-python-downloads"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=uv_environ(),
                              stdin=subprocess.DEVNULL)
        entries = json.loads(done.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentBuildError(f"The Python interpreters here could not be listed ({exc}).") from None
    seen: list[str] = []
    for entry in entries:
        path, version = entry.get("path"), str(entry.get("version") or "")
        if not path or entry.get("implementation", "cpython") != "cpython" or not version:
            continue
        real = os.path.realpath(path)
        if "/shims/" in path and not os.path.exists(real):
            continue
        seen.append(f"{version} ({real})")
        if satisfies(version, request) and (usable is None or usable(real)):
            return real, version
    there = ", ".join(sorted(set(seen))) or "none"
    reach = " that the sandbox's user can reach" if usable else ""
    raise EnvironmentSpecError(
        f"There is no Python {request}{reach} on this machine (found: {there}). Install one: uv python install "
        f"{request} (needs the network), or your system's package (e.g. apt-get install python{request}); or ask "
        "for a version that is here.")


# --------------------------------------------------------------------------
# Locks, building


def _lock_file(path: str, how: int) -> int | None:
    """A descriptor of the file at ``path``, locked with ``how`` (made if missing).

    Pruning unlinks an environment's lock files once it has removed it, and a lock
    taken on an unlinked file guards nothing: whoever opened the file before it went
    and locks it afterwards holds a lock nobody else can see (a run would hold its
    environment "in use" while the next prune removes it). So the lock must be on the
    file that is at ``path`` once it is held; if not, it is taken again. None when
    ``how`` has ``LOCK_NB`` and another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, how)
            held, there = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                return fd
        except (BlockingIOError, FileNotFoundError) as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                return None
            continue
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def _flock(path: str, how: int) -> Iterator[int]:
    fd = _lock_file(path, how)
    assert fd is not None  # blocking
    try:
        yield fd
    finally:
        os.close(fd)


def acquire(cache_dir: str, spec: EnvSpec, *, usable: Callable[[str], bool] | None = None,
            progress: Callable[[str], None] | None = None,
            stop: Callable[[], bool] | None = None) -> tuple[BuiltEnv, int | None]:
    """The environment of ``spec``, built now if it is not in the cache, and a descriptor
    holding it in use (close it when the run ends; None for a user-managed interpreter).
    ``usable``: which interpreters may be used; ``progress``: uv's lines as it builds;
    ``stop``: polled while building, True kills the build (nothing half-made is kept)."""
    if spec.user_managed:
        return describe_interpreter(spec), None
    cache_dir = os.path.abspath(cache_dir)  # (uv runs from "/")
    os.makedirs(cache_dir, exist_ok=True)
    request = python_request(spec)
    base, version = find_python(cache_dir, request, usable)
    key = spec.content_key(platform_tag(), version)
    folder = os.path.join(cache_dir, key)
    held = _lock_file(folder + ".lock", fcntl.LOCK_SH)  # in use from now: pruning passes it by
    assert held is not None  # blocking
    try:
        built = _complete(folder)
        if built is None:
            with _flock(folder + ".build", fcntl.LOCK_EX):  # one build; the others wait here, then find it
                built = _complete(folder) or _build(folder, key, spec, base, version, progress, stop)
        elif (now := _drifted(folder, built)) is not None:
            built, held = _after_drift(folder, key, spec, base, version, built, now, held, progress, stop)
        with contextlib.suppress(OSError):
            _touch(os.path.join(folder, USED_FILE))
        return built, held
    except BaseException:
        os.close(held)
        raise


def _site_stamp(folder: str) -> list[list[Any]]:
    """What changes when a package is installed into or removed from ``folder``: its site
    folders' modification times (a package's ``.dist-info`` folder comes or goes)."""
    out: list[list[Any]] = []
    for site in site_dirs(folder):
        with contextlib.suppress(OSError):
            out.append([site, os.stat(site).st_mtime_ns])
    return out


def _drifted(folder: str, built: BuiltEnv) -> tuple[str, ...] | None:
    """The packages ``folder`` holds now when they are not those it was built with (a run
    installed into it: ``uv pip install``, ``pip install``), else None. A ``stat`` per site
    folder while nothing changed; the packages are listed again only when one did."""
    path = os.path.join(folder, SITE_STAMP_FILE)
    kept = _read_json(path)
    if kept is not None and kept.get("sites") == _site_stamp(folder):
        return None
    now = tuple(installed(folder))
    if now != built.packages:
        return now
    with contextlib.suppress(OSError):  # (bytecode written beside a module, say: still what was built)
        _write_json(path, {"sites": _site_stamp(folder)})
    return None


def _after_drift(folder: str, key: str, spec: EnvSpec, base: str, version: str, built: BuiltEnv,
                 now: tuple[str, ...], held: int, progress: Callable[[str], None] | None,
                 stop: Callable[[], bool] | None) -> tuple[BuiltEnv, int]:
    """A cached environment that no longer holds what its key says: built again when no other
    run uses it; else used as it is, and recorded as it is (never as what it was built with)."""
    say = progress or (lambda _line: None)
    os.close(held)
    alone = _lock_file(folder + ".lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
    if alone is not None:
        try:
            with _flock(folder + ".build", fcntl.LOCK_EX):
                say(f"environment '{spec.name}' ({key[:12]}) was changed since it was built (a run installed into "
                    "it): building it again")
                rebuilt = _build(folder, key, spec, base, version, progress, stop)
            fcntl.flock(alone, fcntl.LOCK_SH)  # in use, by this run only
            return rebuilt, alone
        except BaseException:
            os.close(alone)
            raise
    again = _lock_file(folder + ".lock", fcntl.LOCK_SH)
    assert again is not None  # blocking
    say(f"environment '{spec.name}' ({key[:12]}) was changed since it was built (a run installed into it) and "
        "another run uses it: this run uses it as it is, and records what it holds")
    return BuiltEnv(**{**asdict(built), "packages": now}), again


def ensure(cache_dir: str, spec: EnvSpec, **kwargs: Any) -> BuiltEnv:
    """The environment of ``spec``, built if needed (and not held in use)."""
    built, held = acquire(cache_dir, spec, **kwargs)
    if held is not None:
        os.close(held)
    return built


def _complete(folder: str) -> BuiltEnv | None:
    data = _read_json(os.path.join(folder, ENV_FILE))
    if not data:
        return None
    try:
        built = BuiltEnv(**{**data, "packages": tuple(data["packages"])})
    except TypeError:
        return None
    return built if os.path.exists(built.python) else None  # its interpreter gone: built again


def _build(folder: str, key: str, spec: EnvSpec, base: str, version: str,
           progress: Callable[[str], None] | None, stop: Callable[[], bool] | None) -> BuiltEnv:
    say = progress or (lambda _line: None)
    started = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)  # a build that died: its folder has no ENV_FILE
    try:
        say(f"building environment '{spec.name}' ({key[:12]}) with Python {version}")
        _uv(["venv", "--python", base, "--no-project", "--quiet", "--clear", folder], say, stop)
        python = os.path.join(folder, "bin", "python")
        lines = spec.lines()
        with open(os.path.join(folder, REQUIREMENTS_FILE), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in lines))
        if any(not line.startswith("-") for line in lines):
            _uv(["pip", "install", "--python", python, "-r", os.path.join(folder, REQUIREMENTS_FILE)], say, stop)
        built = BuiltEnv(key=key, path=folder, python=python, python_version=version, platform=platform_tag(),
                         packages=tuple(installed(folder)), base=base,
                         built_in_s=round(time.monotonic() - started, 3))
        _write_json(os.path.join(folder, SITE_STAMP_FILE), {"sites": _site_stamp(folder)})
        _write_json(os.path.join(folder, ENV_FILE), built.record())  # last: the folder is complete now
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    say(f"environment '{spec.name}' built in {built.built_in_s:.1f} s: {len(built.packages)} packages")
    return built


# Resolved now, not in the child between fork and exec.
try:
    import ctypes

    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None


def _die_with_builder() -> None:  # pragma: no cover - runs in the child between fork and exec
    """uv gets SIGKILL when the process building dies: a killed build must not go on writing
    into a folder the next build removes and makes again."""
    if _PRCTL is not None:
        _PRCTL(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def _uv(args: list[str], say: Callable[[str], None], stop: Callable[[], bool] | None) -> None:
    """Run uv, its lines to ``say``; ``stop`` is asked five times a second (True kills it)."""
    import select

    argv = [uv_bin(), *args]
    # From "/": uv reads a project's uv.toml or pyproject.toml from the folder it runs in and
    # those above, and what is built must not depend on where a run was started from (the
    # user's own uv configuration, ~/.config/uv/uv.toml, still applies).
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=uv_environ(), preexec_fn=_die_with_builder, cwd="/")
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    tail: list[str] = []
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            chunk = os.read(fd, 65536) if ready else None
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        tail = [*tail[-39:], line]
                        say(f"uv: {line}")
            if stop is not None and stop():
                raise EnvironmentBuildError("The environment's build was stopped (the run was canceled).")
            if chunk == b"":
                break
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if pending.strip():
        tail.append(pending.decode("utf-8", "replace").rstrip())
    if code != 0:
        said = "\n".join(tail[-30:]) or "(uv said nothing)"
        raise EnvironmentBuildError(
            f"uv {' '.join(args[:2])} failed (exit {code}):\n{said}\nFix the requirement it names (a version that "
            "exists, a package name on your index), or the index settings (UV_INDEX_URL, UV_FIND_LINKS, uv.toml), "
            "then run again.")


def installed(prefix: str) -> list[str]:
    """Every distribution installed under ``prefix``'s site-packages, as ``name==version``."""
    found: set[str] = set()
    for site in site_dirs(prefix):
        for entry in os.listdir(site):
            if not entry.endswith((".dist-info", ".egg-info")):
                continue
            meta = os.path.join(site, entry, "METADATA" if entry.endswith(".dist-info") else "PKG-INFO")
            name = version = None
            with contextlib.suppress(OSError), open(meta, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Name:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("Version:"):
                        version = line.split(":", 1)[1].strip()
                    elif not line.strip():
                        break
            if name and version:
                found.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}")
    return sorted(found)


def site_dirs(prefix: str) -> list[str]:
    lib = os.path.join(prefix, "lib")
    out = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(lib)):
            site = os.path.join(lib, name, "site-packages")
            if name.startswith(("python", "pypy")) and os.path.isdir(site):
                out.append(site)
    return out


def describe_interpreter(spec: EnvSpec) -> BuiltEnv:
    """A user-managed interpreter as it is: its version, its prefix and its packages (asked of it)."""
    python = str(spec.interpreter)
    probe = ("import json, sys, sysconfig\n"
             "print(json.dumps({'version': '.'.join(map(str, sys.version_info[:3])), 'prefix': sys.prefix,"
             " 'purelib': sysconfig.get_paths()['purelib']}))\n")
    try:
        done = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentSpecError(f"The interpreter {python} of environment '{spec.name}' does not run ({exc}). "
                                   "Give the path of a working Python.") from None
    packages = installed(info["prefix"])
    key = EnvSpec(spec.name, requirements=()).content_key(platform_tag(), f"{python}:{info['version']}")
    return BuiltEnv(key=key, path=info["prefix"], python=python, python_version=info["version"],
                    platform=platform_tag(), packages=tuple(packages), base=os.path.realpath(python),
                    user_managed=True)


# --------------------------------------------------------------------------
# Pruning


@dataclass(frozen=True)
class Pruned:
    key: str
    path: str
    bytes: int
    reason: str


def cached(cache_dir: str) -> list[tuple[str, float, int, bool]]:
    """(key, last used, bytes, complete) of every folder in the cache, least recently used first."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(cache_dir):
            folder = os.path.join(cache_dir, name)
            if not os.path.isdir(folder) or os.path.islink(folder):
                continue
            stamp = os.path.join(folder, USED_FILE)
            try:
                used = os.stat(stamp).st_mtime
            except OSError:
                used = os.stat(folder).st_mtime
            out.append((name, used, _size(folder), os.path.exists(os.path.join(folder, ENV_FILE))))
    return sorted(out, key=lambda row: row[1])


def prune(cache_dir: str, *, keep_bytes: int, dry_run: bool = False) -> list[Pruned]:
    """Remove half-made environments, then the least recently used until the cache holds at
    most ``keep_bytes``; an environment in use or being built is never removed."""
    rows = cached(cache_dir)
    total = sum(row[2] for row in rows)
    removed: list[Pruned] = []
    for key, _used, size, complete in rows:
        if complete and total <= keep_bytes:
            continue
        folder = os.path.join(cache_dir, key)
        if _remove_if_free(folder, dry_run):
            removed.append(Pruned(key, folder, size, "least recently used" if complete else "half-made"))
            total -= size
    return removed


def _remove_if_free(folder: str, dry_run: bool) -> bool:
    fds = []
    try:
        for suffix in (".lock", ".build"):
            fd = _lock_file(folder + suffix, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is None:
                return False  # in use, or being built
            fds.append(fd)
        if not os.path.isdir(folder):
            return False  # another prune removed it since it was listed
        if not dry_run:
            # Renamed first: a half-removed folder is never taken for an environment.
            doomed = f"{folder}.removing.{os.getpid()}"
            os.rename(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            for suffix in (".lock", ".build"):
                with contextlib.suppress(OSError):
                    os.unlink(folder + suffix)
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _size(folder: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# --------------------------------------------------------------------------


def rebuild_spec(record: dict[str, Any], spec: EnvSpec) -> EnvSpec:
    """The spec that builds again exactly what a run had: its index options, its every
    package pinned, its interpreter's minor version (a user-managed interpreter is
    taken as it was)."""
    if spec.user_managed or record.get("user_managed") or "packages" not in record:
        return spec  # (a run that never ran in it: what it asked for, as it asked)
    major_minor = ".".join(str(record.get("python_version", "")).split(".")[:2]) or spec.python
    pins = [p for p in record.get("packages", []) if "==" in p]
    return EnvSpec(spec.name, python=major_minor, requirements=(*spec.options(), *pins), variables=spec.variables)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself survives a crash too
        dirfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def _touch(path: str) -> None:
    with open(path, "a", encoding="utf-8"):
        pass
    os.utime(path)


__all__ = ["BuiltEnv", "Pruned", "acquire", "cached", "describe_interpreter", "ensure", "find_python", "installed",
           "platform_tag", "prune", "python_request", "rebuild_spec", "satisfies", "site_dirs", "uv_bin",
           "uv_environ"]
