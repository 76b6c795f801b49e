"""Starting REPL worker processes, and the one handle the client drives them through.

Why: a worker can start in two ways, and the client should not care which.

- Directly (:func:`spawn_direct`): one ``python -I _worker.py`` per worker. Simple, but every
  start costs ~25 ms of CPU, so a hundred runs starting at once saturate the cores and starve
  the event loop; and the fork happens in this (possibly big) process.
- Forked by a :class:`ForkServer`: one warm ``python -I _forkserver.py`` process, started
  once, that forks each worker in about a millisecond (the program is ``_forkserver.py``; this
  module holds the parent's end of it, as ``multiprocessing``'s ``popen_forkserver`` does).

Either way the worker gets the same things: a pipe each way for its channel (fd 0/1), a pipe
for its own stderr (fd 2), the context memfd, a scrubbed environment, its private directory,
and a process group of its own. :class:`WorkerProcess` is the interface over both: pid,
``wait`` (the returncode), ``kill`` (the whole group), the channel and the stderr pipe. Exits
are seen through a pidfd (direct) or the fork server's report (forked), never through a thread
blocked in ``waitpid``, so closing a session costs about what the kernel needs to tear the
worker down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import anyio

from rlm_sdk._constants import (
    FORKSERVER_EXIT_GRACE,
    FORKSERVER_MAX_FAILURES,
    WORKER_ENV_ALLOWLIST,
)

from . import _wire

__all__ = [
    "FORKSERVER_PATH",
    "WORKER_PATH",
    "ForkServer",
    "ForkServerUnavailable",
    "WorkerChannel",
    "WorkerProcess",
    "scrubbed_environ",
    "spawn_direct",
]

_HERE = os.path.dirname(os.path.abspath(__file__))
WORKER_PATH = os.path.join(_HERE, "_worker.py")
"""The worker program, run as a script (never imported here: it is not the parent's code)."""
FORKSERVER_PATH = os.path.join(_HERE, "_forkserver.py")
"""The fork server program, run as a script."""
_STDERR_READ = 64 * 1024
_MAX_STDERR_READS = 16
_REPLY_SIZE = 4096
_SEND_RETRY = 0.001
_ABANDON = json.dumps({"abandon": True}).encode()
"""Said on a status socket when the session gives up on a request (cancelled, or no reply)."""


class ForkServerUnavailable(Exception):
    """The fork server could not fork a worker; the caller starts one directly instead."""


class _ServerGone(ForkServerUnavailable):
    """The fork server's end of a socket closed: it has most likely died."""


def scrubbed_environ() -> dict[str, str]:
    """The only variables of this process's environment a worker (or the fork server) sees."""
    return {key: os.environ[key] for key in WORKER_ENV_ALLOWLIST if key in os.environ}


class WorkerChannel:
    """The parent's ends of a worker's channel: whole frames out, whole frames in.

    Two pipes (one each way) rather than a socket pair: a pipe round trip costs the kernel
    less, and a bridge call is one round trip. Driven with :func:`anyio.wait_readable` and
    ``wait_writable``; frames are cut by the same :class:`~rlm_sdk.repl._wire.FrameReader` the
    worker uses.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
            _wire.enlarge_pipe(fd)
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._reader = _wire.FrameReader()
        self._drained = True
        """The last read emptied the pipe: wait for it to be readable before the next one."""
        self._closed = False

    @property
    def drained(self) -> bool:
        """The last read emptied the pipe: the next frame means waiting for the worker."""
        return self._drained

    async def send(self, data: bytes) -> None:
        """Send all of ``data``. Raises OSError (or ClosedResourceError) if the peer is gone."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._write_fd, view)
            except BlockingIOError:
                written = 0  # wait outside the handler: see _wire's note on waiting in one
            if written:
                view = view[written:]
            else:
                await anyio.wait_writable(self._write_fd)

    async def receive_frame(self) -> tuple[bool, bytes | bytearray]:
        """The next frame: whether it is segmented, and its payload.

        Raises:
            EOFError: the channel ended (possibly in the middle of a frame).
            FrameTooLargeError: the worker announced a frame over ``MAX_FRAME_SIZE``.
        """
        steps = self._reader.read_frame()
        try:
            target = next(steps)
            while True:
                target = steps.send(await self._read_into(target))
        except StopIteration as done:
            frame: tuple[bool, bytes | bytearray] = done.value
            return frame

    async def _read_into(self, target: memoryview) -> int:
        """Read once into ``target``; waits for the pipe only when the last read drained it."""
        while True:
            if self._drained:
                await anyio.wait_readable(self._read_fd)
            try:
                got = os.readv(self._read_fd, [target])
            except BlockingIOError:
                self._drained = True
                continue
            if not got:
                raise EOFError
            self._drained = got < len(target)
            return got

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self._read_fd, self._write_fd):
                anyio.notify_closing(fd)
                os.close(fd)


