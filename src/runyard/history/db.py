"""Connections to a run history database, and the transactions on them.

A :class:`Database` is a location (a path to a SQLite file, or a SQLAlchemy
URL such as ``postgresql+psycopg://user@host/runyard``) plus an engine made on
first use, one per process.

Transactions are short and are functions of a connection, run by
:meth:`Database.read` and :meth:`Database.write`, so that a write that finds
the database locked can be run again from the start:

* SQLite runs in WAL mode (readers never block the writer), with
  ``synchronous=NORMAL`` (durable at every checkpoint, safe against
  corruption), ``foreign_keys=ON`` and a 30 s ``busy_timeout``, all set when a
  connection opens.
* pysqlite's own transaction handling is switched off and runyard emits
  ``BEGIN`` itself (SQLAlchemy's documented recipe): ``BEGIN IMMEDIATE`` for
  writes, so a writer takes the write lock first and waits for it in SQLite's
  busy handler, instead of failing with "database is locked" when it upgrades
  a read lock; plain ``BEGIN`` for reads, so one read sees one snapshot.
* If a write still finds the database locked (another writer held it past the
  busy timeout), it is retried a few times with jittered exponential backoff,
  then reported as a :class:`HistoryError` that says what to check.

Every SQLAlchemy and driver error leaves this module as a
:class:`HistoryError` with the cause chained.
"""

from __future__ import annotations

import os
import random
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from runyard.errors import HistoryError

T = TypeVar("T")

BUSY_TIMEOUT: Final = 30.0
"""Seconds a SQLite connection waits for a lock before the retry below starts."""
LOCK_RETRIES: Final = 5
"""Extra attempts of a transaction that found the database locked."""
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 2.0
SUPPORTED: Final = ("sqlite", "postgresql")
_WRITE: Final = "runyard_write"
# PostgreSQL errors that mean "try the transaction again": serialization
# failure, deadlock, lock not available.
_PG_RETRY: Final = frozenset({"40001", "40P01", "55P03"})


def to_url(location: str | os.PathLike[str]) -> URL:
    """The SQLAlchemy URL of a path (a SQLite file) or of a URL string.

    >>> to_url("/data/.runyard/history.db").render_as_string()
    'sqlite:////data/.runyard/history.db'
    """
    text = os.fspath(location)
    if "://" not in text:
        # A path: made absolute now, so a later chdir does not move the database.
        return URL.create("sqlite", database=os.path.abspath(os.path.expanduser(text)))
    try:
        url = sa.make_url(text)
    except exc.ArgumentError as e:
        raise HistoryError(f"'{text}' is not a database URL ({e}). Use a path to a SQLite file, or a URL "
                           "such as postgresql+psycopg://user@host/runyard.") from e
    if url.get_backend_name() not in SUPPORTED:
        raise HistoryError(
            f"runyard keeps run history in SQLite or PostgreSQL, not {url.get_backend_name()} "
            f"('{url.render_as_string(hide_password=True)}'). "
            "Use a path to a SQLite file or a postgresql+psycopg:// URL."
        )
    return url


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()


def dispose_all() -> None:
    """Close every connection this process has open, before it forks.

    SQLite must not see, in a forked child, any state of a connection the
    parent had open (its lock bookkeeping is per process): a child then
    "holds" locks it does not have, and the parent closing its connection
    can delete the write-ahead log under the child. So close them all first.
    """
    for db in list(_LIVE):
        db.dispose()


