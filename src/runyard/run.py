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
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from runyard.errors import NotFoundError, RunError

if TYPE_CHECKING:
    from runyard.environment import Environment
    from runyard.history import MetricPoint, RunRecord
    from runyard.history.model import Artifact
    from runyard.history.store import RunHistory
    from runyard.store.base import ObjectStore
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
        channel = os.environ.get("RUNYARD_CHANNEL")
        from runyard.workspace import Workspace

        if run_id and channel:  # inside a run: reports go through its channel (see runyard.agent.channel)
            return ScriptRun(Workspace(ws_path) if ws_path else None, run_id, channel)
        if not run_id or not ws_path:
            return OfflineRun()
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
        """The run as a dict, with Azure ML's names where it has them: ``runId``,
        ``status``, ``startTimeUtc``, ``endTimeUtc``, ``target``, ``properties``,
        ``inputDatasets``, ``outputDatasets``; and ``experiment``, ``script``,
        ``arguments``, ``commandLine``, ``pythonVersion``, ``parentRunId`` (the run
        a rerun came from), ``snapshotId``, ``exitCode``, ``signal``, ``error``,
        ``tags``, ``git``, ``host``, ``environment`` (what it ran with: its definition and every package
        pinned)."""
        r = self._record()
        return {
            **run_summary(r),
            "target": r.compute_target,
            "snapshotId": r.snapshot_id,
            "commandLine": r.command_line,
            "pythonVersion": r.python_version,
            "exitCode": r.exit_code,
            "signal": r.signal,
            "error": r.error,
            "properties": dict(r.properties),
            "git": {"commit": r.git_commit, "branch": r.git_branch, "dirty": r.git_dirty},
            "host": r.host,
            "inputDatasets": self._lineage("input"),
            "outputDatasets": self._lineage("output"),
            "environment": None if r.environment is None else dict(r.environment),
        }

    def get_environment(self) -> Environment:
        """The environment the run ran with, as it ran (``packages``: every package pinned,
        ``python_version``, ``platform``); for a run without one, the Python that ran it, as a
        user-managed environment. ``RunError`` before the run has started."""
        from runyard.environment import Environment
        from runyard.errors import RunError

        record = self._record().environment
        if not record:
            raise RunError(f"Run {self.id} has not started yet (or ran before runyard recorded environments): "
                           "no environment to show.")
        if record.get("spec"):
            from runyard.environments.spec import EnvSpec

            env = Environment._of(EnvSpec.from_dict(record["spec"]))
        else:
            env = Environment("runyard-python")
            env.python.user_managed_dependencies = True
            env.python.interpreter_path = record.get("python")
        env.version = record.get("version")
        env.packages = list(record.get("packages") or [])
        env.python_version = record.get("python_version")
        env.platform = record.get("platform")
        return env

    def _lineage(self, direction: str) -> list[dict[str, Any]]:
        from runyard.history.catalog import DataCatalog

        return [{"name": d.name, "mode": d.mode, "dataset": d.dataset, "version": d.version,
                 "datastore": d.datastore, "path": d.path, "state": d.state, **d.detail}
                for d in DataCatalog(self.history).run_data(self.id) if d.direction == direction]

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """``{name: value}`` for a metric logged once, ``{name: [values...]}`` for
        one logged more often (as Azure ML). Whole numbers come back as ints."""
        return _metric_view(self.history.get_metrics(self.id, None if name is None else [name]))

    def get_metric_points(self, name: str | None = None) -> list[MetricPoint]:
        """Every logged value of the run (or of metric ``name``) in the order they
        were logged, each with its ``step`` (None where none was given), ``time``
        and ``kind``: what ``get_metrics`` leaves out.

        >>> [(p.step, p.value) for p in run.get_metric_points("loss")]  # doctest: +SKIP
        [(0, 0.9), (1, 0.4)]
        """
        return self.history.get_metric_points(self.id, name)

    def get_tags(self) -> dict[str, str]:
        return dict(self._record().tags)

    def get_properties(self) -> dict[str, str]:
        return dict(self._record().properties)

    def get_file_names(self) -> list[str]:
        return [a.name for a in self.history.list_artifacts(self.id)]

    def download_file(self, name: str, output_file_path: str | None = None) -> str:
        """Download one artifact; returns the local path.

        Without ``output_file_path`` (or with a folder there) the file takes the
        last part of the artifact's name. A recorded name that is not a plain
        relative path (``../x``: runyard never records one) is then refused with
        ``UnsafePathError``; naming the file saves its bytes anyway.
        """
        from runyard.errors import UnsafePathError
        from runyard.paths import join_under, name_problem

        art = {a.name: a for a in self.history.list_artifacts(self.id)}.get(name)
        if art is None:
            raise NotFoundError(f"Run {self.id} has no artifact '{name}'. "
                                f"List them with: runyard artifacts ls {self.id}")
        if output_file_path and not os.path.isdir(output_file_path):
            dest = output_file_path  # the user named the file: the recorded name plays no part
        else:
            problem = name_problem(name)
            if problem is not None:
                raise UnsafePathError(
                    f"Artifact {name!r} of run {self.id} is not a plain relative name ({problem}), so it cannot "
                    "name a file; nothing was written. runyard never records such a name: something else wrote "
                    "it into the run history. To save its bytes anyway, name the file: "
                    f"Run(ws, '{self.id}').download_file({name!r}, output_file_path='FILE').",
                    name=name, reason=problem)
            base = name.rpartition("/")[2]
            join_under(output_file_path or ".", base)  # refuses a link there that leads out
            dest = os.path.join(output_file_path, base) if output_file_path else base
        _write_artifact(self.workspace.open_store(), self.id, art, dest)
        return dest

    def download_files(self, prefix: str | None = None, output_directory: str | None = None,
                       pattern: str | None = None) -> list[str]:
        """Download artifacts (under ``prefix``, or matching a glob ``pattern``)
        into ``output_directory`` keeping their names; returns the paths.

        Nothing is written outside ``output_directory``: an artifact whose
        recorded name is not a plain relative path, or whose path would go
        through a symbolic link there that leads out, is not written; nor is one
        whose blob is missing or damaged. The others are downloaded, then one
        error (``UnsafePathError``, ``CorruptBlobError`` or
        ``BlobNotFoundError``, the first problem's kind) names every artifact
        left out and what to do.
        """
        from runyard.errors import BlobNotFoundError, CorruptBlobError, RunyardError, UnsafePathError
        from runyard.paths import Under, name_problem

        out = output_directory or "."
        under = Under(out)
        store = self.workspace.open_store()
        paths: list[str] = []
        failed: list[tuple[RunyardError, str, str]] = []  # (error, line, what to do)
        for art in self.history.list_artifacts(self.id, prefix=prefix):
            if pattern and not fnmatch.fnmatchcase(art.name, pattern):
                continue
            problem = name_problem(art.name)
            if problem is not None:
                failed.append((UnsafePathError(problem, name=art.name, reason=problem), f"{art.name!r}: {problem}",
                               "runyard never records such a name: something else wrote it into the run history. "
                               f"To save its bytes anyway, name the file: Run(ws, '{self.id}').download_file(NAME, "
                               "output_file_path='FILE')."))
                continue
            try:
                dest = under.join(art.name)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                _write_artifact(store, self.id, art, dest)
            except UnsafePathError as exc:  # a link in the folder leads out
                failed.append((exc, f"{art.name!r}: {exc.reason}", "Remove that link, or download into another "
                               "folder."))
                continue
            except (BlobNotFoundError, CorruptBlobError) as exc:
                failed.append((exc, str(exc), ""))  # the message names the artifact and what to do
                continue
            except OSError as exc:
                failed.append((RunError(str(exc)), f"{art.name!r}: {exc.strerror} ({exc.filename})",
                               "Free that path (a file where a folder must go, or no permission), or download "
                               "into another folder."))
                continue
            paths.append(os.path.join(out, *art.name.split("/")))
        if failed:
            lines = "\n".join(f"  {line}" for _, line, _ in failed)
            todos = " ".join(dict.fromkeys(todo for _, _, todo in failed if todo))
            done = (f"The other {len(paths)} artifact{'s were' if len(paths) > 1 else ' was'} downloaded into "
                    f"'{out}'." if paths else "No other artifact was downloaded.")
            n = len(failed)
            # The gravest problem gives the error its kind: lost data before a refused name.
            worst = min(failed, key=lambda f: next(
                i for i, kind in enumerate((CorruptBlobError, BlobNotFoundError, UnsafePathError, RunyardError))
                if isinstance(f[0], kind)))[0]
            err = type(worst)(f"{n} artifact{'s' if n > 1 else ''} of run {self.id} "
                              f"{'were' if n > 1 else 'was'} not downloaded, and nothing was written for "
                              f"{'them' if n > 1 else 'it'}:\n{lines}\n{done} {todos}".rstrip())
            if isinstance(worst, CorruptBlobError) and isinstance(err, CorruptBlobError):
                err.digest, err.quarantined = worst.digest, worst.quarantined
            raise err from worst
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


