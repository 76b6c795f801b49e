"""The parent side of the REPL: start a worker, hand it the context once, run cells, answer its calls.

Why it is built this way:

- The worker is another process (``python -I _worker.py``, or forked by a shared
  :class:`~rlm_sdk.repl.ForkServer`, see ``_process.py``), so model-written code cannot reach
  the parent's memory, keys or connections; it gets the context, the code and nothing else.
- It also sandboxes itself before any of that code runs (``_sandbox.py``: rlimits, a network
  namespace, Landlock, seccomp), as the session's ``isolation`` policy asks. A host that cannot
  give what ``"strict"`` requires is an :class:`~rlm_sdk.IsolationError`, never a restart loop.
- ``__aenter__`` starts the process and returns at once. The handshake and the context load go on
  in the background, and every operation (or :meth:`REPLSession.wait_ready`) waits for them, so a
  caller can overlap the start with its first model call.
- The context is written once, in a worker thread, into a sealed memfd the worker maps; a restart
  maps the same memfd again instead of sending the context twice.
- Each worker belongs to the session's task group. Closing, cancellation, crashes and deadlines
  kill its whole process group and reap it, so nothing outlives the session. Closing is on
  every run's critical path, so it kills first, waits on a pidfd (no thread) and removes a
  small directory inline.
- Everything that comes from the worker is validated (:mod:`rlm_sdk.repl._types`); garbage is a
  :class:`~rlm_sdk.WorkerProtocolError` and the worker is killed. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import itertools
import math
import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from queue import SimpleQueue
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel

from rlm_sdk._constants import (
    DEFAULT_CELL_TIMEOUT,
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_WORKER_FILE_SIZE_LIMIT,
    DEFAULT_WORKER_START_TIMEOUT,
    FORKSERVER_REPLY_TIMEOUT,
    MAX_OUTPUT_LIMIT,
    MIN_WORKER_MEMORY,
    WORKER_EXIT_GRACE,
    WORKER_INTERRUPT_GRACE,
)
from rlm_sdk._exceptions import (
    ConfigurationError,
    IsolationError,
    REPLError,
    WorkerCrashedError,
    WorkerProtocolError,
    WorkerStartError,
)
from rlm_sdk._logging import get_logger

from . import _worker
from ._process import (
    WORKER_PATH,
    ForkServer,
    ForkServerUnavailable,
    WorkerProcess,
    scrubbed_environ,
    spawn_direct,
)
from ._types import (
    WORKER_FRAMES,
    CallFrame,
    CellError,
    CellResult,
    ContextData,
    FatalFrame,
    HelloFrame,
    ReadyFrame,
    ReplyFrame,
    ResultFrame,
    SubCallHandler,
    SubCallRequest,
    ToolFrame,
    VarFrame,
    VarsFrame,
    WorkerFrame,
)

__all__ = ["IsolationMode", "REPLSession"]

IsolationMode: TypeAlias = Literal["auto", "strict", "none"]
NO_HANDLER_ERROR = "Error: no sub-call handler configured"
_STDERR_TAIL = 8192
_SEND_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_READ_ENDS = (EOFError, anyio.ClosedResourceError, OSError)
_ISOLATION_MODES = ("auto", "strict", "none")
_BACKGROUND_CLOSE_BYTES = 4 * 1024 * 1024
"""A context memfd at least this big is closed on a thread of its own (see ``_close_memfd``)."""
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


class _Waiter:
    """A request of the parent waiting for the worker's answer (or the worker's end)."""

    __slots__ = ("done", "expect", "frame")

    def __init__(self, expect: type[ReplyFrame]) -> None:
        self.done = anyio.Event()
        self.expect = expect
        self.frame: ReplyFrame | None = None


class _Worker:
    """One worker process and everything tied to it; a restart replaces it wholesale."""

    def __init__(self, process: WorkerProcess, started: float) -> None:
        self.process = process
        self.pid = process.pid
        self.started = started
        self.ready = False
        self.failure: REPLError | None = None
        self.isolation_error: str | None = None
        """Why the sandbox could not be applied, when the worker said so (a ``fatal`` frame)."""
        self.scope = anyio.CancelScope()
        self.settled = anyio.Event()
        """Set once the worker is ready or never will be."""
        self.finished = anyio.Event()
        """Set once the process is reaped, its descriptors closed and its waiters woken."""
        self.send_lock = anyio.Lock(fast_acquire=True)
        self.waiters: dict[int, _Waiter] = {}
        self.in_flight: set[anyio.CancelScope] = set()
        self.handlers: anyio.abc.TaskGroup | None = None
        self.detached = False
        """Killed and left to the fork server to reap (see ``REPLSession.aclose``)."""
        self._stderr_tail = bytearray()

    @property
    def stopped(self) -> bool:
        """The worker is dead or being killed."""
        return (
            self.finished.is_set()
            or self.failure is not None
            or self.process.returncode is not None
        )

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (it and everything it started)."""
        self.process.kill()

    def interrupt(self) -> None:
        """SIGINT the worker: a KeyboardInterrupt in the running cell."""
        self.process.interrupt()

    async def send(self, message: dict[str, Any]) -> None:
        frame = _worker.encode_frame(message)
        async with self.send_lock:
            await self.process.channel.send(frame)

    def add_stderr(self, chunk: bytes) -> None:
        self._stderr_tail += chunk
        del self._stderr_tail[:-_STDERR_TAIL]

    def stderr_excerpt(self) -> str:
        return self._stderr_tail.decode("utf-8", "replace").strip()

    def exit_reason(self) -> str:
        if self.failure is not None:
            return str(self.failure)
        if self.process.lost is not None:
            return self.process.lost
        code = self.process.returncode
        if code is None:
            return "it closed its channel"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def finish(self) -> None:
        self.finished.set()
        self.settled.set()
        for waiter in self.waiters.values():
            waiter.done.set()