def _channel_pipes() -> tuple[WorkerChannel, int, int]:
    """A channel and the worker's ends of it: the pipe it reads, the pipe it writes."""
    worker_in, parent_out = os.pipe()
    parent_in, worker_out = os.pipe()
    return WorkerChannel(parent_in, parent_out), worker_in, worker_out


class WorkerProcess:
    """One worker process, however it was started.

    Attributes:
        pid: the worker's pid, which is also its process group and session id.
        channel: the protocol channel.
        stderr: the non-blocking read end of the worker's own stderr (its diagnostics).
        parent_pid: the process the worker must die with (this one, or the fork server).
        context_fd: where the worker finds the context memfd, if there is one.
        returncode: set once the worker is reaped; negative for a signal.
        lost: why ``returncode`` is not the worker's own (its server died), if so.
    """

    def __init__(
        self,
        pid: int,
        channel: WorkerChannel,
        stderr: int,
        *,
        parent_pid: int,
        context_fd: int | None,
    ) -> None:
        self.pid = pid
        self.channel = channel
        self.stderr = stderr
        self.parent_pid = parent_pid
        self.context_fd = context_fd
        self.returncode: int | None = None
        self.lost: str | None = None
        self.workdir: str | None = None
        """The private directory the fork server made for the worker, if it made one."""
        self.detached = False
        """Left to the fork server to kill and reap (:meth:`close_via_server`)."""
        self._waiting: anyio.Event | None = None
        self._killed = False
        self._closed = False

    async def wait(self) -> int:
        """Wait until the worker exits, kill what is left of its group, reap it: its returncode."""
        while self.returncode is None:
            if self._waiting is not None:  # one task waits on the descriptor, the others on it
                await self._waiting.wait()
                continue
            self._waiting = event = anyio.Event()
            try:
                await self._wait_for_exit()
            finally:
                self._waiting = None
                event.set()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the worker and its whole process group (everything it started).

        Once is enough: the group cannot grow after its members got SIGKILL (a fork racing
        with the signal is restarted by the kernel, and fails).
        """
        if self.returncode is None and not self._killed:
            self._killed = True
            _wire.kill_group(self.pid)

    def interrupt(self) -> None:
        """SIGINT the worker: a KeyboardInterrupt in the running cell."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGINT)

    def read_stderr(self) -> bytes:
        """What the worker's stderr pipe holds now, up to 1 MiB (b"" when empty or at EOF).

        Bounded, because a process that escaped the group may still be writing to it.
        """
        chunks = []
        with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
            for _ in range(_MAX_STDERR_READS):
                chunk = os.read(self.stderr, _STDERR_READ)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def close_via_server(self, workdir: str) -> bool:
        """Have the fork server kill the worker's group, reap it, then remove ``workdir``.

        True if it was asked (the worker counts as killed from then on); False if it cannot
        be: a directly started worker is killed and reaped here, and its session removes its
        directory.
        """
        return False

    def close(self) -> None:
        """Close every descriptor held for the worker; idempotent. Does not kill it."""
        if self._closed:
            return
        self._closed = True
        self.channel.close()
        anyio.notify_closing(self.stderr)
        os.close(self.stderr)
        self._close_extra()

    async def _wait_for_exit(self) -> None:
        raise NotImplementedError

    def _close_extra(self) -> None:
        pass