_OFFLINE_HINT = "Run the script with runyard (runyard run SCRIPT, or Experiment.submit) to record it."


class ScriptRun(Run):
    """The script's own run, as ``Run.get_context()`` gives it inside a run: what the script
    reports (metrics, tags, properties, files) goes to the run's channel, a file the
    supervisor takes in (:mod:`runyard.agent.channel`), never straight to the history. So
    ``run.log()`` is fast (no database write), never waits for a locked history, and works
    where the history cannot be reached (a sandbox). Reading the run (metrics so far, details)
    needs the history, and is refused inside a sandbox."""

    _writers: ClassVar[dict[tuple[int, str], Any]] = {}

    def __init__(self, workspace: Workspace | None, run_id: str, channel: str) -> None:
        self.workspace = workspace  # type: ignore[assignment]  # None inside a sandbox: reads are refused
        self.id = run_id
        self._history = None
        self._channel = channel

    def _writer(self) -> Any:
        from runyard.agent.channel import ChannelWriter

        key = (os.getpid(), self._channel)  # a forked process gets its own descriptor
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = ChannelWriter(self._channel)
        return writer

    @property
    def history(self) -> RunHistory:
        if self.workspace is None or not os.path.isdir(self.workspace.path):
            raise RunError("This run cannot read the run history from inside its sandbox: a script there can "
                           "report (log, tag, add_properties, upload_file) but not read runs. Read them outside, "
                           f"e.g. runyard runs show {self.id}")
        return super().history

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        """Log a value of a metric (call again to add points)."""
        self._writer().metric(name, value, step)

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        self._writer().metric(name, list(value), None, "list")

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        self._writer().metric(name, dict(kwargs), None, "row")

    def tag(self, key: str, value: str | None = None) -> None:
        self._writer().tag(key, "" if value is None else str(value))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._writer().tag(key, str(value))

    def add_properties(self, properties: Mapping[str, str]) -> None:
        """Add properties (add-only: a key set before keeps its first value)."""
        self._writer().properties({k: str(v) for k, v in properties.items()})

    def upload_file(self, name: str, path_or_stream: str) -> None:
        """Store a local file as the artifact ``name`` of this run (when the supervisor takes it in)."""
        from runyard.history import Artifact

        Artifact(name, 0, "0" * 64).checked()  # a bad name is refused now, not later
        self._writer().upload(name, path_or_stream)


