"""The script's output, captured so that nothing it printed is lost, whatever dies.

The script's stdout and stderr are one file it writes itself, ``output.raw`` in
the run's folder, opened with ``O_APPEND`` (so the two streams keep the order
they were written in, as a shared pipe would). Once ``write(2)`` returns in the
script, its bytes are in that file: a supervisor killed a moment later loses
none of them, and a script never blocks on a slow reader, as it would on a full
pipe.

A pump thread in the supervisor follows the file and turns it into the driver
log's lines (:class:`runyard.agent.logstream.LineLog`) within about 10 ms.
runyard's own lines (``runyard: ...``) go into the same file, so the driver
log is a pure function of ``output.raw``: whoever reaps a run whose supervisor
died makes it again from the file (:func:`rebuild_driver_log`), including a
last line the script never ended with a newline.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> cap = OutputCapture(os.path.join(d, "output.raw"), os.path.join(d, "driver_log.txt"))
>>> _ = os.write(cap.fd, b"epoch 1\\r epoch 2\\nno newline")
>>> cap.close()
>>> open(os.path.join(d, "driver_log.txt"), "rb").read()
b' epoch 2\\nno newline\\n'
"""

from __future__ import annotations

import os
import threading
from typing import Final

from runyard.agent.logstream import LineLog

POLL: Final = 0.01
"""Seconds between looks at the file when there is nothing new."""
_CHUNK: Final = 1 << 16


class OutputCapture:
    """``output.raw`` for the script to write (``fd``) and a pump that makes the driver log of it."""

    def __init__(self, raw_path: str, log_path: str) -> None:
        self.raw_path = raw_path
        self.log_path = log_path
        self.fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        """Give this to the script as its stdout and stderr."""
        self._read = os.open(raw_path, os.O_RDONLY | os.O_CLOEXEC)
        self._log = LineLog(log_path)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.closed = False

    def start(self) -> None:
        """Start following the file (lines reach the driver log as they are written)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name="runyard-output", daemon=True)
            self._thread.start()

    def _drain(self) -> int:
        got = 0
        with self._lock:
            if self._log.closed:
                return 0
            while chunk := os.read(self._read, _CHUNK):
                self._log.feed(chunk)
                got += len(chunk)
        return got

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._drain():
                    self._stop.wait(POLL)
            except OSError:  # the log's disk is full, say: keep the raw file, try again
                self._stop.wait(POLL * 10)

    def note(self, text: str) -> None:
        """A line of runyard's own, in order with the script's output."""
        line = f"runyard: {text}\n".encode()
        if self.closed:
            _append(self.raw_path, line)
            _append(self.log_path, line)
            return
        os.write(self.fd, line)
        if self._thread is None:
            self._drain()

    def close(self) -> None:
        """Take in what is left (call once nothing writes the file any more), end the
        last line, close the driver log."""
        if self.closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._drain()
        finally:
            with self._lock:
                self._log.close()
            os.close(self._read)
            os.close(self.fd)
            self.closed = True


def rebuild_driver_log(raw_path: str, log_path: str) -> bool:
    """Make ``log_path`` again from ``raw_path`` (after its supervisor died);
    whether there was a raw file to make it from."""
    try:
        src = os.open(raw_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    tmp = f"{log_path}.rebuild.{os.getpid()}"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        log = LineLog(tmp)
        try:
            while chunk := os.read(src, 1 << 20):
                log.feed(chunk)
        finally:
            log.close()
        os.replace(tmp, log_path)
    finally:
        os.close(src)
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return True


def _append(path: str, data: bytes) -> None:
    try:
        with open(path, "ab") as fh:
            fh.write(data)
    except OSError:
        pass


__all__ = ["OutputCapture", "rebuild_driver_log"]
