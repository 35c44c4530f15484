"""runyard: reproducible ML experiment runs on infrastructure you own.

The public SDK. Names follow Azure ML SDK v1 where a concept is the same.

>>> import runyard
>>> ws = runyard.Workspace.from_config()  # doctest: +SKIP
>>> snap = ws.snapshot("examples/quickstart")  # doctest: +SKIP
>>> snap.id  # doctest: +SKIP
"""

from __future__ import annotations

from runyard.config import Limits
from runyard.errors import (
    BlobNotFoundError,
    ConfigError,
    CorruptBlobError,
    NotFoundError,
    RunyardError,
    SnapshotError,
    SnapshotLimitError,
    StoreError,
    WorkspaceError,
)
from runyard.workspace import Workspace

__version__ = "0.1.0"

__all__ = [
    "BlobNotFoundError",
    "ConfigError",
    "CorruptBlobError",
    "Limits",
    "NotFoundError",
    "RunyardError",
    "SnapshotError",
    "SnapshotLimitError",
    "StoreError",
    "Workspace",
    "WorkspaceError",
    "__version__",
]
