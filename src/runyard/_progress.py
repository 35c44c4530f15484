"""A small progress bar for stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from runyard.config import format_size


class StderrProgress:
    """Draws ``label [#####     ] 40% 120/300 files 1.2 GiB/3.0 GiB`` at most 10 times a second."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.total_files = self.total_bytes = 0
        self.files = self.nbytes = 0
        self._last = 0.0
        self._drawn = False

    def start(self, files: int, nbytes: int) -> None:
        self.total_files, self.total_bytes = files, nbytes
        self.files = self.nbytes = 0
        self._draw(force=True)

    def advance(self, files: int, nbytes: int) -> None:
        self.files += files
        self.nbytes += nbytes
        self._draw()

    def finish(self) -> None:
        if self._drawn:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = self.nbytes / self.total_bytes if self.total_bytes else (
            self.files / self.total_files if self.total_files else 1.0)
        width = 24
        fill = int(frac * width)
        line = (f"\r{self.label} [{'#' * fill}{' ' * (width - fill)}] {frac * 100:3.0f}% "
                f"{self.files}/{self.total_files} files {format_size(self.nbytes)}/{format_size(self.total_bytes)}")
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True


def progress_for_stderr(label: str) -> StderrProgress | None:
    """A progress bar when stderr is a terminal, else None."""
    return StderrProgress(label) if sys.stderr.isatty() else None
