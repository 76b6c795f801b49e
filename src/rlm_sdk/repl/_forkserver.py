"""The fork server: one warm process that forks a fresh REPL worker per request.

Why: starting an interpreter per worker costs ~25 ms of CPU, so a hundred runs starting at once
saturate the cores and starve the parent's event loop. The fork server pays that once: it has
imported everything a worker needs (``_worker.py``, ``_wire.py``, the sandbox and its C
libraries) and forks each worker in about a millisecond. The parent's handle on it is
:class:`rlm_sdk.repl.ForkServer` (``_process.py``); this file is the other end, the program
``python -I _forkserver.py CONTROL_FD PARENT_PID`` runs. Like the worker it runs outside the
package, stdlib-only, and imports its siblings by file (see ``_worker.py``).

It holds no context and no secret: it is started with the scrubbed environment, a request
carries only the worker's descriptors, and a worker takes its environment and directory from
its own init frame, so nothing of one session stays in the server's memory for a later fork
to find. It stays single-threaded, so forking is safe.

A request is one ``SOCK_SEQPACKET`` record on the control socket: a JSON object
(``{"context": bool, "workdir": DIRECTORY or null, "tmpdir": DIRECTORY}``) and, by
``SCM_RIGHTS``, a status socket, the worker's ends of its two channel pipes (in, out), the
write end of its stderr pipe and, when ``context`` is true, the context memfd. The worker's
private directory is ``workdir`` (a restarted worker keeps its session's) or, when null, a new
one the server makes in ``tmpdir``. Replies go to the status socket: ``{"pid": N, "workdir":
DIRECTORY}`` (or ``{"error": "..."}``) at once, and ``{"exit": returncode}`` (negative: killed
by that signal) once the worker is reaped. Each worker leads a process group of its own, set
up by both sides of the fork so that it exists before its pid is sent. When a worker exits,
what is left of its group is killed before it is reaped, while the group id cannot be reused.

A closing session sends ``{"kill": true, "remove": DIRECTORY}`` on the status socket: the
server kills the worker's group, reaps it and then removes the directory, so closing a session
costs its event loop one message and never waits for the worker's exit. A session that gives
up on its request before the reply sends ``{"abandon": true}``: the same, for the directory the
server made. A status socket is kept until the session closes its end.

The server dies with its parent (``PR_SET_PDEATHSIG``), and on EOF of the control socket it
kills every worker's process group, reaps them and exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING or __package__:  # imported from the package (tests, type checking)
    from . import _sandbox, _wire, _worker
else:  # run as a script: import the siblings by file, as _worker.py explains
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import _sandbox
        import _wire
        import _worker
    finally:
        del sys.path[0]

if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

_REQUEST_SIZE = 65536
_MAX_FDS = 8
_STATUS_SIZE = 65536


def main(control_fd: int, parent_pid: int) -> None:
    """Fork a fresh worker per request on ``control_fd``; reap them and report how they ended."""
    _wire.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up()
    control = socket.socket(fileno=control_fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, _no_op)  # a handler, so that SIGCHLD writes to the wakeup fd
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    children = _Children(poller)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_read:
                with contextlib.suppress(OSError):
                    os.read(wake_read, 4096)
                children.reap()
            elif fd == control.fileno():
                try:
                    data, fds, flags, _ = socket.recv_fds(control, _REQUEST_SIZE, _MAX_FDS)
                except OSError:
                    data, fds, flags = b"", [], 0
                if not data and not fds:
                    children.shutdown()
                    os._exit(0)
                _fork_worker(data, fds, flags, control, children)
            else:
                children.on_status(fd)


class _Child:
    """A worker of the fork server, its status socket, and the directory to remove after it."""

    __slots__ = ("alive", "made", "pid", "remove", "status")

    def __init__(self, pid: int, status: socket.socket, made: str | None = None) -> None:
        self.pid = pid
        self.status = status
        self.alive = True
        self.made = made
        """The directory the server made for this worker (not for a restarted one)."""
        self.remove: str | None = None


class _Children:
    """The fork server's bookkeeping: live workers by pid, open status sockets by descriptor."""

    def __init__(self, poller: select.poll) -> None:
        self._poller = poller
        self.alive: dict[int, _Child] = {}
        self._by_fd: dict[int, _Child] = {}

    def sockets(self) -> list[socket.socket]:
        return [child.status for child in self._by_fd.values()]

    def add(self, pid: int, status: socket.socket, made: str | None) -> None:
        child = _Child(pid, status, made)
        self.alive[pid] = child
        status.setblocking(False)
        self._by_fd[status.fileno()] = child
        self._poller.register(status.fileno(), select.POLLIN)

    def on_status(self, fd: int) -> None:
        """Read what a session sent on a status socket; forget the socket at its EOF."""
        child = self._by_fd.get(fd)
        if child is None:
            return
        while True:
            try:
                data = child.status.recv(_STATUS_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._poller.unregister(fd)
                del self._by_fd[fd]
                child.status.close()
                if child.alive:  # the session went away without closing (cancelled mid-spawn)
                    _wire.kill_group(child.pid)
                    child.remove = child.remove or child.made
                return
            self._on_message(child, data)

    def _on_message(self, child: _Child, data: bytes) -> None:
        """``{"kill": true, "remove": DIRECTORY}``: the session is closing.

        ``{"abandon": true}``: the session gave up on its request (cancelled, or tired of
        waiting) and may never have learnt the worker's pid or directory: the worker is
        killed and the directory made for it removed, whether it is still alive or not.
        """
        try:
            message = json.loads(data)
            kill, path = bool(message.get("kill")), message.get("remove")
            if message.get("abandon"):
                kill, path = True, child.made
        except (ValueError, AttributeError):
            return
        if kill and child.alive:
            _wire.kill_group(child.pid)
        if not _wire.is_workdir(path):
            return
        if child.alive:
            child.remove = path
        else:
            _remove_workdir(path)

    def reap(self) -> None:
        """Reap every exited child; kill the rest of a worker's group first, then report."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or not info.si_pid:
                return
            pid = info.si_pid
            child = self.alive.pop(pid, None)
            if child is not None:
                _wire.kill_group(pid)  # the zombie still holds the group id
            _, status = os.waitpid(pid, 0)
            if child is not None:  # not a directory remover
                self._exited(child, status)

    def _exited(self, child: _Child, status: int) -> None:
        child.alive = False
        if child.status.fileno() >= 0:
            with contextlib.suppress(OSError):
                exit_code = os.waitstatus_to_exitcode(status)
                child.status.send(json.dumps({"exit": exit_code}).encode())
            self.on_status(child.status.fileno())  # a removal asked for meanwhile
        if child.remove is not None:
            _remove_workdir(child.remove)
            child.remove = None

    def shutdown(self) -> None:
        """The parent is gone or done: kill every worker's group, reap them, clean up."""
        for pid in self.alive:
            _wire.kill_group(pid)
        for child in list(self.alive.values()):
            try:
                _, status = os.waitpid(child.pid, 0)
            except ChildProcessError:
                continue
            self._exited(child, status)
        self.alive.clear()
        for fd in list(self._by_fd):
            self.on_status(fd)


def _workdir_for(spec: dict[str, Any]) -> str:
    """The worker's directory: the session's own (a restart), or a new one (mode 0700)."""
    workdir = spec.get("workdir")
    if workdir is not None:
        if not _wire.is_workdir(workdir):
            raise ValueError("a malformed fork request")
        return str(workdir)
    base = spec.get("tmpdir")
    if not isinstance(base, str) or not os.path.isabs(base):
        raise ValueError("a malformed fork request")
    return _wire.make_workdir(base)


def _remove_workdir(path: str) -> None:
    """Remove a session's directory: at once when small, else in a short-lived child process
    (the server must stay free to fork workers); that child is reaped like the workers."""
    if not _wire.remove_small_directory(path) and os.fork() == 0:
        try:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        finally:
            os._exit(0)


def _no_op(signum: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing; the wakeup fd does the work."""


def _warm_up() -> None:
    """Import now what every worker would import later, so a fork inherits it ready."""
    import ast  # noqa: F401
    import faulthandler  # noqa: F401
    import linecache  # noqa: F401
    import opcode  # noqa: F401
    import resource  # noqa: F401
    import traceback  # noqa: F401

    _sandbox.prepare()  # libc, libseccomp and every seccomp filter, ready in each fork
    import gc

    gc.freeze()  # the collector leaves what exists now alone: fewer pages copied after a fork


def _fork_worker(
    data: bytes,
    fds: list[int],
    flags: int,
    control: socket.socket,
    children: _Children,
) -> None:
    """Handle one request: fork the worker and answer on its status socket."""
    status: socket.socket | None = None
    try:
        if flags & socket.MSG_CTRUNC or len(fds) < 4:
            raise ValueError("a fork request without its descriptors")
        status = socket.socket(fileno=fds[0])
        spec = json.loads(data)
        has_context = spec["context"]
        if not isinstance(has_context, bool) or len(fds) != 4 + has_context:
            raise ValueError("a malformed fork request")
        workdir = _workdir_for(spec)
        made = spec.get("workdir") is None
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            if made:
                _remove_workdir(workdir)
            raise
        if pid == 0:
            try:
                inherited = [control, status, *children.sockets()]
                _become_worker(server, fds[1:], inherited)
            finally:
                os._exit(1)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        for fd in fds[1:] if status is not None else fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if status is not None:
            with contextlib.suppress(OSError):
                status.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            status.close()
        return
    with contextlib.suppress(OSError):  # here too, so the group exists when the pid is sent
        os.setpgid(pid, pid)
    for fd in fds[1:]:
        os.close(fd)
    children.add(pid, status, workdir if made else None)
    with contextlib.suppress(OSError):  # the parent gave up: the worker ends at its channel's EOF
        status.send(json.dumps({"pid": pid, "workdir": workdir}).encode())


def _become_worker(
    server: int,
    fds: list[int],
    inherited: list[socket.socket],
) -> None:
    """In the forked child: shed the server's state, take the request's descriptors, run."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sock in inherited:
        sock.detach()  # closed below with every other descriptor of the server
    os.setpgid(0, 0)  # its own process group (the server does the same, against the race)
    _wire.die_with_parent(server)
    # fd 0: the channel's pipe in, 1: its pipe out, 2: stderr, 3: the context
    placed = list(fds)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in placed]
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    os.closerange(len(moved), 2**31 - 1)
    os.environ.clear()  # the init frame brings the worker's own
    sys.argv[1:] = []
    _worker.main()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
