"""The sandbox the REPL worker puts itself in before it runs any code written by a model.

Why: the worker runs Python a language model wrote, and that model may have read a
prompt-injected document. Such code must not read the parent's secrets, reach the network,
touch files outside its working directory, signal or trace other processes, or start new
ones. Every layer here is applied by the worker to itself (no helper binary, no root needed),
costs a few milliseconds, and is inherited by every thread started afterwards. It is
stdlib-only (``ctypes`` for the kernel interfaces) because the worker runs as
``python -I _worker.py`` and imports this file as a sibling, outside the ``rlm_sdk`` package.

The layers, in the order :func:`apply_sandbox` applies them:

``rlimits``
    Address space (``RLIMIT_AS``: virtual memory, so leave room for thread stacks), open
    files, file size (a too-large write fails with ``EFBIG``) and no core dumps. Soft and hard
    limits are both lowered, so the code cannot raise them again. Applied in every mode.
    Does not bound CPU time or the number of processes (``RLIMIT_NPROC`` does nothing for
    root): the parent's timeouts and the seccomp layer do that.
``no_new_privs``
    ``PR_SET_NO_NEW_PRIVS``: ``execve`` can never grant privileges again (setuid binaries,
    file capabilities). Landlock and seccomp require it.
``netns``
    A fresh network namespace (``unshare(CLONE_NEWNET)``; unprivileged: inside a new user
    namespace that maps only our own uid and gid). It holds a single ``lo`` that is down, so
    no address is reachable, loopback included; costs about a millisecond. Skipped when the
    policy allows the network. Does not cover Unix sockets bound to a path: seccomp does.
``drop_caps``
    Empties the capability bounding, ambient, effective, permitted and inheritable sets. A
    worker started as root keeps uid 0 (so it still owns root's files: Landlock decides what
    it may open) but loses the powers of root: mounting, loading modules, rebooting, reading
    any file regardless of its mode.
``landlock_fs:abiN``
    Landlock (the kernel's unprivileged access control) closes the file system except for:
    read-write, the working directory and the temp directory; read-only, the Python
    installation and ``sys.path``, ``/usr``, ``/lib``, ``/bin``, a short list of ``/etc``
    files (not ``/etc`` itself: it holds host keys and ``shadow``), ``/dev/null`` and the
    random devices, and the policy's ``readable_paths``. ``/proc`` and ``/sys`` are not
    granted, and Landlock's ptrace rule hides ``/proc/<pid>/environ`` of every process outside
    the sandbox even where ``/proc`` is readable. Programs can be executed only when the
    policy allows subprocesses. Descriptors opened before (the protocol channel, the context
    memfd) keep working. Does not hide file names (path walks and ``stat`` are allowed) nor
    anything granted read-only.
``landlock_net`` (ABI 4+)
    No TCP ``bind`` or ``connect`` at all, unless the policy allows the network.
``landlock_scope_signal``, ``landlock_scope_abstract_unix`` (ABI 6+)
    No signals to processes outside the sandbox (the parent, the user's shell) and no
    connections to abstract Unix sockets outside it (session buses, X11).
``seccomp``
    A system-call filter (through the system's ``libseccomp.so.2``), default allow, that
    refuses: creating sockets (``socket`` for every family, which also covers Unix sockets
    bound to a path such as a container runtime's control socket; ``socketpair`` stays for
    Unix pairs, which asyncio needs) unless the network is allowed; new processes and
    ``execve`` unless subprocesses are allowed (``fork``, ``vfork``, ``clone`` without
    ``CLONE_THREAD``; ``clone3`` fails with ``ENOSYS`` so the C library falls back to
    ``clone``, which keeps threads working), and then also signals to any process but itself;
    ``ptrace`` and the other ways into another process's memory; new user namespaces,
    ``unshare``, ``setns`` and mounts; ``io_uring`` (it creates sockets and opens files out of
    the filter's sight); kernel keyrings (the parent's session keys); ``bpf``,
    ``perf_event_open``, ``userfaultfd``; module loading, reboot, clocks, swap; ``TIOCSTI``
    (typing into the user's terminal). Syscalls of another architecture (``int 0x80``) kill
    the thread.

What no layer covers: CPU time and wall time (the parent's timeouts), covert channels,
kernel bugs, and whatever the parent hands over (the context, tool results). Secrets must
stay in the parent: start the worker with a scrubbed environment.

Modes: ``"auto"`` applies every layer the host supports and reports which; ``"strict"``
raises :class:`SandboxUnavailable` naming the first layer that cannot be applied;
``"none"`` applies only ``rlimits``. ``disable_layers`` pretends layers are missing, to
test strict refusals and degraded hosts.

Every layer but ``rlimits`` binds only the calling thread, so :func:`apply_sandbox` must run
while the process has a single thread; it checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import resource
import stat
import sys
from array import array

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ._types import IsolationMode as Mode

__all__ = [
    "LAYERS",
    "MODES",
    "SandboxError",
    "SandboxPolicy",
    "SandboxUnavailable",
    "apply_sandbox",
    "probe",
]

LAYERS = (
    "rlimits",
    "no_new_privs",
    "netns",
    "drop_caps",
    "landlock_fs",
    "landlock_net",
    "landlock_scope_signal",
    "landlock_scope_abstract_unix",
    "seccomp",
)
"""Every layer, in the order they are applied; ``apply_sandbox`` reports ``landlock_fs:abiN``."""

MODES = ("auto", "strict", "none")
"""The isolation modes, as ``typing.get_args(rlm_sdk.repl.IsolationMode)`` gives them (a test
keeps the two equal): this file runs in the worker, where importing ``typing`` would cost ~9 ms."""
_DISABLE_GROUPS = ("landlock", "landlock_scope")

# Read-only files and directories beyond the Python installation (skipped when absent).
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
_ETC_FILES = (
    "ld.so.cache",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "passwd",
    "group",
    "mime.types",
    "os-release",
)
_ETC_NETWORK_FILES = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "ssl",
    "ca-certificates",
    "pki",
)
_DEV_READ = ("/dev/zero", "/dev/random", "/dev/urandom")
_DEV_READ_WRITE = ("/dev/null",)


class SandboxError(RuntimeError):
    """The sandbox could not be set up: a misuse, or a layer that failed half-way."""


class SandboxUnavailable(SandboxError):
    """Strict mode, and ``layer`` cannot be applied here; the parent raises IsolationError."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"sandbox layer {layer!r} cannot be applied on this host: {reason}")
        self.layer = layer
        self.reason = reason


