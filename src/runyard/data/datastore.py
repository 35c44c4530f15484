"""Datastores: named places where data lives (a local folder, an Azure Blob
container, an S3 or GCS bucket), reached through fsspec.

A datastore is registered once per history (``runyard datastore register``)
with its non-secret options; its credentials stay in the workspace
(:mod:`runyard.data.credentials`). Every workspace also has ``default``, a
folder inside it, as Azure ML workspaces have ``workspaceblobstore``.

Paths inside a datastore are relative POSIX paths below its root (the
container or bucket plus an optional prefix); ``..`` is refused, so nothing
reaches outside it. The backend packages (adlfs, s3fs, gcsfs) are imported
only when a datastore of their kind is opened.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runyard.errors import (
    ConfigError,
    DatastoreAuthError,
    DatastoreError,
    DatastoreUnreachableError,
    NotFoundError,
    RunyardError,
)

if TYPE_CHECKING:
    from runyard.history.catalog import DataCatalog, DatastoreRow
    from runyard.workspace import Workspace

T = TypeVar("T")

DEFAULT_DATASTORE: Final = "default"
DEFAULT_FOLDER: Final = "datastore"
"""The default datastore's folder inside the workspace."""
NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED: Final = frozenset({"dataset", "datastore"})
"""Not datastore names: ``--input x=dataset:NAME`` would be ambiguous."""
ENV_RETRIES: Final = "RUNYARD_DATA_RETRIES"


@dataclass(frozen=True)
class Kind:
    name: str
    protocol: str
    options: tuple[str, ...]
    required: tuple[str, ...]
    secrets: tuple[str, ...]
    package: str
    extra: str
    root_option: str | None
    """The option that names the container or bucket (the root of the datastore)."""


KINDS: Final = {
    "local": Kind("local", "file", ("path",), ("path",), (), "", "", None),
    "azureblob": Kind("azureblob", "az", ("account_name", "container", "endpoint", "prefix", "credential"),
                      ("container",), ("account_key", "sas_token", "connection_string"), "adlfs", "azure",
                      "container"),
    "s3": Kind("s3", "s3", ("bucket", "prefix", "endpoint_url", "region", "profile", "anon"), ("bucket",),
               ("access_key_id", "secret_access_key", "session_token"), "s3fs", "s3", "bucket"),
    "gcs": Kind("gcs", "gcs", ("bucket", "prefix", "project", "endpoint_url", "anon"), ("bucket",), ("token",),
                "gcsfs", "gcs", "bucket"),
}


def check_datastore_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"'{name}' is not a valid datastore name: use letters, digits and underscores, "
                          "not starting with a digit (^[A-Za-z_][A-Za-z0-9_]*$).")
    if name in RESERVED:
        raise ConfigError(f"'{name}' is reserved (it would make --input {name}:... ambiguous); pick another name.")
    return name


def clean_path(path: str, *, what: str = "datastore path") -> str:
    """A path inside a datastore, normalized: no leading ``/``, no ``.`` parts.

    ``..`` anywhere is refused rather than resolved: a datastore path never
    reaches outside the datastore, and a path that tries to is a mistake the
    user should see.
    """
    if not isinstance(path, str) or "\0" in path:
        raise ConfigError(f"The {what} {path!r} is not a valid path.")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"The {what} '{path}' contains '..'; datastore paths are relative to the datastore's "
                          "root and cannot leave it. Write the path from the root, e.g. 'data/train'.")
    return "/".join(parts)


def env_count(name: str, default: int) -> int:
    """A whole number of at least 1 from the environment variable ``name``."""
    raw = os.environ.get(name, "").strip()
    try:
        return max(1, int(raw)) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number.") from None


def retries() -> int:
    """Attempts at a call that cannot reach its service (``RUNYARD_DATA_RETRIES``, default 3)."""
    return env_count(ENV_RETRIES, 3)