class _DirectProcess(WorkerProcess):
    """A worker this process started itself: exit seen through a pidfd, reaped here."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        pidfd: int,
        channel: WorkerChannel,
        stderr: int,
        context_fd: int | None,
    ) -> None:
        super().__init__(popen.pid, channel, stderr, parent_pid=os.getpid(), context_fd=context_fd)
        self._popen = popen
        self._pidfd = pidfd

    async def _wait_for_exit(self) -> None:
        await anyio.wait_readable(self._pidfd)
        _wire.kill_group(self.pid)  # at once: the zombie still holds the group id
        self.returncode = self._popen.wait()

    def _close_extra(self) -> None:
        anyio.notify_closing(self._pidfd)
        os.close(self._pidfd)


class _ForkedProcess(WorkerProcess):
    """A worker the fork server forked: it reaps it and reports the status on a socket."""

    def __init__(
        self,
        pid: int,
        status: socket.socket,
        channel: WorkerChannel,
        stderr: int,
        *,
        server_pid: int,
        context_fd: int | None,
    ) -> None:
        super().__init__(pid, channel, stderr, parent_pid=server_pid, context_fd=context_fd)
        self._status = status

    def close_via_server(self, workdir: str) -> bool:
        if self.returncode is not None or self._killed:
            return False
        try:
            self._status.send(json.dumps({"kill": True, "remove": workdir}).encode())
        except OSError:  # the server is gone, or this socket is closed
            return False
        self._killed = self.detached = True
        return True

    async def _wait_for_exit(self) -> None:
        reply = await _receive_reply(self._status)
        code = None if reply is None else reply.get("exit")
        if isinstance(code, int) and not isinstance(code, bool):
            self.returncode = code
            return
        # The fork server died: so did the worker (it dies with the server), unreaped here.
        self.lost = "the fork server exited"
        self.returncode = -signal.SIGKILL

    def _close_extra(self) -> None:
        anyio.notify_closing(self._status)
        self._status.close()


def spawn_direct(
    worker_path: str, *, env: Mapping[str, str], cwd: str, memfd: int | None
) -> WorkerProcess:
    """Start ``python -I worker_path`` as a worker: channel on fd 0/1, stderr on a pipe.

    Synchronous (it forks); raises OSError when the interpreter cannot be started.
    """
    channel, worker_in, worker_out = _channel_pipes()
    err_read, err_write = os.pipe()
    try:
        popen = subprocess.Popen(
            [sys.executable, "-I", worker_path],
            stdin=worker_in,
            stdout=worker_out,
            stderr=err_write,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            pass_fds=() if memfd is None else (memfd,),
        )
    except BaseException:
        channel.close()
        os.close(err_read)
        raise
    finally:
        for fd in (worker_in, worker_out, err_write):
            os.close(fd)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:
        _wire.kill_group(popen.pid)
        popen.wait()
        channel.close()
        os.close(err_read)
        raise
    os.set_blocking(err_read, False)
    return _DirectProcess(popen, pidfd, channel, err_read, memfd)


class ForkServer:
    """A warm process that forks REPL workers on request: ~1 ms of CPU per worker, not ~25.

    Share one among the sessions of a process (``REPLSession(..., forkserver=server)``); each
    session still gets a fresh worker with its own environment, directory, process group and
    sandbox. The server holds no context and no secret: it runs with the same scrubbed
    environment as a worker, a request carries only descriptors (the context memfd among them,
    closed once forked), and the worker gets its environment and directory from the session.

    It starts lazily, with the first worker asked of it (or on ``async with``), and dies with
    this process. If it dies, the next request starts a new one; a request it cannot serve
    raises, and the session starts its worker directly instead (after
    ``FORKSERVER_MAX_FAILURES`` failures in a row it stops trying). :meth:`aclose` kills the
    workers it forked that are still running, then the server, and reaps it.

    It keeps no event-loop objects between calls, so one instance can serve several
    ``anyio.run`` calls in turn. Like every worker, it dies with the thread that started it
    (``PR_SET_PDEATHSIG``): start it from a thread that lives as long as it is needed.
    """

    def __init__(self) -> None:
        self._popen: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._closed = False
        self._failures = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.starts = 0
        """How many server processes were started (more than one: it died and was replaced)."""

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        popen = self._popen
        return popen.pid if popen is not None and popen.returncode is None else None

    async def __aenter__(self) -> Self:
        self._ensure_running()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the server: its workers' process groups are killed, and it is reaped.

        Idempotent; afterwards sessions using it start their workers directly.
        """
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._stop()

    async def _spawn(
        self, *, memfd: int | None, workdir: str | None, reply_within: float
    ) -> WorkerProcess:
        """Fork a worker for a REPL session; a server found dead is replaced once.

        The server learns nothing about the session but whether it has a context: the
        worker's environment and directory travel in its init frame, straight from the
        session, so no trace of them stays in the server's memory for later forks to find.

        Raises:
            ForkServerUnavailable: closed, failing, or no answer within ``reply_within`` s.
        """
        for attempt in (1, 2):
            self._ensure_running()
            popen = self._popen
            assert popen is not None
            try:
                process = await self._request(memfd, workdir, reply_within)
            except _ServerGone:
                if popen.returncode is None:  # not yet reaped (by another request noticing)
                    with anyio.move_on_after(FORKSERVER_EXIT_GRACE):
                        await _wait_child_exit(popen.pid)
                if popen.poll() is None:
                    raise  # it lives: this request failed, not the server
                if self._popen is popen:
                    self._failures += 1  # each death counts once, however many noticed it
                if attempt == 2 or self._failures >= FORKSERVER_MAX_FAILURES:
                    raise
                continue  # start another one, once
            self._failures = 0
            return process
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_running(self) -> None:
        """Start the server unless it runs; synchronous, so concurrent callers start one."""
        if self._closed:
            raise ForkServerUnavailable("the fork server is closed")
        if self._popen is not None and self._popen.poll() is None:
            return
        self._discard()
        if self._failures >= FORKSERVER_MAX_FAILURES:
            raise ForkServerUnavailable(f"the fork server failed {self._failures} times in a row")
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = child_end.fileno()
        try:
            popen = subprocess.Popen(
                [sys.executable, "-I", FORKSERVER_PATH, str(fd), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=scrubbed_environ(),
                start_new_session=True,
                pass_fds=(fd,),
            )
        except OSError as exc:
            self._failures += 1
            parent_end.close()
            raise ForkServerUnavailable(f"could not start the fork server: {exc}") from exc
        finally:
            child_end.close()
        parent_end.setblocking(False)
        self._popen, self._control = popen, parent_end
        # Dropped without aclose() (a RecursiveLM never closed): stop the process quietly.
        self._finalizer = weakref.finalize(self, _abandon, popen, parent_end)
        self.starts += 1

    async def _request(
        self, memfd: int | None, workdir: str | None, reply_within: float
    ) -> WorkerProcess:
        assert self._popen is not None and self._control is not None
        server_pid, control = self._popen.pid, self._control
        status, status_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel, worker_in, worker_out = _channel_pipes()
        err_read, err_write = os.pipe()
        sent = False
        try:
            # The worker's directory: this one (a restarted worker keeps its session's), or a
            # new one the server makes under our temporary directory, off our event loop.
            spec = {
                "context": memfd is not None,
                "workdir": workdir,
                "tmpdir": tempfile.gettempdir(),
            }
            fds = [status_child.fileno(), worker_in, worker_out, err_write]
            fds += [] if memfd is None else [memfd]
            try:
                await _send_request(control, json.dumps(spec).encode(), fds)
                sent = True
            finally:
                status_child.close()
                for fd in (worker_in, worker_out, err_write):
                    os.close(fd)
            status.setblocking(False)
            with anyio.move_on_after(reply_within):
                reply = await _receive_reply(status)
                pid = None if reply is None else reply.get("pid")
                made = None if reply is None else reply.get("workdir")
                if (
                    isinstance(pid, int)
                    and not isinstance(pid, bool)
                    and pid > 0
                    and isinstance(made, str)
                ):
                    os.set_blocking(err_read, False)
                    context_fd = None if memfd is None else _wire.CONTEXT_FD
                    process = _ForkedProcess(
                        pid,
                        status,
                        channel,
                        err_read,
                        server_pid=server_pid,
                        context_fd=context_fd,
                    )
                    process.workdir = made
                    return process
                if reply is None:
                    raise _ServerGone("the fork server closed the request")
                raise ForkServerUnavailable(f"the fork server answered {reply!r}")
            raise ForkServerUnavailable(f"the fork server did not answer within {reply_within:g} s")
        except BaseException:
            if sent:  # it may fork the worker anyway: it is to kill it and remove its directory
                with contextlib.suppress(OSError):
                    status.send(_ABANDON)
            status.close()
            channel.close()
            os.close(err_read)
            raise

    async def _stop(self) -> None:
        """Close the control socket (the server then kills its workers and exits); reap it."""
        if self._finalizer is not None:
            self._finalizer.detach()
        popen, control = self._popen, self._control
        self._popen = self._control = None
        if control is not None:
            anyio.notify_closing(control)
            control.close()
        if popen is None:
            return
        with anyio.move_on_after(FORKSERVER_EXIT_GRACE):
            await _wait_child_exit(popen.pid)
        if popen.poll() is None:
            popen.kill()
            popen.wait()

    def _discard(self) -> None:
        """Forget a server that has exited (``poll`` reaped it)."""
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._control is not None:
            self._control.close()
        self._popen = self._control = None


def _abandon(popen: subprocess.Popen[bytes], control: socket.socket) -> None:
    """Stop a fork server whose owner was dropped; its workers die with it (PDEATHSIG)."""
    control.close()
    with contextlib.suppress(OSError):
        popen.kill()
    popen.wait()


async def _send_request(control: socket.socket, data: bytes, fds: list[int]) -> None:
    """Send one request record; a full queue is retried (several tasks may send at once)."""
    while True:
        try:
            socket.send_fds(control, [data], fds)
            return
        except BlockingIOError:
            pass  # wait outside the handler (see _wire.py)
        except OSError as exc:
            raise _ServerGone(f"the fork server is gone: {exc}") from exc
        await anyio.sleep(_SEND_RETRY)


async def _receive_reply(status: socket.socket) -> dict[str, Any] | None:
    """The next JSON record on a status socket; None once it is closed (or garbled)."""
    while True:
        try:
            data = status.recv(_REPLY_SIZE)
        except BlockingIOError:
            data = None  # wait outside the handler (see _wire.py)
        except OSError:
            return None
        if data is None:
            await anyio.wait_readable(status)
            continue
        if not data:
            return None
        try:
            reply = json.loads(data)
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None


async def _wait_child_exit(pid: int) -> None:
    """Wait until our child ``pid`` has exited (without reaping it)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # already reaped
        return
    try:
        await anyio.wait_readable(pidfd)
    finally:
        anyio.notify_closing(pidfd)
        os.close(pidfd)
