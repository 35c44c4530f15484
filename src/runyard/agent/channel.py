"""The script's channel to runyard: what ``Run.get_context()`` reports, on every target.

A script never opens the run history or the store (in a sandbox, or on a
cluster node, it cannot). What it reports, metrics, tags, properties and
uploaded files, it appends to one file in the run's folder, ``channel/log.jsonl``
(a JSON object a line, ``O_APPEND``, one ``write(2)`` per call: a line is in
the kernel the moment ``run.log()`` returns, so a ``kill -9`` of the script a
moment later loses nothing, and every process of a run can write at once). A
file to upload is copied into ``channel/uploads/`` first, then named in a line.

The supervisor takes the file in every fraction of a second (:func:`ingest`),
and once more after the script ended; whoever reaps a run whose supervisor died
takes in the rest. What has been taken in is the run's ``channel_offset`` in the
history, moved in the same transaction as the rows it wrote, so every line is
taken in exactly once, in order, whoever does it.

Lines (``k`` says which)::

    {"k": "m", "n": NAME, "v": VALUE, "s": STEP, "i": KIND, "t": TIME, "p": PID}   a metric value
    {"k": "t", "n": KEY, "v": VALUE}                                             a tag
    {"k": "p", "v": {KEY: VALUE, ...}}                                           properties
    {"k": "u", "n": ARTIFACT NAME, "f": FILE IN uploads/}                        an uploaded file

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> w = ChannelWriter(d)
>>> w.metric("loss", 0.5, 3)
>>> w.tag("team", "vision")
>>> [(e.kind, e.name) for e in read(d, 0)[0]]
[('m', 'loss'), ('t', 'team')]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from runyard.errors import RunError
from runyard.history.model import ChannelEntry as Entry

if TYPE_CHECKING:
    from runyard.history.store import RunHistory
    from runyard.store.base import ObjectStore

LOG: Final = "log.jsonl"
UPLOADS: Final = "uploads"
ENV: Final = "RUNYARD_CHANNEL"
"""The channel's folder, in the script's environment."""
BATCH: Final = 50_000
"""Lines taken in per transaction at most."""


class ChannelWriter:
    """The script's side: appends to ``<folder>/log.jsonl`` (see the module docstring)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        try:
            self._fd = os.open(os.path.join(folder, LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
        except OSError as exc:
            raise RunError(f"The run's channel ({folder}) cannot be written: {exc.strerror}. The script cannot "
                           "report metrics; is it running in its run?") from exc
        self._names: dict[str, str] = {}
        self._seq = 0

    def _name(self, name: str) -> str:
        encoded = self._names.get(name)
        if encoded is None:
            from runyard.history.model import check_key

            encoded = self._names[name] = json.dumps(check_key(name, "metric"))
        return encoded

    def _write(self, line: str) -> None:
        data = line.encode("utf-8", "surrogatepass")
        n = os.write(self._fd, data)
        while n < len(data):  # (a regular file takes it whole; a full disk may not)
            n += os.write(self._fd, data[n:])

    def metric(self, name: str, value: Any, step: int | None = None, kind: str | None = None) -> None:
        """One value of metric ``name``."""
        if step is not None and (type(step) is not int):
            if isinstance(step, bool) or not isinstance(step, int):
                raise TypeError(f"metric {name!r} has step {step!r}; a step is a whole number or None")
            step = int(step)
        vt = type(value)
        v = repr(value) if (vt is float and math.isfinite(value)) or vt is int else json.dumps(value, default=str)
        self._write(f'{{"k":"m","n":{self._name(name)},"v":{v},"s":{"null" if step is None else step},'
                    f'"i":{"null" if kind is None else json.dumps(kind)},"t":{time.time()!r},"p":{os.getpid()}}}\n')

    def tag(self, key: str, value: str) -> None:
        self._write(json.dumps({"k": "t", "n": key, "v": value}) + "\n")

    def properties(self, values: Mapping[str, str]) -> None:
        self._write(json.dumps({"k": "p", "v": dict(values)}) + "\n")

    def upload(self, name: str, path: str) -> None:
        """Copy ``path`` into the channel and name it as artifact ``name``."""
        uploads = os.path.join(self.folder, UPLOADS)
        os.makedirs(uploads, exist_ok=True)
        self._seq += 1
        kept = f"{os.getpid()}-{self._seq}-{os.urandom(4).hex()}"
        shutil.copyfile(path, os.path.join(uploads, kept))
        self._write(json.dumps({"k": "u", "n": name, "f": kept}) + "\n")

    def close(self) -> None:
        os.close(self._fd)


def read(folder: str, offset: int, limit: int = BATCH) -> tuple[list[Entry], int, list[str]]:
    """The complete lines from ``offset`` on (at most ``limit``): (entries, the offset after them,
    problems). A line the script did not finish (it was killed while writing it) waits; a line
    that is not one of the kinds above is skipped with a problem (the script can write the file)."""
    entries: list[Entry] = []
    problems: list[str] = []
    try:
        fd = _open_regular(folder, LOG)
    except FileNotFoundError:
        return entries, offset, problems
    except OSError as exc:  # (the script owns the folder: a FIFO or a device there is not read, nor waited on)
        problems.append(f"the script's channel cannot be read: {exc.strerror or exc}")
        return entries, offset, problems
    try:
        at = offset
        while len(entries) < limit:
            chunk = os.pread(fd, 1 << 20, at)
            if not chunk:
                break
            end = chunk.rfind(b"\n")
            if end < 0:
                if len(chunk) < 1 << 20:
                    break  # a line still being written
                end = len(chunk) - 1  # a line longer than 1 MiB: taken (and skipped) whole below
            for raw in chunk[:end + 1].split(b"\n")[:-1]:
                at += len(raw) + 1
                entry = _parse(raw)
                if entry is None:
                    problems.append(f"a line of the script's channel is not one runyard reads: {raw[:80]!r}")
                else:
                    entries.append(entry)
                if len(entries) >= limit:
                    break
    finally:
        os.close(fd)
    return entries, at, problems


def _parse(raw: bytes) -> Entry | None:
    try:
        d = json.loads(raw)
        kind = d["k"]
        if kind == "m":
            step = d.get("s")
            if step is not None and type(step) is not int:
                return None
            return Entry("m", str(d["n"]), d.get("v"), step, d.get("i"), float(d.get("t") or 0.0),
                         d.get("p") if type(d.get("p")) is int else None)
        if kind == "t":
            return Entry("t", str(d["n"]), str(d["v"]))
        if kind == "p" and isinstance(d["v"], dict):
            return Entry("p", value={str(k): str(v) for k, v in d["v"].items()})
        if kind == "u":
            f = str(d["f"])
            if "/" in f or f.startswith(".") or not f:
                return None
            return Entry("u", str(d["n"]), file=f)
    except (ValueError, KeyError, TypeError):
        return None
    return None


@dataclass
class Ingested:
    """What :func:`ingest` took in."""

    lines: int = 0
    offset: int = 0
    problems: list[str] = field(default_factory=list)


def ingest(history: RunHistory, store: ObjectStore, run_id: str, folder: str, *, until_end: bool = True) -> Ingested:
    """Take the channel of ``run_id`` (its folder ``folder``) into the history, from where it
    was last taken in; everything there is with ``until_end`` (else one batch)."""
    from runyard.history.channel import apply_channel, channel_offset

    done = Ingested()
    while True:
        start = channel_offset(history, run_id)
        entries, end, problems = read(folder, start)
        done.problems.extend(problems)
        if end == start:
            done.offset = start
            return done
        uploads, upload_problems = _store_uploads(store, folder, [e for e in entries if e.kind == "u"])
        done.problems.extend(upload_problems)
        result = apply_channel(history, run_id, entries, uploads, start, end)
        done.problems.extend(result)
        done.lines += len(entries)
        done.offset = end
        for e in entries:  # taken in: the copies go
            if e.kind == "u":
                _remove_upload(folder, e.file)
        if not until_end:
            return done


def _store_uploads(store: ObjectStore, folder: str, entries: list[Entry]) -> tuple[dict[str, Any], list[str]]:
    """Store the files the script uploaded: file -> Artifact."""
    from runyard.errors import RunyardError
    from runyard.history import Artifact

    out: dict[str, Any] = {}
    problems: list[str] = []
    for e in entries:
        try:
            fd = _open_regular(folder, UPLOADS, e.file)
        except OSError as exc:
            problems.append(f"the file uploaded as '{e.name}' is gone from the channel ({exc.strerror or exc})")
            continue
        try:
            with open(fd, "rb", buffering=0) as fh:
                digest, size, _ = store.put_reader(fh)
            out[e.file] = Artifact(e.name, size, digest, time.time()).checked()
        except (OSError, RunyardError) as exc:
            problems.append(f"the file uploaded as '{e.name}' was not stored: {exc}")
    return out, problems


def _remove_upload(folder: str, name: str) -> None:
    """Remove ``uploads/name`` of the channel, through no link: a link in place of ``uploads``
    would have root remove any file of the machine (the workspace's history, say)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            below = os.open(UPLOADS, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            os.unlink(name, dir_fd=below)
        finally:
            os.close(below)


def _open_regular(folder: str, *names: str) -> int:
    """A descriptor of the regular file ``folder/names...``, opened without following a link
    anywhere below ``folder`` and without blocking.

    The channel's folder belongs to the script (in a sandbox: another, unprivileged user),
    and whoever reads it may be root outside the sandbox: a link in place of ``uploads``
    would have it read any file of the machine into the run's artifacts, and a FIFO would
    have it wait forever. ``OSError`` for anything but a regular file."""
    import stat

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = below
        found = os.open(names[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(found).st_mode):
        os.close(found)
        raise OSError(f"'{'/'.join(names)}' is not a regular file")
    os.set_blocking(found, True)
    return found


__all__ = ["ENV", "ChannelWriter", "Entry", "Ingested", "ingest", "read"]