class Datastore:
    """A registered datastore (SDK: ``Datastore.get(ws, name)``)."""

    def __init__(self, workspace: Workspace, name: str, kind: str, options: Mapping[str, str],
                 secret_refs: Mapping[str, str] | None = None) -> None:
        self.workspace = workspace
        self.name = name
        self.kind = kind
        self.options = dict(options)
        self.secret_refs = dict(secret_refs or {})
        self._fs: Any = None
        self._secrets: dict[str, str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, kind={self.kind!r}, root={self.describe()!r})"

    # -- finding ------------------------------------------------------------
    @classmethod
    def get(cls, workspace: Workspace, name: str) -> Datastore:
        if name == DEFAULT_DATASTORE:
            return cls.get_default(workspace)
        row = catalog(workspace).get_datastore(name)
        if row is None:
            known = [DEFAULT_DATASTORE, *(r.name for r in catalog(workspace).list_datastores())]
            raise NotFoundError(f"There is no datastore named '{name}'. Registered: {', '.join(known)}. "
                                "Register one with: runyard datastore register NAME --kind ...")
        return cls.from_row(workspace, row)

    @classmethod
    def get_default(cls, workspace: Workspace) -> Datastore:
        path = os.path.join(workspace.path, DEFAULT_FOLDER)
        os.makedirs(path, exist_ok=True)  # workspaces made before datastores existed have none yet
        return cls(workspace, DEFAULT_DATASTORE, "local", {"path": path})

    @classmethod
    def from_row(cls, workspace: Workspace, row: DatastoreRow) -> Datastore:
        return cls(workspace, row.name, row.kind, row.options, row.secret_refs)

    @classmethod
    def list_all(cls, workspace: Workspace) -> list[Datastore]:
        return [cls.get_default(workspace), *(cls.from_row(workspace, r) for r in
                                              catalog(workspace).list_datastores())]

    # -- registering --------------------------------------------------------
    @classmethod
    def register(cls, workspace: Workspace, name: str, kind: str, options: Mapping[str, str | None],
                 secrets: Mapping[str, str | None] | None = None, *, overwrite: bool = False,
                 verify: bool = True) -> Datastore:
        """Register (or with ``overwrite`` replace) a datastore; with ``verify``
        its root is listed first, so wrong credentials or a wrong endpoint fail
        here and not in a run."""
        from runyard.data import credentials

        check_datastore_name(name)
        if name == DEFAULT_DATASTORE:
            raise ConfigError("'default' is the workspace's own datastore and cannot be registered or replaced.")
        spec = KINDS.get(kind)
        if spec is None:
            raise ConfigError(f"Unknown datastore kind '{kind}'. Kinds: {', '.join(KINDS)}.")
        opts = {k: str(v) for k, v in options.items() if v is not None and str(v) != ""}
        given = {k: str(v) for k, v in (secrets or {}).items() if v is not None and str(v) != ""}
        for key in opts:
            if key not in spec.options:
                raise ConfigError(f"A datastore of kind {kind} has no option '{key}'. Its options: "
                                  f"{', '.join(spec.options + spec.secrets)}.")
        for key in given:
            if key not in spec.secrets:
                raise ConfigError(f"A datastore of kind {kind} has no credential '{key}'. Its credentials: "
                                  f"{', '.join(spec.secrets) or 'none'}.")
        for key in spec.required:
            if key not in opts:
                raise ConfigError(f"A datastore of kind {kind} needs its {key.replace('_', ' ')} "
                                  f"(--{key.replace('_', '-')}).")
        if kind == "local":
            opts["path"] = os.path.abspath(os.path.expanduser(opts["path"]))
        if kind == "azureblob":
            if "account_name" not in opts and "connection_string" not in given:
                raise ConfigError("An azureblob datastore needs --account-name (or a --connection-string).")
            if "container" in opts:
                _check_container(opts["container"])
        for key in ("prefix",):
            if key in opts:
                opts[key] = clean_path(opts[key], what="prefix")
        refs, values = credentials.split(given)
        store = cls(workspace, name, kind, opts, refs)
        store._secrets = {**values, **{k: credentials.resolve(workspace.path, name, {k: v})[k]
                                       for k, v in refs.items() if v.startswith(credentials.ENV_PREFIX)}}
        cat = catalog(workspace)
        if not overwrite and cat.get_datastore(name) is not None:
            raise ConfigError(f"A datastore named '{name}' is already registered. Pick another name, or replace "
                              f"it: runyard datastore register {name} --replace ... (SDK: overwrite=True).")
        if verify:
            store.check()
        credentials.store_secrets(workspace.path, name, values)
        cat.put_datastore(name, kind, opts, refs, replace=True)
        return store

    @classmethod
    def register_azure_blob_container(
        cls, workspace: Workspace, datastore_name: str, container_name: str, account_name: str | None = None,
        sas_token: str | None = None, account_key: str | None = None, *, connection_string: str | None = None,
        endpoint: str | None = None, prefix: str | None = None, overwrite: bool = False,
        create_if_not_exists: bool = False,
    ) -> Datastore:
        """Azure ML's call; without any credential, DefaultAzureCredential is used."""
        secrets = {"sas_token": sas_token, "account_key": account_key, "connection_string": connection_string}
        options: dict[str, str | None] = {"container": container_name, "account_name": account_name,
                                          "endpoint": endpoint, "prefix": prefix}
        if not any(secrets.values()):
            options["credential"] = "default"
        if create_if_not_exists:
            from runyard.data import credentials

            refs, values = credentials.split({k: v for k, v in secrets.items() if v})
            probe = cls(workspace, datastore_name, "azureblob", {k: v for k, v in options.items() if v}, refs)
            probe._secrets = {**values, **{k: credentials.resolve(workspace.path, datastore_name, {k: r})[k]
                                           for k, r in refs.items() if r != credentials.STORED}}
            probe.create_root()
        return cls.register(workspace, datastore_name, "azureblob", options, secrets, overwrite=overwrite)

    @classmethod
    def register_s3(
        cls, workspace: Workspace, datastore_name: str, bucket_name: str, access_key_id: str | None = None,
        secret_access_key: str | None = None, *, endpoint_url: str | None = None, region: str | None = None,
        profile: str | None = None, prefix: str | None = None, session_token: str | None = None,
        overwrite: bool = False,
    ) -> Datastore:
        return cls.register(
            workspace, datastore_name, "s3",
            {"bucket": bucket_name, "endpoint_url": endpoint_url, "region": region, "profile": profile,
             "prefix": prefix},
            {"access_key_id": access_key_id, "secret_access_key": secret_access_key, "session_token": session_token},
            overwrite=overwrite)

    @classmethod
    def register_gcs(cls, workspace: Workspace, datastore_name: str, bucket_name: str, *, project: str | None = None,
                     token: str | None = None, endpoint_url: str | None = None, prefix: str | None = None,
                     overwrite: bool = False) -> Datastore:
        return cls.register(workspace, datastore_name, "gcs",
                            {"bucket": bucket_name, "project": project, "endpoint_url": endpoint_url,
                             "prefix": prefix}, {"token": token}, overwrite=overwrite)

    @classmethod
    def register_local(cls, workspace: Workspace, datastore_name: str, path: str, *,
                       overwrite: bool = False) -> Datastore:
        return cls.register(workspace, datastore_name, "local", {"path": path}, overwrite=overwrite)

    @classmethod
    def unregister(cls, workspace: Workspace, name: str) -> None:
        from runyard.data import credentials

        if name == DEFAULT_DATASTORE:
            raise ConfigError("'default' is the workspace's own datastore and cannot be removed.")
        if not catalog(workspace).remove_datastore(name):
            raise NotFoundError(f"There is no datastore named '{name}'. See: runyard datastore ls")
        credentials.forget(workspace.path, name)

    # -- describing ---------------------------------------------------------
    def describe(self) -> str:
        """Where the datastore is, for people: no secret in it."""
        o = self.options
        if self.kind == "local":
            return o["path"]
        prefix = f"/{o['prefix']}" if o.get("prefix") else ""
        if self.kind == "azureblob":
            account = o.get("account_name") or "(from the connection string)"
            return f"azureblob://{account}/{o['container']}{prefix}"
        return f"{self.kind}://{o['bucket']}{prefix}"

    @property
    def endpoint(self) -> str:
        """The service endpoint the datastore talks to, for error messages."""
        o = self.options
        if self.kind == "local":
            return o["path"]
        if self.kind == "azureblob":
            if o.get("endpoint"):
                return o["endpoint"]
            if o.get("account_name"):
                return f"https://{o['account_name']}.blob.core.windows.net"
            m = re.search(r"BlobEndpoint=([^;]+)", self._secret_values().get("connection_string", ""))
            return m.group(1) if m else "the endpoint in its connection string"
        if self.kind == "s3":
            return o.get("endpoint_url") or f"AWS S3 ({o.get('region') or 'default region'})"
        return o.get("endpoint_url") or "https://storage.googleapis.com"

    def masked_options(self) -> dict[str, str]:
        """Options and where each credential comes from, never its value (``show``)."""
        shown = dict(self.options)
        for key, ref in self.secret_refs.items():
            shown[key] = f"(from ${ref[4:]})" if ref.startswith("env:") else "(stored in the workspace, hidden)"
        return shown

    # -- access -------------------------------------------------------------
    def _secret_values(self) -> dict[str, str]:
        if self._secrets is None:
            from runyard.data import credentials

            self._secrets = credentials.resolve(self.workspace.path, self.name, self.secret_refs)
        return self._secrets

    def redact(self, text: str) -> str:
        """``text`` with every credential value of this datastore masked."""
        try:
            values = self._secret_values()
        except RunyardError:
            return text
        for value in sorted(values.values(), key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    @property
    def root(self) -> str:
        """The datastore's root as its filesystem names it (no protocol)."""
        o = self.options
        if self.kind == "local":
            return o["path"].rstrip("/") or "/"
        base = o[KINDS[self.kind].root_option or "bucket"]
        return f"{base}/{o['prefix']}" if o.get("prefix") else base

    def full_path(self, path: str) -> str:
        rel = clean_path(path)
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def relative(self, full: str) -> str:
        """The datastore path of a full path its filesystem returned."""
        root = self.root.rstrip("/")
        full = full.rstrip("/")
        if full == root:
            return ""
        if not full.startswith(root + "/"):
            raise DatastoreError(f"'{full}' is not inside datastore '{self.name}' ({root}).")
        return full[len(root) + 1:]

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made on first use, shared by threads)."""
        with self._lock:
            if self._fs is None:
                self._fs = self._make_fs()
            return self._fs

    def filesystem_spec(self) -> dict[str, Any]:
        """protocol and storage options that rebuild this filesystem in another
        process (a FUSE helper). It holds credentials: keep it in a 0600 file."""
        protocol, options = self._fs_args()
        return {"protocol": protocol, "storage_options": options}

    def _fs_args(self) -> tuple[str, dict[str, Any]]:
        o = self.options
        s = self._secret_values()
        if self.kind == "local":
            return "file", {}
        if self.kind == "azureblob":
            args: dict[str, Any] = {}
            if "connection_string" in s:
                args["connection_string"] = s["connection_string"]
            elif o.get("endpoint"):
                conn = [f"DefaultEndpointsProtocol={'http' if o['endpoint'].startswith('http:') else 'https'}",
                        f"AccountName={o.get('account_name', '')}",
                        f"BlobEndpoint={o['endpoint'].rstrip('/')}"]
                if "account_key" in s:
                    conn.append(f"AccountKey={s['account_key']}")
                if "sas_token" in s:
                    conn.append(f"SharedAccessSignature={s['sas_token'].lstrip('?')}")
                args["connection_string"] = ";".join(conn) + ";"
            else:
                args["account_name"] = o.get("account_name")
                for key in ("account_key", "sas_token"):
                    if key in s:
                        args[key] = s[key]
                if not s and o.get("credential") == "default":
                    args["anon"] = False
            args["skip_instance_cache"] = True
            return "az", args
        if self.kind == "s3":
            args = {"skip_instance_cache": True,
                    "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5,
                                      "read_timeout": 60}}
            client: dict[str, Any] = {}
            if o.get("endpoint_url"):
                client["endpoint_url"] = o["endpoint_url"]
            if o.get("region"):
                client["region_name"] = o["region"]
            if client:
                args["client_kwargs"] = client
            if "access_key_id" in s:
                args["key"] = s["access_key_id"]
            if "secret_access_key" in s:
                args["secret"] = s["secret_access_key"]
            if "session_token" in s:
                args["token"] = s["session_token"]
            if o.get("profile"):
                args["profile"] = o["profile"]
            if o.get("anon", "").lower() in ("1", "true", "yes"):
                args["anon"] = True
            return "s3", args
        args = {"skip_instance_cache": True}
        if o.get("project"):
            args["project"] = o["project"]
        if o.get("endpoint_url"):
            args["endpoint_url"] = o["endpoint_url"]
        if "token" in s:
            args["token"] = s["token"]
        elif o.get("anon", "").lower() in ("1", "true", "yes"):
            args["token"] = "anon"
        return "gcs", args

    def _make_fs(self) -> Any:
        import fsspec

        protocol, args = self._fs_args()
        kind = KINDS[self.kind]
        if self.kind == "gcs" and self.options.get("endpoint_url"):
            # gcsfs would first ask a gRPC endpoint what kind of bucket it is:
            # an emulator or proxy has none, and the question times out (60 s).
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        try:
            fs = fsspec.filesystem(protocol, **args)
        except ImportError as exc:
            raise DatastoreError(
                f"Datastore '{self.name}' is a {self.kind} datastore, which needs {kind.package}: "
                f"pip install 'runyard[{kind.extra}]'") from exc
        except Exception as exc:
            raise DatastoreError(f"Cannot set up datastore '{self.name}' ({self.describe()}): "
                                 f"{self.redact(str(exc))}") from None
        if self.kind == "azureblob":
            _bound_azure_retries(fs, args, self.options, self._secret_values())
        return fs

    # -- calling the service ------------------------------------------------
    def call(self, what: str, fn: Callable[[], T], *, attempts: int | None = None) -> T:
        """``fn()`` with retries and backoff on connection errors; every error
        comes out as a DatastoreError naming this datastore and its endpoint,
        with no credential in it."""
        n = attempts or retries()
        delay = 0.5
        for attempt in range(1, n + 1):
            try:
                return fn()
            except RunyardError:
                raise
            except Exception as exc:
                kind = classify(exc)
                if kind == "unreachable" and attempt < n:
                    time.sleep(delay * random.uniform(0.8, 1.2))
                    delay *= 2
                    continue
                raise self.error(what, exc, kind, attempt) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def error(self, what: str, exc: BaseException, kind: str | None = None, attempts: int = 1) -> DatastoreError:
        kind = kind or classify(exc)
        detail = self.redact(_first_line(exc))
        where = f"datastore '{self.name}' ({self.describe()}) at {self.endpoint}"
        if kind == "unreachable":
            return DatastoreUnreachableError(
                f"Cannot reach {where} while {what}: {detail} (tried {attempts} time{'s' if attempts > 1 else ''}). "
                "Check that the service is running and the endpoint is right (runyard datastore show "
                f"{self.name}); set {ENV_RETRIES} to retry more.")
        if kind == "auth":
            return DatastoreAuthError(
                f"{where[0].upper()}{where[1:]} refused the credentials while {what}: {detail}. Check them and "
                f"register the datastore again: runyard datastore register {self.name} --replace ...")
        if kind == "missing-root":
            root = self.options.get(KINDS[self.kind].root_option or "", self.root)
            return DatastoreError(f"The {KINDS[self.kind].root_option or 'root'} '{root}' of {where} does not exist "
                                  f"({detail}). Create it, or register the datastore with the right name.")
        if kind == "not-found":
            return DatastoreError(f"Not found in {where} while {what}: {detail}.")
        return DatastoreError(f"Datastore '{self.name}' ({self.describe()}) failed while {what}: {detail}")

    def check(self) -> None:
        """List the root once: the service answers and takes the credentials."""
        fs = self.fs
        root = self.root
        if self.kind == "local":
            if not os.path.isdir(root):
                if os.path.exists(root):
                    raise DatastoreError(f"The local datastore path '{root}' is not a folder.")
                os.makedirs(root, exist_ok=True)
            return

        def probe() -> None:
            try:
                fs.ls(root, detail=False)
            except FileNotFoundError:
                bucket = root.split("/", 1)[0]
                if "/" in root:
                    fs.ls(bucket, detail=False)  # the prefix may be empty; the bucket must exist
                else:
                    raise
            except Exception as exc:
                # adlfs reports a missing container as a generic error
                if "ContainerNotFound" in str(exc) or "NoSuchBucket" in str(exc):
                    raise FileNotFoundError(_first_line(exc)) from exc
                raise

        try:
            self.call("checking access", probe)
        except DatastoreError as exc:
            if isinstance(exc.__context__, FileNotFoundError) or "does not exist" in str(exc):
                root_opt = KINDS[self.kind].root_option or "root"
                raise DatastoreError(
                    f"The {root_opt} '{self.options.get(root_opt, root)}' of datastore '{self.name}' at "
                    f"{self.endpoint} does not exist. Create it first (or pass the right --{root_opt}).") from None
            raise

    def create_root(self) -> None:
        def make() -> None:
            if not self.fs.exists(self.root.split("/", 1)[0]):
                self.fs.mkdir(self.root.split("/", 1)[0])

        self.call("creating its container", make)

    # -- files --------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self.call(f"looking for '{path}'", lambda: self.fs.exists(self.full_path(path))))

    def list_files(self, pattern: str) -> list[RemoteFile]:
        """The files a path or glob names: a folder means every file under it."""
        from runyard.data.listing import list_matching

        return list_matching(self, pattern)

    def iter_files(self, path: str) -> Iterator[RemoteFile]:
        yield from self.list_files(path)

    def upload(self, src_dir: str, target_path: str | None = None, overwrite: bool = False,
               show_progress: bool = True) -> list[str]:
        """Upload a folder's files below ``target_path``; return the datastore paths written."""
        from runyard.data.transfer import upload_tree

        return upload_tree(self, src_dir, clean_path(target_path or ""), overwrite=overwrite,
                           progress=show_progress)

    def upload_files(self, files: list[str], relative_root: str | None = None, target_path: str | None = None,
                     overwrite: bool = False, show_progress: bool = True) -> list[str]:
        from runyard.data.transfer import upload_paths

        return upload_paths(self, files, relative_root, clean_path(target_path or ""), overwrite=overwrite,
                            progress=show_progress)

    def download(self, target_path: str, prefix: str | None = None, overwrite: bool = False,
                 show_progress: bool = True) -> int:
        """Download the files under ``prefix`` into ``target_path``; return how many."""
        from runyard.data.transfer import download_prefix

        return download_prefix(self, clean_path(prefix or ""), target_path, overwrite=overwrite,
                               progress=show_progress)

    def path(self, path: str) -> Any:
        """A path in this datastore, to pass to a run as an input."""
        from runyard.data.inputs import DataPath

        return DataPath(self, clean_path(path))


