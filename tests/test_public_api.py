"""The SDK's public surface is pinned: adding or removing a name is a decision."""

from __future__ import annotations

import runyard

EXPORTED = {
    "ArtifactError",
    "ComputeError",
    "ComputeTarget",
    "CondaDependencies",
    "Environment",
    "EnvironmentBuildError",
    "EnvironmentSpecError",
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


def _error_classes() -> dict[str, type]:
    import runyard.errors as errors

    return {name: obj for name, obj in vars(errors).items()
            if isinstance(obj, type) and issubclass(obj, errors.RunyardError)}


def test_every_error_is_defined_in_errors_py() -> None:
    """errors.py says every error a user can see is there: none is defined beside its module."""
    import ast
    from pathlib import Path

    known = set(_error_classes())
    src = Path(runyard.__file__).parent
    elsewhere = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "errors.py" and path.parent == src:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                         for b in node.bases}
                if bases & known:
                    elsewhere.append(f"{path.relative_to(src)}: {node.name}")
    assert elsewhere == []


def test_the_drawn_trees_show_every_error() -> None:
    from pathlib import Path

    import runyard.errors as errors

    sdk_doc = (Path(__file__).resolve().parents[1] / "docs" / "sdk.md").read_text(encoding="utf-8")
    for name, cls in _error_classes().items():
        assert f"+-- {name} " in errors.__doc__ or name == "RunyardError", name
        assert f"+-- {name} " in sdk_doc or name == "RunyardError", name
        assert issubclass(cls, runyard.RunyardError)


def test_moved_errors_are_still_importable_from_their_modules() -> None:
    from runyard.agent.artifacts import ArtifactError
    from runyard.agent.workdir import WorkdirError
    from runyard.data.fuse import MountError

    assert (ArtifactError, WorkdirError, MountError) == (runyard.ArtifactError, runyard.WorkdirError,
                                                         runyard.MountError)
    assert issubclass(MountError, runyard.DataError) and issubclass(WorkdirError, runyard.RunError)
