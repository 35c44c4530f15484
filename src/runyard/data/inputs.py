"""How a run reads and writes data: its named inputs and declared outputs.

The SDK objects (:class:`DatasetConsumptionConfig`, :class:`DataPath`,
:class:`OutputFileDatasetConfig`) and ``runyard run --input/--output`` both
become a *data plan*: plain JSON written to the run's folder at submit time,
with every dataset pinned to a version and its files listed, and every output
destination resolved. The supervisor acts on the plan (see
:mod:`runyard.data.materialize`); the history records it (lineage).

In the script's arguments an input or output stands for its local path: the
object itself in ``ScriptRunConfig.arguments``, or ``${{inputs.NAME}}`` /
``${{outputs.NAME}}`` in ``runyard run`` arguments.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from runyard.data.datastore import DEFAULT_DATASTORE, Datastore, clean_path
from runyard.errors import ConfigError

if TYPE_CHECKING:
    from runyard.data.dataset import FileDataset
    from runyard.workspace import Workspace

log = logging.getLogger("runyard")

MODES_IN: Final = ("download", "mount")
MODES_OUT: Final = ("upload", "mount")
PLAN_FILE: Final = "data.json"
DEFAULT_DESTINATION: Final = "dataset/{run-id}/{output-name}"
PLACEHOLDER_RE: Final = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEST_PLACEHOLDERS: Final = ("run-id", "output-name", "experiment", "name")
COMMON_ENV_NAMES: Final = frozenset({
    "path", "home", "user", "shell", "lang", "term", "tmp", "tmpdir", "temp", "pwd", "hostname", "pythonpath",
    "pythonhome", "ld_library_path", "ld_preload", "display", "editor", "logname", "mail", "tz",
})


def check_name(name: str, mode: str) -> str:
    """An input or output name: it becomes part of an environment variable name."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f'Invalid {mode} name "{name}". The name can only be alphanumeric characters and '
                          "underscore, and must not begin with a number (^[A-Za-z_][A-Za-z0-9_]*$).")
    if name.lower() in COMMON_ENV_NAMES:
        log.warning('%s name "%s" can be mistaken for the common environment variable %s; the script gets it as '
                    "RUNYARD_%s_%s. Consider another name.", mode.capitalize(), name, name.upper(),
                    "INPUT" if mode == "input" else "OUTPUT", name)
    return name


def placeholder(kind: str, name: str) -> str:
    return "${{" + kind + "." + name + "}}"


class Consumable:
    """What can be a run input (a dataset, a datastore path): Azure ML's three calls."""

    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(name, self)  # type: ignore[arg-type]  # (only the two subclasses)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return self.as_named_input(self._default_name()).as_download(path_on_compute)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return self.as_named_input(self._default_name()).as_mount(path_on_compute)

    def _default_name(self) -> str:
        raise NotImplementedError


class DataPath(Consumable):
    """A path (or glob) in a datastore: ``datastore.path("raw/2024")``."""

    def __init__(self, datastore: Datastore, path: str) -> None:
        self.datastore = datastore
        self.path = clean_path(path)

    def __repr__(self) -> str:
        return f"DataPath({self.datastore.name}:{self.path})"

    def _default_name(self) -> str:
        last = self.path.rstrip("/").rpartition("/")[2]
        name = re.sub(r"\W", "_", last) or self.datastore.name
        return "_" + name if name[0].isdigit() else name


class DatasetConsumptionConfig:
    """A named run input: a dataset or datastore path, downloaded or mounted."""

    def __init__(self, name: str, source: FileDataset | DataPath, mode: str = "download",
                 path_on_compute: str | None = None) -> None:
        self.name = check_name(name, "input")
        self.source = source
        if mode not in MODES_IN:
            raise ConfigError(f"Unknown input mode '{mode}': use {' or '.join(MODES_IN)}.")
        self.mode = mode
        self.path_on_compute = path_on_compute

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig({self.name!r}, {self.source!r}, mode={self.mode!r})"

    def __str__(self) -> str:
        return placeholder("inputs", self.name)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return self._with("download", path_on_compute)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return self._with("mount", path_on_compute)

    def _with(self, mode: str, path_on_compute: str | None) -> DatasetConsumptionConfig:
        other = copy.copy(self)
        other.mode = mode
        other.path_on_compute = path_on_compute if path_on_compute is not None else self.path_on_compute
        return other

    def plan(self, workspace: Workspace) -> dict[str, Any]:
        """The input as the run's data plan keeps it (a dataset pinned to its version)."""
        from runyard.data.dataset import FileDataset

        item: dict[str, Any] = {"name": self.name, "mode": self.mode, "path_on_compute": self.path_on_compute}
        src = self.source
        if isinstance(src, FileDataset):
            item.update({"kind": "dataset", "dataset": src.name, "version": src.version,
                         "sources": [s.as_dict() for s in src.sources], "files": [f.row() for f in src.files]})
        else:
            item.update({"kind": "path", "datastore": src.datastore.name, "path": src.path})
        return item


