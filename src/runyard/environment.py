"""``Environment``: what a run's script runs with, as in Azure ML v1.

An environment is a Python interpreter and packages, and environment variables.
runyard builds it once per content with uv into the workspace's cache and
records on every run the exact package set it ran with (see
:mod:`runyard.environments`):

>>> import runyard
>>> env = runyard.Environment.from_pip_requirements("sk", "requirements.txt")  # doctest: +SKIP
>>> env.environment_variables["OMP_NUM_THREADS"] = "4"                           # doctest: +SKIP
>>> env.register(ws)                                                             # doctest: +SKIP
>>> cfg = runyard.ScriptRunConfig(source_directory=".", script="train.py",
...                               environment=runyard.Environment.get(ws, "sk"))  # doctest: +SKIP

Without an environment a run uses the Python that runs runyard (and records
what it had).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runyard.environments.spec import EnvSpec
    from runyard.workspace import Workspace


@dataclass
class CondaDependencies:
    """Azure ML's ``CondaDependencies``: a Python version and packages. runyard builds
    environments with uv from PyPI (or the index you configured), so only ``python``,
    ``pip`` and pip packages can be built; conda packages are refused with what to do."""

    python_version: str | None = None
    pip_packages: list[str] = field(default_factory=list)
    conda_packages: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, pip_packages: list[str] | None = None, conda_packages: list[str] | None = None,
               python_version: str | None = None, **_ignored: Any) -> CondaDependencies:
        return cls(python_version, list(pip_packages or []), list(conda_packages or []))

    def add_pip_package(self, package: str) -> None:
        if package not in self.pip_packages:
            self.pip_packages.append(package)

    def add_conda_package(self, package: str) -> None:
        if package not in self.conda_packages:
            self.conda_packages.append(package)

    def set_python_version(self, version: str) -> None:
        self.python_version = version


@dataclass
class PythonSection:
    """``Environment.python``: the interpreter and its packages."""

    conda_dependencies: CondaDependencies = field(default_factory=CondaDependencies)
    user_managed_dependencies: bool = False
    """True: use ``interpreter_path`` as it is; nothing is installed."""
    interpreter_path: str | None = None


class Environment:
    """A named, versioned definition of what a run's script runs with."""

    def __init__(self, name: str) -> None:
        from runyard.environments.spec import check_env_name

        self.name = check_env_name(name)
        self.version: int | None = None
        """Set by ``register`` and ``get``."""
        self.python = PythonSection()
        self.environment_variables: dict[str, str] = {}
        self.packages: list[str] | None = None
        """For an environment a run ran with (``Run.get_environment()``): every package, ``name==version``."""
        self.python_version: str | None = None
        self.platform: str | None = None

    def __repr__(self) -> str:
        return f"Environment({self.name!r}, version={self.version})"

    @classmethod
    def from_pip_requirements(cls, name: str, file_path: str) -> Environment:
        """From a pip requirements file (``-r`` includes and index options in it are kept)."""
        from runyard.environments.spec import EnvSpec

        return cls._of(EnvSpec.from_pip_requirements(name, file_path))

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str) -> Environment:
        """From a conda environment file: its ``python`` and its ``pip:`` packages (other
        conda packages are refused, naming them)."""
        from runyard.environments.spec import EnvSpec

        return cls._of(EnvSpec.from_conda_specification(name, file_path))

    @classmethod
    def from_existing_conda_environment(cls, name: str, conda_environment_name: str) -> Environment:
        """The interpreter of an existing conda environment, used as it is (user-managed)."""
        from runyard.environments.spec import conda_env_python

        env = cls(name)
        env.python.user_managed_dependencies = True
        env.python.interpreter_path = conda_env_python(conda_environment_name)
        return env

    @classmethod
    def _of(cls, spec: EnvSpec) -> Environment:
        env = cls(spec.name)
        env.python.conda_dependencies = CondaDependencies(spec.python, list(spec.requirements), [])
        env.environment_variables = dict(spec.variables)
        if spec.interpreter:
            env.python.user_managed_dependencies = True
            env.python.interpreter_path = spec.interpreter
        return env

    def spec(self) -> EnvSpec:
        """What defines this environment, checked (``EnvironmentError_`` says what is wrong)."""
        from runyard.environments.spec import EnvSpec
        from runyard.errors import EnvironmentSpecError as EnvSpecError

        deps = self.python.conda_dependencies
        if self.python.user_managed_dependencies:
            if not self.python.interpreter_path:
                raise EnvSpecError(f"Environment '{self.name}' is user-managed but names no interpreter: set "
                                   "env.python.interpreter_path = '/path/to/python'.")
            return EnvSpec(self.name, interpreter=self.python.interpreter_path,
                           variables=dict(self.environment_variables))
        others = [p for p in deps.conda_packages if p.split("=")[0].split("<")[0].split(">")[0].strip()
                  not in ("python", "pip")]
        if others:
            raise EnvSpecError(
                f"Environment '{self.name}' asks for conda packages ({', '.join(others)}), which runyard cannot "
                "install (it builds with uv from PyPI or your configured index). Move them to pip_packages "
                "(most have the same name on PyPI), or build the environment with conda yourself and use it "
                "with Environment.from_existing_conda_environment().")
        return EnvSpec(self.name, python=deps.python_version, requirements=tuple(deps.pip_packages),
                       variables=dict(self.environment_variables))

    def register(self, workspace: Workspace) -> Environment:
        """Register it in the workspace: a new version when it differs from the latest one."""
        from runyard.environments.registry import register

        self.version = register(workspace, self.spec())
        return self

    @classmethod
    def get(cls, workspace: Workspace, name: str, version: int | str | None = None) -> Environment:
        """A registered environment (the latest version when ``version`` is None)."""
        from runyard.environments.registry import get

        spec, found = get(workspace, name, None if version is None else int(version))
        env = cls._of(spec)
        env.version = found
        return env

    @classmethod
    def list(cls, workspace: Workspace) -> dict[str, Environment]:
        """The latest version of every registered environment, by name."""
        from runyard.environments.registry import latest

        out: dict[str, Environment] = {}
        for spec, version in latest(workspace):
            env = cls._of(spec)
            env.version = version
            out[spec.name] = env
        return out


__all__ = ["CondaDependencies", "Environment", "PythonSection"]
