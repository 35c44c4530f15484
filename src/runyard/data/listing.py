"""Which files a datastore path or glob names, each with a content fingerprint.

A fingerprint is what the service already knows of a file's content, so that
listing stays one request per page: an MD5 when the service keeps one (Azure
Blob's Content-MD5, GCS's md5Hash, an S3 ETag of a single-part upload), else
the ETag. A local folder has neither, so its files are hashed (blake3) —
and re-hashed on a later check only when their size or mtime changed.

Patterns are fsspec globs relative to the datastore root (``data/**/*.csv``);
a pattern without glob characters names a file, or a folder and every file
under it. The *base* of a pattern is the folder part before its first glob
character: a file keeps its path relative to the base when a run downloads or
mounts it (``data/train/**`` puts ``data/train/a/x.csv`` at ``a/x.csv``).
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from runyard.data.datastore import DatastoreError, RemoteFile, clean_path

if TYPE_CHECKING:
    from runyard.data.datastore import Datastore

GLOB_CHARS: Final = "*?["
_HASH_CHUNK: Final = 1 << 20


def has_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARS)


def glob_base(pattern: str) -> str:
    """The folder a glob's matches are relative to ('' for the root)."""
    parts = clean_path(pattern, what="path or glob").split("/")
    base: list[str] = []
    for part in parts:
        if has_glob(part):
            break
        base.append(part)
    else:  # no glob: a file (base = its folder) or a folder (base = itself); the caller decides
        return "/".join(base)
    return "/".join(base)


def base_of(pattern: str, found: Sequence[RemoteFile]) -> str:
    """The folder the matches of ``pattern`` are named relative to."""
    if has_glob(pattern):
        return glob_base(pattern)
    if len(found) == 1 and found[0].path == pattern:  # one file: it keeps its name
        return pattern.rpartition("/")[0]
    return pattern


def relative_to(base: str, path: str) -> str:
    return path[len(base) + 1:] if base else path


def list_matching(ds: Datastore, pattern: str) -> list[RemoteFile]:
    """Every file ``pattern`` names in ``ds``, sorted by path."""
    pattern = clean_path(pattern, what="path or glob")
    if ds.kind == "local":
        return _list_local(ds, pattern)
    fs = ds.fs

    def work() -> list[RemoteFile]:
        full = ds.full_path(pattern)
        if has_glob(pattern):
            found = fs.glob(full, detail=True)
            infos = found.values() if isinstance(found, Mapping) else []
        else:
            try:
                info = fs.info(full)
            except FileNotFoundError:
                return []
            infos = fs.find(full, detail=True, withdirs=False).values() if info.get("type") == "directory" else [info]
        out = []
        for info in infos:
            if info.get("type") != "file" or _is_folder_marker(info):
                continue
            path = ds.relative(info["name"])
            _check_key(ds, path)
            out.append(RemoteFile(path, int(info.get("size") or 0), fingerprint_of(info), _mtime_of(info)))
        return sorted(out, key=lambda f: f.path)

    return ds.call(f"listing '{pattern}'", work)


def _check_key(ds: Datastore, path: str) -> None:
    """An object key is any string; a file name it becomes must stay a plain
    relative path (``a/../../x`` would land outside the folder it goes to)."""
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise DatastoreError(
            f"The object '{path}' in datastore '{ds.name}' ({ds.describe()}) cannot be a file name here: its name "
            "has an empty, '.' or '..' part. Rename it in the datastore, or narrow the path or glob to leave it out.")


def fingerprint_of(info: Mapping[str, Any]) -> str:
    """The content fingerprint in an fsspec info dict, from any backend."""
    settings = info.get("content_settings")
    md5: Any = None
    if isinstance(settings, Mapping):
        md5 = settings.get("content_md5")
    elif settings is not None:
        md5 = getattr(settings, "content_md5", None)
    if md5:
        return "md5:" + bytes(md5).hex()
    if info.get("md5Hash"):  # gcsfs
        return "md5:" + base64.b64decode(info["md5Hash"]).hex()
    etag = info.get("ETag") or info.get("etag") or info.get("e_tag")
    if etag:
        tag = str(etag).strip('"')
        if len(tag) == 32 and all(c in "0123456789abcdef" for c in tag):
            return "md5:" + tag  # a single-part S3 upload's ETag is its MD5
        return "etag:" + tag
    mtime = _mtime_of(info)
    return f"stat:{info.get('size')}:{mtime}"


def _mtime_of(info: Mapping[str, Any]) -> float | None:
    for key in ("mtime", "last_modified", "LastModified", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        ts = getattr(value, "timestamp", None)
        if callable(ts):
            return float(ts())
    return None


def _is_folder_marker(info: Mapping[str, Any]) -> bool:
    meta = info.get("metadata")
    return isinstance(meta, Mapping) and str(meta.get("is_directory", "")).lower() == "true"


# -- local folders ---------------------------------------------------------
def _list_local(ds: Datastore, pattern: str) -> list[RemoteFile]:
    if not os.path.isdir(ds.root):
        raise DatastoreError(f"The folder '{ds.root}' of datastore '{ds.name}' does not exist. Create it, or "
                             f"register the datastore with the right path: runyard datastore register {ds.name} "
                             "--replace ...")
    from concurrent.futures import ThreadPoolExecutor

    found = _stat_local(ds, pattern)
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(lambda f: hash_file(os.path.join(ds.root, f.path)), found))
    return [RemoteFile(f.path, f.size, "blake3:" + d, f.mtime) for f, d in zip(found, digests, strict=True)]


def hash_file(path: str) -> str:
    from runyard.store.base import new_hasher

    h = new_hasher()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return str(h.hexdigest())


def refresh_local(ds: Datastore, known: Mapping[str, tuple[int, str, float | None]], pattern: str) -> list[RemoteFile]:
    """List a local pattern again, hashing only files whose size or mtime
    differ from ``known`` (path -> (size, fingerprint, mtime))."""
    root = ds.root
    out: list[RemoteFile] = []
    for f in _stat_local(ds, pattern):
        old = known.get(f.path)
        if old is not None and old[0] == f.size and old[2] == f.mtime:
            out.append(RemoteFile(f.path, f.size, old[1], f.mtime))
        else:
            out.append(RemoteFile(f.path, f.size, "blake3:" + hash_file(os.path.join(root, f.path)), f.mtime))
    return out


def _stat_local(ds: Datastore, pattern: str) -> list[RemoteFile]:
    """Like _list_local without hashing (fingerprint left empty)."""
    import fsspec

    root = ds.root
    if not os.path.isdir(root):
        return []
    if has_glob(pattern):
        fs = fsspec.filesystem("file")
        paths = [p for p, i in fs.glob(os.path.join(root, pattern), detail=True).items() if i.get("type") == "file"]
    else:
        target = os.path.join(root, pattern) if pattern else root
        if os.path.isdir(target):
            paths = [os.path.join(d, n) for d, _, names in os.walk(target) for n in names]  # links not followed
        elif os.path.isfile(target):
            paths = [target]
        else:
            paths = []
    out = []
    real_root = os.path.realpath(root).rstrip("/") + "/"
    for p in paths:
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode):
            continue  # links, FIFOs and devices are not data
        if not os.path.realpath(p).startswith(real_root):
            continue  # reached through a linked folder: outside the datastore
        out.append(RemoteFile(ds.relative(os.path.abspath(p)), st.st_size, "", st.st_mtime))
    return sorted(out, key=lambda f: f.path)


__all__ = ["base_of", "fingerprint_of", "glob_base", "has_glob", "list_matching", "refresh_local", "relative_to"]