class OutputFileDatasetConfig:
    """A declared output: a local folder the script writes, stored at a
    datastore path when the run ends (upload) or as it writes (mount), and
    registered as a new dataset version only when the run completes."""

    def __init__(self, name: str | None = None, destination: tuple[Datastore, str] | None = None,
                 source: str | None = None) -> None:
        self.name = check_name(name or "output", "output")
        if destination is not None:
            if not (isinstance(destination, tuple) and len(destination) == 2
                    and isinstance(destination[0], Datastore)):
                raise ConfigError("destination is a (datastore, 'path') pair, e.g. "
                                  "(Datastore.get(ws, 'default'), 'outputs/{run-id}/{output-name}').")
            check_destination(destination[1])
        self.destination = destination
        self.source = source
        self.mode = "upload"
        self.overwrite = False
        self.source_globs: list[str] | None = None
        self.registration: dict[str, Any] | None = None
        self.resolved: tuple[str, str] | None = None
        """(datastore, path) once a run that writes it was submitted."""
        self._workspace: Workspace | None = None

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig({self.name!r}, mode={self.mode!r})"

    def __str__(self) -> str:
        return placeholder("outputs", self.name)

    def as_upload(self, overwrite: bool = False, source_globs: Sequence[str] | None = None) -> OutputFileDatasetConfig:
        self.mode, self.overwrite = "upload", bool(overwrite)
        self.source_globs = [str(g) for g in source_globs] if source_globs else None
        return self

    def as_mount(self, disable_metadata_cache: bool = False) -> OutputFileDatasetConfig:
        """Write through a FUSE mount of the destination (each file is stored when
        closed). ``disable_metadata_cache`` is accepted for Azure ML's signature;
        a writable mount always sees its own writes."""
        self.mode = "mount"
        return self

    def register_on_complete(self, name: str, description: str | None = None,
                             tags: Mapping[str, str] | None = None) -> OutputFileDatasetConfig:
        from runyard.data.dataset import check_dataset_name

        self.registration = {"name": check_dataset_name(name), "description": description,
                             "tags": dict(tags or {})}
        return self

    def as_input(self, name: str | None = None) -> DatasetConsumptionConfig:
        """This output, as an input of a later run (submit the run that writes it first)."""
        if self.resolved is None or self._workspace is None:
            raise ConfigError(f"Output '{self.name}' has no data yet: submit the run that writes it first, then "
                              "pass output.as_input() to the next run.")
        ds = Datastore.get(self._workspace, self.resolved[0])
        return DataPath(ds, self.resolved[1]).as_named_input(name or self.name)

    def plan(self, workspace: Workspace, run_id: str, experiment: str) -> dict[str, Any]:
        ds_name, raw = (self.destination[0].name, self.destination[1]) if self.destination else (
            DEFAULT_DATASTORE, DEFAULT_DESTINATION)
        Datastore.get(workspace, ds_name)  # it must exist now, not when the run ends
        path = resolve_destination(raw, run_id=run_id, output_name=self.name, experiment=experiment)
        self.resolved = (ds_name, path)
        self._workspace = workspace
        return {"name": self.name, "mode": self.mode, "datastore": ds_name, "path": path, "destination": raw,
                "overwrite": self.overwrite, "source_globs": self.source_globs, "register": self.registration,
                "path_on_compute": self.source}


def check_destination(raw: str) -> str:
    for m in re.finditer(r"\{([^{}]*)\}", raw):
        if m.group(1) not in DEST_PLACEHOLDERS:
            raise ConfigError(f"Unknown placeholder {{{m.group(1)}}} in the output destination '{raw}'. Known: "
                              f"{', '.join('{' + p + '}' for p in DEST_PLACEHOLDERS)}.")
    clean_path(re.sub(r"\{[^{}]*\}", "x", raw), what="output destination")
    return raw


