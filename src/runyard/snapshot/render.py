"""Text for people: the preflight report of ``snapshot create`` and ``show``."""

from __future__ import annotations

from typing import Any

from runyard.config import format_size, plural
from runyard.snapshot import manifest as mf
from runyard.snapshot.engine import SnapshotResult
from runyard.snapshot.walk import CHANGED, LINK_DANGLING, LINK_OUTSIDE, NOT_UTF8, SPECIAL_FILE, VANISHED

_TITLES = {
    LINK_OUTSIDE: "Links that leave the source directory (kept as links; they will dangle elsewhere)",
    LINK_DANGLING: "Broken links (kept as links)",
    SPECIAL_FILE: "Skipped special files",
    NOT_UTF8: "Skipped names that are not UTF-8",
    VANISHED: "Vanished while the snapshot was taken (not in it)",
    CHANGED: "Changed while being read (the snapshot holds the bytes as read)",
}


def _limit(n: int, limit: int, fmt: Any = str) -> str:
    if not limit:
        return f"{fmt(n)} (no limit)"
    return f"{fmt(n)} of {fmt(limit)} ({100 * n / limit:.0f}%)"


def render_create(r: SnapshotResult) -> str:
    """The preflight report; the snapshot id is the last line."""
    lines = [f"Snapshot of {r.source}"]
    lines.append(f"  files:  {_limit(r.files + r.links, r.limits.max_files)}"
                 + (f"  ({plural(r.links, 'link')})" if r.links else ""))
    lines.append(f"  size:   {_limit(r.total_bytes, r.limits.max_bytes, format_size)}")
    if r.empty_dirs:
        lines.append(f"  empty directories: {r.empty_dirs}")
    lines.append(f"  stored: {r.new_blobs} new blobs ({format_size(r.new_bytes)}); "
                 f"{plural(r.files - r.read_files, 'file')} unchanged since the last snapshot")
    if r.largest:
        lines.append("Largest files:")
        for path, size in r.largest[:5]:
            lines.append(f"  {format_size(size):>10}  {path}")
    if r.secrets:
        lines.append("Possible secrets (leave them out with .amlignore if they should not travel):")
        for p in r.secrets:
            lines.append(f"  {p}")
    # Sections in a fixed order (the walk finds things in directory order).
    groups: dict[str, list[str]] = {kind: [] for kind in _TITLES}
    for i in r.issues:
        groups.setdefault(i.kind, []).append(f"  {i.path}  {i.detail}".rstrip())
    for kind, items in groups.items():
        if not items:
            continue
        lines.append(f"{_TITLES.get(kind, kind)}:")
        lines.extend(items[:20])
        if len(items) > 20:
            lines.append(f"  ... and {len(items) - 20} more")
    lines.append(r.id)
    return "\n".join(lines)


def render_show(sid: str, record: dict[str, Any] | None, m: mf.Manifest) -> str:
    rec = record or {}
    lines = [f"snapshot {sid}"]
    for key in ("source", "host", "created"):
        if rec.get(key):
            lines.append(f"{key}: {rec[key]}")
    files = m.files
    lines.append(f"files: {len(files)}  links: {sum(1 for e in m.entries if e.type == mf.LINK)}  "
                 f"empty directories: {sum(1 for e in m.entries if e.type == mf.DIR)}  "
                 f"size: {format_size(m.total_bytes)}")
    lines.append("")
    for e in m.entries:
        if e.type == mf.FILE:
            lines.append(f"{'755' if e.executable else '644'} {e.size:>10} {e.hash[:12]}  {e.path}")
        elif e.type == mf.LINK:
            lines.append(f"lnk {'':>10} {'':12}  {e.path} -> {e.target}")
        else:
            lines.append(f"dir {'':>10} {'':12}  {e.path}/")
    return "\n".join(lines)
