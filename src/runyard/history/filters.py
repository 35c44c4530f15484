"""The language that selects and orders runs (``runyard runs ls --filter/--sort``, and the
web UI's runs table): parsed here into a small tree, compiled to SQL by
:mod:`runyard.history.query`. A leaf: no SQLAlchemy.

    metrics.acc > 0.9 and tags.team = "vision"
    status in (Failed, Canceled) or (duration > 3600 and not tags.keep is not null)
    experiment = mnist and created >= "2026-12-01" and arguments like "%--lr 0.1%"

Fields: ``id``, ``experiment``, ``status``, ``script``, ``target``, ``host``,
``arguments`` (the command line's words, as text), ``created``, ``started``,
``ended`` (Unix seconds, or an ISO date/time in quotes, UTC), ``duration``
(seconds), ``exit_code``, ``metrics.NAME`` (the last value logged),
``tags.NAME``, ``properties.NAME``. A NAME with other characters than
letters, digits, ``_ - . /`` goes in backticks: ``metrics.`val loss```.
Operators: ``= != < <= > >=``, ``in (a, b)``, ``like "pat%"`` (``%`` any text,
``_`` one character), ``is null``, ``is not null``; ``and``, ``or``, ``not``,
parentheses. Words are case-insensitive; values are numbers, quoted strings, or
bare words (a status, an experiment).

>>> tree = parse_filter('metrics.acc > 0.9 and tags.team = "vision"')
>>> [(str(c.field), c.op, c.value) for c in tree.items]
[('metrics.acc', '>', 0.9), ('tags.team', '=', 'vision')]
>>> parse_sort("-metrics.acc")
[SortKey(field=Field(kind='metrics', name='acc'), descending=True)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from runyard.errors import FilterError

PLAIN: Final = ("id", "experiment", "status", "script", "target", "host", "arguments", "created", "started", "ended",
                "duration", "exit_code")
KEYED: Final = ("metrics", "tags", "properties")
TIMES: Final = ("created", "started", "ended")
NUMERIC: Final = ("created", "started", "ended", "duration", "exit_code")
_TOKEN: Final = re.compile(r"""
    \s*(?:
      (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<tick>`[^`]*`)
    | (?P<op><=|>=|!=|==|=|<|>|\(|\)|,)
    | (?P<word>[A-Za-z_][\w\-/]*(?:\.(?:[\w\-/]+|`[^`]*`))*)
    )""", re.X)


@dataclass(frozen=True)
class Field:
    kind: str
    """``metrics``, ``tags``, ``properties``, or a plain field's own name."""
    name: str | None = None

    def __str__(self) -> str:
        return self.kind if self.name is None else f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class Compare:
    field: Field
    op: str
    """``= != < <= > >= like in null notnull``."""
    value: float | str | tuple[float | str, ...] | None = None


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr = Compare | And | Or | Not


@dataclass(frozen=True)
class SortKey:
    field: Field
    descending: bool = False


