"""The one traversal of a source directory.

It decides what is in and out (git's ignore rules, nested ignore files,
``.amlignore`` over ``.gitignore`` per directory, the ignore files of an
enclosing git work tree), never enters an excluded directory, records what it
keeps with the ``stat`` data the stat cache and the limits need, and reports
everything odd instead of failing on it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as st
from dataclasses import dataclass, field
from typing import Final

from runyard.errors import SnapshotError
from runyard.snapshot.ignore import DEFAULT_SOURCE, IgnoreFile, Rule, default_ignore

AMLIGNORE: Final = b".amlignore"
GITIGNORE: Final = b".gitignore"
GIT_DIR: Final = b".git"
WORKSPACE_DIR_NAME: Final = b".runyard"

BUILTIN_SOURCE: Final = "<runyard>"
GIT_RULE: Final = Rule(BUILTIN_SOURCE, 0, ".git/", False, False)
WORKSPACE_RULE: Final = Rule(BUILTIN_SOURCE, 0, "(the runyard workspace)", False, True)


@dataclass(slots=True)
class FileEntry:
    """A regular file or a symlink that goes into the snapshot."""

    path: str
    """POSIX path relative to the source directory."""
    is_link: bool
    size: int
    executable: bool
    mtime_ns: int
    ctime_ns: int
    ino: int
    target: str = ""
    """A symlink's target string, as written."""


@dataclass(frozen=True, slots=True)
class Issue:
    """Something odd found during the walk. ``kind`` is one of the constants below."""

    kind: str
    path: str
    detail: str = ""


# Issue kinds. Errors stop a snapshot; the rest are reported.
UNREADABLE: Final = "unreadable"  # error
BAD_IGNORE_FILE: Final = "unreadable-ignore-file"  # error
LINK_OUTSIDE: Final = "link-outside"
LINK_DANGLING: Final = "link-dangling"
SPECIAL_FILE: Final = "special-file"
NOT_UTF8: Final = "non-utf8-name"
VANISHED: Final = "vanished"
CHANGED: Final = "changed"
SOURCE_IGNORED: Final = "source-ignored"
IGNORE_FILE_LINK: Final = "ignore-file-is-link"
ERROR_KINDS: Final = frozenset({UNREADABLE, BAD_IGNORE_FILE})


@dataclass(slots=True)
class WalkResult:
    root: str
    files: list[FileEntry] = field(default_factory=list)
    """Files and links, sorted by path."""
    empty_dirs: list[str] = field(default_factory=list)
    """Included directories with nothing included below them, sorted."""
    excluded: list[tuple[str, Rule]] = field(default_factory=list)
    """Excluded paths (a directory once, with a trailing '/') and the deciding rule."""
    issues: list[Issue] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.kind in ERROR_KINDS]


class Frame:
    """An ignore file in force, and where its directory starts in a full path."""

    __slots__ = ("pos", "rules")

    def __init__(self, rules: IgnoreFile, pos: int) -> None:
        self.rules = rules
        self.pos = pos


def decide(frames: list[Frame], full: bytes, is_dir: bool) -> Rule | None:
    for fr in reversed(frames):
        r = fr.rules.match(full, fr.pos, is_dir)
        if r is not None:
            return r
    return None


