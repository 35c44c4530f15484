"""What a user is told about a snapshot before it is stored.

The largest files and directories, the ignore lines that would bring a tree
under its limits, likely secrets, and the over-limit error, which starts as
Azure ML's does and then says what Azure never says: what is big and how to
fix it.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from runyard.config import ENV_MAX_BYTES, ENV_MAX_FILES, ENV_SECRETS, Limits, SecretsPolicy, format_size, plural
from runyard.errors import SnapshotLimitError
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


def link_leaves(path: str, target: str) -> bool:
    """Whether a link at ``path`` (relative to the source) with ``target`` points
    out of the source directory, as far as its text says (absolute, or up past
    the root). The walk also follows links on the way; a manifest cannot.

    >>> link_leaves("a/b", "../../etc/passwd"), link_leaves("a/b", "../c"), link_leaves("x", "/etc")
    (True, False, True)
    """
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


_FLAGGED_SHOWN: Final = 50


def _listed(items: Sequence[str]) -> list[str]:
    out = [f"  {p}" for p in items[:_FLAGGED_SHOWN]]
    if len(items) > _FLAGGED_SHOWN:
        out.append(f"  ... and {len(items) - _FLAGGED_SHOWN} more")
    return out


def flagged_message(
    source: str,
    secrets: Sequence[str],
    links: Sequence[tuple[str, str]] = (),
    *,
    refused: SecretsPolicy | None = None,
    reused_snapshot: str | None = None,
) -> str:
    """What a run says about likely secrets and links leaving the source:
    each path, the ignore line that leaves it out, and how to change the policy.

    ``links`` are (path, detail) pairs; ``refused`` is the policy that refuses
    (the message is then an error's); ``reused_snapshot`` is the id of a
    snapshot a rerun reuses (no new snapshot is taken, so an ignore line only
    helps the next one).

    >>> print(flagged_message("/src", [".env"]))  # doctest: +NORMALIZE_WHITESPACE
    The snapshot of '/src' holds 1 likely secret; it is stored and goes with the run:
      .env
    To leave it out, add this line to /src/.amlignore:
      /.env
    To refuse such snapshots: --secrets refuse (SDK: secrets="refuse"), or for this workspace:
    runyard config set snapshot.secrets refuse
    """
    lines: list[str] = []
    what = f"snapshot {reused_snapshot[:12]} of '{source}', which this rerun reuses," if reused_snapshot else (
        f"snapshot of '{source}'")
    n = plural(len(secrets), "likely secret")
    if refused is not None:
        verb = f"rerun snapshot {reused_snapshot[:12]} of '{source}'" if reused_snapshot else (
            f"take a snapshot of '{source}'")
        done = "No run was recorded" if reused_snapshot else "Nothing was stored"
        lines.append(f"Refused to {verb}: it holds {n}, and the secrets policy is 'refuse' "
                     f"(set by {refused.source}). {done}.")
        lines.extend(_listed(list(secrets)))
        links = ()
    else:
        if secrets:
            lines.append(f"The {what} holds {n}; {'it is' if len(secrets) == 1 else 'they are'} "
                         f"{'in it' if reused_snapshot else 'stored'} and go{'es' if len(secrets) == 1 else ''} "
                         "with the run:")
            lines.extend(_listed(list(secrets)))
        if links:
            lines.append(f"{'The ' + what + ' has' if not secrets else 'It has'} "
                         + ("1 link that leaves the source directory (kept as a link: the run may follow it to a "
                            "file outside the snapshot):" if len(links) == 1 else
                            f"{len(links)} links that leave the source directory (kept as links: the run may "
                            "follow them to files outside the snapshot):"))
            lines.extend(_listed([f"{p}  {d}".rstrip() for p, d in links]))
    paths = [*secrets, *(p for p, _ in links)]
    one = len(paths) == 1
    where = ignore_file_hint(source)
    if reused_snapshot:
        lines.append(f"To leave {'it' if one else 'them'} out, add {'this line' if one else 'these lines'} to "
                     f"{where} and start a new run with runyard run (a rerun runs its snapshot as it was):")
    else:
        lines.append(f"To leave {'it' if one else 'them'} out, add {'this line' if one else 'these lines'} to "
                     f"{where}:")
    lines.extend(_listed([escape_pattern(p) for p in paths]))
    if refused is not None:
        lines.append(f"If {'it' if one else 'they'} must go with the run, allow "
                     f"{'it' if one else 'them'}: --secrets warn (SDK: secrets=\"warn\"), or {ENV_SECRETS}=warn, "
                     "or for this workspace: runyard config set snapshot.secrets warn")
    elif secrets:
        lines.append('To refuse such snapshots: --secrets refuse (SDK: secrets="refuse"), or for this workspace: '
                     "runyard config set snapshot.secrets refuse")
    return "\n".join(lines)


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


def over_limit_message(source: str, files: list[FileEntry], limits: Limits, command: str = "sdk") -> str | None:
    """The error text when the tree is over a limit, or None when it is not.

    ``command`` is what the user called, so that the advice names its own
    option: one of :data:`RAISE_LIMIT` (``snapshot``, ``run``, ``submit``, ``sdk``).
    """
    error = limit_error(source, files, limits, command)
    return None if error is None else str(error)


RAISE_LIMIT: Final = {
    # command -> how it raises (bytes, files) for one snapshot
    "snapshot": ("runyard snapshot create --max-bytes 1GiB ...", "runyard snapshot create --max-files 5000 ..."),
    "run": ("runyard run --max-bytes 1GiB ... SCRIPT", "runyard run --max-files 5000 ... SCRIPT"),
    "submit": ('ScriptRunConfig(..., max_bytes="1GiB")', "ScriptRunConfig(..., max_files=5000)"),
    "sdk": ('ws.snapshot(source_dir, max_bytes="1GiB")', "ws.snapshot(source_dir, max_files=5000)"),
}


def raise_limit_advice(command: str, over_bytes: bool, over_files: bool) -> str:
    """How to raise the limits that are over, with the option of ``command`` (see :data:`RAISE_LIMIT`)."""
    by_bytes, by_files = RAISE_LIMIT[command]
    lines = ["Or raise the limit (0 turns it off):"]
    if over_bytes:
        lines.append(f"  {by_bytes}   or  {ENV_MAX_BYTES}=1GiB")
        lines.append("  runyard config set snapshot.max_bytes 1GiB   (this workspace)")
    if over_files:
        lines.append(f"  {by_files}   or  {ENV_MAX_FILES}=5000")
        lines.append("  runyard config set snapshot.max_files 5000   (this workspace)")
    return "\n".join(lines)


def limit_error_for(error: SnapshotLimitError, command: str) -> SnapshotLimitError:
    """The same error, its advice naming the option of ``command`` (what the user typed)."""
    return SnapshotLimitError(f"{error.report}\n{raise_limit_advice(command, error.over_bytes, error.over_files)}",
                              report=error.report, over_bytes=error.over_bytes, over_files=error.over_files)


def limit_error(source: str, files: list[FileEntry], limits: Limits, command: str = "sdk") -> SnapshotLimitError | None:
    """The error to raise when the tree is over a limit, or None when it is not:
    what is over, what is big (the folders with the most files, for a file
    count), the ignore lines that fix it, and how ``command`` raises the limit."""
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
        f"The snapshot would hold {plural(total_n, 'file')}, {format_size(total_b)} ({plural(total_b, 'byte')}); "
        f"the limits are {plural(limits.max_files, 'file') if limits.max_files else 'no file-count limit'} "
        f"({limits.max_files_from}) and {format_size(limits.max_bytes) if limits.max_bytes else 'no size limit'} "
        f"({limits.max_bytes_from})."
    )
    dirs = dir_stats(files)
    if over_b:
        lines.append("")
        lines.append("Largest files:")
        for f in largest_files(files):
            lines.append(f"  {format_size(f.size):>10}  {f.path}")
        if dirs:
            lines.append("")
            lines.append("Largest directories:")
            for d in largest_dirs(dirs):
                lines.append(f"  {format_size(d.bytes):>10}  {plural(d.files, 'file'):>12}  {d.path}/")
    if over_n and dirs:  # what counts is how many files, not how big they are
        lines.append("")
        lines.append("Directories with the most files:")
        for d in largest_dirs(dirs, by_count=True):
            lines.append(f"  {plural(d.files, 'file'):>12}  {format_size(d.bytes):>10}  {d.path}/")
    suggestions = suggest_ignore_lines(files, limits)
    if suggestions:
        lines.append("")
        lines.append(f"To leave them out, add these lines to {ignore_file_hint(source)}:")
        for s in suggestions:
            lines.append(f"  {s}")
        lines.append("Keep data in a datastore instead of the source directory; "
                     "check any path with: runyard snapshot explain PATH")
    lines.append("")
    report = "\n".join(lines)
    return SnapshotLimitError(f"{report}\n{raise_limit_advice(command, over_b, over_n)}", report=report,
                              over_bytes=over_b, over_files=over_n)


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
