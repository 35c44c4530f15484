"""The run history's vocabulary: statuses and their transitions, ids and names,
and the records the history hands back. No database code (and no SQLAlchemy)
lives here, so anything may import it cheaply.

Times are Unix seconds (UTC) as floats, e.g. ``1767225600.25``: what
``time.time()`` returns, sortable, exact to well under a millisecond, and the
same in SQLite (REAL) and PostgreSQL (double precision). Render them with
``datetime.fromtimestamp(t, timezone.utc)``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, TypeAlias, TypedDict

from runyard.errors import HistoryError, StatusTransitionError

HISTORY_FILE: Final = "history.db"
"""The SQLite file inside a workspace that holds its run history by default."""

NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
"""Experiment names: 1-255 characters, letters, digits, ``_``, ``.`` and ``-``,
starting with a letter or digit (so a name is also a safe file and URL part)."""
_NAME_RE: Final = re.compile(NAME_PATTERN)
_RUN_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,319}")
_GENERATED_ID_RE: Final = re.compile(rf"(?P<experiment>{NAME_PATTERN})_(?P<seconds>[0-9]+)_(?P<token>[0-9a-f]{{8}})")
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")
MAX_KEY_LEN: Final = 255


def default_location(workspace_path: str | os.PathLike[str]) -> str:
    """Where a workspace keeps its run history when no URL is configured.

    >>> default_location("/data/.runyard")
    '/data/.runyard/history.db'
    """
    return os.path.join(os.fspath(workspace_path), HISTORY_FILE)


# -- statuses ---------------------------------------------------------------
class RunStatus(StrEnum):
    """The states of a run, named as Azure ML names them.

    >>> RunStatus.parse("running")
    <RunStatus.RUNNING: 'Running'>
    >>> RunStatus.COMPLETED.is_terminal
    True
    """

    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        """Completed, Failed and Canceled are final: nothing moves a run out of them."""
        return self in _TERMINAL

    @classmethod
    def parse(cls, value: str | RunStatus) -> RunStatus:
        """A status from its name, in any letter case (``running``, ``Running``)."""
        if isinstance(value, RunStatus):
            return value
        if not isinstance(value, str):
            raise TypeError(f"a run status is a string such as 'Running', not {type(value).__name__}")
        for status in cls:
            if status.value.lower() == value.strip().lower():
                return status
        names = ", ".join(s.value for s in cls)
        raise HistoryError(f"'{value}' is not a run status. Use one of: {names}.")


_TERMINAL: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
ACTIVE_STATUSES: Final = tuple(s for s in RunStatus if s not in _TERMINAL)
"""The non-terminal statuses, in lifecycle order."""

_S = RunStatus
_ENDS: Final = frozenset({_S.FAILED, _S.CANCELED})
TRANSITIONS: Final[Mapping[RunStatus, frozenset[RunStatus]]] = {
    # A run moves forward through the lifecycle and may skip steps (a local run
    # goes straight from NotStarted to Running). It completes only after it ran;
    # any run that has not ended can fail or be canceled. Terminal is final.
    _S.NOT_STARTED: frozenset({_S.QUEUED, _S.PREPARING, _S.RUNNING}) | _ENDS,
    _S.QUEUED: frozenset({_S.PREPARING, _S.RUNNING}) | _ENDS,
    _S.PREPARING: frozenset({_S.RUNNING}) | _ENDS,
    _S.RUNNING: frozenset({_S.FINALIZING, _S.COMPLETED}) | _ENDS,
    _S.FINALIZING: frozenset({_S.COMPLETED}) | _ENDS,
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELED: frozenset(),
}


def can_transition(current: RunStatus, new: RunStatus) -> bool:
    """Whether a run in ``current`` may be set to ``new``.

    Setting a run that has not ended to the status it already has is allowed
    (it updates the other fields); a terminal status never changes.

    >>> can_transition(RunStatus.QUEUED, RunStatus.RUNNING), can_transition(RunStatus.FAILED, RunStatus.RUNNING)
    (True, False)
    """
    if current == new:
        return not current.is_terminal
    return new in TRANSITIONS[current]


def check_transition(run_id: str, current: RunStatus, new: RunStatus) -> None:
    """Raise :class:`StatusTransitionError` unless ``current`` may become ``new``."""
    if can_transition(current, new):
        return
    if current.is_terminal:
        raise StatusTransitionError(
            f"Run '{run_id}' is already {current.value}; a run that has ended keeps its status. "
            f"Start a new run (or rerun this one) instead of setting it to {new.value}."
        )
    allowed = ", ".join(s.value for s in RunStatus if s in TRANSITIONS[current]) or "nothing"
    raise StatusTransitionError(
        f"Run '{run_id}' cannot go from {current.value} to {new.value}. "
        f"From {current.value} a run can go to: {allowed}."
    )


# -- names and ids ----------------------------------------------------------
def check_experiment_name(name: str) -> str:
    """Return ``name`` if it is a valid experiment name, else raise :class:`HistoryError`.

    >>> check_experiment_name("mnist-cnn_v2.1")
    'mnist-cnn_v2.1'
    """
    if not isinstance(name, str):
        raise TypeError(f"an experiment name is a string, not {type(name).__name__}")
    if not _NAME_RE.fullmatch(name):
        raise HistoryError(
            f"{name!r} is not a valid experiment name. Use 1-255 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (for example 'mnist-cnn')."
        )
    return name


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it can name a run (letters, digits, ``_.-``; up to 320), else raise."""
    if not isinstance(run_id, str):
        raise TypeError(f"a run id is a string, not {type(run_id).__name__}")
    if not _RUN_ID_RE.fullmatch(run_id):
        raise HistoryError(
            f"{run_id!r} is not a valid run id. Run ids use letters, digits, '_', '.' and '-' and start with a "
            "letter or digit, like 'mnist_1767225600_1a2b3c4d'. List runs with: runyard runs ls"
        )
    return run_id


