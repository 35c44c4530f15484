"""Settings, resolved once, in one place.

Precedence, highest first: an explicit argument (CLI flag or SDK argument),
the ``RUNYARD_*`` environment variable, the workspace's ``config.toml``, the
built-in default. Nothing here runs at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from runyard.errors import ConfigError

MiB: Final = 1 << 20
DEFAULT_MAX_BYTES: Final = 300 * MiB
DEFAULT_MAX_FILES: Final = 2000

ENV_MAX_BYTES: Final = "RUNYARD_SNAPSHOT_MAX_BYTES"
ENV_MAX_FILES: Final = "RUNYARD_SNAPSHOT_MAX_FILES"
ENV_SECRETS: Final = "RUNYARD_SNAPSHOT_SECRETS"
SECRETS_POLICIES: Final = ("warn", "refuse")
DEFAULT_SECRETS: Final = "warn"
ENV_WORKSPACE: Final = "RUNYARD_WORKSPACE"
ENV_HISTORY_URL: Final = "RUNYARD_HISTORY_URL"

_UNITS: Final = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")

# Keys ``runyard config set`` accepts, with their kind.
KNOWN_KEYS: Final = {
    "snapshot.max_bytes": "size",
    "snapshot.max_files": "count",
    "snapshot.secrets": "secrets",
    "store.url": "text",
    "history.url": "text",
    "data.cache_max_bytes": "size",
    "env.cache_max_bytes": "size",
    "compute.default": "text",
}


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string like ``500MiB``, ``1.5GB`` or ``0``.

    >>> parse_size("300MiB", "x"), parse_size("2GB", "x"), parse_size(0, "x")
    (314572800, 2000000000, 0)
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a size, not {value!r}. Use bytes or a unit like 500MiB; 0 turns it off.")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where} is {value}; a size cannot be negative. Use 0 to turn the limit off.")
        return value
    m = _SIZE.fullmatch(str(value))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(
            f"{where} is {str(value)!r}, which is not a size. Use bytes (314572800) or a unit: "
            "KiB, MiB, GiB, TiB, or KB, MB, GB, TB; 0 turns the limit off."
        )
    from decimal import Decimal, InvalidOperation

    try:
        exact = Decimal(m.group(1)) * _UNITS[unit]
        n = int(exact.to_integral_value(rounding="ROUND_CEILING"))  # a fraction of a byte is a byte
    except (InvalidOperation, OverflowError, ValueError):
        raise ConfigError(f"{where} is {str(value)!r}, which is not a usable size.") from None
    if n > 1 << 62:
        raise ConfigError(f"{where} is {str(value)!r}, which is too big; use 0 to turn the limit off.")
    return n


def parse_count(value: object, where: str) -> int:
    """A non-negative whole number from an int or a string."""
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a whole number, not {value!r}; 0 turns the limit off.")
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{where} is {str(value)!r}, which is not a whole number. Use e.g. 5000; "
                          "0 turns the limit off.") from None
    if n < 0:
        raise ConfigError(f"{where} is {n}; a count cannot be negative. Use 0 to turn the limit off.")
    return n


def plural(n: int, word: str, many: str | None = None) -> str:
    """A count with its noun in agreement: ``1 file``, ``2 files``, ``0 files``.

    >>> plural(1, "run"), plural(3, "run"), plural(2, "directory", "directories")
    ('1 run', '3 runs', '2 directories')
    """
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def format_size(n: int) -> str:
    """A human size in binary units: ``1.5 MiB``."""
    if n < 1024:
        return f"{n} B"
    v = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        v /= 1024
        if v < 1024 or unit == "TiB":
            return f"{v:.1f} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Limits:
    """Snapshot limits; 0 means no limit. ``*_from`` says where each came from."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES
    max_bytes_from: str = "default"
    max_files_from: str = "default"