@dataclass
class _Outcome:
    """How a request ended: the answer, or why there is none."""

    frame: ReplyFrame | None
    timed_out: bool
    lost: str | None = None
    """Why the worker was lost (and restarted) when there is no answer."""
    excerpt: str = ""


class REPLSession:
    """An isolated Python REPL in a worker process, holding ``context``.

    Use it as an async context manager. ``__aenter__`` starts the worker and returns without
    waiting for it; :meth:`wait_ready` waits for the handshake and the context load, and every
    operation waits for them by itself. Enter and exit it in the same task.

    Args:
        context: The value of ``context`` in the REPL (``None`` for none).
        handler: Answers ``llm_query*``/``rlm_query*`` from the model's code. Without one, every
            prompt is answered ``"Error: no sub-call handler configured"``.
        tools: Callables living in this process (sync or async), visible in the REPL under these
            names; JSON arguments in, a JSON result back. An exception in a tool becomes
            ``RuntimeError("tool NAME failed: ...")`` in the cell.
        cell_timeout: Seconds a cell may run, including time spent waiting for sub-calls. At the
            deadline the cell gets a KeyboardInterrupt (variables kept); if it does not stop
            within ``WORKER_INTERRUPT_GRACE`` the worker is killed and restarted (variables lost).
        memory_limit: The worker's address-space limit in bytes; by default
            ``max(MIN_WORKER_MEMORY, 4 x context + 1 GiB)`` (8 x for lists and JSON values).
        output_limit: Characters of stdout and of stderr kept per cell (head and tail).
        start_timeout: Seconds the worker has to start and load the context.
        env: Extra environment variables for the worker. Nothing else from this process's
            environment reaches it but ``WORKER_ENV_ALLOWLIST``.
        isolation: The sandbox the worker puts itself in before running any code (see
            ``repl/_sandbox.py``). ``"auto"`` applies every layer the host supports
            (:attr:`isolation_layers` says which); ``"strict"`` refuses to run unless every
            layer the policy needs applies, raising :class:`~rlm_sdk.IsolationError` (no
            restart); ``"none"`` keeps only the resource limits, and logs a warning.
        allow_network: Let the model's code open sockets and reach the network (by default
            it has no network at all, loopback included).
        allow_subprocess: Let the model's code start processes (``fork``, ``subprocess``);
            they stay in the worker's process group and die with it.
        readable_paths: Absolute paths the model's code may read besides the Python
            installation and its private directory.
        forkserver: Fork the worker from this (shared) :class:`ForkServer` instead of
            starting an interpreter; if it cannot, the worker is started directly.

    Model code: a non-``str`` prompt raises TypeError in the cell (not converted with ``str()``),
    so the model sees its mistake; ``model`` must be a ``str`` or ``None``.
    """

    def __init__(
        self,
        context: ContextData | None = None,
        *,
        handler: SubCallHandler | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        cell_timeout: float = DEFAULT_CELL_TIMEOUT,
        memory_limit: int | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        start_timeout: float = DEFAULT_WORKER_START_TIMEOUT,
        env: Mapping[str, str] | None = None,
        isolation: IsolationMode = "auto",
        allow_network: bool = False,
        allow_subprocess: bool = False,
        readable_paths: Sequence[str] = (),
        forkserver: ForkServer | None = None,
    ) -> None:
        if context is not None and not isinstance(context, str | bytes | bytearray | list | dict):
            raise ConfigurationError(
                f"context must be str, bytes, list or dict, not {type(context).__name__}"
            )
        _check_positive("cell_timeout", cell_timeout)
        _check_positive("start_timeout", start_timeout)
        if memory_limit is not None and memory_limit <= 0:
            raise ConfigurationError("memory_limit must be a positive number of bytes or None")
        if not 0 <= output_limit <= MAX_OUTPUT_LIMIT:
            raise ConfigurationError(f"output_limit must be between 0 and {MAX_OUTPUT_LIMIT}")
        if isolation not in _ISOLATION_MODES:
            raise ConfigurationError(f"isolation must be one of {_ISOLATION_MODES}")
        if isinstance(readable_paths, str) or not all(
            isinstance(path, str) and os.path.isabs(path) for path in readable_paths
        ):
            raise ConfigurationError("readable_paths must be a sequence of absolute paths")
        if forkserver is not None and not isinstance(forkserver, ForkServer):
            raise ConfigurationError("forkserver must be a ForkServer or None")
        self._tools = dict(tools or {})
        for name, tool in self._tools.items():
            if not name.isidentifier() or name.startswith("_"):
                raise ConfigurationError(f"tool name {name!r} is not a public Python identifier")
            if name in _worker.RESERVED_NAMES or name == _worker.ANSWER_NAME:
                raise ConfigurationError(f"tool name {name!r} is reserved in the REPL")
            if not callable(tool):
                raise ConfigurationError(f"tool {name!r} is not callable")
        self._env_extra = dict(env or {})
        for key, value in self._env_extra.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigurationError("env must map str to str")
        self._isolation: IsolationMode = isolation
        self._allow_network = bool(allow_network)
        self._allow_subprocess = bool(allow_subprocess)
        self._readable_paths = list(readable_paths)
        self._forkserver = forkserver
        self.isolation_layers: list[str] = []
        """The sandbox layers the current worker applied to itself; set once it is ready."""
        self._context: ContextData | None = context
        self._handler = handler
        self._cell_timeout = float(cell_timeout)
        self._memory_limit = memory_limit
        self._output_limit = output_limit
        self._start_timeout = float(start_timeout)
        self.restarts = 0
        """How many times the worker was replaced (timeouts, crashes, :meth:`restart`)."""
        self._log = get_logger(component="repl")
        self._ids = itertools.count(1)
        self._state = "new"
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock: anyio.Lock | None = None
        self._prepared: anyio.Event | None = None
        self._descriptor: dict[str, Any] | None = None
        self._prepare_error: Exception | None = None
        self._memfd: int | None = None
        self._workdir: str | None = None
        self._worker: _Worker | None = None
        self._broken: str | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id while one is running."""
        worker = self._worker
        if worker is None or worker.process.returncode is not None:
            return None
        return worker.pid

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a REPLSession can be entered only once")
        self._state = "open"
        if self._isolation == "none":
            self._log.warning(
                "rlm.isolation_disabled",
                detail="the REPL worker runs model-written code without a sandbox "
                "(resource limits only): it can reach the network, the file system and "
                "other processes",
            )
        self._lock = anyio.Lock(fast_acquire=True)
        self._prepared = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            if self._context is None:
                self._descriptor = {"kind": "none", "nbytes": 0}
                self._prepared.set()
            else:
                try:
                    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
                    self._memfd = os.memfd_create("rlm-context", flags)
                except OSError as exc:
                    raise WorkerStartError(f"could not create the context memfd: {exc}") from exc
                self._tg.start_soon(self._prepare_context, self._memfd)
            await self._spawn()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            tg, self._tg = self._tg, None
            if tg is not None:
                # Every task has been told to stop by aclose(); the caller's exception, if any,
                # goes on unchanged rather than wrapped in an exception group.
                await tg.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Kill the worker's process group, close its descriptors, remove its directory; idempotent.

        It is on every run's critical path, so it does not wait for what the kernel does after
        a SIGKILL (tearing down the worker's memory takes milliseconds for a big context). A
        worker from the fork server is left to it: the server reaps it and then removes the
        session's directory (asked for before the kill, on the worker's status socket). A
        directly started worker is reaped here, through its pidfd, before this returns.
        """
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        if not was_open:
            return
        with anyio.CancelScope(shield=True):
            if self._memfd is not None:
                if self._prepared is not None:
                    await self._prepared.wait()  # the writing thread must be done with the fd
                # Before the kill: while the worker holds the memfd, this close only drops a
                # reference, and the dying worker frees the pages, off the caller's path.
                _close_memfd(self._memfd, self._descriptor)
                self._memfd = None
            worker = self._worker
            if worker is not None:
                if (
                    self._workdir is not None
                    and not worker.finished.is_set()
                    and worker.process.close_via_server(self._workdir)
                ):
                    self._workdir = None
                    worker.detached = True
                worker.kill()
                if not worker.detached:
                    with anyio.move_on_after(5 * WORKER_EXIT_GRACE):
                        await worker.finished.wait()
                worker.scope.cancel()  # stop reading it (and, if it would not die, stop waiting)
            if self._workdir is not None:
                if not _worker.remove_small_directory(self._workdir):
                    remove = functools.partial(shutil.rmtree, self._workdir, ignore_errors=True)
                    await anyio.to_thread.run_sync(remove)
                self._workdir = None
        self._log.debug("rlm.repl_closed", restarts=self.restarts)

    async def wait_ready(self) -> None:
        """Wait until the worker has shaken hands and loaded the context.

        Raises:
            WorkerStartError: it failed or missed ``start_timeout``; the message carries the end
                of its stderr.
            IsolationError: the sandbox ``isolation`` asks for cannot be applied on this host
                (``"strict"`` and a layer is missing, or a layer failed half-way). The worker
                is not restarted: every later operation raises it again.
        """
        await self._await_ready(self._current())

    async def restart(self) -> None:
        """Replace the worker with a fresh one holding the same context; variables are lost."""
        async with self._exclusive():
            await self._replace(self._current(), "a restart was requested")

    # -- operations -------------------------------------------------------------------------

    async def run_cell(self, code: str, *, timeout: float | None = None) -> CellResult:  # noqa: ASYNC109
        """Run ``code`` in the persistent namespace; waits for readiness first.

        Errors in the code, timeouts and a crashing worker are reported in the result; the
        session keeps working. Raises :class:`~rlm_sdk.WorkerProtocolError` if the worker sent
        garbage (it is killed; the next call starts a new one),
        :class:`~rlm_sdk.WorkerCrashedError` if a needed restart failed, and
        :class:`~rlm_sdk.IsolationError` as :meth:`wait_ready` does.
        """
        limit = self._cell_timeout if timeout is None else timeout
        _check_positive("timeout", limit)
        async with self._exclusive():
            notice = await self._revive()
            started = anyio.current_time()
            outcome = await self._roundtrip({"type": "exec", "code": code}, ResultFrame, limit)
            duration = anyio.current_time() - started
        return _cell_result(outcome, duration, limit, notice)

    async def get_variable(self, name: str) -> str | None:
        """The variable's value as text (``str()`` of it); None if there is no such variable."""
        async with self._exclusive():
            await self._revive()
            message = {"type": "get_var", "name": name}
            outcome = await self._roundtrip(message, VarFrame, self._cell_timeout)
        frame = outcome.frame
        return frame.text if isinstance(frame, VarFrame) and frame.found else None

    async def list_variables(self) -> dict[str, str]:
        """User variable names (not modules, not names starting with ``_``) to type names."""
        async with self._exclusive():
            await self._revive()
            outcome = await self._roundtrip({"type": "list_vars"}, VarsFrame, self._cell_timeout)
        frame = outcome.frame
        return dict(frame.variables) if isinstance(frame, VarsFrame) else {}

    # -- internals: state ---------------------------------------------------------------------

    def _current(self) -> _Worker:
        if self._state != "open" or self._worker is None:
            raise RuntimeError("the REPL session is not open (use `async with REPLSession(...)`)")
        return self._worker

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        self._current()
        assert self._lock is not None
        async with self._lock:
            yield

    async def _revive(self) -> str | None:
        """Make sure a live, ready worker is there; a notice if it had to be replaced."""
        if self._broken is not None:
            raise WorkerCrashedError(self._broken)
        worker = self._current()
        await self._await_ready(worker)
        if not worker.stopped:
            return None
        reason = worker.exit_reason()
        await self._replace(worker, reason)
        return (
            f"The REPL worker had stopped ({reason}) and was restarted before this cell; "
            "variables from earlier cells were lost."
        )

    async def _await_ready(self, worker: _Worker) -> None:
        if worker.ready:
            return
        remaining = worker.started + self._start_timeout - anyio.current_time()
        with anyio.move_on_after(remaining):
            await worker.settled.wait()
        if worker.ready:
            return
        timed_out = not worker.settled.is_set()
        worker.kill()
        with anyio.CancelScope(shield=True), anyio.move_on_after(2 * WORKER_EXIT_GRACE):
            await worker.finished.wait()
        if timed_out:
            what = f"the REPL worker did not become ready within {self._start_timeout:g} s"
        elif worker.failure is not None:
            what = str(worker.failure)
        else:
            what = f"the REPL worker stopped during startup ({worker.exit_reason()})"
        if worker.isolation_error is not None:
            raise IsolationError(
                f"the REPL worker cannot be sandboxed as isolation={self._isolation!r} "
                f"requires: {worker.isolation_error}"
            ) from worker.failure
        excerpt = worker.stderr_excerpt()
        if excerpt:
            what += f"; the end of its stderr:\n{excerpt}"
        cause = self._prepare_error or (worker.failure and worker.failure.__cause__)
        raise WorkerStartError(what) from cause

    async def _replace(self, old: _Worker, reason: str) -> _Worker:
        """Kill ``old`` and start a new worker with the same context."""
        old.kill()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5 * WORKER_EXIT_GRACE):
            await old.finished.wait()
        self._current()
        self.restarts += 1
        try:
            new = await self._spawn()
            await self._await_ready(new)
        except WorkerStartError as exc:
            self._broken = f"the REPL worker stopped ({reason}) and could not be restarted: {exc}"
            self._log.error("rlm.worker_restart_failed", old_pid=old.pid, reason=reason)
            raise WorkerCrashedError(self._broken) from exc
        self._broken = None
        self._log.warning(
            "rlm.worker_restarted",
            old_pid=old.pid,
            pid=new.pid,
            reason=reason,
            restarts=self.restarts,
        )
        return new

    # -- internals: the process -----------------------------------------------------------------

    async def _prepare_context(self, fd: int) -> None:
        assert self._prepared is not None
        try:
            self._descriptor = await anyio.to_thread.run_sync(_write_sealed, fd, self._context)
        except Exception as exc:
            self._prepare_error = exc
        finally:
            self._context = None  # the memfd holds it now; let the caller's copy go
            self._prepared.set()

    def _worker_env(self) -> dict[str, str]:
        assert self._workdir is not None
        env = scrubbed_environ()
        env.update(HOME=self._workdir, TMPDIR=self._workdir, PYTHONUNBUFFERED="1")
        env.update(self._env_extra)
        return env

    async def _spawn(self) -> _Worker:
        """Start a worker (forked by the fork server if there is one) and supervise it."""
        assert self._tg is not None
        started = anyio.current_time()
        process: WorkerProcess | None = None
        if self._forkserver is not None:
            try:
                process = await self._forkserver._spawn(
                    memfd=self._memfd,
                    workdir=self._workdir,  # None: the server makes one
                    reply_within=min(self._start_timeout, FORKSERVER_REPLY_TIMEOUT),
                )
                self._workdir = process.workdir
            except ForkServerUnavailable as exc:
                self._log.warning("rlm.forkserver_unavailable", error=str(exc))
                started = anyio.current_time()
        if process is None:
            if self._workdir is None:
                self._workdir = _make_workdir()
            try:
                env = self._worker_env()  # at exec: the parent's own never reaches it
                process = spawn_direct(WORKER_PATH, env=env, cwd=self._workdir, memfd=self._memfd)
            except OSError as exc:
                raise WorkerStartError(f"could not start the REPL worker: {exc}") from exc
        worker = _Worker(process, started)
        self._worker = worker
        self._tg.start_soon(self._serve, worker)
        if self._state != "open":  # closed while we were starting it
            worker.kill()
            raise REPLError("the REPL session was closed")
        forked = process.parent_pid != os.getpid()
        self._log.debug("rlm.worker_spawned", pid=worker.pid, forked=forked)
        return worker

    def _init_message(self, worker: _Worker) -> dict[str, Any]:
        assert self._descriptor is not None
        descriptor = dict(self._descriptor)
        if worker.process.context_fd is not None:
            descriptor["fd"] = worker.process.context_fd
        memory = self._memory_limit or _default_memory_limit(descriptor)
        return {
            "type": "init",
            "protocol": _worker.PROTOCOL_VERSION,
            "parent_pid": worker.process.parent_pid,
            "env": self._worker_env(),  # a forked worker takes them from here, not the server
            "cwd": self._workdir,
            "context": descriptor,
            "output_limit": self._output_limit,
            "sandbox": self._sandbox_policy(memory),
            "tools": {name: inspect.getdoc(tool) or "" for name, tool in self._tools.items()},
        }

    def _sandbox_policy(self, memory_bytes: int) -> dict[str, Any]:
        """The ``_sandbox.SandboxPolicy`` the worker applies, as JSON."""
        assert self._workdir is not None
        return {
            "workdir": self._workdir,
            "tmpdir": self._workdir,
            "mode": self._isolation,
            "allow_network": self._allow_network,
            "allow_subprocess": self._allow_subprocess,
            "readable_paths": self._readable_paths,
            "memory_bytes": memory_bytes,
            "file_size_bytes": DEFAULT_WORKER_FILE_SIZE_LIMIT,
        }

    async def _serve(self, worker: _Worker) -> None:
        """Own one worker: read its frames, answer its calls, and clean up after it."""
        try:
            with worker.scope:
                async with anyio.create_task_group() as tg:
                    worker.handlers = tg
                    tg.start_soon(self._drain_stderr, worker)
                    tg.start_soon(self._watch_exit, worker)
                    tg.start_soon(self._send_init, worker)
                    try:
                        await self._read_frames(worker)
                    except WorkerProtocolError as exc:
                        worker.failure = exc
                        self._log.error("rlm.worker_protocol_error", pid=worker.pid, error=str(exc))
                    worker.kill()
                    tg.cancel_scope.cancel()
        except Exception as exc:  # a bug here must not take the caller's task group down
            worker.failure = worker.failure or REPLError(f"supervising the worker failed: {exc!r}")
            self._log.error("rlm.worker_supervision_failed", pid=worker.pid, error=repr(exc))
        finally:
            with anyio.CancelScope(shield=True):
                worker.kill()
                if not worker.detached:
                    with anyio.move_on_after(5 * WORKER_EXIT_GRACE):
                        await worker.process.wait()
                    worker.add_stderr(worker.process.read_stderr())  # what it wrote before dying
                worker.process.close()
                worker.finish()
                self._log.debug("rlm.worker_exited", pid=worker.pid, reason=worker.exit_reason())

    async def _send_init(self, worker: _Worker) -> None:
        assert self._prepared is not None
        await self._prepared.wait()
        if self._prepare_error is not None:
            error = self._prepare_error
            worker.failure = WorkerStartError(f"the context could not be prepared: {error!r}")
            worker.failure.__cause__ = error
            worker.kill()
            return
        try:
            await worker.send(self._init_message(worker))
        except _SEND_ERRORS:
            worker.kill()  # it died; the reader reports how

    async def _drain_stderr(self, worker: _Worker) -> None:
        """Keep the end of what the worker itself wrote to stderr (startup errors, segfaults)."""
        fd = worker.process.stderr
        with contextlib.suppress(anyio.ClosedResourceError, OSError):
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    await anyio.wait_readable(fd)
                    continue
                if not chunk:
                    return
                worker.add_stderr(chunk)

    async def _watch_exit(self, worker: _Worker) -> None:
        """When the worker exits (its group is killed with it), stop waiting for its channel."""
        await worker.process.wait()
        await anyio.sleep(WORKER_EXIT_GRACE)  # a forked child that escaped the group may hold it
        worker.scope.cancel()

    async def _read_frames(self, worker: _Worker) -> None:
        """Dispatch frames until the channel ends; garbage raises WorkerProtocolError."""
        channel = worker.process.channel
        while True:
            try:
                header = await channel.receive_exactly(_worker.HEADER_SIZE)
                size = _worker.frame_size(header)
                if size > _worker.MAX_FRAME_SIZE:
                    raise WorkerProtocolError(
                        f"the REPL worker announced a {size}-byte frame "
                        f"(the limit is {_worker.MAX_FRAME_SIZE})"
                    )
                payload = await channel.receive_exactly(size)
            except _READ_ENDS:
                return  # the worker is gone, possibly in the middle of a frame
            self._dispatch(worker, _parse_frame(header, payload))
            # Yield before waiting again: the handler just started (or the caller just woken)
            # runs first, so a reply goes out before this task re-arms its wait; and a flood
            # of frames cannot starve the loop.
            await anyio.lowlevel.checkpoint()

    def _dispatch(self, worker: _Worker, frame: Any) -> None:
        if isinstance(frame, CallFrame):
            assert worker.handlers is not None
            worker.handlers.start_soon(self._answer_call, worker, frame)
        elif isinstance(frame, ToolFrame):
            assert worker.handlers is not None
            worker.handlers.start_soon(self._answer_tool, worker, frame)
        elif isinstance(frame, ResultFrame | VarFrame | VarsFrame):
            waiter = worker.waiters.get(frame.id)
            if waiter is None:
                return  # an answer nobody waits for any more
            if not isinstance(frame, waiter.expect):
                raise WorkerProtocolError(f"the REPL worker answered with a {frame.type!r} frame")
            waiter.frame = frame
            waiter.done.set()
            if isinstance(frame, ResultFrame):  # the cell is over: so are its sub-calls
                for scope in worker.in_flight:
                    scope.cancel()
        elif isinstance(frame, ReadyFrame):
            worker.ready = True
            worker.settled.set()
            self.isolation_layers = list(frame.isolation)
            startup = anyio.current_time() - worker.started
            self._log.debug("rlm.worker_isolated", pid=worker.pid, layers=frame.isolation)
            self._log.debug(
                "rlm.worker_ready", pid=worker.pid, startup_s=startup, load_s=frame.load_s
            )
        elif isinstance(frame, HelloFrame):
            if frame.protocol != _worker.PROTOCOL_VERSION:
                raise WorkerProtocolError(f"the REPL worker speaks protocol {frame.protocol}")
        elif isinstance(frame, FatalFrame):
            worker.failure = WorkerStartError(f"the REPL worker could not start: {frame.message}")
            if frame.kind == "isolation":
                worker.isolation_error = frame.message

    # -- internals: requests ------------------------------------------------------------------

    async def _roundtrip(
        self, message: dict[str, Any], expect: type[ReplyFrame], limit: float
    ) -> _Outcome:
        """Send a request and wait for its answer, enforcing the deadline.

        At the deadline the worker gets SIGINT; if it does not answer within the grace period
        it is killed and replaced. A worker that dies is replaced too; either way the outcome
        says so. Cancellation kills the worker (the next call starts a new one).
        """
        worker = self._current()
        request_id = next(self._ids)
        waiter = _Waiter(expect)
        worker.waiters[request_id] = waiter
        try:
            try:
                await worker.send({**message, "id": request_id})
            except _SEND_ERRORS:
                worker.kill()
            timed_out = False
            with anyio.move_on_after(limit):
                await waiter.done.wait()
            if not waiter.done.is_set():
                timed_out = True
                self._log.warning("rlm.cell_timeout", pid=worker.pid, limit_s=limit)
                worker.interrupt()
                with anyio.move_on_after(WORKER_INTERRUPT_GRACE):
                    await waiter.done.wait()
                if not waiter.done.is_set():
                    reason = f"it did not stop within {WORKER_INTERRUPT_GRACE:g} s of an interrupt"
                    await self._replace(worker, reason)
                    return _Outcome(None, timed_out=True, lost=reason)
            if waiter.frame is not None:
                return _Outcome(waiter.frame, timed_out)
            if isinstance(worker.failure, WorkerProtocolError):
                raise WorkerProtocolError(str(worker.failure)) from worker.failure
            reason = worker.exit_reason()
            excerpt = worker.stderr_excerpt()
            await self._replace(worker, reason)
            return _Outcome(None, timed_out, lost=reason, excerpt=excerpt)
        except anyio.get_cancelled_exc_class():
            worker.kill()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5 * WORKER_EXIT_GRACE):
                await worker.finished.wait()
            raise
        finally:
            worker.waiters.pop(request_id, None)

    async def _answer_call(self, worker: _Worker, frame: CallFrame) -> None:
        request = SubCallRequest(
            kind=frame.kind, prompts=frame.prompts, model=frame.model, batched=frame.batched
        )
        with anyio.CancelScope() as scope:
            worker.in_flight.add(scope)
            try:
                results = await self._call_handler(request)
            finally:
                worker.in_flight.discard(scope)
            reply = {"type": "call_result", "id": frame.id, "results": results}
            try:
                await worker.send(reply)
            except _worker.FrameTooLargeError as exc:
                error = f"Error: the answers are too large to pass to the REPL ({exc})"
                reply["results"] = [error] * len(results)
                with contextlib.suppress(*_SEND_ERRORS):
                    await worker.send(reply)
            except _SEND_ERRORS:
                pass  # the worker is gone; its reader reports that

    async def _call_handler(self, request: SubCallRequest) -> list[str]:
        count = len(request.prompts)
        if self._handler is None:
            return [NO_HANDLER_ERROR] * count
        try:
            results = await self._handler(request)
        except Exception as exc:
            self._log.warning("rlm.subcall_failed", kind=request.kind, error=_describe(exc))
            return [f"Error: {_describe(exc)}"] * count
        if (
            not isinstance(results, list)
            or len(results) != count
            or not all(isinstance(item, str) for item in results)
        ):
            self._log.warning("rlm.subcall_bad_result", kind=request.kind, prompts=count)
            return [f"Error: the sub-call handler did not return {count} strings"] * count
        return results

    async def _answer_tool(self, worker: _Worker, frame: ToolFrame) -> None:
        reply: dict[str, Any]
        try:
            tool = self._tools.get(frame.name)
            if tool is None:
                raise LookupError(f"there is no tool named {frame.name!r}")
            value = await _call_tool(tool, frame.args, frame.kwargs)
            reply = {"type": "tool_result", "id": frame.id, "ok": True, "value": value}
            await worker.send(reply)  # a result that is not JSON fails here, before sending
            return
        except _SEND_ERRORS:
            return
        except Exception as exc:
            self._log.warning("rlm.tool_failed", tool=frame.name, error=_describe(exc))
            reply = {"type": "tool_result", "id": frame.id, "ok": False, "error": _describe(exc)}
        with contextlib.suppress(*_SEND_ERRORS):
            await worker.send(reply)


