"""The exception tree of runyard.

Every error a user can see is one of these; each message says what is wrong and
what to do about it. Errors of libraries runyard uses (fsspec, blake3, the OS)
are caught where they happen and re-raised as one of these with the cause
chained.

    RunyardError                    base; exit code 1 in the CLI
     +-- ConfigError                a setting has a bad value
     +-- WorkspaceError             no workspace, or a damaged one
     +-- SnapshotError              a snapshot cannot be taken
     |    +-- SnapshotLimitError    over the size or file-count limit
     |    +-- SnapshotSecretsError  likely secrets in the source, and the secrets policy is 'refuse'
     +-- StoreError                 the object store cannot be read or written
     |    +-- BlobNotFoundError     a blob or snapshot is missing from the store
     |    +-- CorruptBlobError      a blob's content does not match its hash
     +-- NotFoundError              an id or name that does not exist
     +-- UnsafePathError            a recorded name (an artifact's, a manifest's, a dataset file's)
     |                              would be written outside the folder it belongs in
     +-- HistoryError               the run history cannot be read or written,
     |    |                         or a request to it is invalid
     |    +-- SchemaVersionError    the database's schema is not this runyard's
     |    +-- StatusTransitionError a run cannot move to the status asked for
     |    +-- PropertyConflictError a run property is already set to another value
     |    +-- FilterError           a runs filter or sort cannot be read (says where, and what is allowed)
     +-- RunError                   a run cannot be submitted, started or controlled
     |    +-- WorkdirError          a run's working directory cannot be made or removed
     |    +-- ArtifactError         an artifact name is unsafe, or a run's artifacts cannot be synced
     |    +-- ComputeError          a compute target cannot be registered, found or used here
     +-- DatastoreError             a datastore cannot be registered, reached or used
     |    +-- DatastoreUnreachableError  its service did not answer (after retries)
     |    +-- DatastoreAuthError    its service refused the credentials
     +-- DataError                  a run's input or output cannot be prepared or stored
     |    +-- DataChangedError      the files under a dataset version changed since it was registered
     |    +-- MountError            a FUSE mount cannot be made, served or removed
     +-- EnvironmentSpecError       an environment's definition cannot be read or built here
          +-- EnvironmentBuildError an environment could not be built (the installer's error, what to do)

A script that fails is a run *status* (Failed), not an exception. One warning
goes with them: ``SecretsWarning`` (a ``UserWarning``), when a run's snapshot
holds likely secrets and the policy is 'warn'.
"""

from __future__ import annotations


class RunyardError(Exception):
    """Base of every error runyard raises on purpose."""

    exit_code = 1


class ConfigError(RunyardError):
    """A setting (argument, environment variable or config file) is invalid."""


class WorkspaceError(RunyardError):
    """The workspace is missing or cannot be used."""


class SnapshotError(RunyardError):
    """A snapshot of a source directory cannot be taken."""


class SnapshotLimitError(SnapshotError):
    """The source directory is over the snapshot size or file-count limit.

    ``report`` is the message without its last part, how to raise the limit,
    which names the option of the command the user called; ``over_bytes`` and
    ``over_files`` say which limit is over.
    """

    def __init__(self, message: str, *, report: str | None = None, over_bytes: bool = False,
                 over_files: bool = False) -> None:
        super().__init__(message)
        self.report = message if report is None else report
        self.over_bytes = over_bytes
        self.over_files = over_files


class SnapshotSecretsError(SnapshotError):
    """The source holds likely secrets (``.env``, keys, credential files) and
    ``snapshot.secrets`` is ``refuse``; nothing was stored. ``paths`` names them."""

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = list(paths or [])


class SecretsWarning(UserWarning):
    """A run's snapshot holds likely secrets or links that leave its source
    directory (the secrets policy is ``warn``: they were stored)."""


class StoreError(RunyardError):
    """The object store cannot be read or written."""


class BlobNotFoundError(StoreError):
    """A blob (or a snapshot's manifest) is not in the store."""


class CorruptBlobError(StoreError):
    """A blob read from the store does not hash to its name."""

    digest: str = ""
    """The blob's name (its expected hash)."""
    quarantined: str | None = None
    """Where the damaged blob was moved (``<store>/quarantine/<digest>``); None if it could not be moved."""


class NotFoundError(RunyardError):
    """An id or name does not refer to anything that exists."""


class UnsafePathError(RunyardError):
    """A recorded name (an artifact name, a manifest path, a dataset's file) is
    not a plain relative path, or would be written through a link out of its
    folder; nothing was written for it. ``name`` is the name, ``reason`` why."""

    def __init__(self, message: str, name: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason


class HistoryError(RunyardError):
    """The run history cannot be read or written, or a request to it is invalid."""


class SchemaVersionError(HistoryError):
    """The history database is older (not migrated) or newer than this runyard."""


class StatusTransitionError(HistoryError):
    """A run cannot move from its current status to the one asked for."""


class PropertyConflictError(HistoryError):
    """A run property is already set to a different value (properties are add-only)."""


class FilterError(HistoryError):
    """A filter or sort of runs (``runs ls --filter``) cannot be read: where, and what is allowed."""


class RunError(RunyardError):
    """A run cannot be submitted, started, followed or canceled."""


class WorkdirError(RunError):
    """A run's working directory cannot be made or removed (also importable from ``runyard.agent.workdir``)."""


class ArtifactError(RunError):
    """An artifact name is unsafe, or a run's artifacts cannot be synced (also in ``runyard.agent.artifacts``)."""


class ComputeError(RunError):
    """A compute target cannot be registered, found or used here (its kind's preflight says why)."""


class DatastoreError(RunyardError):
    """A datastore cannot be registered, reached or used."""


class DatastoreUnreachableError(DatastoreError):
    """The datastore's service did not answer (after retries)."""


class DatastoreAuthError(DatastoreError):
    """The datastore's service refused the credentials."""


class DataError(RunyardError):
    """A run's input or output cannot be prepared or stored."""


class DataChangedError(DataError):
    """The files under a dataset version are no longer what it recorded."""


class MountError(DataError):
    """A FUSE mount cannot be made, served or removed (also importable from ``runyard.data.fuse``)."""


class EnvironmentSpecError(RunyardError):
    """An environment's definition (requirements, conda file, interpreter, name) is wrong or
    cannot be built here."""


class EnvironmentBuildError(EnvironmentSpecError):
    """An environment could not be built: the installer's own words and what to do."""