def _lookup(config: Mapping[str, Any] | None, dotted: str) -> Any:
    node: Any = config or {}
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def resolve_limits(
    *,
    max_bytes: int | str | None = None,
    max_files: int | str | None = None,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Limits:
    """Resolve the snapshot limits: argument > environment > workspace config > default."""
    env = os.environ if env is None else env

    def pick(arg: Any, env_name: str, key: str, default: int, parse: Any, flag: str) -> tuple[int, str]:
        if arg is not None:
            return parse(arg, flag), "argument"
        if env.get(env_name, "").strip():
            return parse(env[env_name], f"{env_name}"), f"environment ({env_name})"
        val = _lookup(config, key)
        if val is not None:
            return parse(val, f"{key} in the workspace config"), f"workspace config ({key})"
        return default, "default"

    b, bf = pick(max_bytes, ENV_MAX_BYTES, "snapshot.max_bytes", DEFAULT_MAX_BYTES, parse_size, "--max-bytes")
    f, ff = pick(max_files, ENV_MAX_FILES, "snapshot.max_files", DEFAULT_MAX_FILES, parse_count, "--max-files")
    return Limits(b, f, bf, ff)


def parse_secrets_policy(value: object, where: str) -> str:
    """``warn`` or ``refuse`` (any case).

    >>> parse_secrets_policy("Refuse", "x")
    'refuse'
    """
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text not in SECRETS_POLICIES:
        raise ConfigError(f"{where} is {value!r}; use 'warn' (store likely secrets and say so) or 'refuse' "
                          "(take no snapshot that holds them).")
    return text


@dataclass(frozen=True, slots=True)
class SecretsPolicy:
    """What a snapshot does with likely secrets: ``warn`` (store them and say so)
    or ``refuse`` (store nothing). ``source`` says where the choice came from."""

    action: str = DEFAULT_SECRETS
    source: str = "default"

    @property
    def refuse(self) -> bool:
        return self.action == "refuse"


def resolve_secrets_policy(
    secrets: str | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> SecretsPolicy:
    """Resolve ``snapshot.secrets``: argument > environment > workspace config > ``warn``.

    >>> resolve_secrets_policy(None, config={"snapshot": {"secrets": "refuse"}}, env={})
    SecretsPolicy(action='refuse', source='the workspace config (snapshot.secrets)')
    """
    env = os.environ if env is None else env
    if secrets is not None:
        return SecretsPolicy(parse_secrets_policy(secrets, "--secrets"), "the --secrets option (secrets= in the SDK)")
    if env.get(ENV_SECRETS, "").strip():
        return SecretsPolicy(parse_secrets_policy(env[ENV_SECRETS], ENV_SECRETS), f"the environment ({ENV_SECRETS})")
    val = _lookup(config, "snapshot.secrets")
    if val is not None:
        return SecretsPolicy(parse_secrets_policy(val, "snapshot.secrets in the workspace config"),
                             "the workspace config (snapshot.secrets)")
    return SecretsPolicy()


_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def dump_toml(doc: Mapping[str, Any]) -> str:
    """Write config.toml: tables of strings, integers and booleans.

    Raises ``ConfigError`` for anything else (nested tables, lists, floats,
    top-level keys), so a hand-edited file is never rewritten with a loss.
    """
    lines: list[str] = []
    for section in sorted(doc):
        table = doc[section]
        if not isinstance(table, Mapping):
            raise ConfigError(f"config.toml has a top-level key {section!r} that runyard cannot rewrite. "
                              "Move it into a [table] or edit the file by hand.")
        lines.append(f"[{_toml_key(section)}]")
        for key in sorted(table):
            lines.append(f"{_toml_key(key)} = {_toml_value(table[key], f'{section}.{key}')}")
        lines.append("")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_value(key, key)


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if not isinstance(v, str):
        raise ConfigError(f"config.toml's {where} is a {type(v).__name__}, which runyard cannot rewrite. "
                          "Edit the file by hand.")
    s = v.replace("\\", "\\\\").replace('"', '\\"')
    s = "".join(c if c >= " " or c == "\t" else f"\\u{ord(c):04x}" for c in s)
    return f'"{s}"'


def check_key(key: str) -> str:
    """The kind of a known setting; raises for an unknown one."""
    kind = KNOWN_KEYS.get(key)
    if kind is None:
        known = ", ".join(sorted(KNOWN_KEYS))
        raise ConfigError(f"Unknown setting '{key}'. Known settings: {known}.")
    return kind


def coerce_setting(key: str, value: str) -> int | str:
    """Check a ``config set`` value for a known key and give it its type."""
    kind = check_key(key)
    if kind == "size":
        return parse_size(value, key)
    if kind == "count":
        return parse_count(value, key)
    if kind == "secrets":
        return parse_secrets_policy(value, key)
    return value
