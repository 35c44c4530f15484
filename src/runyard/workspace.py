"""The workspace: one folder holding the config, the object store and caches.

Found in this order: an explicit path (``--workspace`` / ``Workspace(path)``),
``RUNYARD_WORKSPACE``, a ``.runyard/`` folder in the current directory or any
parent, then ``~/.runyard`` (made on first use, so runyard works on a fresh
machine with nothing set up).

Layout::

    .runyard/
      .gitignore       "*": git leaves the whole workspace out (made by ``runyard init``)
      config.toml      settings ([snapshot] max_bytes, max_files, secrets; [store] url; [history] url;
                       [data] cache_max_bytes)
      history.db       run history, datastores, datasets (SQLite; a PostgreSQL URL can stand in)
      credentials.json datastore credentials (mode 0600; never in the history)
      store/           the default object store (snapshots, artifacts)
      datastore/       the ``default`` datastore's folder
      runs/            per-run folders: request, live logs, working dir while it runs (see runyard.agent.folder)
      active/          a marker per unfinished run, locked by whoever looks after it
      downloads/       ``runyard artifacts download`` without -o: downloads/<run id>/
      cache/           stat caches, snapshot layers, downloaded inputs (safe to delete)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from runyard.config import ENV_HISTORY_URL, ENV_WORKSPACE, check_key, coerce_setting, dump_toml
from runyard.errors import ConfigError, WorkspaceError

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.snapshot.engine import RestoreResult, SnapshotResult
    from runyard.store.base import ObjectStore

DIR_NAME: Final = ".runyard"
CONFIG_NAME: Final = "config.toml"
FORMAT_VERSION: Final = 1
GITIGNORE_TEXT: Final = "# Made by runyard: this workspace (history, store, credentials) stays out of git.\n*\n"


def _is_workspace(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_NAME))


def _explicit(path: str, where: str) -> str:
    p = os.path.abspath(os.path.expanduser(path))
    if _is_workspace(p):
        return p
    inner = os.path.join(p, DIR_NAME)
    if _is_workspace(inner):
        return inner
    parent = os.path.dirname(p) if os.path.basename(p) == DIR_NAME else p
    raise WorkspaceError(f"No runyard workspace at '{p}' (from {where}). Create one with: runyard init '{parent}'")


def find_workspace(
    explicit: str | None = None, *, start: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The workspace folder to use, or None when there is none yet.

    An explicit path or ``RUNYARD_WORKSPACE`` that does not hold a workspace
    is an error (a typo must not silently fall back to another workspace).
    """
    env = os.environ if env is None else env
    if explicit:
        return _explicit(explicit, "--workspace")
    if env.get(ENV_WORKSPACE):
        return _explicit(env[ENV_WORKSPACE], ENV_WORKSPACE)
    d = os.path.abspath(start or os.getcwd())
    while True:
        cand = os.path.join(d, DIR_NAME)
        if _is_workspace(cand):
            return cand
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    home = os.path.join(os.path.expanduser("~"), DIR_NAME)
    return home if _is_workspace(home) else None


def home_workspace_path() -> str:
    return os.path.join(os.path.expanduser("~"), DIR_NAME)


def created_notice(path: str) -> str:
    """What runyard says once, when it made the home workspace because there was none."""
    return f"runyard: created the workspace {path} (make a project one with: runyard init)"


DATASTORE_URL: Final = "datastore://"


