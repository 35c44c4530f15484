"""What the supervisor keeps while a run goes, off its main loop: history writes in
order on one thread (:class:`Recorder`), the run history loaded in the background
(:class:`HistoryLoader`), and ``./outputs`` and ``./logs`` stored as files settle,
each recorded in the run's journal first (:class:`LiveSync`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from runyard.agent.logstream import tail_lines
from runyard.history import Artifact, RunStatus

if TYPE_CHECKING:
    from runyard.agent.artifacts import ArtifactRecord, OutputsSync
    from runyard.agent.folder import RunFolder
    from runyard.history.store import RunHistory
    from runyard.runs.model import RunRequest
    from runyard.store.base import ObjectStore
    from runyard.workspace import Workspace


class Recorder:
    """History writes off the supervise loop, in order, on one thread: a busy
    or locked database must not delay a cancel, the logs or the kill grace.

    A kind of write already waiting is not queued again (a heartbeat, say).
    Failures are left for the next write: the end is recorded by
    ``record_end``, which also waits for this queue (``stop``).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="runyard-recorder", daemon=True)
        self._thread.start()

    def submit(self, kind: str, write: Callable[[], Any]) -> None:
        with self._lock:
            if kind in self._pending:
                return
            self._pending.add(kind)
        self._queue.put((kind, write))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, write = item
            with self._lock:
                self._pending.discard(kind)
            quietly(write)

    def stop(self, timeout: float = 60.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class HistoryLoader:
    """The run history, opened (and the run recorded) in a background thread.

    Loading it is the slowest import there is here (SQLAlchemy, ~0.2 s of
    CPU). It starts once the script has run for ``HISTORY_AFTER`` seconds, or
    at the end: a short script then never shares the interpreter with that
    import, and its end is in the store and the end file before the history
    is even loaded (readers wait for the record meanwhile).
    """

    def __init__(self, ws: Workspace, request: RunRequest, host: str) -> None:
        self._ws, self._request, self._host = ws, request, host
        self.history: RunHistory | None = None
        self.error: BaseException | None = None
        self.ended_before = False
        """The run was ended (canceled) before its supervisor could record it."""
        self._thread = threading.Thread(target=self._open, name="runyard-history", daemon=True)
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self._thread.start()

    def _open(self) -> None:
        from runyard.runs.ending import record

        try:
            history = self._ws.open_history()
            if record(history, self._request).is_terminal:
                self.ended_before = True
            else:
                history.set_status(self._request.run_id, RunStatus.PREPARING, supervisor_pid=os.getpid(),
                                   host=self._host)
            self.history = history
        except BaseException as exc:  # reported by get()
            self.error = exc

    def get(self) -> RunHistory:
        """The history, waiting for it; raises when it cannot be used."""
        self.start()
        self._thread.join()
        if self.history is None:
            raise RuntimeError(f"the run history cannot be used: {self.error}") from self.error
        return self.history

    def done(self) -> bool:
        return self.started and not self._thread.is_alive()

    def ready(self) -> RunHistory | None:
        """The history if it is loaded by now (None while loading or not started); raises when it failed."""
        if not self.done():
            return None
        return self.get()


def traceback_tail(log_path: str, n: int = 20) -> str | None:
    marker = "Traceback (most recent call last):"
    lines = tail_lines(log_path, 200)
    for i in range(len(lines) - 1, -1, -1):
        at = lines[i].find(marker)
        if at >= 0:  # a traceback may follow output that did not end its line
            return "\n".join([lines[i][at:], *lines[i + 1:]][-n:])
    return None


class LiveSync:
    """``./outputs`` and ``./logs`` stored as files settle; each file stored is
    recorded at once in the run's journal and, off the supervise loop, in the
    history (see :mod:`runyard.agent.journal`)."""

    def __init__(self, store: ObjectStore, wd: str, folder: RunFolder, shipped: dict[str, str],
                 upper: str | None = None) -> None:
        from runyard.agent.artifacts import LogsMirror, OutputsSync
        from runyard.agent.journal import ArtifactJournal

        self.store = store
        self.wd = wd
        self.folder = folder
        self.upper = upper
        """The overlay's upper layer (what the run wrote), when the working directory is an overlay."""
        self.outputs = OutputsSync(store, wd, prefix="outputs")
        self.logs = OutputsSync(store, wd, prefix="logs")
        self.mirror = LogsMirror(os.path.join(wd, "logs"), folder.logs_mirror)
        for sync in (self.outputs, self.logs, self.mirror):
            sync.pin()  # where the files are is fixed now, before the script runs: a link planted later is seen
        self.journal = ArtifactJournal(folder.journal)
        self._shipped = shipped
        self._pending: list[Artifact] = []
        self._lock = threading.Lock()
        self.problems: list[str] = []

    def own(self, records: Iterable[ArtifactRecord]) -> list[Artifact]:
        """The records of files the run wrote (not those that came unchanged with the snapshot)."""
        from runyard.agent.salvage import own_artifacts

        return own_artifacts(list(records), self._shipped)

    def note(self, artifacts: list[Artifact], sync: OutputsSync | None = None) -> None:
        """Record stored files: in the journal now (with the stat key ``sync``
        stored each under), in the history with the next flush."""
        if not artifacts:
            return
        keys = {a.name: sync.key_of(a.name) for a in artifacts} if sync is not None else None
        try:
            self.journal.add(artifacts, keys)
        except OSError as exc:  # the history still gets them; the reaper re-reads the working directory
            self.problems.append(f"the artifact journal could not be written: {exc}")
        with self._lock:
            self._pending.extend(artifacts)

    def settle(self) -> bool:
        """Store what settled since the last call; whether anything new was stored."""
        stored = False
        for sync in (self.outputs, self.logs):
            try:
                own = self.own(sync.scan(final=False))
            except Exception:  # a sync hiccup is retried on the next tick
                continue
            self.note(own, sync)
            stored = stored or bool(own)
        return stored

    def flush(self, history: RunHistory, run_id: str) -> None:
        """Write the records noted so far to the history (on the recorder's thread)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            history.upsert_artifacts(run_id, batch)
        except BaseException:
            with self._lock:  # tried again with the next flush (and recorded with the end anyway)
                self._pending[:0] = batch
            raise

    def final(self) -> tuple[list[Artifact], list[str]]:
        """Everything, stable or not, once the script has ended; (all artifacts, problems)."""
        artifacts: list[Artifact] = []
        problems: list[str] = []
        try:
            self.note(self.own(self.outputs.scan(final=True)), self.outputs)
        except Exception as exc:  # recorded on the run; the logs are still stored
            problems.append(f"syncing outputs failed: {exc}")
        artifacts.extend(self.own(self.outputs.records))
        try:
            logs = self.own(self.mirror.finalize(self.store))
        except Exception as exc:
            problems.append(f"syncing logs failed: {exc}")
        else:
            self.note(logs)
            artifacts.extend(logs)
        if (self.upper is not None and self.folder.owns(self.upper) and os.path.isdir(self.upper)
                and not os.path.ismount(self.wd)):
            # Unmounted under the run (by hand, say): what the run wrote is in the upper layer.
            from runyard.agent.artifacts import OutputsSync

            problems.append("the working directory was unmounted before the run ended; its outputs and logs "
                            "were taken from the overlay's upper layer")
            found = {a.name: a for a in artifacts}
            for prefix in ("outputs", "logs"):
                sync = OutputsSync(self.store, self.upper, prefix=prefix)
                try:
                    sync.scan(final=True)
                except Exception as exc:
                    problems.append(f"syncing {prefix} from the upper layer failed: {exc}")
                    continue
                own = self.own(sync.records)
                self.note(own)
                found.update((a.name, a) for a in own)
            artifacts = [found[n] for n in sorted(found)]
        return artifacts, problems


def quietly(step: Callable[[], Any]) -> None:
    try:
        step()
    except Exception:  # a sync hiccup is retried on the next tick
        pass


def append_text(path: str, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        pass


__all__ = ["HistoryLoader", "LiveSync", "Recorder", "append_text", "quietly", "traceback_tail"]
