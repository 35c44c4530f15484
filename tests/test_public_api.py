"""The SDK's public surface is pinned: adding or removing a name is a decision."""

from __future__ import annotations

import runyard

EXPORTED = {
    "BlobNotFoundError",
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
    "Experiment",
    "FileDataset",
    "HistoryError",
    "Limits",
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
    "Workspace",
    "WorkspaceError",
    "__version__",
}


def test_exported_names_are_pinned() -> None:
    assert set(runyard.__all__) == EXPORTED
    for name in runyard.__all__:
        assert hasattr(runyard, name), name


def test_errors_share_one_base() -> None:
    for name in EXPORTED:
        obj = getattr(runyard, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, runyard.RunyardError)
    assert issubclass(runyard.SnapshotLimitError, runyard.SnapshotError)