@dataclass(frozen=True)
class RemoteFile:
    """A file in a datastore: its path there, size, a content fingerprint and mtime."""

    path: str
    size: int
    fingerprint: str
    mtime: float | None = None


def catalog(workspace: Workspace) -> DataCatalog:
    """The workspace's data catalog (its run history's database)."""
    from runyard.history.catalog import DataCatalog

    return DataCatalog(workspace.open_history())


def _check_container(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", name):
        raise ConfigError(f"'{name}' is not a valid Azure container name: 3-63 lowercase letters, digits and "
                          "single hyphens, starting and ending with a letter or digit.")


def _bound_azure_retries(fs: Any, args: Mapping[str, Any], options: Mapping[str, str],
                         secrets: Mapping[str, str]) -> None:
    """Give adlfs's service client a short retry policy.

    The Azure SDK retries a refused connection with waits of 15 s and more
    (about 90 s in all here) before it reports anything; runyard retries itself with
    its own backoff (:meth:`Datastore.call`), so the client does not retry.
    """
    try:
        from azure.storage.blob.aio import BlobServiceClient
    except ImportError:  # pragma: no cover - adlfs depends on it
        return
    # Blob Storage's own ExponentialRetry waits 15 s (+ up to 3 s of jitter),
    # then 3 x as long; Datastore.call retries instead, after 0.5, 1, 2 s.
    policy: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10}
    if options.get("endpoint") and not secrets and options.get("credential") == "default":
        client = BlobServiceClient(options["endpoint"], credential=_default_azure_credential(), **policy)
    elif args.get("connection_string"):
        client = BlobServiceClient.from_connection_string(args["connection_string"], **policy)
    elif options.get("account_name"):
        url = f"https://{options['account_name']}.blob.core.windows.net"
        credential: Any = secrets.get("account_key")
        if credential is None and "sas_token" in secrets:
            url += "?" + secrets["sas_token"].lstrip("?")
        if credential is None and "sas_token" not in secrets:
            if options.get("credential") != "default":
                return
            credential = _default_azure_credential()
        client = BlobServiceClient(url, credential=credential, **policy)
    else:
        return
    fs.service_client = client


