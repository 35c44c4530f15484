"""runyard: reproducible ML experiment runs on infrastructure you own.

The public SDK. Names follow Azure ML SDK v1 where a concept is the same.

>>> import runyard
>>> ws = runyard.Workspace.from_config()  # doctest: +SKIP
>>> snap = ws.snapshot("examples/quickstart")  # doctest: +SKIP
>>> snap.id  # doctest: +SKIP
"""

from __future__ import annotations

from runyard.compute.base import ComputeTarget
from runyard.config import Limits
from runyard.data.dataset import Dataset, FileDataset
from runyard.data.datastore import Datastore
from runyard.data.inputs import DataPath, DatasetConsumptionConfig, OutputFileDatasetConfig
from runyard.environment import CondaDependencies, Environment
from runyard.errors import (
    ArtifactError,
    BlobNotFoundError,
    ComputeError,
    ConfigError,
    CorruptBlobError,
    DataChangedError,
    DataError,
    DatastoreAuthError,
    DatastoreError,
    DatastoreUnreachableError,
    EnvironmentBuildError,
    EnvironmentSpecError,
    FilterError,
    HistoryError,
    MountError,
    NotFoundError,
    PropertyConflictError,
    RunError,
    RunyardError,
    SchemaVersionError,
    SnapshotError,
    SnapshotLimitError,
    StatusTransitionError,
    StoreError,
    WorkdirError,
    WorkspaceError,
)
from runyard.experiment import Experiment, ScriptRunConfig
from runyard.run import Run
from runyard.workspace import Workspace

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BlobNotFoundError",
    "ComputeError",
    "ComputeTarget",
    "CondaDependencies",
    "ConfigError",
    "CorruptBlobError",
    "DataChangedError",
    "DataError",
    "DataPath",
    "Dataset",
    "DatasetConsumptionConfig",
    "Datastore",
    "DatastoreAuthError",
    "DatastoreError",
    "DatastoreUnreachableError",
    "Environment",
    "EnvironmentBuildError",
    "EnvironmentSpecError",
    "Experiment",
    "FileDataset",
    "FilterError",
    "HistoryError",
    "Limits",
    "MountError",
    "NotFoundError",
    "OutputFileDatasetConfig",
    "PropertyConflictError",
    "Run",
    "RunError",
    "RunyardError",
    "SchemaVersionError",
    "ScriptRunConfig",
    "SnapshotError",
    "SnapshotLimitError",
    "StatusTransitionError",
    "StoreError",
    "WorkdirError",
    "Workspace",
    "WorkspaceError",
    "__version__",
]