class Database:
    """One history database. The constructor only parses the location.

    >>> import tempfile
    >>> db = Database(os.path.join(tempfile.mkdtemp(), "h.db"))
    >>> def make_table(conn):
    ...     conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    >>> db.write(make_table)
    >>> db.read(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())
    0
    >>> db.dispose()
    """

    def __init__(self, location: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.url = to_url(location)
        self.busy_timeout = busy_timeout
        self._engine: Engine | None = None
        self._pid = 0
        self._inherited: list[Engine] = []
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"Database({self.display!r})"

    @property
    def display(self) -> str:
        """The location for messages: a SQLite file's path, else the URL without its password."""
        if self.sqlite_path is not None:
            return self.sqlite_path
        return self.url.render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> str | None:
        """The path of a SQLite database file; None for other databases and in-memory SQLite."""
        if not self.is_sqlite or _is_memory(self.url):
            return None
        return self.url.database

    # -- the engine ---------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """This process's engine, made on first use.

        A process made by ``fork`` must not use the connections it inherited,
        so a child gets its own engine. The inherited one is kept referenced,
        never used and never closed: closing a SQLite connection opened by the
        parent could release the parent's locks.
        """
        pid = os.getpid()
        if self._engine is None or self._pid != pid:
            if self._engine is not None:
                self._inherited.append(self._engine)
            self._engine = self._create_engine()
            self._pid = pid
        return self._engine

    def _create_engine(self) -> Engine:
        try:
            engine = sa.create_engine(self.url, pool_pre_ping=not self.is_sqlite)
        except ImportError as e:
            raise HistoryError(
                f"The driver for '{self.display}' is not installed ({e}). For PostgreSQL install psycopg: "
                "pip install 'runyard[postgres]' (or 'psycopg[binary]')"
            ) from e
        except exc.SQLAlchemyError as e:
            raise HistoryError(f"Cannot use the run history database '{self.display}': {e}") from e
        if self.is_sqlite:
            _configure_sqlite(engine, busy_timeout=self.busy_timeout, memory=_is_memory(self.url))
        return engine

    def dispose(self) -> None:
        """Close this process's connections (the object stays usable; the next call reconnects)."""
        if self._engine is not None:
            if self._pid == os.getpid():
                self._engine.dispose()
            else:
                self._inherited.append(self._engine)  # the parent's: never closed here (see engine)
        self._engine = None

    # -- transactions -------------------------------------------------------
    def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in a read transaction and return what it returns."""
        return self._transaction(work, write=False)

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in a write transaction (``BEGIN IMMEDIATE`` on SQLite)
        and commit; roll back if it raises. ``work`` may run more than once, so it
        must do nothing but database work."""
        return self._transaction(work, write=True)

    def _transaction(self, work: Callable[[Connection], T], *, write: bool) -> T:
        attempt = 0
        while True:
            try:
                with self.engine.connect() as conn:
                    if write:
                        conn.execution_options(**{_WRITE: True})
                    with conn.begin():
                        return work(conn)
            except exc.DBAPIError as e:
                if _is_retryable(e) and attempt < LOCK_RETRIES:
                    delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt)
                    time.sleep(delay * random.uniform(0.5, 1.0))
                    attempt += 1
                    continue
                raise self._wrap(e, write=write, attempts=attempt + 1) from e
            except exc.SQLAlchemyError as e:
                raise self._wrap(e, write=write, attempts=attempt + 1) from e

    def _wrap(self, e: exc.SQLAlchemyError, *, write: bool, attempts: int) -> HistoryError:
        verb = "write to" if write else "read"
        orig = getattr(e, "orig", None)
        text = str(orig if orig is not None else e).strip()
        detail = text.splitlines()[0] if text else type(e).__name__
        if isinstance(e, exc.DBAPIError) and _is_retryable(e):
            return HistoryError(
                f"Cannot {verb} the run history '{self.display}': it stayed locked by another process for over "
                f"{self.busy_timeout:g} s, {attempts} {'time' if attempts == 1 else 'times'}. "
                "Look for a stuck runyard process holding it, then try again."
            )
        low = detail.lower()
        if "unable to open database file" in low:
            return HistoryError(
                f"Cannot open the run history '{self.display}' ({detail}). Check that its folder exists and is "
                "writable; create a workspace with: runyard init"
            )
        if "readonly" in low or "read-only" in low:
            return HistoryError(
                f"Cannot {verb} the run history '{self.display}': the database is read-only ({detail}). "
                "Check the file's and its folder's permissions."
            )
        if "not a database" in low or "malformed" in low:
            return HistoryError(
                f"'{self.display}' is not a usable run history ({detail}). Move it aside and run: runyard init"
            )
        if isinstance(e, exc.OperationalError | exc.InterfaceError):
            return HistoryError(f"Cannot {verb} the run history '{self.display}': {detail}.")
        return HistoryError(f"The run history '{self.display}' refused a change ({detail}). This is a bug in "
                            "runyard if it happens again; please report it with this message.")


def _is_retryable(e: exc.DBAPIError) -> bool:
    orig = e.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY or getattr(orig, "pgcode", None) in _PG_RETRY:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text


def _configure_sqlite(engine: Engine, *, busy_timeout: float, memory: bool) -> None:
    """Connection settings and runyard's own BEGIN for a SQLite engine."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Off: pysqlite would BEGIN (deferred) only before DML and commit
        # before DDL. runyard emits BEGIN itself in _on_begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            # The busy timeout first, so that the pragmas below wait for locks too.
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory and str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                # WAL is a property of the file: set once, kept by every later connection.
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


# -- portable statements ---------------------------------------------------
def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows, skipping any whose primary key is already there (``ON CONFLICT DO NOTHING``,
    which SQLite and PostgreSQL both have)."""
    if rows:
        conn.execute(_dialect_insert(conn, table).on_conflict_do_nothing(), list(rows))


def upsert(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows, or update the non-key columns of those whose primary key exists."""
    if not rows:
        return
    stmt = _dialect_insert(conn, table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    conn.execute(stmt, list(rows))


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


__all__ = ["BUSY_TIMEOUT", "Database", "insert_ignore", "to_url", "upsert"]
