"""``Run``: a run of an experiment, from outside (submitted) or inside (the
script's own context), with the names Azure ML v1 users know.

>>> import runyard
>>> run = runyard.Run.get_context()      # outside a run: an offline run
>>> run.log("loss", 0.5)                 # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from runyard.errors import NotFoundError, RunError

if TYPE_CHECKING:
    from runyard.history import RunRecord
    from runyard.history.store import RunHistory
    from runyard.workspace import Workspace

ENV_RUN_ID = "RUNYARD_RUN_ID"


def _metric_view(values: dict[str, list[Any]]) -> dict[str, Any]:
    # As Azure ML: a metric logged once is its value, more often a list.
    return {k: (v[0] if len(v) == 1 else v) for k, v in values.items()}


class Run:
    """A run in a workspace's history. Get one from ``Experiment.submit``,
    ``Run(ws, run_id)``, or ``Run.get_context()`` inside a script."""

    def __init__(self, workspace: Workspace, run_id: str) -> None:
        self.workspace = workspace
        self.id = run_id
        self._history: RunHistory | None = None

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    # -- the script's own run ------------------------------------------------
    @classmethod
    def get_context(cls) -> Run:
        """The run this script is part of, or an offline run that prints what
        it would have logged when the script runs outside runyard."""
        run_id = os.environ.get(ENV_RUN_ID)
        ws_path = os.environ.get("RUNYARD_WORKSPACE")
        if not run_id or not ws_path:
            return OfflineRun()
        from runyard.workspace import Workspace

        return cls(Workspace(ws_path), run_id)

    @property
    def input_datasets(self) -> dict[str, str]:
        """Input name -> local path, as the script sees them (Azure ML's ``run.input_datasets``)."""
        return self._data_paths("input")

    @property
    def output_datasets(self) -> dict[str, str]:
        """Declared output name -> the local folder the script writes."""
        return self._data_paths("output")

    def _data_paths(self, direction: str) -> dict[str, str]:
        prefix = f"RUNYARD_{direction.upper()}_"
        if os.environ.get(ENV_RUN_ID) == self.id:  # the script's own run: its environment says
            return {k[len(prefix):]: v for k, v in os.environ.items() if k.startswith(prefix)}
        from runyard.data.lineage import load_plan

        plan = load_plan(os.path.join(self.workspace.runs_dir, self.id)) or {}
        from runyard.data.materialize import local_path

        folder = os.path.join(self.workspace.runs_dir, self.id)
        return {item["name"]: local_path(folder, self._record().working_dir or folder, item, f"{direction}s")
                for item in plan.get(f"{direction}s", [])}

    @property
    def history(self) -> RunHistory:
        if self._history is None:
            from runyard.runs import ensure_recorded

            history = self.workspace.open_history()
            ensure_recorded(self.workspace, self.id, history)  # a script may log before its supervisor records it
            self._history = history
        return self._history

    @property
    def experiment(self) -> str:
        return self._record().experiment

    def _record(self) -> RunRecord:
        from runyard.runs import get_run

        return get_run(self.workspace, self.id, self.history)

    # -- logging ---------------------------------------------------------------
    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        """Log a value of a metric (call again to add points)."""
        self.history.log_metrics(self.id, [(name, value, step)], pid=os.getpid())

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        self.history.log_metrics(self.id, [(name, list(value), None, "list")], pid=os.getpid())

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        self.history.log_metrics(self.id, [(name, dict(kwargs), None, "row")], pid=os.getpid())

    def tag(self, key: str, value: str | None = None) -> None:
        self.history.add_tags(self.id, {key: "" if value is None else str(value)})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.history.add_tags(self.id, {k: str(v) for k, v in tags.items()})

    def add_properties(self, properties: Mapping[str, str]) -> None:
        """Add properties (add-only: an existing key cannot change)."""
        self.history.add_properties(self.id, {k: str(v) for k, v in properties.items()})

    def upload_file(self, name: str, path_or_stream: str) -> None:
        """Store a local file as the artifact ``name`` of this run."""
        from runyard.history import Artifact

        store = self.workspace.open_store()
        digest, size, _ = store.put_file(path_or_stream)
        self.history.upsert_artifacts(self.id, [Artifact(name, size, digest, time.time()).checked()])

    # -- reading -------------------------------------------------------------
    def get_status(self) -> str:
        return self._record().status.value

    def get_details(self) -> dict[str, Any]:
        r = self._record()
        return {
            "runId": r.id,
            "experiment": r.experiment,
            "status": r.status.value,
            "startTimeUtc": _iso(r.started),
            "endTimeUtc": _iso(r.ended),
            "target": r.compute_target,
            "script": r.script,
            "arguments": list(r.arguments),
            "snapshotId": r.snapshot_id,
            "exitCode": r.exit_code,
            "signal": r.signal,
            "error": r.error,
            "properties": dict(r.properties),
            "tags": dict(r.tags),
            "git": {"commit": r.git_commit, "branch": r.git_branch, "dirty": r.git_dirty},
            "host": r.host,
            "inputDatasets": self._lineage("input"),
            "outputDatasets": self._lineage("output"),
        }

    def _lineage(self, direction: str) -> list[dict[str, Any]]:
        from runyard.history.catalog import DataCatalog

        return [{"name": d.name, "mode": d.mode, "dataset": d.dataset, "version": d.version,
                 "datastore": d.datastore, "path": d.path, "state": d.state, **d.detail}
                for d in DataCatalog(self.history).run_data(self.id) if d.direction == direction]

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        return _metric_view(self.history.get_metrics(self.id, None if name is None else [name]))

    def get_tags(self) -> dict[str, str]:
        return dict(self._record().tags)

    def get_properties(self) -> dict[str, str]:
        return dict(self._record().properties)

    def get_file_names(self) -> list[str]:
        return [a.name for a in self.history.list_artifacts(self.id)]

    def download_file(self, name: str, output_file_path: str | None = None) -> str:
        """Download one artifact; returns the local path."""
        art = {a.name: a for a in self.history.list_artifacts(self.id)}.get(name)
        if art is None:
            raise NotFoundError(f"Run {self.id} has no artifact '{name}'. "
                                f"List them with: runyard artifacts ls {self.id}")
        dest = output_file_path or os.path.basename(name)
        if os.path.isdir(dest):
            dest = os.path.join(dest, os.path.basename(name))
        _write_artifact(self.workspace, art.digest, dest)
        return dest

    def download_files(self, prefix: str | None = None, output_directory: str | None = None,
                       pattern: str | None = None) -> list[str]:
        """Download artifacts (under ``prefix``, or matching a glob ``pattern``)
        into ``output_directory`` keeping their names; returns the paths."""
        out = output_directory or "."
        paths = []
        for art in self.history.list_artifacts(self.id, prefix=prefix):
            if pattern and not fnmatch.fnmatchcase(art.name, pattern):
                continue
            dest = os.path.join(out, *art.name.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            _write_artifact(self.workspace, art.digest, dest)
            paths.append(dest)
        return paths

    # -- control ---------------------------------------------------------------
    def cancel(self) -> None:
        from runyard.runs import cancel

        cancel(self.workspace, self.id)

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = False,
                            raise_on_error: bool = True, stream: TextIO | None = None) -> dict[str, Any]:
        """Wait for the run to end; with ``show_output``, stream its driver log.

        Raises ``RunError`` when the run Failed and ``raise_on_error`` is set.
        """
        from runyard.runs import wait

        if show_output:
            stream_log(self.workspace, self.id, stream or sys.stdout)
        record = wait(self.workspace, self.id)
        if raise_on_error and record.status.value == "Failed":
            raise RunError(f"Run {self.id} failed: {record.error or 'see its driver log'}\n"
                           f"See: runyard logs {self.id}")
        return self.get_details()


class OfflineRun(Run):
    """What ``Run.get_context()`` gives outside a run: it prints instead of logging."""

    def __init__(self) -> None:
        self.id = f"OfflineRun_{os.getpid()}"
        self._metrics: dict[str, list[Any]] = {}

    def _say(self, text: str) -> None:
        print(f"[runyard offline run] {text}", file=sys.stderr)

    @property
    def experiment(self) -> str:
        return "offline"

    def _data_paths(self, direction: str) -> dict[str, str]:
        return {}

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        self._metrics.setdefault(name, []).append(value)
        self._say(f"{name} = {value!r}" + (f" (step {step})" if step is not None else ""))

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        self.log(name, list(value))

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        self.log(name, dict(kwargs))

    def tag(self, key: str, value: str | None = None) -> None:
        self._say(f"tag {key} = {value!r}")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._say(f"tags {dict(tags)!r}")

    def add_properties(self, properties: Mapping[str, str]) -> None:
        self._say(f"properties {dict(properties)!r}")

    def upload_file(self, name: str, path_or_stream: str) -> None:
        self._say(f"would upload {path_or_stream} as {name}")

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        vals = self._metrics if name is None else {name: self._metrics.get(name, [])}
        return _metric_view({k: v for k, v in vals.items() if v})

    def get_status(self) -> str:
        return "Running"


class LogPosition:
    """How far into a driver log a follower got (so it can resume)."""

    def __init__(self) -> None:
        self.offset = 0


def stream_log(ws: Workspace, run_id: str, out: TextIO, position: LogPosition | None = None,
               ended: Callable[[], bool] | None = None) -> None:
    """Copy the run's driver log to ``out`` as it grows, until the run ends
    (``ended()`` says so; by default :func:`run_has_ended`)."""
    from runyard.agent.logstream import follow
    from runyard.agent.supervisor import DRIVER_LOG, run_folder

    done = ended or run_has_ended(ws, run_id)
    pos = position or LogPosition()
    binary = getattr(out, "buffer", None)
    for chunk in follow(os.path.join(run_folder(ws, run_id), DRIVER_LOG), offset=pos.offset, done=done, poll=0.01):
        pos.offset += len(chunk)
        if binary is not None:
            binary.write(chunk)
            binary.flush()
        else:
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()


def run_has_ended(ws: Workspace, run_id: str, every: float = 0.5) -> Callable[[], bool]:
    """A check that a run has ended: its end file (a file look-up, every call),
    or the history (a database read, at most every ``every`` seconds, which
    also notices a supervisor that died without an end file)."""
    from runyard.runs import get_run, read_end

    history = ws.open_history()
    last = [0.0]

    def check() -> bool:
        if read_end(ws, run_id) is not None:
            return True
        now = time.monotonic()
        if now - last[0] < every:
            return False
        last[0] = now
        return get_run(ws, run_id, history).is_terminal

    return check


def _write_artifact(ws: Workspace, digest: str, dest: str) -> None:
    store = ws.open_store()
    tmp = f"{dest}.runyard-{os.urandom(4).hex()}"
    store.write_to(digest, tmp, 0o644)
    os.replace(tmp, dest)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
