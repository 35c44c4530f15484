"""Running a run's script in a sandbox: bubblewrap, as an unprivileged user.

The supervisor stays outside (it syncs the outputs, follows the logs, records the
end); only the script runs inside a new mount, PID, IPC, UTS, cgroup, user and
(unless the network is asked for) network namespace, as an unprivileged user
(``nobody`` when runyard runs as root: bubblewrap run as root is no sandbox).
Inside, the script sees:

- its working directory, read-write, at the same path as outside;
- the system's programs and libraries (``/usr`` and its links) and a few files
  of ``/etc`` (users, name service, TLS certificates, time zone), read-only;
- the Python that runs it and runyard's own code, read-only (to ``import runyard``);
- its run's channel to runyard, read-write (metrics, tags, files it reports);
- its inputs read-only and its declared outputs read-write, where it expects them;
- a private ``/tmp`` (its ``HOME``), ``/proc`` of its own, a minimal ``/dev``;
- with ``gpus``: the NVIDIA and DRI device nodes, and ``/sys`` read-only.

Nothing else: not the workspace (history, store, credentials, other runs), not
the source directory, not the user's home. Limits: memory (``RLIMIT_DATA``), the
number of processes of the sandbox's user (``RLIMIT_NPROC``), CPUs (affinity),
wall time (the supervisor stops the run); cgroups v2 are not used yet, and the
driver log says which limits apply.

:func:`preflight` tries it in a few milliseconds and says exactly what is wrong
(no ``bwrap``, user namespaces not allowed, no ``setpriv``) and how to fix it.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

ETC: Final = ("passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "ssl", "ca-certificates",
              "pki", "localtime", "timezone", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives",
              "mime.types", "protocols", "services", "gai.conf")
TOP_LINKS: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
GPU_DEVICES: Final = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset",
                      "/dev/dri")
DEFAULT_PIDS: Final = 1024

_checked: dict[tuple[int, int], str | None] = {}


@dataclass
class Sandbox:
    """How one run's script is sandboxed (from its compute target's options)."""

    uid: int
    gid: int
    network: bool = False
    memory: int | None = None
    cpus: int | None = None
    pids: int | None = DEFAULT_PIDS
    time: float | None = None
    gpus: bool = False
    binds_ro: list[str] = field(default_factory=list)
    binds_rw: list[str] = field(default_factory=list)

    @classmethod
    def from_isolation(cls, isolation: dict[str, Any]) -> Sandbox:
        return cls(uid=int(isolation["uid"]), gid=int(isolation["gid"]), network=bool(isolation.get("network")),
                   memory=isolation.get("memory"), cpus=isolation.get("cpus"),
                   pids=isolation.get("pids", DEFAULT_PIDS), time=isolation.get("time"),
                   gpus=bool(isolation.get("gpus")))

    def describe_limits(self) -> str:
        parts = [f"user {self.uid}", "network on" if self.network else "no network"]
        if self.memory:
            parts.append(f"memory {self.memory} bytes (RLIMIT_DATA)")
        if self.cpus:
            parts.append(f"{self.cpus} CPUs (affinity)")
        if self.pids:
            parts.append(f"{self.pids} processes of the user (RLIMIT_NPROC)")
        if self.time:
            parts.append(f"{self.time:g} s of wall time")
        if self.gpus:
            parts.append("GPUs passed through")
        return ", ".join(parts)


def user_ids(user: str | int | None) -> tuple[int, int]:
    """The (uid, gid) to sandbox as: ``user``, else ``nobody`` under root, else this user."""
    if user is None:
        if os.geteuid() != 0:
            return os.getuid(), os.getgid()
        user = "nobody"
    try:
        entry = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(str(user))
    except KeyError:
        raise LookupError(f"there is no user '{user}' on this machine") from None
    if entry.pw_uid == 0:
        raise LookupError("the sandbox cannot run as root (bubblewrap run as root is no sandbox); name an "
                          "unprivileged user")
    return entry.pw_uid, entry.pw_gid


def python_for_sandbox(cache_dir: str | None = None) -> tuple[str, list[str], str]:
    """The interpreter the sandboxed script runs with, the folders it needs (read-only), and the
    ``PYTHONPATH`` it needs ("" when none).

    runyard's own interpreter if any user can reach it. Else (a pyenv under ``/root``, say)
    the system's Python of the same version, started through a small virtual environment in
    ``cache_dir`` whose site folder adds runyard's own (``site.addsitedir``, so their ``.pth``
    files work): the script sees the packages a local run sees and not the system's
    ``dist-packages``, as in runyard's own environment. Without ``cache_dir``, that Python
    with runyard's folders on ``PYTHONPATH``.
    """
    import runyard

    code = os.path.dirname(os.path.dirname(os.path.abspath(runyard.__file__)))
    site = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    python = sys.executable
    needed = [code, *site, sys.prefix]
    real = os.path.realpath(python)
    pythonpath = os.pathsep.join([code, *site])
    if reachable(real) and reachable(sys.base_prefix):
        needed.append(sys.base_prefix)
    else:
        system = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
        if os.path.exists(system):
            python = system
            if cache_dir is not None:
                python, mirror = _mirror_venv(cache_dir, system, [*site, code])
                needed.append(mirror)
                pythonpath = ""
    needed = [p for p in sorted(set(needed)) if not p.startswith("/usr/")]
    return python, needed, pythonpath


def _mirror_venv(cache_dir: str, system: str, sites: list[str]) -> tuple[str, str]:
    """(its python, its folder): a virtual environment of ``system`` whose site folder adds ``sites``."""
    import zlib  # (hashlib costs a run 5 ms to import: OpenSSL)

    tag = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    what = "\0".join([system, *sites]).encode()
    key = f"{zlib.crc32(what):08x}{zlib.adler32(what):08x}"
    folder = os.path.join(cache_dir, "client", f"sandbox-{key}")
    python = os.path.join(folder, "bin", "python3")
    if os.path.exists(os.path.join(folder, "pyvenv.cfg")):
        return python, folder
    tmp = f"{folder}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "bin"))
    own = os.path.join(tmp, "lib", tag, "site-packages")
    os.makedirs(own)
    os.symlink(system, os.path.join(tmp, "bin", "python3"))
    os.symlink("python3", os.path.join(tmp, "bin", "python"))
    with open(os.path.join(own, "_runyard_sites.pth"), "w", encoding="utf-8") as fh:
        fh.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in sites) + "\n")
    with open(os.path.join(tmp, "pyvenv.cfg"), "w", encoding="utf-8") as fh:  # last: the folder is complete
        fh.write(f"home = {os.path.dirname(system)}\ninclude-system-site-packages = false\n"
                 f"version = {sys.version_info[0]}.{sys.version_info[1]}\n")
    for dirpath, dirnames, filenames in os.walk(tmp):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, folder)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return python, folder


_ENV_KEEP: Final = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "TERM", "COLUMNS", "LINES",
                               "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONIOENCODING",
                               "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER", "VIRTUAL_ENV",
                               "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"})
_ENV_KEEP_PREFIXES: Final = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "CUDA_", "NVIDIA_", "NCCL_",
                             "RUNYARD_")
_ENV_PROXIES: Final = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
                                 "https_proxy", "no_proxy", "all_proxy"})
_ENV_NEVER: Final = frozenset({"RUNYARD_HISTORY_URL"})


def script_environ(env: dict[str, str], explicit: Any = (), *, network: bool = False) -> dict[str, str]:
    """What of ``env`` a sandboxed script gets: runyard's own variables, its environment's
    (``explicit``), and the caller's locale, time zone, terminal, TLS and thread/GPU settings
    (the proxies with the network). Not the rest of the caller's environment: cloud
    credentials, database URLs and passwords, tokens stay outside, as its files do.

    >>> sorted(script_environ({"PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "k", "MY": "1"}, {"MY"}))
    ['MY', 'PATH']
    """
    out = {}
    for key, value in env.items():
        if key in explicit or (key not in _ENV_NEVER and (
                key in _ENV_KEEP or key.startswith(_ENV_KEEP_PREFIXES) or (network and key in _ENV_PROXIES))):
            out[key] = value
    return out


def reachable(path: str) -> bool:
    """Whether a user who owns nothing on the way can read ``path`` (every folder above it searchable)."""
    import stat

    at = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(at).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
        if not stat.S_ISDIR(mode) and not mode & stat.S_IROTH:
            return False
        parent = os.path.dirname(at)
        if parent == at:
            return True
        at = parent


def _ro_system() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in TOP_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def bwrap_argv(box: Sandbox, command: Sequence[str], wd: str) -> list[str]:
    """The command that runs ``command`` in ``wd`` inside the sandbox."""
    bwrap = shutil.which("bwrap") or "bwrap"
    # Not --new-session: the script stays in the supervisor's process group for the run, so a
    # cancel's SIGTERM reaches it (bubblewrap does not pass signals on); its stdin is /dev/null and
    # the supervisor has no terminal, so there is no terminal to inject keystrokes into.
    args = [bwrap, "--unshare-all", "--die-with-parent", "--hostname", "runyard"]
    if box.network:
        args.append("--share-net")
    args += _ro_system()
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in box.binds_ro:
        args += ["--ro-bind", path, path]
    for path in box.binds_rw:
        args += ["--bind", path, path]
    args += ["--bind", wd, wd]
    # The folders bubblewrap made to hold those mounts (the workspace's path, say) are read-only:
    # nothing can be written beside them, not even a decoy.
    args += ["--remount-ro", "/", "--chdir", wd]
    if box.gpus:
        for dev in GPU_DEVICES:
            args += ["--dev-bind-try", dev, dev]
        for n in range(16):
            args += ["--dev-bind-try", f"/dev/nvidia{n}", f"/dev/nvidia{n}"]
        args += ["--ro-bind-try", "/sys", "/sys"]
    args += ["--", *command]
    if os.geteuid() == 0:  # drop to the sandbox's user first: bubblewrap as root is no sandbox
        setpriv = shutil.which("setpriv") or "setpriv"
        args = [setpriv, f"--reuid={box.uid}", f"--regid={box.gid}", "--clear-groups", "--inh-caps=-all", "--",
                *args]
    return args


def limits(box: Sandbox, then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` setting the sandbox's limits in the child (and then calling ``then``)."""

    def apply() -> None:  # pragma: no cover - runs in the child between fork and exec
        if then is not None:
            then()
        if box.memory:
            resource.setrlimit(resource.RLIMIT_DATA, (box.memory, box.memory))
        if box.pids:
            resource.setrlimit(resource.RLIMIT_NPROC, (box.pids, box.pids))
        if box.cpus:
            cpus = sorted(os.sched_getaffinity(0))[: box.cpus]
            os.sched_setaffinity(0, cpus)

    return apply


def hand_over(paths: Sequence[str], uid: int, gid: int) -> None:
    """Make ``paths`` (and everything below) the sandbox user's, so the script can write them."""
    for top in paths:
        if not os.path.exists(top):
            continue
        os.chown(top, uid, gid, follow_symlinks=False)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def preflight(uid: int, gid: int, cache_dir: str | None = None) -> str | None:
    """Why a sandbox cannot be made here for ``uid``, with what to do; None when it can.

    Tries ``bwrap`` once per user and process (10-20 ms). With ``cache_dir``, a
    success is remembered there until something it rests on changes (a reboot,
    another ``bwrap``, the user-namespace settings), so a run pays for a read
    of a few small files, not for a sandbox; a failure is tried again each time.
    """
    key = (uid, gid)
    if key in _checked:
        return _checked[key]
    stamp = None if cache_dir is None else os.path.join(cache_dir, f"sandbox-ok-{uid}-{gid}")
    state = _state()
    if stamp is not None:
        try:
            with open(stamp, encoding="utf-8") as fh:
                if fh.read() == state:
                    _checked[key] = None
                    return None
        except OSError:
            pass
    _checked[key] = reason = _try(uid, gid)
    if reason is None and stamp is not None:
        try:
            os.makedirs(cache_dir or ".", exist_ok=True)
            tmp = f"{stamp}.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(state)
            os.replace(tmp, stamp)
        except OSError:
            pass  # tried again next time
    return reason


def _state() -> str:
    """What a successful preflight rests on: this boot, the ``bwrap`` and ``setpriv`` programs, and the
    kernel's user-namespace settings."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/sys/kernel/unprivileged_userns_clone",
                 "/proc/sys/user/max_user_namespaces", "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"):
        try:
            with open(path, encoding="ascii") as fh:
                parts.append(fh.read().strip())
        except OSError:
            parts.append("-")
    for program in ("bwrap", "setpriv"):
        found = shutil.which(program)
        try:
            st = os.stat(found) if found else None
        except OSError:
            st = None
        # (ctime: a chmod, chown or an in-place rewrite changes it, and mtime may be kept)
        parts.append(f"{found}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_mode}:{st.st_size}"
                     if st else "-")
    # What this process may do, which the machine's settings do not say: its namespaces (another
    # container on the same boot has others) and its seccomp filter and no_new_privs (a container
    # run under Docker's default profile cannot make user namespaces).
    parts.append(f"euid {os.geteuid()}")
    for ns in ("user", "mnt", "pid"):
        try:
            parts.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            parts.append("-")
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            parts += [line.strip() for line in fh if line.startswith(("Seccomp", "NoNewPrivs"))]
    except OSError:
        parts.append("-")
    return "\n".join(parts) + "\n"


def _try(uid: int, gid: int) -> str | None:
    if shutil.which("bwrap") is None:
        return ("bubblewrap is not installed (no 'bwrap' on PATH). Install it: sudo apt-get install bubblewrap "
                "(Debian, Ubuntu), sudo dnf install bubblewrap (Fedora).")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "'setpriv' (util-linux) is needed to drop from root to the sandbox's user. Install util-linux."
    box = Sandbox(uid, gid, pids=None)
    argv = bwrap_argv(box, ["/bin/true"], "/tmp")[:]
    # (no working directory of a run yet: /tmp as the folder, which every user can enter)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not be started: {exc}"
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(it said nothing)"]
    text = said[0]
    if "namespace" in text.lower() or "operation not permitted" in text.lower():
        return (f"bubblewrap cannot make user namespaces here ({text}). Allow unprivileged user namespaces: "
                "sudo sysctl -w kernel.unprivileged_userns_clone=1 (Debian, older kernels), or "
                "kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 24.04), or give the container the "
                "capability to create them (e.g. docker run --security-opt seccomp=unconfined).")
    return f"bubblewrap failed ({text}). Try: bwrap --unshare-all --ro-bind /usr /usr /usr/bin/true"


__all__ = ["Sandbox", "bwrap_argv", "hand_over", "limits", "preflight", "python_for_sandbox", "reachable",
           "script_environ", "user_ids"]