def new_run_id(experiment: str, *, now: float | None = None) -> str:
    """A fresh run id: ``<experiment>_<unix-seconds>_<8 random hex digits>``.

    32 random bits per experiment and second make a clash practically
    impossible; :meth:`RunHistory.create_run` still refuses a duplicate.

    >>> rid = new_run_id("mnist", now=1767225600.9)
    >>> rid.startswith("mnist_1767225600_"), len(rid.rsplit("_", 1)[1])
    (True, 8)
    """
    check_experiment_name(experiment)
    seconds = int(time.time() if now is None else now)
    return f"{experiment}_{seconds}_{secrets.token_hex(4)}"


def parse_run_id(run_id: str) -> tuple[str, int, str] | None:
    """``(experiment, unix_seconds, token)`` of an id made by :func:`new_run_id`, else None.

    >>> parse_run_id("my_exp_1767225600_0a1b2c3d")
    ('my_exp', 1767225600, '0a1b2c3d')
    """
    m = _GENERATED_ID_RE.fullmatch(run_id)
    return (m["experiment"], int(m["seconds"]), m["token"]) if m else None


def check_key(key: str, what: str) -> str:
    """A tag, property or metric name: a non-empty string of at most 255 characters (no NUL)."""
    if not isinstance(key, str):
        raise TypeError(f"a {what} name is a string, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LEN or key != key.strip() or "\0" in key:
        raise HistoryError(
            f"{key!r} is not a valid {what} name: use 1-{MAX_KEY_LEN} characters without leading or trailing spaces "
            "(and no NUL character)."
        )
    return key


def check_string_map(values: Mapping[str, str], what: str) -> dict[str, str]:
    """Tags or properties, checked: names by :func:`check_key`, values strings."""
    out: dict[str, str] = {}
    for key, value in values.items():
        check_key(key, what)
        if not isinstance(value, str):
            raise TypeError(f"{what} {key!r} has a {type(value).__name__} value; {what} values are strings (use str())")
        if "\0" in value:  # PostgreSQL's text cannot hold one: refused on SQLite too, so both agree
            raise HistoryError(f"The value of {what} {key!r} contains a NUL character, which the run history "
                               f"cannot store: {value!r}. Remove it (or store repr() of the value).")
        out[key] = value
    return out


def parse_tags(texts: Sequence[str], *, filter: bool = False) -> dict[str, str | None]:
    """Tags written ``KEY=VALUE`` (``runyard run --tag``, ``runs ls --tag``).

    ``KEY`` alone is the tag with an empty value, or with ``filter``, any
    value (None): "runs that have this tag".

    >>> parse_tags(["lr=0.1", "baseline"]), parse_tags(["baseline"], filter=True)
    ({'lr': '0.1', 'baseline': ''}, {'baseline': None})
    """
    out: dict[str, str | None] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not key:
            raise HistoryError(f"--tag {text!r} has no key: write KEY=VALUE, e.g. --tag lr=0.1"
                               + (" (or KEY alone for any value)." if filter else "."))
        check_key(key, "tag")
        out[key] = value if sep else (None if filter else "")
    return out


# -- records ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment: a name that groups runs."""

    name: str
    created: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One run as the history holds it. Times are Unix seconds (UTC)."""

    id: str
    experiment: str
    status: RunStatus
    created: float
    started: float | None = None
    ended: float | None = None
    heartbeat: float
    """The last sign of life from the run's supervisor (set at creation and on every status change)."""
    snapshot_id: str | None = None
    source_dir: str | None = None
    script: str | None = None
    arguments: tuple[str, ...] = ()
    command_line: str | None = None
    host: str | None = None
    supervisor_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    """The number of the signal that ended the script, if one did."""
    error: str | None = None
    """The last lines of the traceback (or the reason) of a failed run."""
    python_version: str | None = None
    git_commit: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    parent_run_id: str | None = None
    compute_target: str | None = None
    working_dir: str | None = None
    environment: Mapping[str, Any] | None = None
    """The environment the run ran with (:meth:`runyard.environments.build.BuiltEnv.record`, with its
    name and registered version), or what the Python that ran it had."""
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while either is unknown."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


class RunFields(TypedDict, total=False):
    """The fields of a run that :meth:`RunHistory.create_run` and
    :meth:`RunHistory.set_status` take as keyword arguments."""

    started: float | None
    ended: float | None
    heartbeat: float
    snapshot_id: str | None
    source_dir: str | None
    script: str | None
    arguments: Sequence[str]
    command_line: str | None
    host: str | None
    supervisor_pid: int | None
    exit_code: int | None
    signal: int | None
    error: str | None
    python_version: str | None
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    compute_target: str | None
    working_dir: str | None
    environment: Mapping[str, Any] | None


RUN_FIELDS: Final = frozenset(RunFields.__annotations__)


def check_run_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The run fields as columns: unknown names refused, ``arguments`` as JSON."""
    unknown = sorted(set(fields) - RUN_FIELDS)
    if unknown:
        raise TypeError(f"unknown run field(s) {', '.join(unknown)}; known: {', '.join(sorted(RUN_FIELDS))}")
    # PostgreSQL's text cannot hold NUL: a traceback with one (the error of a failed run)
    # would never be recorded. Shown as U+FFFD instead, in SQLite too.
    out = {k: v.replace("\0", "\ufffd") if isinstance(v, str) else v for k, v in fields.items()}
    if "heartbeat" in out and not isinstance(out["heartbeat"], int | float):
        raise TypeError(f"heartbeat is a time in Unix seconds, not {out['heartbeat']!r}")
    if "arguments" in out:
        args = out["arguments"]
        if isinstance(args, str | bytes) or not all(isinstance(a, str) for a in args):
            raise TypeError("arguments is a sequence of strings, one per argument (not one string)")
        out["arguments"] = json.dumps(list(args))
    env = out.get("environment")
    if env is not None:
        if not isinstance(env, Mapping):
            raise TypeError("environment is a mapping (what the run ran with)")
        out["environment"] = json.dumps(dict(env), sort_keys=True)
    return out


# -- metrics ----------------------------------------------------------------
MetricKind: TypeAlias = Literal["scalar", "list", "row"]
METRIC_KINDS: Final[tuple[MetricKind, ...]] = ("scalar", "list", "row")
MetricValue: TypeAlias = float | int | bool | str | Sequence[Any] | Mapping[str, Any]
"""A scalar (number, bool or string), a list (``log_list``) or a row (``log_row``: name -> value)."""
MetricInput: TypeAlias = (
    tuple[str, MetricValue] | tuple[str, MetricValue, int | None] | tuple[str, MetricValue, int | None, MetricKind]
)
"""``(name, value)``, ``(name, value, step)`` or ``(name, value, step, kind)``."""


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One logged value with where and when it was logged."""

    name: str
    value: Any
    kind: MetricKind
    step: int | None
    time: float
    pid: int | None


def _json_default(obj: Any) -> Any:
    # numpy and torch values: arrays and tensors have tolist(), scalars item().
    for attr in ("tolist", "item"):
        if callable(getattr(obj, attr, None)):
            return getattr(obj, attr)()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def infer_kind(value: Any) -> MetricKind:
    """``row`` for a mapping, ``list`` for a sequence or array, else ``scalar``."""
    if isinstance(value, Mapping):
        return "row"
    if isinstance(value, str | bytes | numbers.Number):
        return "scalar"
    if isinstance(value, Sequence) or callable(getattr(value, "tolist", None)):
        return "list"
    return "scalar"


def encode_metric(name: str, value: Any, kind: str | None) -> tuple[MetricKind, float | None, str | None]:
    """``(kind, value, value_json)`` as stored: finite numbers in ``value``,
    everything else (strings, bools, NaN and infinities, lists, rows) as JSON.

    A whole number (an ``int``, not a float) is in both: ``value`` for sorting
    and charts, and ``value_json`` holds it exactly (also beyond 2**53, where a
    double is not exact), so it comes back as the int it was.

    >>> encode_metric("loss", 0.5, None), encode_metric("acc", [1, 2], None)
    (('scalar', 0.5, None), ('list', None, '[1,2]'))
    >>> encode_metric("epochs", 84, None)
    ('scalar', 84.0, '84')
    """
    check_key(name, "metric")
    k = infer_kind(value) if kind is None else kind
    if k not in METRIC_KINDS:
        raise HistoryError(f"Metric {name!r} has kind {k!r}; use one of: {', '.join(METRIC_KINDS)}.")
    if k == "scalar":
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy ints too
            whole = int(value)
            try:
                text = str(whole)
            except ValueError as exc:  # more digits than Python converts (sys.set_int_max_str_digits)
                raise HistoryError(f"Metric {name!r} is a whole number too long to store ({exc}). "
                                   "Log it as a float or a string.") from exc
            try:
                return "scalar", float(whole), text
            except OverflowError:  # beyond any double: exact in JSON only
                return "scalar", None, text
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            f = float(value)
            if math.isfinite(f):
                return "scalar", f, None
            return "scalar", None, json.dumps(f)
        if isinstance(value, bool | str):
            return "scalar", None, json.dumps(value)
        raise HistoryError(
            f"Metric {name!r} is a scalar but its value is a {type(value).__name__}. "
            "Log a number, a bool or a string, or log lists with kind 'list' and rows with kind 'row'."
        )
    if k == "row" and not isinstance(value, Mapping):
        raise HistoryError(f"Metric {name!r} is a row, so its value must be a mapping of column -> value.")
    if k == "list" and (isinstance(value, str | bytes | Mapping) or infer_kind(value) != "list"):
        raise HistoryError(f"Metric {name!r} is a list, so its value must be a sequence of values.")
    try:
        text = json.dumps(value, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"Metric {name!r} cannot be stored as JSON ({exc}). Convert its values to numbers, "
                           "strings, lists or dicts first.") from exc
    return k, None, text


def decode_metric(value: float | None, value_json: str | None) -> Any:
    """The logged value back from its stored form (a whole number as an int).

    >>> decode_metric(*encode_metric("epochs", 2**53 + 1, None)[1:])
    9007199254740993
    """
    if value_json is None:
        return value
    return json.loads(value_json)


# -- artifacts --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Artifact:
    """A file of a run in the object store: ``outputs/model.pt`` or ``logs/train.log``.

    ``digest`` is the blob's blake3 hex digest (64 characters); ``mtime`` the
    file's modification time in Unix seconds.
    """

    name: str
    size: int
    digest: str
    mtime: float | None = None

    def checked(self) -> Artifact:
        """Return self if the name is a clean relative POSIX path and digest and size are sane."""
        parts = self.name.split("/")
        if (not self.name or self.name.startswith("/") or "\\" in self.name or "\0" in self.name
                or any(p in ("", ".", "..") for p in parts)):
            raise HistoryError(
                f"{self.name!r} is not a valid artifact name. Use a relative POSIX path without '.', '..' or "
                "empty parts, such as 'outputs/model.pt'."
            )
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise HistoryError(f"Artifact {self.name!r} has size {self.size!r}; a size is a whole number of bytes.")
        if not isinstance(self.digest, str) or not _DIGEST_RE.fullmatch(self.digest):
            raise HistoryError(
                f"Artifact {self.name!r} has digest {self.digest!r}; use the blob's blake3 hex digest "
                "(64 lowercase hex digits)."
            )
        return self


@dataclass
class ChannelEntry:
    """One line of a run's script channel, parsed (see :mod:`runyard.agent.channel`)."""

    kind: str
    name: str = ""
    value: Any = None
    step: int | None = None
    metric_kind: str | None = None
    time: float = 0.0
    pid: int | None = None
    file: str = ""


__all__ = [
    "ACTIVE_STATUSES",
    "HISTORY_FILE",
    "METRIC_KINDS",
    "NAME_PATTERN",
    "TRANSITIONS",
    "Artifact",
    "ChannelEntry",
    "Experiment",
    "MetricInput",
    "MetricKind",
    "MetricPoint",
    "MetricValue",
    "RunFields",
    "RunRecord",
    "RunStatus",
    "can_transition",
    "check_experiment_name",
    "check_run_id",
    "default_location",
    "new_run_id",
    "parse_run_id",
]
