"""Datastore credentials: kept in the workspace, readable by its owner only,
or named by an environment variable; never in the run history.

``<workspace>/credentials.json`` maps a datastore to its secret fields. It is
written through a 0600 temporary file and renamed into place, so no other
user can read it at any moment, and a crash leaves the old file whole. The
history records only *where* each secret comes from (``"stored"`` or
``"env:NAME"``), so a shared history (PostgreSQL) never holds a secret.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from typing import Final

from runyard.errors import ConfigError

CREDENTIALS_FILE: Final = "credentials.json"
ENV_PREFIX: Final = "env:"
STORED: Final = "stored"


def _path(workspace_path: str) -> str:
    return os.path.join(workspace_path, CREDENTIALS_FILE)


def _load(workspace_path: str) -> dict[str, dict[str, str]]:
    path = _path(workspace_path)
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the datastore credentials '{path}': {exc}. Fix or remove the file, "
                          "then register the datastores again.") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)  # someone loosened it: close it again before anything else reads it
    stores = doc.get("datastores") if isinstance(doc, dict) else None
    if not isinstance(stores, dict):
        raise ConfigError(f"The datastore credentials '{path}' are damaged (no 'datastores' object). Fix or "
                          "remove the file, then register the datastores again.")
    return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in stores.items() if isinstance(v, dict)}


def _save(workspace_path: str, stores: Mapping[str, Mapping[str, str]]) -> None:
    path = _path(workspace_path)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when an old tmp file was there with other bits
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"datastores": {k: dict(v) for k, v in stores.items()}}, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def store_secrets(workspace_path: str, datastore: str, secrets: Mapping[str, str]) -> None:
    """Keep ``secrets`` (field -> value) for ``datastore``, replacing what it had."""
    stores = _load(workspace_path)
    if secrets:
        stores[datastore] = dict(secrets)
    else:
        stores.pop(datastore, None)
    if stores or os.path.exists(_path(workspace_path)):
        _save(workspace_path, stores)


def forget(workspace_path: str, datastore: str) -> None:
    stores = _load(workspace_path)
    if stores.pop(datastore, None) is not None:
        _save(workspace_path, stores)


def resolve(workspace_path: str, datastore: str, refs: Mapping[str, str]) -> dict[str, str]:
    """The secret values of ``datastore`` from the references the history keeps."""
    stored = _load(workspace_path).get(datastore, {}) if any(r == STORED for r in refs.values()) else {}
    values: dict[str, str] = {}
    for field, ref in refs.items():
        if ref.startswith(ENV_PREFIX):
            var = ref[len(ENV_PREFIX):]
            value = os.environ.get(var)
            if value is None:
                raise ConfigError(
                    f"Datastore '{datastore}' takes its {field} from the environment variable {var}, which is not "
                    f"set here. Set {var}, or register the datastore again with the value: "
                    f"runyard datastore register {datastore} --replace ...")
            values[field] = value
        elif ref == STORED:
            if field not in stored:
                raise ConfigError(
                    f"The {field} of datastore '{datastore}' is not in this workspace's credentials "
                    f"({_path(workspace_path)}); the datastore was registered from another workspace or the file "
                    f"was removed. Register it again here: runyard datastore register {datastore} --replace ...")
            values[field] = stored[field]
    return values


def split(given: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split given secret fields into references for the history and values to store.

    A value ``env:NAME`` is a reference to an environment variable (checked to
    be a plausible name); anything else is a secret to keep in the workspace.
    """
    refs: dict[str, str] = {}
    values: dict[str, str] = {}
    for field, value in given.items():
        if value.startswith(ENV_PREFIX):
            var = value[len(ENV_PREFIX):]
            if not var or not all(c.isalnum() or c == "_" for c in var) or var[0].isdigit():
                raise ConfigError(f"'{value}' does not name an environment variable for {field}: write "
                                  "env:NAME with letters, digits and underscores.")
            refs[field] = value
        else:
            refs[field] = STORED
            values[field] = value
    return refs, values


__all__ = ["CREDENTIALS_FILE", "forget", "resolve", "split", "store_secrets"]
