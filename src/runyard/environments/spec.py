"""What defines an environment (:class:`EnvSpec`), read from a requirements file, a
conda environment file or an interpreter, and the key it is built and cached under.

A leaf: standard library and :mod:`runyard.errors` only.

>>> spec = EnvSpec("sk", python="3.11", requirements=("scikit-learn==1.5.2  # the model",))
>>> spec.lines()
['scikit-learn==1.5.2']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from runyard.errors import EnvironmentSpecError

NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_OPTION_LINES: Final = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--no-index", "--pre",
                        "--only-binary", "--no-binary", "--prefer-binary", "--trusted-host")
_LOCAL: Final = re.compile(r"^(-e\b|--editable\b|\.{0,2}/|file:|~)")
_FIND_LINKS: Final = re.compile(r"^(\s*(?:--find-links|-f)(?:=|\s+))(\S+)(.*)$")
_CONDA_ALLOWED: Final = ("python", "pip")


def check_env_name(name: str) -> str:
    """``name`` if it can name an environment (it becomes a key of the registry), else
    ``EnvironmentSpecError`` saying what a name may be."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise EnvironmentSpecError(
            f"{name!r} cannot name an environment: use 1-255 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (e.g. 'sklearn-1.5').")
    return name


@dataclass(frozen=True)
class EnvSpec:
    """An environment's definition: the interpreter asked for (a version such as ``3.11``,
    or None for the minor version of the Python that runs runyard), the requirement
    lines (pip syntax, index options kept), or an existing ``interpreter`` used as it is
    (user-managed: nothing is installed); and environment variables for the script."""

    name: str
    python: str | None = None
    requirements: tuple[str, ...] = ()
    interpreter: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_env_name(self.name)
        object.__setattr__(self, "requirements", tuple(self.requirements))
        object.__setattr__(self, "variables", {str(k): str(v) for k, v in sorted(dict(self.variables).items())})
        if self.interpreter and (self.requirements or self.python):
            raise EnvironmentSpecError(
                f"Environment '{self.name}' names an interpreter ({self.interpreter}) and also packages or a Python "
                "version: a user-managed interpreter is used as it is. Give one or the other.")
        for key, value in self.variables.items():
            if not key or "=" in key or "\0" in key:
                raise EnvironmentSpecError(f"Environment '{self.name}': {key!r} cannot name an environment variable.")
            if "\0" in value:
                raise EnvironmentSpecError(f"Environment '{self.name}': the value of {key} holds a NUL character, "
                                           "which no environment variable can hold.")
        for line in self.lines():
            if _LOCAL.match(line):
                raise EnvironmentSpecError(
                    f"Environment '{self.name}': '{line}' installs from a local path, which another machine "
                    "cannot rebuild. Build a wheel (pip wheel . -w wheels/), add '--find-links wheels' and the "
                    "package by name, or use an interpreter you manage (python.user_managed_dependencies).")
            if line.startswith(("-c", "--constraint")):
                raise EnvironmentSpecError(
                    f"Environment '{self.name}': constraint files ('{line}') are not kept with the environment. "
                    "Put the pins in the requirements themselves.")

    @property
    def user_managed(self) -> bool:
        return bool(self.interpreter)

    def lines(self) -> list[str]:
        """The requirement lines as installed: comments and blank lines dropped, order kept."""
        out = []
        for raw in self.requirements:
            line = re.split(r"(^|\s)#", raw, maxsplit=1)[0].strip()
            if line:
                out.append(line)
        return out

    def options(self) -> list[str]:
        """The index options among the lines (kept when the environment is rebuilt from its pins)."""
        return [line for line in self.lines() if line.split()[0].split("=")[0] in _OPTION_LINES]

    def content_key(self, platform: str, python: str) -> str:
        """The key the environment is built under: its interpreter request ``python``
        (made concrete by the caller), the requirement lines and the platform. The
        variables and the name do not change what is built."""
        canon = json.dumps({"python": python, "platform": platform, "requirements": self.lines()},
                           sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "python": self.python, "requirements": list(self.requirements),
                "interpreter": self.interpreter, "variables": dict(self.variables)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSpec:
        try:
            return cls(str(data["name"]), python=data.get("python"),
                       requirements=tuple(str(r) for r in data.get("requirements") or ()),
                       interpreter=data.get("interpreter"), variables=dict(data.get("variables") or {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise EnvironmentSpecError(f"An environment's record cannot be read ({exc}); register it again.") from None

    @classmethod
    def from_pip_requirements(cls, name: str, path: str, *, python: str | None = None) -> EnvSpec:
        """From a pip requirements file; ``-r other.txt`` includes are read in (relative to the
        file), index options are kept as they are."""
        return cls(name, python=python, requirements=tuple(_read_requirements(path, [])))

    @classmethod
    def from_conda_specification(cls, name: str, path: str) -> EnvSpec:
        """From a conda environment file: its ``python`` and its ``pip:`` list (and its
        ``variables:``); any other conda package is refused, naming it."""
        try:
            with open(path, encoding="utf-8-sig") as fh:  # (a BOM would hide the first key)
                text = fh.read()
        except OSError as exc:
            raise EnvironmentSpecError(f"The conda file {path} cannot be read: {exc.strerror}.") from None
        python, pip, conda, variables = parse_conda(text, path)
        others = [p for p in conda if _conda_name(p) not in _CONDA_ALLOWED]
        if others:
            raise EnvironmentSpecError(
                f"{path} asks for conda packages ({', '.join(others)}), which runyard cannot install: it builds "
                "environments with uv from PyPI (or the index you configured). Move them to the 'pip:' list "
                "(most have the same name on PyPI), or build the environment with conda and use it as it is: "
                "Environment.from_existing_conda_environment(NAME, CONDA_ENV) / runyard env create NAME "
                "--python /path/to/envs/CONDA_ENV/bin/python.")
        base = os.path.dirname(os.path.abspath(path))
        lines: list[str] = []
        for item in pip:
            parts = item.split(None, 1)
            if parts and parts[0] in ("-r", "--requirement") and len(parts) == 2:
                lines.extend(_read_requirements(os.path.join(base, parts[1]), []))
            else:
                lines.append(anchor_find_links(item, base))
        return cls(name, python=python, requirements=tuple(lines), variables=variables)

    @classmethod
    def from_interpreter(cls, name: str, interpreter: str, variables: Mapping[str, str] | None = None) -> EnvSpec:
        """An interpreter you manage, used as it is (nothing installed)."""
        found = shutil.which(interpreter) if os.sep not in interpreter else interpreter
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise EnvironmentSpecError(f"There is no Python interpreter at {interpreter!r}. Give the path of one "
                                       "(e.g. /opt/conda/envs/train/bin/python).")
        return cls(name, interpreter=os.path.abspath(found), variables=dict(variables or {}))


def _read_requirements(path: str, seen: list[str]) -> list[str]:
    real = os.path.realpath(path)
    if real in seen:
        raise EnvironmentSpecError(f"{path} includes itself (through -r): remove the loop.")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            raw = fh.read()
    except OSError as exc:
        raise EnvironmentSpecError(f"The requirements file {path} cannot be read: {exc.strerror}. Give the path "
                                   "of a pip requirements file.") from None
    out: list[str] = []
    joined = raw.replace("\\\n", " ")
    for line in joined.splitlines():
        words = line.split()
        if words and words[0] in ("-r", "--requirement") and len(words) >= 2:
            out.extend(_read_requirements(os.path.join(os.path.dirname(path), words[1]), [*seen, real]))
        elif words and words[0].startswith("--requirement="):
            out.extend(_read_requirements(os.path.join(os.path.dirname(path), words[0].split("=", 1)[1]),
                                          [*seen, real]))
        else:
            out.append(anchor_find_links(line.rstrip(), os.path.dirname(os.path.abspath(path))))
    return out


def anchor_find_links(line: str, folder: str) -> str:
    """``line`` with a relative ``--find-links`` folder made absolute.

    pip and uv read such a folder relative to the requirements file that names it
    (pip: else the current directory). The lines are installed from a copy of the file
    in the cache, and the path enters the environment's key, so it is anchored where
    it was written: ``--find-links wheels`` in ``/proj/requirements.txt`` becomes
    ``--find-links /proj/wheels``. A folder that is in neither place is left as it is
    (uv then says it is missing); URLs are left as they are.

    >>> anchor_find_links("--find-links https://example.org/wheels/", "/proj")
    '--find-links https://example.org/wheels/'
    """
    m = _FIND_LINKS.match(line)
    if m is None or "://" in m.group(2) or os.path.isabs(os.path.expanduser(m.group(2))):
        return line
    for where in (os.path.join(folder, m.group(2)), m.group(2)):
        if os.path.exists(where):
            return f"{m.group(1)}{os.path.abspath(where)}{m.group(3)}"
    return line


def _conda_name(package: str) -> str:
    return re.split(r"[=<>!~ \[]", package.strip(), maxsplit=1)[0].lower().split("::")[-1]


def parse_conda(text: str, where: str = "the conda file") -> tuple[str | None, list[str], list[str], dict[str, str]]:
    """(python version, pip packages, other conda packages, variables) of a conda
    environment file. A strict reader of the usual layout (block lists and maps); what
    it does not understand is refused with the line."""
    rows = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise EnvironmentSpecError(f"{where}, line {number}: indented with a tab; YAML needs spaces.")
        rows.append((number, len(line) - len(line.lstrip()), line.strip()))
    python: str | None = None
    pip: list[str] = []
    conda: list[str] = []
    variables: dict[str, str] = {}
    section = None
    pip_indent: int | None = None
    for number, indent, line in rows:
        if indent == 0 and not line.startswith("-"):
            key, sep, value = line.partition(":")
            if not sep:
                raise EnvironmentSpecError(f"{where}, line {number}: expected 'key:' here, found {line!r}.")
            section, pip_indent = key.strip(), None
            if value.strip() and section in ("dependencies", "channels", "variables"):
                raise EnvironmentSpecError(f"{where}, line {number}: write '{section}:' as a list on the lines "
                                           "below (one '- item' per line), not inline.")
            continue
        if section == "variables":
            key, sep, value = line.partition(":")
            if not sep or line.startswith("-"):
                raise EnvironmentSpecError(f"{where}, line {number}: variables are 'NAME: value' lines.")
            variables[key.strip()] = _unquote(value.strip())
            continue
        if section != "dependencies":
            continue  # name, channels, prefix: not what is built here
        if pip_indent is not None and indent > pip_indent:
            if not line.startswith("- "):
                raise EnvironmentSpecError(f"{where}, line {number}: expected '- package' under 'pip:'.")
            pip.append(_unquote(line[2:].strip()))
            continue
        pip_indent = None
        if not line.startswith("-"):
            raise EnvironmentSpecError(f"{where}, line {number}: expected '- package' under 'dependencies:'.")
        item = _unquote(line[1:].strip())
        if item.rstrip(":").strip() == "pip" and item.endswith(":"):
            pip_indent = indent
        elif item.startswith(("{", "[")) or (item.endswith(":") and item):
            raise EnvironmentSpecError(f"{where}, line {number}: {item!r} is not understood here; list packages "
                                       "one per line, and pip packages under '- pip:'.")
        elif _conda_name(item) == "python":
            version = item.strip()[len("python"):].strip().lstrip("=").strip()  # python=3.11, ==3.11.4, >=3.10
            python = version.removesuffix(".*") or None
        else:
            conda.append(item)
    return python, pip, conda, variables


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def conda_env_python(name: str) -> str:
    """The interpreter of the conda environment ``name`` (a path is taken as the environment's folder)."""
    candidates: list[str] = []
    if os.sep in name:
        candidates.append(name)
    else:
        conda = shutil.which("conda") or shutil.which("mamba") or shutil.which("micromamba")
        if conda:
            try:
                done = subprocess.run([conda, "env", "list", "--json"], capture_output=True, text=True, timeout=60)
                candidates += [p for p in json.loads(done.stdout or "{}").get("envs", [])
                               if os.path.basename(p) == name]
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        roots = [os.environ.get("CONDA_PREFIX", ""), *(os.path.expanduser(f"~/{d}") for d in (
            "miniconda3", "anaconda3", "miniforge3", "mambaforge", ".conda"))]
        for root in filter(None, roots):
            candidates += [os.path.join(root, "envs", name), os.path.join(os.path.dirname(root), name)]
    for folder in candidates:
        python = os.path.join(folder, "bin", "python")
        if os.path.isfile(python) and os.access(python, os.X_OK):
            return python
    raise EnvironmentSpecError(f"There is no conda environment '{name}' here (looked with conda env list and in "
                               "the usual places). Give its folder, or its interpreter with runyard env create "
                               "NAME --python /path/to/bin/python.")


__all__ = ["EnvSpec", "anchor_find_links", "check_env_name", "conda_env_python", "parse_conda"]
