"""What a run is, as the layers above and below the supervisor both need it: what to
run (:class:`RunSpec`, :class:`RunRequest`), how it ended (:class:`RunEnd`), and the
exit code ``runyard run`` gives for an end. A leaf: it imports no other part of
runyard's run machinery, so the supervisor and the orchestration that starts it
depend on it and not on each other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from runyard.errors import RunyardError
from runyard.history import Artifact, RunStatus


@dataclass
class RunSpec:
    """What to run: the SDK's ScriptRunConfig and ``runyard run`` both make one."""

    source_directory: str
    script: str
    arguments: Sequence[str] = ()
    experiment: str = "default"
    compute_target: Any = None
    """A target's name or a ``ComputeTarget``; None: the workspace's default, else ``local``."""
    network: bool | None = None
    """Give the script the network on a target that has none by default (the sandbox), or not."""
    max_bytes: int | str | None = None
    max_files: int | str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    snapshot_id: str | None = None
    """Run an existing snapshot (rerun) instead of taking one."""
    git: dict[str, Any] | None = None
    """With ``snapshot_id``: the git state the snapshot was taken at (a rerun's parent's)."""
    inputs: Sequence[Any] = ()
    """DatasetConsumptionConfig objects (their placeholders may be in ``arguments``)."""
    outputs: Sequence[Any] = ()
    """OutputFileDatasetConfig objects."""
    data_plan: dict[str, Any] | None = None
    """A data plan as a run folder keeps it (a rerun's parent's), instead of inputs and outputs."""
    command: str | Sequence[str] | None = None
    """A whole command to run instead of ``script`` and ``arguments`` (Azure ML's ``command=``)."""
    secrets: str | None = None
    """``warn`` or ``refuse``: what to do with likely secrets in the snapshot (default: env, workspace, warn)."""
    environment: Any = None
    """What the script runs with: an ``Environment``, ``NAME[:VERSION]`` of a registered one, the path of a
    requirements or conda file or of an interpreter; None: the Python that runs runyard."""


@dataclass
class RunRequest:
    """A prepared run: its id, its snapshot and what to run. Kept as
    ``request.json`` in the run's folder, where the supervisor reads it."""

    run_id: str
    experiment: str
    snapshot_id: str
    source_dir: str
    script: str
    arguments: list[str]
    compute_target: str = "local"
    isolation: dict[str, Any] | None = None
    """How the supervisor isolates the script (the target kind's), or None: not at all."""
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    python_version: str = ""
    git: dict[str, Any] = field(default_factory=dict)
    command: str | list[str] | None = None
    """The whole command, for a run of a command instead of a script."""
    claim: int | None = field(default=None, repr=False, compare=False)
    """The run's marker, held by this process until a supervisor holds it (never saved)."""
    secrets: list[str] = field(default_factory=list)
    """Likely secrets in the snapshot (flagged, and allowed: the policy was ``warn``)."""
    links_outside: dict[str, str] = field(default_factory=dict)
    """Links in the snapshot that leave the source directory: path -> what the walk said."""
    snapshot_reused: bool = False
    """The snapshot was not taken for this run (a rerun's)."""
    environment: dict[str, Any] | None = None
    """``{"spec": EnvSpec.to_dict(), "version": registered version or None}``; None: the Python that runs
    runyard."""

    def flag_properties(self) -> dict[str, str]:
        """What the run's record keeps of the flags (``runyard.secrets``, ``runyard.links_outside``)."""
        import json

        props = {}
        if self.secrets:
            props[SECRETS_PROPERTY] = json.dumps(self.secrets)
        if self.links_outside:
            props[LINKS_OUTSIDE_PROPERTY] = json.dumps(list(self.links_outside))
        return props

    def flag_message(self) -> str | None:
        """The warning to show for the flags (each path and its ignore line), or None."""
        if not self.secrets and not self.links_outside:
            return None
        from runyard.snapshot.report import flagged_message

        return flagged_message(self.source_dir, self.secrets, list(self.links_outside.items()),
                               reused_snapshot=self.snapshot_id if self.snapshot_reused else None)

    def save(self, folder: str) -> None:
        from dataclasses import asdict

        from runyard.agent.folder import write_json

        os.makedirs(folder, exist_ok=True)
        write_json(os.path.join(folder, REQUEST_FILE), {k: v for k, v in asdict(self).items() if k != "claim"},
                   indent=1)

    @classmethod
    def load(cls, folder: str) -> RunRequest:
        import json

        with open(os.path.join(folder, REQUEST_FILE), encoding="utf-8") as fh:
            return cls(**json.load(fh))


REQUEST_FILE: Final = "request.json"
SECRETS_PROPERTY: Final = "runyard.secrets"
"""A run property: the JSON list of likely secrets its snapshot holds (set only when there are some)."""
LINKS_OUTSIDE_PROPERTY: Final = "runyard.links_outside"
"""A run property: the JSON list of links in its snapshot that leave the source directory."""
END_FILE: Final = "end.json"
"""The run's end as its supervisor saw it, written before the history has it (see :class:`RunEnd`)."""


@dataclass
class RunEnd:
    """How a run ended, kept as ``end.json`` in its folder.

    The supervisor writes it once everything the run produced is in the
    store, then records the same in the run history. ``runyard run`` exits
    on the file; readers of the history wait for the record while the
    supervisor lives, and record it from the file if it died in between.
    """

    status: str
    exit_code: int | None
    signal: int | None
    error: str | None
    started: float | None
    ended: float
    command_line: str | None = None
    working_dir: str | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    """What the run read and wrote (inputs and declared outputs), for lineage and registration."""
    environment: dict[str, Any] | None = None
    """What the script ran with (see ``RunRecord.environment``)."""

    def write(self, folder: str) -> None:
        from dataclasses import asdict

        from runyard.agent.folder import write_json

        try:
            write_json(os.path.join(folder, END_FILE), asdict(self))
        except OSError:
            pass

    @classmethod
    def read(cls, folder: str) -> RunEnd | None:
        import json

        try:
            with open(os.path.join(folder, END_FILE), encoding="utf-8") as fh:
                raw = json.load(fh)
            if raw.get("status") not in (RunStatus.COMPLETED.value, RunStatus.FAILED.value,
                                         RunStatus.CANCELED.value):
                return None  # not an end runyard wrote
            raw["artifacts"] = [Artifact(**a).checked() for a in raw.get("artifacts", [])]
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError, RunyardError):
            return None


def exit_code_for(status: RunStatus, exit_code: int | None, sig: int | None) -> int:
    """What ``runyard run`` exits with: the script's code, 128+N for signal N, 130 if canceled."""
    if status is RunStatus.COMPLETED:
        return 0
    if status is RunStatus.CANCELED:
        return 130
    if sig:
        return 128 + sig
    return exit_code if exit_code else 1


def command_argv(command: str | Sequence[str]) -> list[str]:
    """A run's command as the argv its record keeps (a string runs through ``/bin/sh -c``)."""
    from runyard.agent.scripts import command_line

    return command_line(command)


__all__ = [
    "END_FILE",
    "LINKS_OUTSIDE_PROPERTY",
    "REQUEST_FILE",
    "SECRETS_PROPERTY",
    "RunEnd",
    "RunRequest",
    "RunSpec",
    "command_argv",
    "exit_code_for",
]