class SandboxPolicy:
    """What the worker may do; built by the parent and sent to the worker as a JSON object.

    A plain immutable class rather than a dataclass: importing ``dataclasses`` would add
    about 15 ms to every worker start.

    Attributes:
        workdir: the private working directory, read-write.
        tmpdir: an extra read-write directory (may equal ``workdir``).
        mode: ``"auto"``, ``"strict"`` or ``"none"`` (see the module docstring).
        allow_network: keep the network (no netns, no Landlock TCP rule, sockets allowed).
        allow_subprocess: allow ``fork``/``execve`` (and executing files that are readable).
        readable_paths: extra read-only files or directories.
        memory_bytes: ``RLIMIT_AS``. file_size_bytes: ``RLIMIT_FSIZE``.
        open_files: ``RLIMIT_NOFILE``.
        disable_layers: layers to treat as unsupported by the host (``"landlock"`` and
            ``"landlock_scope"`` name groups), for tests.
    """

    __slots__ = (
        "allow_network",
        "allow_subprocess",
        "disable_layers",
        "file_size_bytes",
        "memory_bytes",
        "mode",
        "open_files",
        "readable_paths",
        "tmpdir",
        "workdir",
    )
    workdir: str
    tmpdir: str | None
    mode: Mode
    allow_network: bool
    allow_subprocess: bool
    readable_paths: tuple[str, ...]
    memory_bytes: int | None
    file_size_bytes: int | None
    open_files: int | None
    disable_layers: tuple[str, ...]

    def __init__(
        self,
        *,
        workdir: str,
        tmpdir: str | None = None,
        mode: Mode = "auto",
        allow_network: bool = False,
        allow_subprocess: bool = False,
        readable_paths: Iterable[str] = (),
        memory_bytes: int | None = None,
        file_size_bytes: int | None = None,
        open_files: int | None = None,
        disable_layers: Iterable[str] = (),
    ) -> None:
        values: dict[str, object] = {
            "workdir": workdir,
            "tmpdir": tmpdir,
            "mode": mode,
            "allow_network": allow_network,
            "allow_subprocess": allow_subprocess,
            "readable_paths": tuple(readable_paths),
            "memory_bytes": memory_bytes,
            "file_size_bytes": file_size_bytes,
            "open_files": open_files,
            "disable_layers": tuple(disable_layers),
        }
        _validate(values)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SandboxPolicy:
        """The policy a JSON object describes; unknown keys and wrong types raise ValueError."""
        unknown = sorted(set(data) - set(cls.__slots__))
        if unknown:
            raise ValueError(f"unknown sandbox policy keys: {', '.join(unknown)}")
        if not isinstance(data.get("workdir"), str):
            raise ValueError("sandbox policy: 'workdir' must be a string")
        values = {key: list(v) if isinstance(v, list | tuple) else v for key, v in data.items()}
        _validate(values)
        return cls(**values)  # type: ignore[arg-type]  # checked by _validate

    def to_dict(self) -> dict[str, object]:
        """The JSON object :meth:`from_dict` reads back."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name in self.__slots__
            for value in (getattr(self, name),)
        }

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SandboxPolicy is immutable (tried to set {name!r})")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"SandboxPolicy({fields})"


def _validate(values: Mapping[str, object]) -> None:
    """Raise ValueError unless ``values`` (a subset of the policy's fields) are well formed."""
    for key, value in values.items():
        if key in ("workdir", "tmpdir"):
            ok = (isinstance(value, str) and os.path.isabs(value) and value.strip("/") != "") or (
                key == "tmpdir" and value is None
            )
            expected = "an absolute path other than /"
        elif key == "mode":
            ok, expected = value in MODES, f"one of {MODES}"
        elif key in ("allow_network", "allow_subprocess"):
            ok, expected = isinstance(value, bool), "a bool"
        elif key in ("memory_bytes", "file_size_bytes", "open_files"):
            ok = value is None or (type(value) is int and value > 0)
            expected = "a positive int or None"
        elif key == "readable_paths":
            ok = isinstance(value, list | tuple) and all(
                isinstance(p, str) and os.path.isabs(p) for p in value
            )
            expected = "a list of absolute paths"
        else:  # disable_layers
            known = (*LAYERS[2:], *_DISABLE_GROUPS)
            ok = isinstance(value, list | tuple) and all(name in known for name in value)
            expected = f"a list of names from {known}"
        if not ok:
            raise ValueError(f"sandbox policy: {key!r} must be {expected}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Probing and applying
# --------------------------------------------------------------------------------------------


def probe() -> dict[str, bool | int]:
    """What this host supports, cheaply and without changing the calling process.

    ``netns`` is an educated guess (privileges, or user namespaces enabled); ``apply_sandbox``
    reports what actually worked.
    """
    libc = _libc()
    seccomp = _libseccomp() is not None and libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) >= 0
    return {
        "rlimits": True,
        "no_new_privs": True,
        "netns": _netns_likely(),
        "drop_caps": True,
        "landlock_abi": _landlock_abi(libc),
        "seccomp": seccomp,
    }


def apply_sandbox(policy: SandboxPolicy | Mapping[str, object]) -> list[str]:
    """Confine the calling process as ``policy`` says and return the layers applied.

    Call it in the worker before any model code runs and before any thread is started.
    Irreversible. Returns e.g. ``["rlimits", "no_new_privs", "netns", "drop_caps",
    "landlock_fs:abi7", "landlock_net", "landlock_scope_signal",
    "landlock_scope_abstract_unix", "seccomp"]``.

    Raises:
        SandboxUnavailable: strict mode, and a layer cannot be applied (named in the error).
        SandboxError: called with more than one thread running, or a layer failed half-way.
        ValueError: the policy is malformed.
    """
    if not isinstance(policy, SandboxPolicy):
        policy = SandboxPolicy.from_dict(policy)
    _apply_rlimits(policy)
    applied = ["rlimits"]
    if policy.mode == "none":
        return applied
    threads = _thread_count()
    if threads != 1:
        raise SandboxError(
            f"apply_sandbox needs a single-threaded process, found {threads} threads"
        )
    for path in (policy.workdir, policy.tmpdir):
        if path is not None and not os.path.isdir(path):
            raise SandboxError(f"sandbox directory {path!r} does not exist")
    libc = _libc()
    seccomp_lib = _libseccomp()  # loaded before Landlock narrows what can be read

    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(ctypes.get_errno())}")
    applied.append("no_new_privs")
    if not policy.allow_network:
        _attempt(policy, "netns", applied, lambda: _unshare_network(libc))
    _attempt(policy, "drop_caps", applied, lambda: _drop_capabilities(libc))
    _apply_landlock(policy, libc, applied)

    def load_seccomp() -> None:
        if seccomp_lib is None:
            raise OSError(errno.ENOENT, "libseccomp.so.2 is not installed")
        _load_seccomp(seccomp_lib, policy)

    _attempt(policy, "seccomp", applied, load_seccomp)
    return applied


