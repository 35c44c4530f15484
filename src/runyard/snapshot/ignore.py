"""Git's ignore rules, byte for byte.

A line of an ignore file becomes one regular expression over bytes that matches
a path relative to the directory holding the file, with exactly the meaning
git's ``wildmatch(..., WM_PATHNAME)`` and ``dir.c`` give it:

* A pattern with no slash (a trailing slash aside) matches the last component
  at any depth below the file; one with a slash at the start or in the middle
  is anchored to the file's directory.
* A trailing slash matches directories only (a symlink to a directory is not a
  directory); a leading ``!`` negates; ``\\`` escapes the next byte.
* ``*`` and ``?`` never match ``/``; ``**`` is special only between slashes or
  at either end; ``[...]`` classes work on single bytes, never match ``/``, and
  follow wildmatch's parsing quirks (``[]a]``, ``[!...]``, ``[^...]``,
  ``[[:alpha:]]``, ``[[:a]`` as the set of ``[``, ``:`` and ``a``); a
  malformed class or a trailing backslash makes a pattern that matches
  nothing, as in git.
* git compares an anchored pattern's literal prefix separately and hands
  wildmatch the rest together with the prefix's last byte, so ``**`` right
  after a prefix that does not end in ``/`` is an ordinary ``*``:
  ``foo**/bar`` matches ``foo/bar`` and ``fooX/bar``, not ``foobar`` or
  ``foo/x/bar``. This is git 2.52's rule; older git handed over the rest
  alone, so the ``**`` counted as being at the start and matched both.

Within one file the last matching line decides; across files the deepest file
with any matching line decides. Lines are parsed as git parses them: a UTF-8
BOM is skipped, ``\\r\\n`` endings are accepted, blank lines and lines starting
with ``#`` are skipped, a NUL byte ends a line's pattern, and unescaped
trailing spaces are trimmed. No line can make parsing fail: what git would
never match, we never match.

The regexes stay fast on hostile patterns (``*a*a*a*a*b``,
``**/a/**/a/**/a/**/b``): where backtracking could only try later matches of
a piece that an earlier match already makes as good, an atomic group commits
to the earliest one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_BOM: Final = b"\xef\xbb\xbf"
_SLASH: Final = ord("/")
_BACKSLASH: Final = ord("\\")
_STAR: Final = ord("*")
_GLOB_SPECIAL: Final = frozenset(b"*?[\\")

# POSIX classes as git's own ctype defines them: ASCII only.
_POSIX_CLASSES: Final[dict[bytes, frozenset[int]]] = {
    b"alnum": frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
    b"alpha": frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    b"blank": frozenset(b" \t"),
    b"cntrl": frozenset([*range(0, 32), 127]),
    b"digit": frozenset(b"0123456789"),
    b"graph": frozenset(range(0x21, 0x7F)),
    b"lower": frozenset(b"abcdefghijklmnopqrstuvwxyz"),
    b"print": frozenset(range(0x20, 0x7F)),
    b"punct": frozenset(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    b"space": frozenset(b" \t\n\r"),
    b"upper": frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    b"xdigit": frozenset(b"0123456789abcdefABCDEF"),
}
_ALL_BYTES: Final = frozenset(range(256))

_NOT_SLASH: Final = b"[^/]"


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of an ignore file, as git reports it in ``check-ignore -v``."""

    source: str
    """Where the line comes from, e.g. ``.gitignore`` or ``sub/.amlignore``."""
    lineno: int
    pattern: str
    """The line as written, after trimming (``!`` and a trailing ``/`` kept)."""
    negative: bool
    dir_only: bool

    def describe(self) -> str:
        """``file:line:pattern``, the form of ``git check-ignore -v``."""
        return f"{self.source}:{self.lineno}:{self.pattern}"


def trim_trailing_spaces(line: bytes) -> bytes:
    """Drop unescaped trailing spaces (not tabs), as git does.

    >>> trim_trailing_spaces(b"foo  "), trim_trailing_spaces(b"foo\\\\  ")
    (b'foo', b'foo\\\\ ')
    """
    last_space = -1
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == 0x20:
            if last_space < 0:
                last_space = i
        elif c == _BACKSLASH:
            i += 1
            if i >= n:
                return line
            last_space = -1
        else:
            last_space = -1
        i += 1
    return line[:last_space] if last_space >= 0 else line