class OfflineRun(Run):
    """What ``Run.get_context()`` gives outside a run: it prints instead of
    logging, and keeps what it was told in memory, so that every method of
    :class:`Run` works (reads give back what this process logged; there are no
    artifacts and nothing to cancel or wait for).

    >>> run = OfflineRun()
    >>> run.log("epochs", 3)                     # doctest: +SKIP
    >>> run.get_details()["status"]
    'Running'
    """

    def __init__(self) -> None:
        self.id = f"OfflineRun_{os.getpid()}"
        self._points: list[MetricPoint] = []
        self._tags: dict[str, str] = {}
        self._properties: dict[str, str] = {}
        self._started = time.time()

    def _say(self, text: str) -> None:
        print(f"[runyard offline run] {text}", file=sys.stderr)

    @property
    def experiment(self) -> str:
        return "offline"

    @property
    def history(self) -> RunHistory:
        raise RunError(f"An offline run (a script started outside runyard) has no run history. {_OFFLINE_HINT}")

    def _data_paths(self, direction: str) -> dict[str, str]:
        return {}

    def _keep(self, name: str, value: Any, step: int | None, kind: Any) -> None:
        from runyard.history import MetricPoint
        from runyard.history.model import encode_metric

        kind, _, _ = encode_metric(name, value, kind)  # the checks a run's history makes
        self._points.append(MetricPoint(name, value, kind, step, time.time(), os.getpid()))

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        self._keep(name, value, step, None)
        self._say(f"{name} = {value!r}" + (f" (step {step})" if step is not None else ""))

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        values = list(value)
        self._keep(name, values, None, "list")
        self._say(f"{name} = {values!r}")

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        self._keep(name, dict(kwargs), None, "row")
        self._say(f"{name} = {dict(kwargs)!r}")

    def tag(self, key: str, value: str | None = None) -> None:
        self._tags[key] = "" if value is None else str(value)
        self._say(f"tag {key} = {value!r}")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})
        self._say(f"tags {dict(tags)!r}")

    def add_properties(self, properties: Mapping[str, str]) -> None:
        from runyard.errors import PropertyConflictError

        props = {k: str(v) for k, v in properties.items()}
        clashes = sorted(k for k, v in props.items() if self._properties.get(k, v) != v)
        if clashes:
            raise PropertyConflictError(f"The offline run already has properties {', '.join(clashes)} with other "
                                        "values. Properties cannot change once set; use a tag for a value that "
                                        "changes.")
        self._properties.update(props)
        self._say(f"properties {props!r}")

    def upload_file(self, name: str, path_or_stream: str) -> None:
        self._say(f"would upload {path_or_stream} as {name}")

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        values: dict[str, list[Any]] = {}
        for p in self._points:
            if name is None or p.name == name:
                values.setdefault(p.name, []).append(p.value)
        return _metric_view(dict(sorted(values.items())))

    def get_metric_points(self, name: str | None = None) -> list[MetricPoint]:
        return [p for p in self._points if name is None or p.name == name]

    def get_status(self) -> str:
        return "Running"

    def get_details(self) -> dict[str, Any]:
        return {
            "runId": self.id, "experiment": self.experiment, "status": self.get_status(),
            "createdTimeUtc": _iso(self._started), "startTimeUtc": _iso(self._started), "endTimeUtc": None,
            "durationSeconds": None, "script": sys.argv[0] if sys.argv and sys.argv[0] else None,
            "arguments": list(sys.argv[1:]), "tags": dict(self._tags), "parentRunId": None, "target": "offline",
            "snapshotId": None, "commandLine": None, "pythonVersion": sys.version.split()[0], "exitCode": None,
            "signal": None, "error": None, "properties": dict(self._properties),
            "git": {"commit": None, "branch": None, "dirty": None}, "host": os.uname().nodename,
            "inputDatasets": [], "outputDatasets": [],
        }

    def get_environment(self) -> Environment:
        """The Python this script runs with (an offline run has no recorded environment)."""
        from runyard.environment import Environment

        env = Environment("offline-python")
        env.python.user_managed_dependencies = True
        env.python.interpreter_path = sys.executable
        env.python_version = sys.version.split()[0]
        return env

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags)

    def get_properties(self) -> dict[str, str]:
        return dict(self._properties)

    def get_file_names(self) -> list[str]:
        return []  # upload_file only says what it would store

    def download_file(self, name: str, output_file_path: str | None = None) -> str:
        raise NotFoundError(f"An offline run has no artifact '{name}': it stores no files. {_OFFLINE_HINT}")

    def download_files(self, prefix: str | None = None, output_directory: str | None = None,
                       pattern: str | None = None) -> list[str]:
        return []

    def cancel(self) -> None:
        self._say("cancel: an offline run is this process; nothing else to cancel")

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = False,
                            raise_on_error: bool = True, stream: TextIO | None = None) -> dict[str, Any]:
        return self.get_details()  # the script itself is the run: nothing to wait for