# -- helpers -------------------------------------------------------------------------------------


def _check_positive(name: str, value: float) -> None:
    if not value > 0 or math.isnan(value):
        raise ConfigurationError(f"{name} must be a positive number of seconds")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _parse_frame(header: bytes | bytearray, payload: bytes | bytearray) -> WorkerFrame:
    """Validate a frame from the (untrusted) worker; anything unexpected is a protocol error."""
    try:
        if _worker.is_segmented(header):
            return WORKER_FRAMES.validate_python(_worker.decode_segmented(payload))
        return WORKER_FRAMES.validate_json(payload)
    except ValueError as exc:  # pydantic's ValidationError, bad JSON, bad segments, bad UTF-8
        raise WorkerProtocolError(
            f"the REPL worker sent an invalid frame: {bytes(payload[:200])!r}"
        ) from exc


def _close_memfd(fd: int, descriptor: Mapping[str, Any] | None) -> None:
    """Close the context memfd; a big one on the closer thread.

    Closing the last reference frees the memfd's pages, about 4 ms for 40 MB, and nothing
    needs to wait for that: the worker is killed regardless. Starting a thread per close
    would cost more than the close when the cores are busy, so one thread serves them all.
    """
    if descriptor is None or int(descriptor["nbytes"]) < _BACKGROUND_CLOSE_BYTES:
        os.close(fd)
    else:
        _Closer.close(fd)