def _attempt(
    policy: SandboxPolicy, layer: str, applied: list[str], action: Callable[[], None]
) -> None:
    """Run ``action``; record ``layer`` when it works, refuse in strict mode when it cannot."""
    reason = _disabled_reason(policy, layer)
    if reason is None:
        try:
            action()
        except OSError as err:
            reason = f"{err.strerror or err}"
        else:
            applied.append(layer)
            return
    _missing(policy, layer, reason)


def _missing(policy: SandboxPolicy, layer: str, reason: str) -> None:
    if policy.mode == "strict":
        raise SandboxUnavailable(layer, reason)


def _disabled_reason(policy: SandboxPolicy, layer: str) -> str | None:
    for name in policy.disable_layers:
        if layer == name or layer.startswith(name + "_"):
            return f"disabled by the policy ({name!r} in disable_layers)"
    return None


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: trust the interpreter's own count
        import threading

        return threading.active_count()


# --------------------------------------------------------------------------------------------
# rlimits, no_new_privs, netns, capabilities
# --------------------------------------------------------------------------------------------

_PR_GET_SECCOMP = 21
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000
_CAP_SYS_ADMIN = 21
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _apply_rlimits(policy: SandboxPolicy) -> None:
    for which, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_AS, policy.memory_bytes),
        (resource.RLIMIT_FSIZE, policy.file_size_bytes),
        (resource.RLIMIT_NOFILE, policy.open_files),
    ):
        if value is not None:
            hard = resource.getrlimit(which)[1]
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))