def iter_lines(data: bytes) -> list[tuple[int, bytes]]:
    """The pattern lines of an ignore file's bytes, with their line numbers."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    out: list[tuple[int, bytes]] = []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line or line[0] == 0x23:  # empty, or '#'
            continue
        if line[-1] == 0x0D:
            line = line[:-1]
        # git keeps each line as a C string: a NUL byte ends the pattern.
        nul = line.find(b"\0")
        if nul >= 0:
            line = line[:nul]
        line = trim_trailing_spaces(line)
        if line:
            out.append((lineno, line))
    return out


def _byte_set_regex(members: frozenset[int] | set[int]) -> bytes:
    """A regex class matching exactly these byte values."""
    if not members:
        return b"(?!)"
    vals = sorted(members)
    parts: list[bytes] = []
    start = prev = vals[0]
    for v in [*vals[1:], -2]:
        if v == prev + 1:
            prev = v
            continue
        if start == prev:
            parts.append(b"\\x%02x" % start)
        else:
            parts.append(b"\\x%02x-\\x%02x" % (start, prev))
        start = prev = v
    return b"[" + b"".join(parts) + b"]"


def _parse_class(p: bytes, i: int) -> tuple[bytes, int] | None:
    """Parse the class starting at ``p[i] == '['`` as wildmatch does.

    Returns the regex for it and the index after the closing ``]``, or None
    when the class is malformed (git then matches nothing).
    """
    n = len(p)
    j = i + 1
    negated = j < n and p[j] in b"!^"
    if negated:
        j += 1
    members: set[int] = set()
    prev_ch = 0
    first = True
    while True:
        if j >= n:
            return None
        c = p[j]
        if not first and c == 0x5D:  # ']'
            j += 1
            break
        first = False
        if c == _BACKSLASH:
            j += 1
            if j >= n:
                return None
            c = p[j]
            members.add(c)
            prev_ch = c
        elif c == 0x2D and prev_ch and j + 1 < n and p[j + 1] != 0x5D:  # '-'
            j += 1
            c = p[j]
            if c == _BACKSLASH:
                j += 1
                if j >= n:
                    return None
                c = p[j]
            members.update(range(prev_ch, c + 1))
            prev_ch = 0
        elif c == 0x5B and j + 1 < n and p[j + 1] == 0x3A:  # '[:'
            s = j + 2
            k = s
            while k < n and p[k] != 0x5D:
                k += 1
            if k >= n:
                return None
            if k - s - 1 < 0 or p[k - 1] != 0x3A:
                # No ":]": the '[' is an ordinary member and parsing goes on
                # with the ':' (j is advanced past the '[' below).
                members.add(0x5B)
                prev_ch = 0x5B
                j = s - 2
            else:
                cls = _POSIX_CLASSES.get(p[s : k - 1])
                if cls is None:
                    return None
                members.update(cls)
                prev_ch = 0
                j = k
        else:
            members.add(c)
            prev_ch = c
        j += 1
    chosen = (_ALL_BYTES - members) if negated else frozenset(members)
    return _byte_set_regex(chosen - {_SLASH}), j


# Tokens of a wildmatch pattern: (kind, regex, is a literal '/').
_T_FIXED: Final = 0  # one byte (a literal, '?', a class)
_T_STAR: Final = 1  # '*' (never crosses '/')
_T_DSTAR_DIRS: Final = 2  # '**/' at a boundary: zero or more whole directories
_T_DSTAR_ANY: Final = 3  # '**' at a boundary, at the end or before '\/': anything
_Token = tuple[int, bytes, bool]

_DSTAR_GREEDY: Final = {_T_DSTAR_DIRS: b"(?:.*/)?", _T_DSTAR_ANY: b".*"}
_DSTAR_LAZY: Final = {_T_DSTAR_DIRS: b"(?:.*?/)??", _T_DSTAR_ANY: b".*?"}


def _tokenize(p: bytes) -> list[_Token] | None:
    """The tokens of ``p``; None when git would match nothing."""
    toks: list[_Token] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == _BACKSLASH:
            if i + 1 >= n:
                return None
            lit = p[i + 1 : i + 2]
            toks.append((_T_FIXED, re.escape(lit), lit == b"/"))
            i += 2
        elif c == 0x3F:  # '?'
            toks.append((_T_FIXED, _NOT_SLASH, False))
            i += 1
        elif c == 0x5B:  # '['
            parsed = _parse_class(p, i)
            if parsed is None:
                return None
            toks.append((_T_FIXED, parsed[0], False))
            i = parsed[1]
        elif c == _STAR:
            j = i
            while j < n and p[j] == _STAR:
                j += 1
            kind = _T_STAR
            # wildmatch looks at the raw byte before the stars, so '\/**' counts.
            if j - i >= 2 and (i == 0 or p[i - 1] == _SLASH):
                if j == n or p[j : j + 2] == b"\\/":
                    kind = _T_DSTAR_ANY
                elif p[j] == _SLASH:
                    kind = _T_DSTAR_DIRS
                    j += 1
            if kind != _T_STAR and toks and toks[-1][0] == _T_DSTAR_DIRS:
                # '**/**/' is '**/' and '**/**' is '**': merging them keeps
                # runs like 'a/**/**/**/b' from backtracking polynomially.
                toks.pop()
            toks.append((kind, b"", False))
            i = j
        else:
            lit = bytes((c,))
            toks.append((_T_FIXED, re.escape(lit), c == _SLASH))
            i += 1
    return toks


def _unit_regex(toks: list[_Token]) -> bytes:
    """The regex of a run of tokens without '**' (it spans a fixed number of '/')."""
    out: list[bytes] = []
    n = len(toks)
    i = 0
    while i < n:
        kind, rx, _ = toks[i]
        if kind == _T_FIXED:
            out.append(rx)
            i += 1
            continue
        # A single star. When a fixed-width, slash-free chunk follows it and
        # another single star follows that chunk, the earliest place the chunk
        # matches is always as good as any later one (the next star takes up
        # the difference, which holds no '/'), so commit to it with an atomic
        # group: '*a*a*a*a*b' stays linear instead of exponential.
        j = i + 1
        chunk: list[bytes] = []
        has_slash = False
        while j < n and toks[j][0] == _T_FIXED:
            chunk.append(toks[j][1])
            has_slash = has_slash or toks[j][2]
            j += 1
        if chunk and not has_slash and j < n and toks[j][0] == _T_STAR:
            out.append(b"(?>[^/]*?" + b"".join(chunk) + b")")
        else:
            out.append(b"[^/]*" + b"".join(chunk))
        i = j
    return b"".join(out)


def translate(p: bytes) -> bytes | None:
    """A regex (for ``fullmatch``) equivalent to ``wildmatch(p, WM_PATHNAME)``.

    None when the pattern can never match anything.

    >>> import re
    >>> rx = re.compile(translate(b"a/**/b"), re.DOTALL)
    >>> [bool(rx.fullmatch(s)) for s in (b"a/b", b"a/x/y/b", b"ab")]
    [True, True, False]
    """
    toks = _tokenize(p)
    if toks is None:
        return None
    # Split at the '**' tokens: units[0] stars[0] units[1] ... stars[-1] units[-1].
    units: list[list[_Token]] = [[]]
    stars: list[int] = []
    for tok in toks:
        if tok[0] in (_T_DSTAR_DIRS, _T_DSTAR_ANY):
            stars.append(tok[0])
            units.append([])
        else:
            units[-1].append(tok)
    out = [_unit_regex(units[0])]
    for k, kind in enumerate(stars):
        unit = _unit_regex(units[k + 1])
        if k + 1 < len(stars):
            # A unit between two '**' ends with '/' (a '**' needs one before
            # it) and spans a fixed number of '/', so where it ends grows with
            # where it starts, and the next '**' absorbs any whole directories
            # left over. Its earliest match is therefore as good as any later
            # one: commit to it, so that '**/a/**/a/**/a/**/b' is not
            # polynomial in the depth of the path.
            out.append(b"(?>" + _DSTAR_LAZY[kind] + unit + b")")
        else:
            out.append(_DSTAR_GREEDY[kind] + unit)
    return b"".join(out)


def _simple_length(p: bytes) -> int:
    for i, c in enumerate(p):
        if c in _GLOB_SPECIAL:
            return i
    return len(p)


def compile_pattern(line: bytes) -> tuple[bool, bool, bytes | None]:
    """(negative, dir_only, regex over the path relative to the file's dir).

    The regex is None for a line git would never match.
    """
    negative = line.startswith(b"!")
    p = line[1:] if negative else line
    dir_only = p.endswith(b"/")
    if dir_only:
        p = p[:-1]
    if not p:
        return negative, dir_only, None
    if b"/" not in p:
        # git matches such a pattern against the last component only. The
        # body never matches a '/' (or, for '**', matches anything), so the
        # greedy, atomic prefix that stops at the last '/' loses nothing.
        body = translate(p)
        return negative, dir_only, None if body is None else b"(?>(?:.*/)?)" + body
    if p.startswith(b"/"):
        p = p[1:]
    # git (match_pathname) compares the literal prefix on its own and, since
    # 2.52, passes its last byte on to wildmatch with the rest: a '**' glued to
    # the prefix then does not start a component ('foo**/bar' is 'foo*/bar').
    # The byte is never special, so it changes nothing else.
    keep = max(_simple_length(p) - 1, 0)
    rest = translate(p[keep:])
    if rest is None:
        return negative, dir_only, None
    return negative, dir_only, re.escape(p[:keep]) + rest


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


class IgnoreFile:
    """The compiled rules of one ignore file.

    ``match(path, pos, is_dir)`` looks at ``path[pos:]``, the path relative to
    the file's directory, and returns the deciding rule or None.
    """

    __slots__ = ("_dir_rules", "_dir_rx", "_file_rules", "_file_rx", "rules", "source")

    def __init__(self, source: str, data: bytes) -> None:
        self.source = source
        self.rules: list[Rule] = []
        compiled: list[tuple[Rule, bytes]] = []
        for lineno, line in iter_lines(data):
            negative, dir_only, body = compile_pattern(line)
            rule = Rule(source, lineno, _decode(line), negative, dir_only)
            self.rules.append(rule)
            if body is not None:
                compiled.append((rule, body))
        self._dir_rx, self._dir_rules = _combine(compiled)
        self._file_rx, self._file_rules = _combine([c for c in compiled if not c[0].dir_only])

    def __bool__(self) -> bool:
        return self._dir_rx is not None

    def match(self, path: bytes, pos: int, is_dir: bool) -> Rule | None:
        rx, rules = (self._dir_rx, self._dir_rules) if is_dir else (self._file_rx, self._file_rules)
        if rx is None:
            return None
        m = rx.fullmatch(path, pos)
        if m is None:
            return None
        return rules[m.lastindex or 0]


def _combine(compiled: list[tuple[Rule, bytes]]) -> tuple[re.Pattern[bytes] | None, list[Rule]]:
    """One regex for many rules: the last rule is tried first, and the number
    of the group that matched says which rule decided."""
    if not compiled:
        return None, []
    ordered = compiled[::-1]
    rules: list[Rule] = [ordered[0][0]]  # index 0 is never used
    bodies: list[bytes] = []
    for rule, body in ordered:
        rules.append(rule)
        bodies.append(b"(" + body + b")")
    return re.compile(b"|".join(bodies), re.DOTALL), rules


DEFAULT_SOURCE: Final = "<runyard defaults>"
DEFAULT_RULES: Final = b"__pycache__/\n.ipynb_checkpoints/\n"


def default_ignore() -> IgnoreFile:
    """The rules runyard applies below every ignore file (lowest priority)."""
    return IgnoreFile(DEFAULT_SOURCE, DEFAULT_RULES)
