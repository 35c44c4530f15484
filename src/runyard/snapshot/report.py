"""What a user is told about a snapshot before it is stored.

The largest files and directories, the ignore lines that would bring a tree
under its limits, likely secrets, and the over-limit error, which starts as
Azure ML's does and then says what Azure never says: what is big and how to
fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from runyard.config import ENV_MAX_BYTES, ENV_MAX_FILES, Limits, format_size
from runyard.snapshot.walk import FileEntry

TOP_N: Final = 10
# A directory is not worth suggesting when one child holds this share of it:
# the child is the better line.
_DOMINANT: Final = 0.8

# Names that look like credentials or keys (matched case-insensitively on the
# last path component), and look-alikes that are not.
_SECRET_NAMES: Final = re.compile(
    r"\.env(?:\..*)?|.*\.(?:pem|key|p12|pfx|keystore|jks|kdbx)|id_(?:rsa|dsa|ecdsa|ed25519).*"
    r"|.*credentials.*|\.netrc|\.pgpass|\.pypirc|\.npmrc|\.htpasswd|\.git-credentials|kubeconfig"
    r"|.*secret.*\.json|service-account.*\.json",
    re.IGNORECASE | re.DOTALL,
)
_NOT_SECRETS: Final = re.compile(r"\.env\.(?:example|sample|template|dist)|.*\.pub", re.IGNORECASE | re.DOTALL)


def likely_secrets(paths: Iterable[str]) -> list[str]:
    """Paths whose names look like credentials or keys.

    >>> likely_secrets(["src/a.py", ".env", "keys/id_rsa", "id_rsa.pub", ".env.example"])
    ['.env', 'keys/id_rsa']
    """
    out = []
    for p in paths:
        name = p.rpartition("/")[2]
        if _SECRET_NAMES.fullmatch(name) and not _NOT_SECRETS.fullmatch(name):
            out.append(p)
    return out


@dataclass(frozen=True, slots=True)
class DirStat:
    path: str
    bytes: int
    files: int


def dir_stats(files: list[FileEntry]) -> dict[str, DirStat]:
    """Bytes and file counts of every directory (not the root), recursively."""
    acc: dict[str, list[int]] = {}
    for f in files:
        p = f.path
        i = p.rfind("/")
        while i > 0:
            d = p[:i]
            a = acc.get(d)
            if a is None:
                acc[d] = [f.size, 1]
            else:
                a[0] += f.size
                a[1] += 1
            i = p.rfind("/", 0, i)
    return {d: DirStat(d, b, n) for d, (b, n) in acc.items()}


def largest_files(files: list[FileEntry], n: int = TOP_N) -> list[FileEntry]:
    """The ``n`` biggest, biggest first (equal sizes in path order)."""
    import heapq

    return sorted(heapq.nlargest(n, files, key=_size_of), key=lambda f: (-f.size, f.path))


def _size_of(f: FileEntry) -> int:
    return f.size


def largest_dirs(dirs: dict[str, DirStat], n: int = TOP_N, by_count: bool = False) -> list[DirStat]:
    if by_count:
        return sorted(dirs.values(), key=lambda d: (-d.files, -d.bytes, d.path))[:n]
    return sorted(dirs.values(), key=lambda d: (-d.bytes, -d.files, d.path))[:n]


def escape_pattern(path: str) -> str:
    """An anchored ignore line matching exactly ``path`` (relative to the root)."""
    out = []
    for c in path:
        if c in "*?[\\":
            out.append("\\" + c)
        elif c in "\n\r":
            out.append("?")  # a line cannot hold them; '?' matches exactly that one byte
        else:
            out.append(c)
    s = "".join(out)
    if s.endswith(" "):
        s = s[:-1] + "\\ "
    return "/" + s


def suggest_ignore_lines(files: list[FileEntry], limits: Limits) -> list[str]:
    """Ignore lines (anchored, at the source root) that bring the tree under its limits.

    Greedy: the biggest contributors first (bytes when over the size limit,
    file counts when over the count limit), a directory only when no single
    child of it is most of it, never two lines where one covers the other.
    The lines themselves count: a new ``.amlignore`` is one more file (holding
    a copy of ``.gitignore``, as ``ignore_file_hint`` says), and every line adds
    its bytes, so following the advice always gets the tree under its limits.
    """
    total_b = sum(f.size for f in files)
    total_n = len(files)
    need_b = total_b - limits.max_bytes if limits.max_bytes and total_b > limits.max_bytes else 0
    need_n = total_n - limits.max_files if limits.max_files and total_n > limits.max_files else 0
    if not need_b and not need_n:
        return []
    sizes = {f.path: f.size for f in files if f.path in (".amlignore", ".gitignore")}
    # What writing the lines adds (a newline the file may lack; a new file, copied from .gitignore).
    add_b = 1 if ".amlignore" in sizes else sizes.get(".gitignore", 0) + 1
    add_n = 0 if ".amlignore" in sizes else 1
    files = [f for f in files if f.path not in sizes]  # the ignore files are never the fix
    dirs = dir_stats(files)
    children: dict[str, list[tuple[int, int]]] = {}
    for f in files:
        parent = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
        children.setdefault(parent, []).append((f.size, 1))
    for d in dirs.values():
        parent = d.path.rsplit("/", 1)[0] if "/" in d.path else ""
        children.setdefault(parent, []).append((d.bytes, d.files))

    def weight(b: int, n: int) -> float:
        # Share of what is still needed; both limits count when both are over.
        w = 0.0
        if need_b:
            w += b / need_b
        if need_n:
            w += n / need_n
        return w

    cands: list[tuple[float, str, bool, int, int]] = []
    for f in files:
        cands.append((weight(f.size, 1), f.path, False, f.size, 1))
    for d in dirs.values():
        kids = children.get(d.path, [])
        wd = weight(d.bytes, d.files)
        if kids and max(weight(b, n) for b, n in kids) >= _DOMINANT * wd:
            continue
        cands.append((wd, d.path, True, d.bytes, d.files))
    cands.sort(key=lambda c: (-c[0], c[1].count("/"), c[1]))

    chosen: list[str] = []
    lines: list[str] = []
    # Still to shed (<= 0: under that limit), counting what the ignore file adds.
    rem_b = total_b + add_b - limits.max_bytes if limits.max_bytes else 0
    rem_n = total_n + add_n - limits.max_files if limits.max_files else 0
    for _w, path, is_dir, b, n in cands:
        if rem_b <= 0 and rem_n <= 0:
            break
        if any(path == c or path.startswith(c + "/") or c.startswith(path + "/") for c in chosen):
            continue
        line = escape_pattern(path) + ("/" if is_dir else "")
        saved_b = b - len(line.encode("utf-8")) - 1
        if (rem_b <= 0 or saved_b <= 0) and (rem_n <= 0 or n == 0):
            continue  # it would not help (a line can cost more bytes than a tiny file)
        chosen.append(path)
        lines.append(line)
        rem_b -= saved_b
        rem_n -= n
    return lines


def _mb(n: int) -> str:
    # Azure ML prints the limit as bytes / 1024 / 1024 with one decimal: "300.0 MB".
    return f"{n / 1024 / 1024:.1f} MB"


def over_limit_message(source: str, files: list[FileEntry], limits: Limits) -> str | None:
    """The error text when the tree is over a limit, or None when it is not."""
    total_b = sum(f.size for f in files)
    total_n = len(files)
    over_b = bool(limits.max_bytes) and total_b > limits.max_bytes
    over_n = bool(limits.max_files) and total_n > limits.max_files
    if not over_b and not over_n:
        return None
    lines = [f"While attempting to take snapshot of {source}"]
    if over_b:
        lines.append(f"Your total snapshot size exceeds the limit of {_mb(limits.max_bytes)}")
    if over_n:
        lines.append(f"Your project exceeds the file limit of {limits.max_files}.")
    lines.append("")
    lines.append(
        f"The snapshot would hold {total_n} files, {format_size(total_b)} ({total_b} bytes); the limits are "
        f"{limits.max_files or 'no limit'} files ({limits.max_files_from}) and "
        f"{format_size(limits.max_bytes) if limits.max_bytes else 'no limit'} ({limits.max_bytes_from})."
    )
    lines.append("")
    lines.append("Largest files:")
    for f in largest_files(files):
        lines.append(f"  {format_size(f.size):>10}  {f.path}")
    dirs = dir_stats(files)
    if dirs:
        lines.append("")
        lines.append("Largest directories:")
        for d in largest_dirs(dirs, by_count=over_n and not over_b):
            lines.append(f"  {format_size(d.bytes):>10}  {d.files:>6} files  {d.path}/")
    suggestions = suggest_ignore_lines(files, limits)
    if suggestions:
        lines.append("")
        lines.append(f"To leave them out, add these lines to {ignore_file_hint(source)}:")
        for s in suggestions:
            lines.append(f"  {s}")
        lines.append("Keep data in a datastore instead of the source directory; "
                     "check any path with: runyard snapshot explain PATH")
    lines.append("")
    lines.append("Or raise the limit (0 turns it off):")
    if over_b:
        lines.append(f"  runyard snapshot create --max-bytes 1GiB ...   or  {ENV_MAX_BYTES}=1GiB")
        lines.append("  runyard config set snapshot.max_bytes 1GiB   (this workspace)")
    if over_n:
        lines.append(f"  runyard snapshot create --max-files 5000 ...   or  {ENV_MAX_FILES}=5000")
        lines.append("  runyard config set snapshot.max_files 5000   (this workspace)")
    lines.append("  SDK: ws.snapshot(source_dir, max_bytes=..., max_files=...)")
    return "\n".join(lines)


def ignore_file_hint(source: str) -> str:
    """Which file the suggested lines belong in, and the catch with .amlignore."""
    aml = os.path.join(source, ".amlignore")
    git = os.path.join(source, ".gitignore")
    if os.path.isfile(aml):
        return f"{aml}"
    if os.path.isfile(git):
        return (f"{aml} (create it by copying {git} first: once .amlignore exists, "
                ".gitignore in that directory is no longer read)")
    return aml