_LIBS: dict[str, ctypes.CDLL | None] = {}
"""The C libraries, loaded once per process: a fork inherits them ready (see :func:`prepare`)."""


def _libc() -> ctypes.CDLL:
    libc = _LIBS.get("c")
    if libc is None:
        libc = _LIBS["c"] = ctypes.CDLL(None, use_errno=True)
    return libc


def _checked(result: int, what: str) -> int:
    """``result`` of a libc call, or OSError from errno when it is negative."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _unshare_network(libc: ctypes.CDLL) -> None:
    """Enter a new network namespace; without privileges, through a new user namespace."""
    if libc.unshare(_CLONE_NEWNET) == 0:
        return
    if ctypes.get_errno() != errno.EPERM:
        _checked(-1, "unshare(CLONE_NEWNET)")
    uid, gid = os.geteuid(), os.getegid()
    _checked(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET), "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
    try:  # map only ourselves, or files we create would belong to the overflow uid
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1\n"),
            ("gid_map", f"{gid} {gid} 1\n"),
        ):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
    except OSError as err:
        raise SandboxError(f"cannot map ids in the new user namespace: {err}") from err


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    for cap in range(64):  # the bounding set needs CAP_SETPCAP: best effort, then capset
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero
    _checked(libc.capset(ctypes.byref(header), data), "capset")


def _netns_likely() -> bool:
    """Whether ``unshare`` of a network namespace will probably work (privileges or userns)."""
    try:
        with open("/proc/self/status") as file:
            status = dict(line.split(":", 1) for line in file if ":" in line)
        if int(status.get("CapEff", "0").strip(), 16) & (1 << _CAP_SYS_ADMIN):
            return True
        for path, refusing in (
            ("/proc/sys/user/max_user_namespaces", "0"),
            ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
            ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
        ):
            if os.path.exists(path):
                with open(path) as file:
                    if file.read().strip() == refusing:
                        return False
        return True
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Landlock (raw syscalls; the numbers are the same in every generic syscall table)
# --------------------------------------------------------------------------------------------

_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1

_READ = _FS_READ_FILE | _FS_READ_DIR
_WRITE = (
    _FS_WRITE_FILE
    | _FS_REMOVE_DIR
    | _FS_REMOVE_FILE
    | _FS_MAKE_DIR
    | _FS_MAKE_REG
    | _FS_MAKE_SOCK
    | _FS_MAKE_FIFO
    | _FS_MAKE_SYM
    | _FS_REFER
    | _FS_TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _landlock_abi(libc: ctypes.CDLL) -> int:
    """The Landlock ABI version the kernel offers; 0 when it has none (or it is disabled)."""
    version = libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    """Every file-system right the running ABI knows (unknown bits make the kernel refuse)."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _apply_landlock(policy: SandboxPolicy, libc: ctypes.CDLL, applied: list[str]) -> None:
    abi = _landlock_abi(libc)
    wanted = (
        ("landlock_fs", 1, True),
        ("landlock_net", 4, not policy.allow_network),
        ("landlock_scope_signal", 6, True),
        ("landlock_scope_abstract_unix", 6, True),
    )
    chosen: list[str] = []
    for layer, min_abi, needed in wanted:
        if not needed:
            continue
        reason = _disabled_reason(policy, layer)
        if reason is None and abi < min_abi:
            reason = f"needs Landlock ABI {min_abi}, the kernel offers {abi or 'no Landlock'}"
        if reason is None:
            chosen.append(layer)
        else:
            _missing(policy, layer, reason)
    if not chosen:
        return
    attr = _RulesetAttr(
        _fs_rights(abi) if "landlock_fs" in chosen else 0,
        _NET_BIND_TCP | _NET_CONNECT_TCP if "landlock_net" in chosen else 0,
        (_SCOPE_SIGNAL if "landlock_scope_signal" in chosen else 0)
        | (_SCOPE_ABSTRACT_UNIX_SOCKET if "landlock_scope_abstract_unix" in chosen else 0),
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as this ABI knows it
    syscall = libc.syscall
    try:
        ruleset = _checked(
            syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                    ctypes.c_size_t(size), ctypes.c_uint32(0)),
            "landlock_create_ruleset",
        )  # fmt: skip
    except OSError as err:
        for layer in chosen:
            _missing(policy, layer, f"{err.strerror}")
        return
    try:
        if "landlock_fs" in chosen:
            for path, access in _fs_grants(policy):
                _add_path_rule(syscall, ruleset, path, access & _fs_rights(abi))
        _checked(
            syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset),
                    ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )  # fmt: skip
    except OSError as err:
        raise SandboxError(f"Landlock failed while building the ruleset: {err}") from err
    finally:
        os.close(ruleset)
    applied.extend(f"{layer}:abi{abi}" if layer == "landlock_fs" else layer for layer in chosen)