class _Closer:
    """A daemon thread that closes descriptors handed to it, started on first use."""

    _queue: SimpleQueue[int] = SimpleQueue()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def close(cls, fd: int) -> None:
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._run, name="rlm-fd-closer", daemon=True)
                cls._thread.start()
        cls._queue.put(fd)

    @classmethod
    def _run(cls) -> None:
        while True:
            fd = cls._queue.get()
            with contextlib.suppress(OSError):
                os.close(fd)


def _make_workdir() -> str:
    """A new private directory (mode 0700) under the temporary directory.

    What ``tempfile.mkdtemp`` does, at a third of its cost: the name's randomness comes
    from the OS in one call.
    """
    base = tempfile.gettempdir()
    while True:
        path = os.path.join(base, _worker.WORKDIR_PREFIX + secrets.token_hex(6))
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def _write_sealed(fd: int, context: object) -> dict[str, Any]:
    """Write the context into the memfd and seal it: from now on nobody can change it."""
    descriptor = _worker.write_context(fd, context)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    return descriptor


def _default_memory_limit(descriptor: Mapping[str, Any]) -> int:
    """Room for the context, a few working copies of it, and the interpreter."""
    factor = {"lines": 8, "json": 16}.get(descriptor["kind"], 4)  # Python objects vs. bytes
    return max(MIN_WORKER_MEMORY, factor * int(descriptor["nbytes"]) + 1024**3)