def _fsdecode(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def read_ignore_file(path: bytes, source: str, issues: list[Issue]) -> IgnoreFile | None:
    """Read an ignore file the way git does (a symlinked one is not read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if os.path.islink(path):
            issues.append(Issue(IGNORE_FILE_LINK, source, "a symlinked ignore file is not read (as in git)"))
            return None
        issues.append(Issue(BAD_IGNORE_FILE, source, exc.strerror or str(exc)))
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        issues.append(Issue(BAD_IGNORE_FILE, source, exc.strerror or str(exc)))
        return None
    rules = IgnoreFile(source, data)
    return rules if rules else None


IGNORE_NAMES: Final = (AMLIGNORE, GITIGNORE)


def pick_ignore_file(dir_rel: bytes, modes: dict[bytes, int], issues: list[Issue]) -> bytes | None:
    """The ignore file in force in a directory, given the ``lstat`` modes of
    the ignore-file names present there: ``.amlignore``, else ``.gitignore``.

    Only a regular file counts: git skips a directory of that name and does
    not follow a symlinked one (which is reported).
    """
    chosen = None
    for name in IGNORE_NAMES:
        mode = modes.get(name)
        if mode is None:
            continue
        if st.S_ISREG(mode):
            chosen = chosen or name
        elif st.S_ISLNK(mode):
            issues.append(Issue(IGNORE_FILE_LINK, _fsdecode(dir_rel + name),
                                "a symlinked ignore file is not read (as in git)"))
    return chosen


def ignore_file_modes(dir_abs: bytes) -> dict[bytes, int]:
    """``lstat`` modes of the ignore-file names present in ``dir_abs``."""
    modes = {}
    for name in IGNORE_NAMES:
        try:
            modes[name] = os.lstat(os.path.join(dir_abs, name)).st_mode
        except OSError:
            continue
    return modes


def find_git_root(root: bytes) -> bytes | None:
    """The work tree enclosing ``root`` (not ``root`` itself), if any.

    A ``root`` that is itself a work tree's root has none: as in git, the
    ignore files of a repository around it do not apply inside it.
    """
    if os.path.lexists(os.path.join(root, GIT_DIR)):
        return None
    d = root
    while True:
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent
        if os.path.lexists(os.path.join(d, GIT_DIR)):
            return d


def outer_frames(root: bytes, issues: list[Issue]) -> tuple[list[Frame], bytes]:
    """Ignore files between an enclosing git work tree's root and ``root``.

    Returns the frames (outermost first) and the prefix that turns a path
    relative to ``root`` into one relative to the work tree's root.
    """
    top = find_git_root(root)
    if top is None:
        return [], b""
    rel = os.path.relpath(root, top)
    parts = rel.split(b"/")
    frames: list[Frame] = []
    d = top
    dir_rel = b""
    for part in [b"", *parts[:-1]]:
        if part:
            d = os.path.join(d, part)
            dir_rel = dir_rel + part + b"/"
        shown = os.path.relpath(d, root) + b"/"  # as seen from the source directory: ../, ../../
        which = pick_ignore_file(shown, ignore_file_modes(d), issues)
        if which is None:
            continue
        display = _fsdecode(shown + which)
        rules = read_ignore_file(os.path.join(d, which), display, issues)
        if rules is not None:
            frames.append(Frame(rules, len(dir_rel)))
    return frames, rel + b"/"


def _link_issue(real_root: bytes, rel: str, target: str, abspath: bytes) -> Issue | None:
    """``real_root`` is the source directory's realpath with a trailing '/'."""
    if target.startswith("/"):
        return Issue(LINK_OUTSIDE, rel, f"-> {target} (an absolute target will dangle on another machine)")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../"):
        return Issue(LINK_OUTSIDE, rel, f"-> {target} (points outside the source directory)")
    try:
        os.stat(abspath)
    except OSError as exc:
        what = "a link loop" if exc.errno == errno.ELOOP else "a broken link"
        return Issue(LINK_DANGLING, rel, f"-> {target} ({what})")
    # Lexically inside, but another link on the way may lead out (a -> b/x, b -> /etc).
    if not (os.path.realpath(abspath) + b"/").startswith(real_root):
        return Issue(LINK_OUTSIDE, rel, f"-> {target} (through another link, it points outside the source directory)")
    return None


def walk(
    root: str | os.PathLike[str],
    *,
    exclude_dirs: tuple[str, ...] = (),
    collect_excluded: bool = False,
    want_stat: bool = True,
) -> WalkResult:
    """Walk ``root`` and decide every path.

    ``exclude_dirs`` are absolute directories that are always out (the
    workspace). With ``want_stat=False`` files are not stat'ed (``ls`` needs
    names only); sizes are then 0.

    >>> r = walk(".")  # doctest: +SKIP
    >>> [f.path for f in r.files][:3]  # doctest: +SKIP
    """
    root_s = os.path.abspath(os.fspath(root))
    broot = os.fsencode(root_s)
    try:
        rst = os.stat(broot)
    except OSError as exc:
        raise SnapshotError(
            f"Cannot read the source directory '{root_s}': {exc.strerror}. Check the path."
        ) from exc
    if not st.S_ISDIR(rst.st_mode):
        raise SnapshotError(f"The source directory '{root_s}' is not a directory. Pass a directory.")

    result = WalkResult(root_s)
    issues = result.issues
    frames, top_prefix = outer_frames(broot, issues)
    plen = len(top_prefix)
    if frames:
        # git would list nothing below an excluded directory; the source
        # directory (and the path down to it) was chosen, so it is walked
        # anyway, and the report says so.
        parts = top_prefix[:-1].split(b"/")
        for i in range(1, len(parts) + 1):
            path = b"/".join(parts[:i])
            rule = decide([f for f in frames if f.pos <= len(path)], path, True)
            if rule is not None and not rule.negative:
                what = "the source directory itself" if i == len(parts) else f"its parent {_fsdecode(path)}/"
                issues.append(Issue(SOURCE_IGNORED, ".", f"{what} is ignored by {rule.describe()} in the "
                                    "enclosing git work tree; its contents are snapshotted anyway"))
                break
    frames.insert(0, Frame(default_ignore(), plen))

    excluded_inodes: dict[int, bytes] = {}
    for d in exclude_dirs:
        try:
            dst = os.stat(d)
        except OSError:
            continue
        if dst.st_dev == rst.st_dev:
            excluded_inodes[dst.st_ino] = os.fsencode(os.path.realpath(d))

    real_root = os.path.join(os.path.realpath(broot), b"")
    files = result.files
    empty_dirs = result.empty_dirs
    excluded = result.excluded
    # Each stack item: (relative dir path with trailing '/', or b"" for the root; frames in force)
    stack: list[tuple[bytes, list[Frame]]] = [(b"", frames)]
    # Directories with something included below them, to find the empty ones.
    nonempty: set[bytes] = set()
    seen_dirs: list[bytes] = []

    while stack:
        dir_rel, dframes = stack.pop()
        dir_abs = broot + b"/" + dir_rel if dir_rel else broot
        try:
            with os.scandir(dir_abs) as it:
                ents = list(it)
        except OSError as exc:
            kind = VANISHED if exc.errno == 2 else UNREADABLE
            issues.append(Issue(kind, _fsdecode(dir_rel) or ".", exc.strerror or str(exc)))
            continue
        modes = {}
        for e in ents:
            if e.name in IGNORE_NAMES:
                try:
                    modes[e.name] = e.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
        which = pick_ignore_file(dir_rel, modes, issues)
        if which is not None:
            src = _fsdecode(dir_rel + which)
            rules = read_ignore_file(dir_abs + b"/" + which, src, issues)
            if rules is not None:
                dframes = [*dframes, Frame(rules, plen + len(dir_rel))]
        if dir_rel:
            seen_dirs.append(dir_rel)
        deepest_first = dframes[::-1]
        for e in ents:
            name = e.name
            if name == GIT_DIR:
                if collect_excluded:
                    excluded.append((_fsdecode(dir_rel + name) + "/", GIT_RULE))
                continue
            rel = dir_rel + name
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            # decide(), inlined: this loop runs for every entry of the tree.
            full = top_prefix + rel if plen else rel
            rule = None
            for fr in deepest_first:
                rule = fr.rules.match(full, fr.pos, is_dir)
                if rule is not None:
                    break
            if rule is not None and not rule.negative:
                if collect_excluded:
                    excluded.append((_fsdecode(rel) + ("/" if is_dir else ""), rule))
                continue
            if is_dir and (
                name == WORKSPACE_DIR_NAME
                or (e.inode() in excluded_inodes and os.path.realpath(e.path) == excluded_inodes[e.inode()])
            ):
                if collect_excluded:
                    excluded.append((_fsdecode(rel) + "/", WORKSPACE_RULE))
                continue
            try:
                srel = rel.decode("utf-8")
            except UnicodeDecodeError:
                issues.append(Issue(NOT_UTF8, _fsdecode(rel), "the name is not valid UTF-8; rename it"))
                continue
            if is_dir:
                stack.append((rel + b"/", dframes))
                nonempty.add(dir_rel)
                continue
            try:
                if e.is_file(follow_symlinks=False):
                    if want_stat:
                        s = e.stat(follow_symlinks=False)
                        files.append(FileEntry(srel, False, s.st_size, bool(s.st_mode & 0o111),
                                               s.st_mtime_ns, s.st_ctime_ns, s.st_ino))
                    else:
                        files.append(FileEntry(srel, False, 0, False, 0, 0, 0))
                elif e.is_symlink():
                    try:
                        target = os.readlink(e.path).decode("utf-8")
                    except UnicodeDecodeError:
                        issues.append(Issue(NOT_UTF8, srel, "the link's target is not valid UTF-8"))
                        continue
                    files.append(FileEntry(srel, True, 0, False, 0, 0, 0, target))
                    if want_stat:
                        li = _link_issue(real_root, srel, target, e.path)
                        if li is not None:
                            issues.append(li)
                else:
                    s = e.stat(follow_symlinks=False)
                    issues.append(Issue(SPECIAL_FILE, srel, f"{file_kind(s.st_mode)} is not snapshotted"))
                    continue
            except FileNotFoundError:
                issues.append(Issue(VANISHED, srel, "it vanished during the walk"))
                continue
            nonempty.add(dir_rel)

    # An included directory with no included entry of its own is recorded
    # so that restore recreates it; its parents are implied by its path.
    for seen in seen_dirs:
        if seen not in nonempty:
            try:
                empty_dirs.append(seen[:-1].decode("utf-8"))
            except UnicodeDecodeError:
                continue
    # Code-point order of a str is the byte order of its UTF-8 (the names here
    # decoded strictly, so no surrogates): sorting needs no encoding.
    empty_dirs.sort()
    files.sort(key=_path_of)
    excluded.sort(key=lambda x: x[0].encode("utf-8", "surrogateescape"))
    issues.sort(key=lambda i: i.path.encode("utf-8", "surrogateescape"))
    return result


def _path_of(f: FileEntry) -> str:
    return f.path


def file_kind(mode: int) -> str:
    """What a file that is not a regular file, directory or symlink is, for messages."""
    if st.S_ISFIFO(mode):
        return "a FIFO"
    if st.S_ISSOCK(mode):
        return "a socket"
    if st.S_ISCHR(mode) or st.S_ISBLK(mode):
        return "a device file"
    return "not a regular file, directory or symlink"


__all__ = [
    "DEFAULT_SOURCE",
    "FileEntry",
    "Issue",
    "WalkResult",
    "find_git_root",
    "walk",
]
