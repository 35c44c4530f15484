"""The script's output, captured so that nothing it printed is lost, whatever dies.

The script's stdout and stderr are one pipe (so the two streams keep the order
they were written in, and ``> /dev/stderr`` or ``tee /dev/stdout`` in a script
write to it as in a terminal). At the other end is a writer of its own, ``cat``,
appending everything to ``output.raw`` in the run's folder, not the supervisor:
should the supervisor die, the writer drains the pipe to the file and exits
once the script is gone, so what the script printed up to its end is on disk.

A pump thread in the supervisor follows the file and turns it into the driver
log's lines (:class:`runyard.agent.logstream.LineLog`) within about 10 ms.
runyard's own lines (``runyard: ...``) go into the same file, so the driver
log is a function of ``output.raw``: whoever reaps a run whose supervisor died
makes it again from the file (:func:`rebuild_driver_log`), including a last
line the script never ended with a newline.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> cap = OutputCapture(os.path.join(d, "output.raw"), os.path.join(d, "driver_log.txt"), "run-1")
>>> fd = cap.script_output()
>>> _ = os.write(fd, b"epoch 1\r epoch 2\nno newline"); os.close(fd)
>>> cap.close()
>>> open(os.path.join(d, "driver_log.txt"), "rb").read()
b' epoch 2\nno newline\n'
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Final

from runyard.agent.logstream import LineLog
from runyard.agent.procs import processes_with

POLL: Final = 0.01
"""Seconds between looks at the file when there is nothing new."""
WRITER_ENV: Final = "RUNYARD_CAPTURE_OF"
"""In the writer's environment: the run it writes for (how a reaper finds it)."""
DRAIN_WAIT: Final = 5.0
"""How long the writer gets to drain the pipe once the script is gone."""
_CHUNK: Final = 1 << 16
PIPE_SIZE: Final = 1 << 20
"""The pipe's buffer (the kernel's default is 64 KiB; 1 MiB is what an unprivileged process may ask)."""


class OutputCapture:
    """``output.raw``, the writer that fills it from the script's pipe, and a pump that makes the driver log of it."""

    def __init__(self, raw_path: str, log_path: str, run_id: str) -> None:
        self.raw_path = raw_path
        self.log_path = log_path
        self.run_id = run_id
        self._append = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._read = os.open(raw_path, os.O_RDONLY | os.O_CLOEXEC)
        self._log = LineLog(log_path)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.writer: subprocess.Popen[bytes] | None = None
        self.closed = False

    def start(self) -> None:
        """Start following the file (lines reach the driver log as they are written)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name="runyard-output", daemon=True)
            self._thread.start()

    def script_output(self) -> int:
        """The descriptor to give the script as its stdout and stderr (the caller closes its copy
        once the script has it). Where there is no ``cat``, the file itself."""
        cat = shutil.which("cat")
        if cat is None:
            return os.dup(self._append)
        r, w = os.pipe()
        try:  # a roomy pipe: a script that made its stdout non-blocking (node, ssh do) rarely sees EAGAIN
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (OSError, AttributeError):
            pass
        try:
            self.writer = subprocess.Popen(
                [cat], stdin=r, stdout=self._append, stderr=subprocess.DEVNULL, cwd="/", close_fds=True,
                env={WRITER_ENV: self.run_id, "PATH": os.environ.get("PATH", os.defpath)},
                start_new_session=True,  # a signal to the run's group or session never reaches it
            )
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        return w

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
        os.write(self._append, line)
        if self._thread is None:
            self._drain()

    def close(self) -> None:
        """Let the writer drain the pipe (call once the script and what it started are gone),
        take in what is left, end the last line, close the driver log."""
        if self.closed:
            return
        if self.writer is not None:
            end_writer(self.writer)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._drain()
        finally:
            with self._lock:
                self._log.close()
            os.close(self._read)
            os.close(self._append)
            self.closed = True


def end_writer(writer: subprocess.Popen[bytes], wait: float = DRAIN_WAIT) -> None:
    """Wait for the writer to reach the end of its pipe; stop it after ``wait`` seconds (a
    process out of reach still holds the pipe open)."""
    try:
        writer.wait(wait)
    except subprocess.TimeoutExpired:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def wait_for_writers(run_id: str, wait: float = DRAIN_WAIT) -> list[int]:
    """For a reaper: let the writers of ``run_id`` (found by their environment) drain their
    pipes and exit, killing those still there after ``wait`` seconds. Returns their pids.

    Watched through pidfds, so a pid reused meanwhile is never signalled. A reaper that is
    itself a process of the run holds the pipe open: it does not wait for what it holds."""
    import select

    if os.environ.get("RUNYARD_RUN_ID") == run_id:
        return []
    found = processes_with(f"{WRITER_ENV}={run_id}")
    fds: dict[int, int] = {}
    for pid in found:
        try:
            fds[pid] = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
    deadline = time.monotonic() + wait
    try:
        while fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(fds.values()), [], [], max(0.0, deadline - time.monotonic()))
            for pid, fd in list(fds.items()):
                if fd in ready:
                    os.close(fds.pop(pid))
        for fd in fds.values():
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
    finally:
        for fd in fds.values():
            os.close(fd)
    return found


def rebuild_driver_log(raw_path: str, log_path: str) -> bool:
    """Make ``log_path`` again from ``raw_path`` (after its supervisor died);
    whether there was a raw file to make it from. A driver log longer than
    what the raw file gives is kept as it is (the raw file was cut short)."""
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
        try:
            shorter = os.path.getsize(tmp) < os.path.getsize(log_path)
        except OSError:
            shorter = False
        if shorter:
            return True
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


__all__ = ["OutputCapture", "end_writer", "rebuild_driver_log", "wait_for_writers"]