def _default_azure_credential() -> Any:
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError as exc:
        raise DatastoreError("Signing in to Azure without a key or token (DefaultAzureCredential) needs "
                             "azure-identity: pip install 'runyard[azure]'") from exc
    return DefaultAzureCredential()


def classify(exc: BaseException) -> str:
    """unreachable | auth | missing-root | not-found | other, for any backend's error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        text = str(e)
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        code = ""
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            code = str(resp.get("Error", {}).get("Code", ""))
            status = status or resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if name in ("ServiceRequestError", "EndpointConnectionError", "ConnectTimeoutError",
                    "ClientConnectorError", "ServerDisconnectedError", "ConnectionRefusedError",
                    "ServerTimeoutError", "ReadTimeoutError", "ConnectionClosedError") \
                or isinstance(e, ConnectionError | TimeoutError) \
                or "Cannot connect to host" in text or "Could not connect to the endpoint" in text \
                or status in (500, 502, 503, 504) or code in ("SlowDown", "ServerBusy", "InternalError"):
            return "unreachable"  # or busy: worth another try after a pause
        if name in ("ClientAuthenticationError", "NoCredentialsError", "PartialCredentialsError") \
                or status in (401, 403) or code in (
                "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AuthorizationFailure",
                "AuthenticationFailed") or "AuthorizationFailure" in text or "AuthenticationFailed" in text \
                or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
            return "auth"
        if "ContainerNotFound" in text or "NoSuchBucket" in text or code == "NoSuchBucket":
            return "missing-root"
        if isinstance(e, FileNotFoundError) or name == "ResourceNotFoundError" or status == 404:
            return "not-found"
        if isinstance(e, PermissionError):
            return "auth"
        e = e.__cause__ or e.__context__
    return "other"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500].rstrip(".")


__all__ = [
    "DEFAULT_DATASTORE",
    "KINDS",
    "Datastore",
    "DatastoreAuthError",
    "DatastoreError",
    "DatastoreUnreachableError",
    "RemoteFile",
    "check_datastore_name",
    "classify",
    "clean_path",
]
