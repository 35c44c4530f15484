"""``snapshot explain``: is a path in a snapshot, and why.

The same decision the walk makes, taken for one path: each directory on the
way down is checked first (nothing below an excluded directory can come back),
then the path itself, against the ignore files in force at its depth.
"""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass

from runyard.snapshot.ignore import Rule, default_ignore
from runyard.snapshot.walk import (
    GIT_DIR,
    WORKSPACE_DIR_NAME,
    Frame,
    Issue,
    decide,
    ignore_file_modes,
    outer_frames,
    pick_ignore_file,
    read_ignore_file,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    path: str
    included: bool
    reason: str
    rule: Rule | None = None

    def render(self) -> str:
        return f"{'included' if self.included else 'excluded'}  {self.path}  ({self.reason})"


def _relative(root: str, path: str, given_root: str) -> str | None:
    """``path`` relative to ``root``; None when it lies outside."""
    if os.path.isabs(path):
        rel = os.path.relpath(os.path.abspath(path), root)
    else:
        norm_given = os.path.normpath(given_root)
        norm = os.path.normpath(path)
        if norm_given not in (".", "") and (norm == norm_given or norm.startswith(norm_given + os.sep)):
            rel = os.path.relpath(norm, norm_given)
        else:
            rel = os.path.normpath(path)
    rel = rel.replace(os.sep, "/")
    if rel == ".." or rel.startswith("../"):
        return None
    return rel


def explain(directory: str, paths: list[str], *, exclude_dirs: tuple[str, ...] = ()) -> list[Verdict]:
    """Explain each path (relative to ``directory``) as the snapshot walk decides it."""
    root = os.path.abspath(directory)
    broot = os.fsencode(root)
    issues: list[Issue] = []
    outer, top_prefix = outer_frames(broot, issues)
    base = [Frame(default_ignore(), len(top_prefix)), *outer]
    excluded_real = {os.fsencode(os.path.realpath(d)) for d in exclude_dirs}
    out = []
    for given in paths:
        rel = _relative(root, given, directory)
        if rel is None:
            out.append(Verdict(given, False, f"it is outside the source directory {root}"))
            continue
        if rel in (".", ""):
            out.append(Verdict(given, True, "it is the source directory itself"))
            continue
        trailing_dir = given.endswith("/")
        out.append(_explain_one(root, broot, rel.rstrip("/"), trailing_dir, base, top_prefix, excluded_real))
    return out


def _explain_one(
    root: str,
    broot: bytes,
    rel: str,
    trailing_dir: bool,
    base: list[Frame],
    top_prefix: bytes,
    excluded_real: set[bytes],
) -> Verdict:
    parts = os.fsencode(rel).split(b"/")
    frames = list(base)
    dir_rel = b""
    issues: list[Issue] = []
    for i, part in enumerate(parts):
        is_last = i == len(parts) - 1
        here = dir_rel + part
        # The ignore file of the directory we are in applies to its entries.
        dir_abs = broot + b"/" + dir_rel if dir_rel else broot
        which = pick_ignore_file(dir_rel, ignore_file_modes(dir_abs), issues)
        if which is not None:
            rules = read_ignore_file(os.path.join(dir_abs, which), (dir_rel + which).decode("utf-8", "replace"),
                                     issues)
            if rules is not None:
                frames.append(Frame(rules, len(top_prefix) + len(dir_rel)))
        abspath = broot + b"/" + here
        try:
            s = os.lstat(abspath)
            is_dir = st.S_ISDIR(s.st_mode)
            exists = True
        except OSError:
            s = None
            is_dir = (not is_last) or trailing_dir
            exists = False
        shown = here.decode("utf-8", "replace") + ("/" if is_dir else "")
        if part == GIT_DIR:
            return Verdict(rel, False, ".git/ is always left out" if is_last else f"it is inside {shown}, "
                           "and .git/ is always left out")
        rule = decide(frames, top_prefix + here, is_dir)
        if rule is not None and not rule.negative:
            if is_last:
                return Verdict(rel, False, f"excluded by {rule.describe()}", rule)
            return Verdict(
                rel, False,
                f"its directory {shown} is excluded by {rule.describe()}; "
                "nothing below an excluded directory can be re-included", rule)
        if not is_last and s is not None and st.S_ISLNK(s.st_mode):
            return Verdict(rel, False, f"it is below the symlink {shown.rstrip('/')}, which is kept as a link; "
                           "what it points to is not snapshotted")
        if is_dir and (part == WORKSPACE_DIR_NAME or os.path.realpath(abspath) in excluded_real):
            return Verdict(rel, False, f"{'it is' if is_last else 'it is inside'} the runyard workspace "
                           f"{shown}, which is always left out")
        if is_last:
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                return Verdict(rel, False, "its name is not valid UTF-8; rename it")
            note = ""
            if not exists:
                note = "; it does not exist, judged as a " + ("directory" if is_dir else "file")
            elif s is not None and not (st.S_ISREG(s.st_mode) or st.S_ISDIR(s.st_mode) or st.S_ISLNK(s.st_mode)):
                return Verdict(rel, False, "no rule excludes it, but only files, directories and "
                               "symlinks are snapshotted")
            elif s is not None and st.S_ISLNK(s.st_mode):
                note = f"; a symlink, kept as a link to {os.readlink(abspath).decode('utf-8', 'replace')}"
            if rule is not None:
                return Verdict(rel, True, f"re-included by {rule.describe()}{note}", rule)
            return Verdict(rel, True, f"no ignore rule matches it{note}")
        dir_rel = here + b"/"
    raise AssertionError("unreachable")
