"""The ``sandbox`` compute target: the supervisor on this machine, the script under
bubblewrap as an unprivileged user (see :mod:`runyard.agent.sandbox` for what the
script sees and what limits apply).

Options (``runyard compute add NAME --kind sandbox ...``):

``network``  the script may reach the network (default: no network at all)
``memory``   the most memory (e.g. ``8GiB``), ``cpus`` how many CPUs,
``pids``     the most processes (default 1024), ``time`` the most wall time (seconds)
``gpus``     pass the GPUs through
``user``     the unprivileged user to run as (default: ``nobody`` under root, else you)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runyard.compute.base import ComputeTarget
from runyard.compute.local import LocalKind
from runyard.errors import ComputeError

if TYPE_CHECKING:
    from runyard.workspace import Workspace

_BOOLS = ("network", "gpus")
_INTS = ("cpus", "pids")
KNOWN = frozenset({"network", "memory", "cpus", "pids", "time", "gpus", "user"})


class SandboxKind(LocalKind):
    """``sandbox`` (see the module docstring)."""

    name = "sandbox"

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        from runyard.config import parse_size

        unknown = sorted(set(options) - KNOWN)
        if unknown:
            raise ComputeError(f"A sandbox target has no option {', '.join(unknown)}. Options: "
                               f"{', '.join(sorted(KNOWN))}.")
        out: dict[str, Any] = {}
        for key in _BOOLS:
            if key in options:
                out[key] = bool(options[key])
        for key in _INTS:
            if key in options:
                value = options[key]
                if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
                    raise ComputeError(f"--{key} {value!r}: give a whole number of at least 1.")
                out[key] = int(value)
        if "memory" in options:
            try:
                out["memory"] = parse_size(str(options["memory"]), "memory")
            except Exception as exc:
                raise ComputeError(f"--memory {options['memory']!r}: {exc}") from None
            if out["memory"] < 1 << 24:
                raise ComputeError(f"--memory {options['memory']!r} is too little to start a Python; give at "
                                   "least 16MiB (e.g. 4GiB).")
        if "time" in options:
            try:
                out["time"] = float(options["time"])
            except ValueError:
                raise ComputeError(f"--time {options['time']!r}: give seconds (e.g. 3600).") from None
            if not out["time"] > 0 or out["time"] == float("inf"):  # (not: nan, which no time exceeds)
                raise ComputeError(f"--time {options['time']!r}: give a number of seconds more than 0.")
        if "user" in options:
            from runyard.agent.sandbox import user_ids

            try:
                user_ids(options["user"])
            except LookupError as exc:
                raise ComputeError(f"--user {options['user']!r}: {exc}.") from None
            out["user"] = str(options["user"])
        return out

    def _ids(self, target: ComputeTarget) -> tuple[int, int]:
        from runyard.agent.sandbox import user_ids

        try:
            return user_ids(target.options.get("user"))
        except LookupError as exc:
            raise ComputeError(f"Compute target '{target.name}': {exc}.") from None

    def preflight(self, target: ComputeTarget, ws: Workspace | None = None) -> str | None:
        from runyard.agent.sandbox import preflight

        uid, gid = self._ids(target)
        return preflight(uid, gid, None if ws is None else ws.cache_dir)

    def isolation(self, target: ComputeTarget, overrides: dict[str, Any]) -> dict[str, Any] | None:
        uid, gid = self._ids(target)
        merged = {**target.options, **overrides}
        return {"kind": "bwrap", "uid": uid, "gid": gid, "network": bool(merged.get("network")),
                "memory": merged.get("memory"), "cpus": merged.get("cpus"), "pids": merged.get("pids", 1024),
                "time": merged.get("time"), "gpus": bool(merged.get("gpus"))}


__all__ = ["SandboxKind"]
