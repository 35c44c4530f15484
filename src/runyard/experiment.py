"""``Experiment`` and ``ScriptRunConfig``: submitting runs as in Azure ML v1.

>>> import runyard
>>> ws = runyard.Workspace.from_config()                       # doctest: +SKIP
>>> config = runyard.ScriptRunConfig(source_directory="examples/quickstart",
...                                  script="train.py", arguments=["3"])
>>> run = runyard.Experiment(ws, "quickstart").submit(config)  # doctest: +SKIP
>>> run.wait_for_completion(show_output=True)                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runyard.run import Run
    from runyard.workspace import Workspace


@dataclass
class ScriptRunConfig:
    """What to run: a script in a source directory, its arguments, where."""

    source_directory: str = "."
    script: str | None = None
    arguments: Sequence[Any] = ()
    compute_target: Any = None
    """A compute target's name or a ``ComputeTarget`` (``runyard.compute.base``); None: the
    workspace's ``compute.default``, else ``local`` (as in Azure ML)."""
    max_bytes: int | str | None = None
    """Snapshot size limit for this run (default: env, workspace config, 300 MiB)."""
    max_files: int | str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    inputs: Sequence[Any] = ()
    """Inputs not named in ``arguments`` (those in it are found there)."""
    outputs: Sequence[Any] = ()
    """Declared outputs not named in ``arguments``."""
    command: str | Sequence[Any] | None = field(default=None, kw_only=True)
    """A whole command to run instead of ``script`` and ``arguments`` (as Azure ML's
    ``command=``): a list runs as it is, a string through ``/bin/sh -c``; it runs in
    the working directory with the run's Python first on ``PATH``."""
    environment: Any = field(default=None, kw_only=True)
    """What the script runs with: a ``runyard.Environment``, ``"NAME[:VERSION]"`` of a registered one,
    or the path of a requirements file, a conda file or an interpreter. None: the Python that runs
    runyard (as it is; the run records what it had)."""
    secrets: str | None = field(default=None, kw_only=True)
    """``warn`` or ``refuse``: likely secrets in the snapshot (.env, keys) are stored with a
    ``SecretsWarning``, or refused (``SnapshotSecretsError``, nothing stored). Default:
    ``RUNYARD_SNAPSHOT_SECRETS``, else the workspace's ``snapshot.secrets``, else ``warn``."""


class Experiment:
    """A named group of runs in a workspace."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        from runyard.history import check_experiment_name

        self.workspace = workspace
        self.name = check_experiment_name(name)

    def __repr__(self) -> str:
        return f"Experiment({self.workspace.path!r}, {self.name!r})"

    def submit(self, config: ScriptRunConfig, tags: dict[str, str] | None = None) -> Run:
        """Snapshot the source directory and start the run; returns at once.

        A source over the snapshot limits raises ``SnapshotLimitError`` and
        records no run (raise them with ``ScriptRunConfig(max_bytes=, max_files=)``).

        Likely secrets in the snapshot raise ``SecretsWarning`` (a warning), or
        ``SnapshotSecretsError`` (nothing stored or recorded) when the secrets
        policy is ``refuse`` (``ScriptRunConfig(secrets=...)``, else
        ``RUNYARD_SNAPSHOT_SECRETS``, else ``snapshot.secrets``)."""
        from runyard.errors import RunError, SnapshotLimitError
        from runyard.run import Run
        from runyard.runs import RunSpec, submit

        if not config.script and config.command is None:
            raise RunError("ScriptRunConfig needs a script or a command: ScriptRunConfig(source_directory=..., "
                           "script='train.py'), or command=['python', 'train.py'].")
        arguments: list[str] = [str(a) for a in config.arguments]
        inputs: list[Any] = []
        outputs: list[Any] = []
        if config.inputs or config.outputs or any(not isinstance(a, str | int | float) or "${{" in str(a)
                                                  for a in config.arguments):
            from runyard.data.inputs import collect

            arguments, inputs, outputs = collect(config.arguments, config.inputs, config.outputs)
        spec = RunSpec(
            source_directory=config.source_directory,
            script=config.script or "",
            arguments=arguments,
            command=config.command if isinstance(config.command, str | None) else [str(a) for a in config.command],
            inputs=inputs,
            outputs=outputs,
            experiment=self.name,
            compute_target=config.compute_target,
            max_bytes=config.max_bytes,
            max_files=config.max_files,
            tags={**config.tags, **(tags or {})},
            secrets=config.secrets,
            environment=config.environment,
        )
        try:
            record = submit(self.workspace, spec)
        except SnapshotLimitError as exc:  # nothing recorded; the advice names ScriptRunConfig's options
            from runyard.snapshot.report import limit_error_for

            raise limit_error_for(exc, "submit") from exc
        return Run(self.workspace, record.id)

    def get_runs(self) -> list[Run]:
        from runyard.run import Run

        history = self.workspace.open_history()
        return [Run(self.workspace, r.id) for r in history.list_runs(experiment=self.name, limit=None)]