def _fs_grants(policy: SandboxPolicy) -> list[tuple[str, int]]:
    """(path, rights) pairs: what the sandbox may read, write and (maybe) execute."""
    read = _READ | (_FS_EXECUTE if policy.allow_subprocess else 0)
    grants = list(_host_grants(policy.allow_subprocess, policy.allow_network))
    grants += [(path, read) for path in policy.readable_paths]
    grants += [(path, read | _WRITE) for path in (policy.workdir, policy.tmpdir) if path]
    return grants


_HOST_GRANTS: dict[tuple[bool, bool], tuple[tuple[str, int], ...]] = {}


def _host_grants(allow_subprocess: bool, allow_network: bool) -> tuple[tuple[str, int], ...]:
    """The grants every session of this interpreter shares (system, Python, ``/etc``,
    devices); made once per process (:func:`prepare`), as ``sys.path`` is set by then."""
    key = (allow_subprocess, allow_network)
    if key not in _HOST_GRANTS:
        read = _READ | (_FS_EXECUTE if allow_subprocess else 0)
        python = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
        python.update(os.path.abspath(entry) for entry in sys.path if entry)
        python.discard("/")  # a sys.path entry of "/" must not open the whole file system
        etc = _ETC_FILES + (_ETC_NETWORK_FILES if allow_network else ())
        grants = [(path, read) for path in (*_SYSTEM_DIRS, *sorted(python))]
        grants += [(f"/etc/{name}", read) for name in etc]
        grants += [(path, _FS_READ_FILE) for path in _DEV_READ]
        grants += [
            (path, _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE) for path in _DEV_READ_WRITE
        ]
        _HOST_GRANTS[key] = tuple(grants)
    return _HOST_GRANTS[key]


