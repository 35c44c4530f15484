"""Turning a recorded name into a path below a folder, and nowhere else.

Names that runyard writes to disk come from records it does not fully
control: artifact names in the run history (a script on the local target can
write that database), paths in a snapshot's manifest (a store can be
forged), a dataset version's file list, object keys. Every place that makes
a local path from one goes through :func:`join_under` (or :class:`Under` for
many names below one folder), which refuses

- a name that is not a plain relative POSIX path: empty, absolute, with an
  empty, ``.`` or ``..`` part, a NUL, text that is not UTF-8, or (unless the
  caller allows it) a backslash, which another system would read as a
  separator;
- a name whose path would go through a symbolic link *already in the folder*
  that leads out of it (or nowhere: a dangling link or a loop), since
  creating folders and files through it would write outside. Links that stay
  inside the folder are followed. The folder itself may be a link: it is
  what the user named.

It raises :class:`~runyard.errors.UnsafePathError` with the name, the reason
and what to do; callers add whose name it was (which run, which dataset).
The check is made just before the write; it guards against records, not
against another process swapping folders for links at the same moment.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> join_under(root, "outputs/model.pt") == os.path.join(root, "outputs", "model.pt")
True
>>> join_under(root, "../x")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
UnsafePathError: Refusing to write '../x' below '...': it has a '..' part. ...
"""

from __future__ import annotations

import os
import stat

from runyard.errors import UnsafePathError

__all__ = ["Under", "join_under", "name_problem"]


def name_problem(name: str, *, backslash: bool = False) -> str | None:
    """Why ``name`` is not a plain relative POSIX path, or None when it is.

    >>> name_problem("data/train.csv") is None
    True
    >>> name_problem("a//b")
    'it has an empty part'
    """
    if not isinstance(name, str) or not name:
        return "it is empty"
    if "\x00" in name:
        return "it has a NUL character"
    if name.startswith("/"):
        return "it is absolute"
    if not backslash and "\\" in name:
        return "it has a backslash"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    for part in name.split("/"):
        if not part:
            return "it has an empty part"
        if part in (".", ".."):
            return f"it has a {part!r} part"
    return None


class Under:
    """A folder that many recorded names are written below.

    Directories found to be real folders (or links that stay inside) are
    remembered, so a batch of names costs about one ``lstat`` per new folder.

    >>> import tempfile
    >>> u = Under(tempfile.mkdtemp())
    >>> u.join("a/b.txt") == os.path.join(u.root, "a", "b.txt")
    True
    """

    def __init__(self, root: str | os.PathLike[str], *, backslash: bool = False) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.backslash = backslash
        self._real_root: str | None = None
        self._checked: set[str] = set()

    def join(self, name: str) -> str:
        """``root/name``, or ``UnsafePathError`` when it could land outside ``root``."""
        problem = name_problem(name, backslash=self.backslash)
        if problem is not None:
            raise UnsafePathError(
                f"Refusing to write {name!r} below '{self.root}': {problem}. A recorded name must be a relative "
                "POSIX path without '.', '..' or empty parts; this one was not written by runyard, or it was "
                "damaged. Nothing was written for it.", name=name, reason=problem)
        parts = name.split("/")
        path = os.path.join(self.root, *parts)
        self._check_links(name, parts)
        return path

    def _check_links(self, name: str, parts: list[str]) -> None:
        cur = self.root
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            last = i == len(parts) - 1
            if not last and cur in self._checked:
                continue
            try:
                st = os.lstat(cur)
            except (FileNotFoundError, NotADirectoryError):
                return  # nothing below exists: whatever is made there is made inside
            except OSError as exc:
                raise UnsafePathError(
                    f"Refusing to write {name!r} below '{self.root}': '{cur}' cannot be checked "
                    f"({exc.strerror}). Fix its permissions, or choose another folder.",
                    name=name, reason=f"'{cur}' cannot be checked ({exc.strerror})") from exc
            if stat.S_ISLNK(st.st_mode):
                self._check_link(name, cur)
            if not last and (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                self._checked.add(cur)

    def _check_link(self, name: str, link: str) -> None:
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        target = "?"
        real: str | None = None
        try:
            target = os.readlink(link)
            real = os.path.realpath(link, strict=True)
        except OSError:
            pass  # dangling, a loop, or unreadable: it leads nowhere runyard can check
        if real is not None and (real == self._real_root or real.startswith(self._real_root.rstrip("/") + "/")):
            return
        where = "outside that folder" if real is not None else "which leads nowhere (dangling, or a loop)"
        reason = (f"'{os.path.relpath(link, self.root)}' in '{self.root}' is a symbolic link to '{target}', "
                  f"{where}")
        raise UnsafePathError(
            f"Refusing to write {name!r}: {reason}; writing through it would put files outside the folder. "
            "Remove that link, or choose another folder.", name=name, reason=reason)


def join_under(root: str | os.PathLike[str], name: str, *, backslash: bool = False) -> str:
    """``root/name`` if ``name`` is a safe relative POSIX path whose path stays inside ``root``
    (links already in ``root`` included); else ``UnsafePathError``. See :class:`Under`."""
    return Under(root, backslash=backslash).join(name)
