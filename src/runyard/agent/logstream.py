"""The driver log: a script's stdout and stderr, in order, as lines.

``LineLog`` is fed the raw bytes read from the script's output pipe (stdout
and stderr share the pipe, so their order is the order they were written). It
writes whole lines to the log file as soon as they end, so a follower sees a
``print(..., flush=True)`` within milliseconds. Progress bars that redraw a
line with ``\\r`` are collapsed: only the last state of such a line is kept.
A line still open when the script exits is written by ``close()``, so the
last thing a script prints is never lost, whatever the exit.

``follow`` tails a log file from another process until told to stop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, Final

MAX_LINE: Final = 1 << 20
"""A line longer than this is written in pieces rather than held in memory."""


class LineLog:
    """Writes complete lines of a byte stream to ``path``, collapsing ``\\r``.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "log")
    >>> log = LineLog(p)
    >>> log.feed(b"10%\\r50%\\r100%\\ndone")
    >>> log.close()
    >>> open(p, "rb").read()
    b'100%\\ndone\\n'
    """

    def __init__(self, path: str, echo: BinaryIO | None = None) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._pending = b""
        self._echo = echo

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream; whole lines go to the file now."""
        if self._echo is not None:
            try:
                self._echo.write(data)
                self._echo.flush()
            except (OSError, ValueError):
                self._echo = None
        buf = self._pending + data
        out: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            out.append(_collapse(buf[start:nl]) + b"\n")
            start = nl + 1
        rest = buf[start:]
        while len(rest) > MAX_LINE:  # cut at fixed offsets, so the same bytes give the same lines however they came
            out.append(_collapse(rest[:MAX_LINE]) + b"\n")
            rest = rest[MAX_LINE:]
        self._pending = rest
        if out:
            self._fh.write(b"".join(out))
            self._fh.flush()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        """Write the open last line (if any) and close the file."""
        if self._pending:
            tail = _collapse(self._pending)
            if tail:
                self._fh.write(tail + b"\n")
            self._pending = b""
        self._fh.flush()
        self._fh.close()


def _collapse(line: bytes) -> bytes:
    """The last state of a line redrawn with carriage returns.

    A ``\\r\\n`` ending counts as a plain newline; an empty last segment (a
    trailing ``\\r``) keeps the state before it.
    """
    if b"\r" not in line:
        return line
    if line.endswith(b"\r"):
        line = line.rstrip(b"\r")
    return line.rsplit(b"\r", 1)[-1]


def follow(
    path: str,
    *,
    offset: int = 0,
    done: Callable[[], bool],
    poll: float = 0.02,
    wait_for_file: float = 30.0,
) -> Iterator[bytes]:
    """Yield new bytes of ``path`` as they are written, until ``done()`` is true
    and everything written has been yielded.

    ``done`` is checked only when there is nothing new to read, so the last
    bytes before the end are always delivered.
    """
    deadline = time.monotonic() + wait_for_file
    fh: BinaryIO | None = None
    try:
        while fh is None:
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed in finally
            except FileNotFoundError:
                if done() or time.monotonic() > deadline:
                    return
                time.sleep(poll)
        fh.seek(offset)
        while True:
            chunk = fh.read(1 << 16)
            if chunk:
                yield chunk
                continue
            if done():
                # One more read: the writer may have flushed between the
                # empty read and the check.
                chunk = fh.read()
                if chunk:
                    yield chunk
                # Made again meanwhile (a reaper rebuilds a dead supervisor's log
                # with its last lines): the new file from where this one ended.
                at = fh.tell()
                try:
                    replaced = os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino
                except OSError:
                    replaced = False
                if replaced:
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115 - closed in finally
                    fh.seek(at)
                    if chunk := fh.read():
                        yield chunk
                return
            time.sleep(poll)
    finally:
        if fh is not None:
            fh.close()


def tail_lines(path: str, n: int) -> list[str]:
    """The last ``n`` lines of a text file (for a traceback's last lines)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n:]