def resolve_destination(raw: str, *, run_id: str, output_name: str, experiment: str) -> str:
    check_destination(raw)
    values = {"run-id": run_id, "output-name": output_name, "name": output_name, "experiment": experiment}
    path = re.sub(r"\{([^{}]*)\}", lambda m: values[m.group(1)], raw)
    path = clean_path(path, what="output destination")
    if not path:
        raise ConfigError(f"The output destination '{raw}' is the datastore's root; name a folder in it.")
    return path


# -- the command line's forms -------------------------------------------------------
def parse_input(workspace: Workspace, text: str) -> DatasetConsumptionConfig:
    """``NAME=dataset:DATASET[:VERSION][@mode]`` or ``NAME=DATASTORE:PATH[@mode]``."""
    from runyard.data.dataset import get_version

    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ConfigError(f"--input '{text}': write NAME=dataset:DATASET[:VERSION][@mount|@download] or "
                          "NAME=DATASTORE:PATH[@mount|@download].")
    source, mode = _mode(rest, MODES_IN, "--input", text)
    kind, sep, ref = source.partition(":")
    if not sep or not ref:
        raise ConfigError(f"--input '{text}': the source needs a kind, e.g. dataset:train or default:data/train.")
    src: FileDataset | DataPath
    src = get_version(workspace, ref) if kind == "dataset" else DataPath(Datastore.get(workspace, kind), ref)
    return DatasetConsumptionConfig(name, src, mode or "download")


def parse_output(workspace: Workspace, text: str) -> OutputFileDatasetConfig:
    """``NAME[=DATASTORE:PATH][@upload|@mount]``."""
    body, mode = _mode(text, MODES_OUT, "--output", text)
    name, sep, dest = body.partition("=")
    destination = None
    if sep:
        store, sep2, path = dest.partition(":")
        if not sep2 or not path:
            raise ConfigError(f"--output '{text}': the destination is DATASTORE:PATH, e.g. "
                              "default:models/{run-id}/{output-name}.")
        destination = (Datastore.get(workspace, store), path)
    out = OutputFileDatasetConfig(name, destination)
    if mode == "mount":
        out.as_mount()
    return out


def _mode(text: str, modes: Sequence[str], flag: str, whole: str) -> tuple[str, str | None]:
    body, at, mode = text.rpartition("@")
    if not at:
        return text, None
    if mode not in modes:
        raise ConfigError(f"{flag} '{whole}': unknown mode '@{mode}'; use {' or '.join('@' + m for m in modes)}.")
    return body, mode


def collect(arguments: Sequence[Any], inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()
            ) -> tuple[list[str], list[DatasetConsumptionConfig], list[OutputFileDatasetConfig]]:
    """Split a run's arguments into strings (data objects become placeholders)
    and the inputs and outputs they and the explicit lists name."""
    from runyard.data.dataset import FileDataset

    ins: dict[str, DatasetConsumptionConfig] = {}
    outs: dict[str, OutputFileDatasetConfig] = {}

    def add(obj: Any) -> str | None:
        if isinstance(obj, FileDataset | DataPath):
            obj = obj.as_download()
        if isinstance(obj, DatasetConsumptionConfig):
            other = ins.get(obj.name)
            if other is not None and other is not obj and (other.source, other.mode) != (obj.source, obj.mode):
                raise ConfigError(f"Two different inputs are named '{obj.name}'; give each its own name.")
            ins[obj.name] = obj
            return str(obj)
        if isinstance(obj, OutputFileDatasetConfig):
            other_out = outs.get(obj.name)
            if other_out is not None and other_out is not obj:
                raise ConfigError(f"Two different outputs are named '{obj.name}'; give each its own name.")
            outs[obj.name] = obj
            return str(obj)
        return None

    args = []
    for a in arguments:
        text = add(a)
        args.append(text if text is not None else str(a))
    for obj in [*inputs, *outputs]:
        if add(obj) is None:
            raise ConfigError(f"{obj!r} is not a run input or output.")
    clash = set(ins) & set(outs)
    if clash:
        raise ConfigError(f"'{sorted(clash)[0]}' names both an input and an output; give each its own name.")
    for a in args:
        for m in PLACEHOLDER_RE.finditer(a):
            kind, name = m.groups()
            if name not in (ins if kind == "inputs" else outs):
                raise ConfigError(f"The argument '{a}' refers to {kind[:-1]} '{name}', which the run does not "
                                  f"have. Add --{kind[:-1]} {name}=...")
    return args, list(ins.values()), list(outs.values())


__all__ = [
    "DataPath",
    "DatasetConsumptionConfig",
    "OutputFileDatasetConfig",
    "check_name",
    "collect",
    "parse_input",
    "parse_output",
    "resolve_destination",
]