def parse_field(text: str) -> Field:
    """``metrics.acc``, ``tags.`a b```, ``status``..."""
    head, dot, rest = text.partition(".")
    head = head.lower()
    if head in KEYED:
        name = rest[1:-1] if rest.startswith("`") and rest.endswith("`") else rest
        if not dot or not name:
            raise FilterError(f"'{text}': name the {head[:-1] if head != 'properties' else 'property'} "
                              f"({head}.NAME).")
        return Field(head, name)
    if dot or head not in PLAIN:
        raise FilterError(f"'{text}' is not a field. Fields: {', '.join(PLAIN)}, "
                          f"{', '.join(k + '.NAME' for k in KEYED)}.")
    return Field(head)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        m = _TOKEN.match(text, at)
        if m is None or m.end() == at:
            at += len(text[at:]) - len(text[at:].lstrip())
            raise FilterError(f"cannot read the filter at position {at + 1}: {text[at:at + 20]!r}. Quote text "
                              "values (\"...\"), put odd names in backticks (metrics.`val loss`).")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        at = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, word: str | None = None) -> tuple[str, str, int] | None:
        if self.i >= len(self.toks):
            return None
        tok = self.toks[self.i]
        if word is not None and not (tok[0] in ("word", "op") and tok[1].lower() == word):
            return None
        return tok

    def take(self, word: str | None = None) -> tuple[str, str, int]:
        tok = self.peek(word)
        if tok is None:
            got = self.toks[self.i][1] if self.i < len(self.toks) else "the end"
            at = self.toks[self.i][2] + 1 if self.i < len(self.toks) else len(self.text) + 1
            raise FilterError(f"expected {word or 'more'} at position {at}, found {got!r} in: {self.text}")
        self.i += 1
        return tok

    def expr(self) -> Expr:
        items = [self.conj()]
        while self.peek("or"):
            self.take()
            items.append(self.conj())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conj(self) -> Expr:
        items = [self.neg()]
        while self.peek("and"):
            self.take()
            items.append(self.neg())
        return items[0] if len(items) == 1 else And(tuple(items))

    def neg(self) -> Expr:
        if self.peek("not"):
            self.take()
            return Not(self.neg())
        if self.peek("("):
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        return self.compare()

    def compare(self) -> Compare:
        kind, text, at = self.take()
        if kind != "word":
            raise FilterError(f"expected a field at position {at + 1}, found {text!r} in: {self.text}")
        field = parse_field(text)
        if self.peek("is"):
            self.take()
            negated = bool(self.peek("not")) and bool(self.take())
            self.take("null")
            return Compare(field, "notnull" if negated else "null")
        if self.peek("in"):
            self.take()
            self.take("(")
            values = [self.value(field)]
            while self.peek(","):
                self.take()
                values.append(self.value(field))
            self.take(")")
            return Compare(field, "in", tuple(values))
        if self.peek("like"):
            self.take()
            value = self.value(field)
            return Compare(field, "like", str(value))
        kind, op, at = self.take()
        if kind != "op" or op not in ("=", "==", "!=", "<", "<=", ">", ">="):
            raise FilterError(f"expected an operator (= != < <= > >= in like is) after {field} at position "
                              f"{at + 1}, found {op!r}")
        return Compare(field, "=" if op == "==" else op, self.value(field))

    def value(self, field: Field) -> float | str:
        kind, text, at = self.take()
        if kind == "num":
            number = float(text)
            return number
        if kind == "str":
            raw = text[1:-1]
            value = re.sub(r"\\(.)", r"\1", raw)
        elif kind in ("word", "tick"):
            value = text.strip("`")
        else:
            raise FilterError(f"expected a value at position {at + 1}, found {text!r} in: {self.text}")
        if field.kind in TIMES:
            return _timestamp(value, field)
        if field.kind in NUMERIC:
            raise FilterError(f"{field} is a number; compare it with a number, not {value!r}.")
        if field.kind == "status":
            from runyard.history.model import RunStatus

            try:
                return RunStatus.parse(value).value
            except Exception as exc:
                raise FilterError(f"{exc}") from None
        return value


def _timestamp(text: str, field: Field) -> float:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{field} takes Unix seconds or an ISO date or time (e.g. \"2026-12-01\" or "
                          f"\"2026-12-01T09:30\", UTC), not {text!r}.") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_filter(text: str) -> Expr | None:
    """The filter ``text`` as a tree (None for an empty filter); ``FilterError`` saying where it is wrong."""
    if not text or not text.strip():
        return None
    parser = _Parser(text)
    tree = parser.expr()
    if parser.i < len(parser.toks):
        _, got, at = parser.toks[parser.i]
        raise FilterError(f"unexpected {got!r} at position {at + 1} in: {text} (join conditions with 'and' / "
                          "'or')")
    return tree


def parse_sort(*texts: str) -> list[SortKey]:
    """Sort keys: ``metrics.acc`` ascending, ``-metrics.acc`` or ``metrics.acc desc`` descending."""
    keys = []
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            words = part.split()
            descending = part.startswith("-")
            if len(words) == 2 and words[1].lower() in ("asc", "desc"):
                descending = words[1].lower() == "desc"
                part = words[0]
            elif len(words) != 1:
                raise FilterError(f"'{part}': sort by FIELD, -FIELD or 'FIELD desc'.")
            keys.append(SortKey(parse_field(part.lstrip("-")), descending))
    return keys


__all__ = ["KEYED", "PLAIN", "And", "Compare", "Expr", "Field", "Not", "Or", "SortKey", "parse_field",
           "parse_filter", "parse_sort"]
