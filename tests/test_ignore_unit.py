"""The ignore-file parser and the pattern translator, piece by piece.

git itself judges the matcher in test_ignore_git.py; these pin the pieces
that a tree listing cannot see (line numbers, trimming, which rule decides,
what a pattern compiles to).
"""

from __future__ import annotations

import doctest
import re

import pytest

from runyard.snapshot import ignore
from runyard.snapshot.ignore import (
    DEFAULT_SOURCE,
    IgnoreFile,
    compile_pattern,
    default_ignore,
    iter_lines,
    translate,
    trim_trailing_spaces,
)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(ignore).failed == 0


@pytest.mark.parametrize(
    ("line", "trimmed"),
    [
        (b"foo", b"foo"),
        (b"foo  ", b"foo"),
        (b"foo\\ ", b"foo\\ "),
        (b"foo\\  ", b"foo\\ "),
        (b"foo \\ ", b"foo \\ "),
        (b"foo\t", b"foo\t"),
        (b"foo \t ", b"foo \t"),
        (b"foo\\", b"foo\\"),
        (b"a \\", b"a \\"),
        (b"   ", b""),
    ],
)
def test_trim_trailing_spaces(line: bytes, trimmed: bytes) -> None:
    assert trim_trailing_spaces(line) == trimmed


def test_iter_lines_keeps_git_line_numbers() -> None:
    data = b"\xef\xbb\xbf# c\r\nfoo\r\n\n  \nbar  \n\\#x\na\0b\n\0\n\r\nlast"
    assert iter_lines(data) == [(2, b"foo"), (5, b"bar"), (6, b"\\#x"), (7, b"a"), (10, b"last")]


def test_bom_only_at_start() -> None:
    assert iter_lines(b"a\n\xef\xbb\xbfb\n") == [(1, b"a"), (2, b"\xef\xbb\xbfb")]


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        (b"a/**/b", [b"a/b", b"a/x/b", b"a/x/y/b"], [b"ab", b"a/xb", b"x/a/b"]),
        (b"**/b", [b"b", b"x/b", b"x/y/b"], [b"xb", b"b/x"]),
        (b"a/**", [b"a/x", b"a/x/y"], [b"a", b"ax"]),
        (b"**", [b"a", b"a/b"], []),
        (b"a**b", [b"ab", b"axxb"], [b"a/b"]),
        (b"**\\/x", [b"a/x", b"a/b/x"], [b"x"]),
        (b"*a*a*b", [b"aab", b"xaxaxb"], [b"aa/b", b"ab"]),
        (b"[!a]", [b"b", b"\xc3"], [b"a", b"/"]),
        (b"[]a]", [b"]", b"a"], [b"b"]),
        (b"[[:a]", [b"[", b":", b"a"], [b"]"]),
        (b"[a-]", [b"a", b"-"], [b"b"]),
        (b"\\*", [b"*"], [b"a"]),
    ],
)
def test_translate(pattern: bytes, matching: list[bytes], not_matching: list[bytes]) -> None:
    regex = translate(pattern)
    assert regex is not None
    rx = re.compile(regex, re.DOTALL)
    assert [p for p in matching if not rx.fullmatch(p)] == []
    assert [p for p in not_matching if rx.fullmatch(p)] == []


@pytest.mark.parametrize("pattern", [b"[abc", b"foo\\", b"\\", b"[[:foo:]]", b"[]", b"[!]", b"a[[:alpha:]"])
def test_translate_never_matching(pattern: bytes) -> None:
    assert translate(pattern) is None


@pytest.mark.parametrize(
    ("line", "matching", "not_matching"),
    [
        # git's t0008 "** not confused by matching leading prefix" (git >= 2.52).
        (b"foo**/bar", [b"foo/bar"], [b"foobar"]),
        (b"foo**/bar", [b"fooX/bar"], [b"foo/x/bar", b"fooX/y/bar"]),
        (b"/foo**/bar", [b"foo/bar"], [b"foobar", b"foo/x/bar"]),
        (b"foo**\\/bar", [b"foo/bar"], [b"foo/x/bar"]),
        (b"a/b**", [b"a/b", b"a/bc"], [b"a/bc/d"]),
        # A prefix that ends in '/' leaves the '**' at the start of a component.
        (b"foo/**/bar", [b"foo/bar", b"foo/x/bar"], [b"foobar"]),
        (b"a\\/**", [b"a/x/y"], [b"ax"]),
    ],
)
def test_dstar_glued_to_literal_prefix_is_a_star(line: bytes, matching: list[bytes], not_matching: list[bytes]) -> None:
    """git 2.52 hands wildmatch the prefix's last byte: the glued '**' starts no component."""
    rules = IgnoreFile(".gitignore", line + b"\n")
    assert [p for p in matching if rules.match(p, 0, False) is None] == []
    assert [p for p in not_matching if rules.match(p, 0, False) is not None] == []


def test_glued_dstar_compiles_as_a_star() -> None:
    assert compile_pattern(b"foo**/bar") == compile_pattern(b"foo*/bar")
    assert compile_pattern(b"a/b***") == compile_pattern(b"a/b*")


def test_runs_of_double_stars_collapse() -> None:
    assert translate(b"a/**/**/**/b") == translate(b"a/**/b")
    assert translate(b"a/**/**") == translate(b"a/**")


@pytest.mark.parametrize(
    ("line", "negative", "dir_only", "compiles"),
    [
        (b"foo", False, False, True),
        (b"!foo/", True, True, True),
        (b"!", True, False, False),
        (b"/", False, True, False),
        (b"!/", True, True, False),
        (b"[abc", False, False, False),
    ],
)
def test_compile_pattern_flags(line: bytes, negative: bool, dir_only: bool, compiles: bool) -> None:
    neg, only_dirs, regex = compile_pattern(line)
    assert (neg, only_dirs, regex is not None) == (negative, dir_only, compiles)


def test_last_matching_line_decides() -> None:
    rules = IgnoreFile("sub/.gitignore", b"*.log\n!keep.log\nkeep.log/\n")
    log = rules.match(b"x/a.log", 2, False)
    keep = rules.match(b"x/keep.log", 2, False)
    keep_dir = rules.match(b"x/keep.log", 2, True)
    assert log is not None and log.describe() == "sub/.gitignore:1:*.log"
    assert keep is not None and keep.negative and keep.describe() == "sub/.gitignore:2:!keep.log"
    assert keep_dir is not None and keep_dir.dir_only and keep_dir.describe() == "sub/.gitignore:3:keep.log/"
    assert rules.match(b"x/a.txt", 2, False) is None


def test_a_file_that_can_match_nothing_is_falsy() -> None:
    rules = IgnoreFile(".gitignore", b"# only\n!\n[abc\nfoo\\\n")
    assert not rules
    assert [r.pattern for r in rules.rules] == ["!", "[abc", "foo\\"]


def test_defaults() -> None:
    rules = default_ignore()
    hit = rules.match(b"pkg/__pycache__", 0, True)
    assert hit is not None and hit.source == DEFAULT_SOURCE
    assert rules.match(b"pkg/__pycache__", 0, False) is None
    assert rules.match(b".ipynb_checkpoints", 0, True) is not None