class Workspace:
    """A runyard workspace. The constructor does no I/O.

    >>> import tempfile
    >>> ws = Workspace.create(tempfile.mkdtemp())
    >>> os.path.basename(ws.path)
    '.runyard'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Workspace({self.path!r})"

    # -- finding and making -------------------------------------------------
    @classmethod
    def create(cls, directory: str | os.PathLike[str] = ".", *, exist_ok: bool = True) -> Workspace:
        """Make ``DIRECTORY/.runyard`` (or use ``directory`` if it is named ``.runyard``)."""
        d = os.path.abspath(os.fspath(directory))
        path = d if os.path.basename(d) == DIR_NAME else os.path.join(d, DIR_NAME)
        if _is_workspace(path):
            if not exist_ok:
                raise WorkspaceError(f"A workspace already exists at '{path}'.")
            ws = cls(path)
            ws.migrate()  # an older workspace gains what this runyard adds
            return ws
        try:
            os.makedirs(os.path.join(path, "cache"), exist_ok=True)
            ws = cls(path)
            ws._write_config({"workspace": {"format": FORMAT_VERSION}})
        except OSError as exc:
            raise WorkspaceError(f"Cannot create a workspace at '{path}': {exc.strerror}. "
                                 "Check the path and its permissions.") from exc
        ws.migrate()
        return ws

    def _write_gitignore(self) -> None:
        # The workspace ignores itself, as a Python venv does: a `git add -A` in
        # the project must never commit the history, the store or credentials.json.
        # A .gitignore the user wrote is left as it is.
        path = os.path.join(self.path, ".gitignore")
        if os.path.lexists(path):
            return
        try:
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(GITIGNORE_TEXT)
        except FileExistsError:  # another `runyard init` wrote it meanwhile
            pass

    def migrate(self) -> list[int]:
        """Bring the workspace up to date (what ``runyard init`` does): the run
        history's schema, and the ``.gitignore`` that keeps the workspace out of git."""
        from runyard.history import migrate

        try:
            self._write_gitignore()
        except OSError as exc:
            raise WorkspaceError(f"Cannot write '{os.path.join(self.path, '.gitignore')}': {exc.strerror}. "
                                 "Check the workspace folder's permissions.") from exc
        return migrate(self.history_location)

    @classmethod
    def from_config(cls, path: str | None = None, *, create_default: bool = True,
                    quiet: bool = False) -> Workspace:
        """Find the workspace as the CLI does (explicit > env > upward > ``~/.runyard``).

        When there is none, ``~/.runyard`` is made and a line on stderr says so
        (as the CLI does; ``quiet=True`` leaves it out). With
        ``create_default=False`` a missing workspace raises ``WorkspaceError``.
        """
        found = find_workspace(path)
        if found is not None:
            return cls(found)
        if not create_default:
            raise WorkspaceError("No runyard workspace found. Create one with: runyard init")
        ws = cls.create(os.path.dirname(home_workspace_path()))
        if not quiet:
            import sys

            print(created_notice(ws.path), file=sys.stderr)
        return ws

    # -- config -------------------------------------------------------------
    @property
    def config_path(self) -> str:
        return os.path.join(self.path, CONFIG_NAME)

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            try:
                with open(self.config_path, "rb") as fh:
                    self._config = tomllib.load(fh)
            except FileNotFoundError:
                raise WorkspaceError(f"'{self.path}' is not a runyard workspace (no {CONFIG_NAME}). "
                                     "Create one with: runyard init") from None
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{self.config_path} is not valid TOML ({exc}). Fix or delete the line.") from exc
        return self._config

    def _write_config(self, doc: Mapping[str, Any]) -> None:
        text = dump_toml(doc)  # first: a document it cannot write leaves the file alone
        tmp = f"{self.config_path}.{os.urandom(8).hex()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.config_path)
        self._config = None

    def get_setting(self, key: str) -> Any:
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def set_setting(self, key: str, value: str | None) -> None:
        """Set (or with None, remove) a known setting such as ``snapshot.max_bytes``."""
        section, _, name = key.partition(".")
        doc = {k: dict(v) if isinstance(v, dict) else v for k, v in self.config.items()}
        if value is None:
            check_key(key)
            doc.get(section, {}).pop(name, None)
        else:
            doc.setdefault(section, {})[name] = coerce_setting(key, value)
        self._write_config(doc)

    # -- parts --------------------------------------------------------------
    @property
    def store_url(self) -> str:
        """``store.url`` from the config (a relative path is relative to the
        workspace folder, ``~`` is expanded), else ``<workspace>/store``."""
        url = self.get_setting("store.url")
        return self._local_path(str(url)) if url else os.path.join(self.path, "store")

    def _local_path(self, location: str) -> str:
        if "://" in location:
            return location
        return os.path.normpath(os.path.join(self.path, os.path.expanduser(location)))

    def open_store(self) -> ObjectStore:
        """The object store: ``store.url`` may also be ``datastore://NAME/PREFIX``,
        a folder in a registered datastore (with its credentials)."""
        url = self.store_url
        if url.startswith(DATASTORE_URL):
            from runyard.data.datastore import Datastore, clean_path
            from runyard.store.fs import FsspecStore

            name, _, prefix = url[len(DATASTORE_URL):].partition("/")
            ds = Datastore.get(self, name)
            return FsspecStore.on(ds.fs, ds.full_path(clean_path(prefix, what="store prefix")), url)
        from runyard.store import open_store

        return open_store(url)

    @property
    def history_location(self) -> str:
        """``RUNYARD_HISTORY_URL``, else ``history.url`` in the config, else ``<workspace>/history.db``."""
        env = os.environ.get(ENV_HISTORY_URL, "").strip()
        if env:
            return env
        url = self.get_setting("history.url")
        return self._local_path(str(url)) if url else os.path.join(self.path, "history.db")

    def open_history(self) -> RunHistory:
        """The run history, checked to be at this runyard's schema version."""
        from runyard.history import RunHistory

        return RunHistory.open(self.history_location)

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.path, "runs")

    @property
    def downloads_dir(self) -> str:
        """Where ``runyard artifacts download`` puts a run's files when not told
        where: inside the workspace, which no snapshot ever takes in."""
        return os.path.join(self.path, "downloads")

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.path, "cache")

    # -- snapshots ----------------------------------------------------------
    def snapshot(
        self,
        source_directory: str | os.PathLike[str],
        *,
        max_bytes: int | str | None = None,
        max_files: int | str | None = None,
        progress: Any = None,
        secrets: str | None = None,
    ) -> SnapshotResult:
        """Take a snapshot of ``source_directory`` into this workspace's store.

        Limits: the arguments, else ``RUNYARD_SNAPSHOT_MAX_*``, else the
        workspace config, else 300 MiB and 2000 files (0 turns a limit off).
        ``secrets`` (``warn`` or ``refuse``; else ``RUNYARD_SNAPSHOT_SECRETS``,
        else ``snapshot.secrets``, else ``warn``): with ``refuse``, a tree that
        holds likely secrets raises ``SnapshotSecretsError`` and stores nothing;
        with ``warn`` the result lists them in ``secrets``.
        """
        from runyard.config import resolve_limits, resolve_secrets_policy
        from runyard.snapshot.engine import take_snapshot

        limits = resolve_limits(max_bytes=max_bytes, max_files=max_files, config=self.config)
        policy = resolve_secrets_policy(secrets, config=self.config)
        return take_snapshot(
            source_directory,
            self.open_store(),
            limits=limits,
            cache_dir=self.cache_dir,
            # The workspace and a local store kept elsewhere never go into a snapshot.
            exclude_dirs=(self.path, *(() if "://" in self.store_url else (self.store_url,))),
            progress=progress,
            secrets_policy=policy,
        )

    def restore_snapshot(self, snapshot_id: str, dest: str | os.PathLike[str]) -> RestoreResult:
        """Make the snapshot's tree, byte for byte, in the new or empty folder ``dest``."""
        from runyard.snapshot.engine import restore

        store = self.open_store()
        return restore(store, store.resolve_snapshot(snapshot_id), dest)


def workspace_for_source_listing(explicit: str | None) -> str | None:
    """The workspace folder to keep out of a listing, if one can be found; never makes one."""
    try:
        return find_workspace(explicit)
    except WorkspaceError:
        return None


__all__ = ["Workspace", "find_workspace", "home_workspace_path"]