class LogPosition:
    """How far into a driver log a follower got (so it can resume)."""

    def __init__(self) -> None:
        self.offset = 0


def stream_log(ws: Workspace, run_id: str, out: TextIO, position: LogPosition | None = None,
               ended: Callable[[], bool] | None = None) -> None:
    """Copy the run's driver log to ``out`` as it grows, until the run ends
    (``ended()`` says so; by default :func:`run_has_ended`)."""
    from runyard.agent.folder import RunFolder
    from runyard.agent.logstream import follow

    done = ended or run_has_ended(ws, run_id)
    pos = position or LogPosition()
    binary = getattr(out, "buffer", None)
    for chunk in follow(RunFolder.of(ws.path, run_id).driver_log, offset=pos.offset, done=done, poll=0.01):
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


def _write_artifact(store: ObjectStore, run_id: str, art: Artifact, dest: str) -> None:
    """Write an artifact's verified blob to ``dest`` (through a temporary name);
    a missing or damaged blob is reported as that artifact of that run."""
    from runyard.errors import BlobNotFoundError, CorruptBlobError

    tmp = f"{dest}.runyard-{os.urandom(4).hex()}"
    lost = (f"The stored copy is lost; the file may still be in the run's working directory (if it was kept) or "
            f"be made again from the run's source: rerun it with: runyard rerun {run_id}")
    try:
        store.write_to(art.digest, tmp, 0o644)
        os.replace(tmp, dest)
    except CorruptBlobError as exc:
        moved = (f"runyard moved it to '{exc.quarantined}' for inspection" if exc.quarantined
                 else "it could not be moved to quarantine/")
        err = CorruptBlobError(f"Artifact {art.name!r} of run {run_id} is damaged: its blob {art.digest[:12]} in "
                               f"the store at {store.url} does not match its hash, and {moved}. {lost}.")
        err.digest, err.quarantined = exc.digest, exc.quarantined
        raise err from exc
    except BlobNotFoundError as exc:
        raise BlobNotFoundError(
            f"Artifact {art.name!r} of run {run_id} cannot be downloaded: its blob {art.digest[:12]} is missing "
            f"from the store at {store.url} (removed, or moved to {store.quarantine_location(art.digest)} when "
            f"an earlier read found it damaged). {lost}.") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def run_summary(r: RunRecord) -> dict[str, Any]:
    """The fields of a run that ``runyard runs ls --json`` prints (and ``get_details`` starts with)."""
    return {
        "runId": r.id,
        "experiment": r.experiment,
        "status": r.status.value,
        "createdTimeUtc": _iso(r.created),
        "startTimeUtc": _iso(r.started),
        "endTimeUtc": _iso(r.ended),
        "durationSeconds": None if r.duration is None else round(r.duration, 3),
        "script": r.script,
        "arguments": list(r.arguments),
        "tags": dict(r.tags),
        "parentRunId": r.parent_run_id,
    }


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