def _add_path_rule(syscall: Callable[..., int], ruleset: int, path: str, access: int) -> None:
    """Allow ``access`` beneath ``path``; skipped when it is missing or closed to us anyway."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FS_FILE_RIGHTS
        rule = _PathBeneathAttr(access, fd)
        _checked(
            syscall(ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset),
                    ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                    ctypes.c_uint32(0)),
            f"landlock_add_rule({path})",
        )  # fmt: skip
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# seccomp (through the system's libseccomp)
# --------------------------------------------------------------------------------------------

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7
_AF_UNIX = 1
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C

_ALWAYS_DENIED = (
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
    "kcmp",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    # kernel attack surface, and syscalls that act out of the filter's sight
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
    "userfaultfd", "keyctl", "add_key", "request_key", "open_by_handle_at",
    "name_to_handle_at",
    # the machine (need capabilities that are dropped; refused in case they are not)
    "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "iopl",
    "ioperm", "vhangup", "uselib",
)  # fmt: skip
_PROCESS_DENIED = (
    "fork", "vfork", "execve", "execveat", "tkill", "pidfd_open", "pidfd_send_signal",
)  # fmt: skip
_SIGNALS_TO_SELF_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

# A rule: (syscall, errno, conditions); a condition is (argument index, operator, a, b).
_Rule = tuple[str, int, tuple[tuple[int, int, int, int], ...]]


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _libseccomp() -> ctypes.CDLL | None:
    if "seccomp" in _LIBS:
        return _LIBS["seccomp"]
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        _LIBS["seccomp"] = None
        return None
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.restype = None
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    lib.seccomp_export_bpf.restype = ctypes.c_int
    _LIBS["seccomp"] = lib
    return lib


def _seccomp_rules(allow_network: bool, allow_subprocess: bool, pid: int) -> list[_Rule]:
    lower_32_bits = 0xFFFFFFFF  # ioctl's request is an unsigned int: ignore the upper half
    rules: list[_Rule] = [(name, errno.EPERM, ()) for name in _ALWAYS_DENIED]
    rules += [
        ("clone3", errno.ENOSYS, ()),  # its flags are out of reach: make libc use clone
        ("clone", errno.EPERM, ((0, _SCMP_CMP_MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER),)),
        ("ioctl", errno.EPERM, ((1, _SCMP_CMP_MASKED_EQ, lower_32_bits, _TIOCSTI),)),
        ("ioctl", errno.EPERM, ((1, _SCMP_CMP_MASKED_EQ, lower_32_bits, _TIOCLINUX),)),
    ]
    if not allow_network:
        rules += [
            ("socket", errno.EACCES, ()),
            ("socketpair", errno.EACCES, ((0, _SCMP_CMP_NE, _AF_UNIX, 0),)),
        ]
    if not allow_subprocess:
        rules += [(name, errno.EPERM, ()) for name in _PROCESS_DENIED]
        rules.append(("clone", errno.EPERM, ((0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0),)))
        rules += [
            (name, errno.EPERM, ((0, _SCMP_CMP_NE, pid, 0),)) for name in _SIGNALS_TO_SELF_ONLY
        ]
    return rules


def _load_seccomp(lib: ctypes.CDLL, policy: SandboxPolicy) -> None:
    """Install the policy's filter on the calling thread: ready-made (:func:`prepare` ran in
    this process, or the fork server it was forked from), else compiled now for this pid."""
    pid = os.getpid()
    template = _FILTERS.get((policy.allow_network, policy.allow_subprocess))
    if template is None:  # not prepared, or the pid could not be located in the program
        program = _compile_filter(lib, policy.allow_network, policy.allow_subprocess, pid)
    else:
        words, pid_at = template
        instructions = array("I", words)
        for index in pid_at:
            instructions[index] = pid
        program = instructions.tobytes()
    count = len(program) // _BPF_INSTRUCTION_SIZE
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.cast(buffer, ctypes.c_void_p))
    libc = _libc()
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"PR_SET_SECCOMP: {os.strerror(code)}")


def prepare() -> None:
    """Load the C libraries, list the host's Landlock grants and compile every seccomp filter,
    once: the fork server does, so that each worker it forks only writes its pid into a
    ready-made filter (which saves it ~1.3 ms of CPU, ``bench/bench_sandbox.py``)."""
    _libc()
    lib = _libseccomp()
    for allow_network, allow_subprocess in itertools.product((False, True), repeat=2):
        _host_grants(allow_subprocess, allow_network)
        if lib is not None:
            with contextlib.suppress(OSError):  # a worker compiles its own, and says what fails
                _filter_template(lib, allow_network, allow_subprocess)


_PID_MARKS = (0x7A5E1D0F, 0x6B4D2C1E)  # no rule uses them: compiled in place of the pid
_FILTERS: dict[tuple[bool, bool], tuple[bytes, tuple[int, ...]] | None] = {}
_BPF_INSTRUCTION_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _filter_template(
    lib: ctypes.CDLL, allow_network: bool, allow_subprocess: bool
) -> tuple[bytes, tuple[int, ...]] | None:
    """A policy's filter as 32-bit words, and where the pid goes: compiled with two stand-ins
    for the pid, the programs may differ only in words (BPF ``k``) holding them, else None."""
    key = (allow_network, allow_subprocess)
    if key not in _FILTERS:
        first, second = (
            array("I", _compile_filter(lib, allow_network, allow_subprocess, mark))
            for mark in _PID_MARKS
        )
        differ = [i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b]
        sound = (
            first.itemsize == 4
            and len(first) == len(second)
            and all(
                i % 2 == 1 and first[i] == _PID_MARKS[0] and second[i] == _PID_MARKS[1]
                for i in differ
            )
        )
        _FILTERS[key] = (first.tobytes(), tuple(differ)) if sound else None
    return _FILTERS[key]


def _compile_filter(
    lib: ctypes.CDLL, allow_network: bool, allow_subprocess: bool, pid: int
) -> bytes:
    """The BPF program libseccomp makes of the rules (``seccomp_export_bpf``), not installed."""
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        for name, code, conditions in _seccomp_rules(allow_network, allow_subprocess, pid):
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a syscall on this architecture
            cmps = (_ArgCmp * len(conditions))(*(_ArgCmp(*c) for c in conditions))
            result = lib.seccomp_rule_add_array(
                ctx, _SCMP_ACT_ERRNO | code, number, len(conditions), cmps
            )
            if result < 0:
                raise OSError(-result, f"seccomp_rule_add({name}): {os.strerror(-result)}")
        fd = os.memfd_create("rlm-seccomp", os.MFD_CLOEXEC)
        try:
            result = lib.seccomp_export_bpf(ctx, fd)
            if result < 0:
                raise OSError(-result, f"seccomp_export_bpf: {os.strerror(-result)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    if not program or len(program) % _BPF_INSTRUCTION_SIZE:
        raise OSError(errno.EINVAL, "seccomp_export_bpf gave no program")
    return program