async def _call_tool(tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Await an async tool; run a sync one in a thread (it may block on I/O)."""
    if inspect.iscoroutinefunction(tool) or inspect.iscoroutinefunction(
        getattr(tool, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        result = await tool(*args, **kwargs)
    else:
        result = await anyio.to_thread.run_sync(functools.partial(tool, *args, **kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result


def _cell_result(
    outcome: _Outcome, duration: float, limit: float, notice: str | None
) -> CellResult:
    frame = outcome.frame
    error: CellError | None
    if not isinstance(frame, ResultFrame):
        if outcome.timed_out:
            error = CellError(
                type="TimeoutError",
                message=(
                    f"The cell exceeded its time limit of {limit:g} s and did not stop when "
                    "interrupted, so the REPL was restarted: all variables were lost."
                ),
                traceback="",
            )
        else:
            error = CellError(
                type="WorkerDied",
                message=(
                    f"The REPL worker died during this cell ({outcome.lost}), so the REPL was "
                    "restarted: all variables were lost."
                ),
                traceback=outcome.excerpt,
            )
        return CellResult(
            stdout="",
            stderr="",
            error=error,
            duration_s=duration,
            defined_names=[],
            restarted=True,
            timed_out=outcome.timed_out,
            notice=notice,
        )
    error = frame.error
    if outcome.timed_out and error is not None and error.type == "KeyboardInterrupt":
        message = (
            f"The cell exceeded its time limit of {limit:g} s and was interrupted; "
            "variables are kept."
        )
        error = error.model_copy(update={"message": message})
    return CellResult(
        stdout=frame.stdout,
        stderr=frame.stderr,
        error=error,
        duration_s=duration,
        defined_names=frame.defined_names,
        final_answer=frame.final_answer,
        restarted=notice is not None,
        timed_out=outcome.timed_out,
        output_truncated=frame.stdout_cut + frame.stderr_cut,
        notice=notice,
    )
