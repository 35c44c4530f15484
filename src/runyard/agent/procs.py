"""Processes on this machine, looked up in /proc: is one alive, which carry a given
environment entry (how runyard finds what a run left running), and how a run's
processes are signalled and ended."""

from __future__ import annotations

import os
import signal
import time


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




def end_leftovers(pgid: int, grace: float = 1.0, spare: set[int] | frozenset[int] = frozenset()) -> None:
    """SIGTERM the script's process group and our other children (but ``spare``,
    the output's writer), wait up to ``grace`` seconds, then SIGKILL whatever is
    left; reap them all (the writer is waited for by its owner)."""

    def children() -> list[int]:
        me = str(os.getpid())
        out: list[int] = []
        try:
            names = os.listdir("/proc")
        except OSError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1].decode() == me and fields[0] not in (b"Z", b"X") and int(name) not in spare:
                out.append(int(name))
        return out

    def signal_all(sig: int) -> bool:
        alive = False
        try:
            os.killpg(pgid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
        for pid in children():
            try:
                os.kill(pid, sig)
                alive = True
            except ProcessLookupError:
                pass
        return alive

    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    if signal_all(signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap()
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                if not children():
                    break
            time.sleep(0.02)
        signal_all(signal.SIGKILL)
    reap()


def signal_members(pgid: int, sig: int, *, but: int) -> None:
    """Signal every process of group ``pgid`` but ``but`` (in every PID namespace below ours)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == but:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == pgid:
                os.kill(int(name), sig)
        except (OSError, IndexError, ValueError):
            continue


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


__all__ = ["end_leftovers", "pid_alive", "processes_with", "signal_group", "signal_members"]
