"""Processes on this machine, looked up in /proc: is one alive, which carry a given
environment entry (how runyard finds what a run left running)."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """Whether a local process exists and is not a zombie (dead, not yet reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def processes_with(entry: str, *, cwd_below: str | None = None) -> list[int]:
    """The pids of the processes whose environment holds ``entry`` (``NAME=value``), or,
    with ``cwd_below``, whose working directory is in that folder. Processes this one
    cannot inspect are not listed."""
    mark = entry.encode()
    inside = None if cwd_below is None else os.path.realpath(cwd_below).rstrip("/") + "/"
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                hit = mark in fh.read().split(b"\0")
            if not hit and inside is not None:
                hit = (os.readlink(f"/proc/{name}/cwd") + "/").startswith(inside)
        except OSError:
            continue
        if hit:
            found.append(int(name))
    return found


__all__ = ["pid_alive", "processes_with"]
