"""The parent side of the REPL: start a worker, hand it the context once, run cells, answer its calls.

Why it is built this way:

- The worker is another process (``python -I _worker.py``, or forked by a shared
  :class:`~rlm_sdk.repl.ForkServer`, see ``_process.py``), so model-written code cannot reach
  the parent's memory, keys or connections; it gets the context, the code and nothing else.
- It also sandboxes itself before any of that code runs (``_sandbox.py``: rlimits, a network
  namespace, Landlock, seccomp), as the session's ``isolation`` option asks. A host that
  cannot give what ``"strict"`` requires is an :class:`~rlm_sdk.IsolationError`, never a
  restart loop.
- ``__aenter__`` starts the process and returns at once. The handshake and the context load go on
  in the background, and every operation (or :meth:`REPLSession.wait_ready`) waits for them, so a
  caller can overlap the start with its first model call.
- The context is written once, in a worker thread, into a sealed memfd the worker maps
  (``_context.py``); a restart maps the same memfd again instead of sending the context twice.
- Everything that comes from the worker is validated (:mod:`rlm_sdk.repl._types`); garbage is a
  :class:`~rlm_sdk.WorkerProtocolError` and the worker is killed. Nothing is ever unpickled.

Two explicit states say where things stand, so no combination of flags can be half-true. A
worker's phase (``STARTING -> READY -> STOPPING -> GONE``) and the one way to end it,
:meth:`~rlm_sdk.repl._supervisor.Worker.stop` (kill the group, then wait, shielded and
bounded, until its supervisor has reaped it), live in ``_supervisor.py``. Closing is on every
run's critical path, so it kills first and waits on a pidfd (no thread); a worker from the fork
server is left to the server to reap.

A session (:class:`_State`) is ``NEW -> OPEN -> CLOSED``, with ``OPEN -> BROKEN`` when a
worker died and no new one could start (every operation then raises
:class:`~rlm_sdk.WorkerCrashedError`, and an explicit :meth:`REPLSession.restart` that
succeeds makes it ``OPEN`` again). Closing, from any state, is idempotent.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import itertools
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import anyio.lowlevel

from rlm_sdk._constants import (
    DEFAULT_WORKER_FILE_SIZE_LIMIT,
    FORKSERVER_REPLY_TIMEOUT,
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

from . import _wire
from ._context import SessionContext
from ._corpus import Corpus, is_paths
from ._process import (
    WORKER_PATH,
    ForkServer,
    ForkServerUnavailable,
    WorkerProcess,
    scrubbed_environ,
    spawn_direct,
)
from ._supervisor import SEND_ERRORS, Phase, Waiter, Worker, supervise
from ._types import (
    CallFrame,
    CellError,
    CellResult,
    ContextData,
    REPLOptions,
    ReplyFrame,
    ResultFrame,
    SubCallHandler,
    SubCallRequest,
    ToolFrame,
    VarFrame,
    VarsFrame,
)

__all__ = ["REPLSession"]

NO_HANDLER_ERROR = "Error: no sub-call handler configured"


class _State(enum.Enum):
    """Where a session is in its life (see the module docstring)."""

    NEW = "new"
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


_NEXT_STATES = {
    _State.NEW: {_State.OPEN, _State.CLOSED},
    _State.OPEN: {_State.BROKEN, _State.CLOSED},
    _State.BROKEN: {_State.OPEN, _State.CLOSED},
    _State.CLOSED: set(),
}


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
        options: What the worker may do and its bounds (:class:`REPLOptions`: isolation,
            network, subprocesses, readable paths, memory, cell and start timeouts, output).
        env: Extra environment variables for the worker. Nothing else from this process's
            environment reaches it but ``WORKER_ENV_ALLOWLIST``.
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
        options: REPLOptions | None = None,
        env: Mapping[str, str] | None = None,
        forkserver: ForkServer | None = None,
    ) -> None:
        if is_paths(context):
            context = Corpus(context)  # type: ignore[arg-type]
        if context is not None and not isinstance(
            context, str | bytes | bytearray | list | dict | Corpus
        ):
            raise ConfigurationError(
                f"context must be str, bytes, list, dict or paths, not {type(context).__name__}"
            )
        if options is None:
            options = REPLOptions()
        elif not isinstance(options, REPLOptions):
            raise ConfigurationError("options must be a REPLOptions or None")
        if forkserver is not None and not isinstance(forkserver, ForkServer):
            raise ConfigurationError("forkserver must be a ForkServer or None")
        self._tools = dict(tools or {})
        for name, tool in self._tools.items():
            if not name.isidentifier() or name.startswith("_"):
                raise ConfigurationError(f"tool name {name!r} is not a public Python identifier")
            if name in _wire.RESERVED_NAMES or name == _wire.ANSWER_NAME:
                raise ConfigurationError(f"tool name {name!r} is reserved in the REPL")
            if not callable(tool):
                raise ConfigurationError(f"tool {name!r} is not callable")
        self._env_extra = dict(env or {})
        for key, value in self._env_extra.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigurationError("env must map str to str")
        self._options = options
        self._forkserver = forkserver
        self._handler = handler
        self._context = SessionContext(context)
        self._added: list[dict[str, Any]] = []
        """Contexts added to the live session (name, file, layout), loaded again on a restart."""
        self._layers: list[str] = []
        """The layers of the last worker that got ready before the current one."""
        self.restarts = 0
        """How many times the worker was replaced (timeouts, crashes, :meth:`restart`)."""
        self._log = get_logger(component="repl")
        self._ids = itertools.count(1)
        self._state = _State.NEW
        self._broken = ""
        """Why the session is ``BROKEN``."""
        self._tg: anyio.abc.TaskGroup | None = None
        """Where the session's tasks run (its own, or the caller's: :meth:`_open_in`)."""
        self._own_tg: anyio.abc.TaskGroup | None = None
        self._lock: anyio.Lock | None = None
        self._workdir: str | None = None
        self._worker: Worker | None = None

    @property
    def options(self) -> REPLOptions:
        """What the worker may do, and its bounds."""
        return self._options

    @property
    def isolation_layers(self) -> list[str]:
        """The sandbox layers the worker applied to itself, once it is ready (a worker being
        started in place of another: the other's)."""
        worker = self._worker
        if worker is not None and worker.ready is not None:
            return list(worker.ready.isolation)
        return list(self._layers)

    @property
    def pid(self) -> int | None:
        """The worker's process id while one is running."""
        worker = self._worker
        if worker is None or worker.stopped:
            return None
        return worker.pid

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:  # before anything: a live session stays as it is
            raise RuntimeError("a REPLSession can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._own_tg = tg
        try:
            await self._open_in(tg)
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
            tg, self._own_tg = self._own_tg, None
            if tg is not None:
                # Every task has been told to stop by aclose(); the caller's exception, if any,
                # goes on unchanged rather than wrapped in an exception group.
                await tg.__aexit__(None, None, None)

    async def _open_in(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the worker, the session's tasks running in ``tg``; without waiting for it.

        ``async with`` gives the session a task group of its own. The orchestrator passes the
        run's instead: closing a run then waits for one task group, not three nested ones,
        which costs its event loop fewer rounds (measured: 6 instead of 8 after the last
        model reply). Whoever passes ``tg`` must :meth:`aclose` the session before ``tg``
        exits, and after a failure here too.
        """
        if self._state is not _State.NEW:
            raise RuntimeError("a REPLSession can be entered only once")
        self._enter(_State.OPEN)
        if self._options.isolation == "none":
            self._log.warning(
                "rlm.isolation_disabled",
                detail="the REPL worker runs model-written code without a sandbox "
                "(resource limits only): it can reach the network, the file system and "
                "other processes",
            )
        self._lock = anyio.Lock(fast_acquire=True)
        self._tg = tg
        self._context.open(tg)
        await self._spawn()

    async def aclose(self) -> None:
        """Kill the worker's process group, close its descriptors, remove its directory; idempotent.

        It is on every run's critical path, so it does not wait for what the kernel does after
        a SIGKILL (tearing down the worker's memory takes milliseconds for a big context). A
        worker from the fork server is left to it: the server reaps it and then removes the
        session's directory. A directly started worker is reaped here, through its pidfd,
        before this returns.
        """
        if self._state is _State.CLOSED:
            return
        opened = self._state is not _State.NEW
        self._enter(_State.CLOSED)
        if opened:
            with anyio.CancelScope(shield=True):
                await self._context.close()
                await self._release(self._worker)
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
        limit = self._options.cell_timeout if timeout is None else timeout
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
            outcome = await self._roundtrip(message, VarFrame, self._options.cell_timeout)
        frame = outcome.frame
        return frame.text if isinstance(frame, VarFrame) and frame.found else None

    async def get_variable_json(self, name: str) -> str | None:
        """The variable's value as JSON text; None if there is no such variable, if it is a
        ``str`` (its text is its value), or if JSON cannot hold it. For typed answers."""
        async with self._exclusive():
            await self._revive()
            message = {"type": "get_var", "name": name, "json": True}
            outcome = await self._roundtrip(message, VarFrame, self._options.cell_timeout)
        frame = outcome.frame
        return frame.value_json if isinstance(frame, VarFrame) and frame.found else None

    async def list_variables(self) -> dict[str, str]:
        """User variable names (not modules, not names starting with ``_``) to type names."""
        async with self._exclusive():
            await self._revive()
            message = {"type": "list_vars"}
            outcome = await self._roundtrip(message, VarsFrame, self._options.cell_timeout)
        frame = outcome.frame
        return dict(frame.variables) if isinstance(frame, VarsFrame) else {}

    async def add_context(self, name: str, value: ContextData) -> None:
        """Bind one more context in the live worker as ``name`` (kept like ``context``).

        The value is written, on a thread, into a file of the session's private directory
        (a running worker cannot be handed a new memfd) and the worker maps it; a restarted
        worker loads it again. Variables are kept. Files on disk (a corpus) cannot be added:
        the sandbox's readable paths are fixed when the worker starts.

        Raises:
            ConfigurationError: ``name`` is taken or not a public identifier, or ``value`` is
                not text, bytes, a list or a JSON object.
            REPLError: the worker could not load it (the message says why, e.g. memory).
        """
        taken = {*_wire.RESERVED_NAMES, _wire.ANSWER_NAME, *self._tools}
        taken.update(entry["name"] for entry in self._added)
        if not name.isidentifier() or name.startswith("_") or name in taken:
            raise ConfigurationError(f"{name!r} cannot name a new context in this REPL")
        if is_paths(value) or not isinstance(value, str | bytes | bytearray | list | dict):
            raise ConfigurationError(
                f"a context added to a live REPL must be str, bytes, list or dict, "
                f"not {type(value).__name__}"
            )
        async with self._exclusive():
            await self._revive()
            assert self._workdir is not None
            path = os.path.join(self._workdir, f".rlm-{name}-{os.urandom(4).hex()}")
            try:
                descriptor = await anyio.to_thread.run_sync(_write_file, path, value)
                del value
                entry = {"name": name, "path": path, "context": descriptor}
                message = {"type": "add_context", **entry}
                outcome = await self._roundtrip(message, ResultFrame, self._options.start_timeout)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
        frame = outcome.frame
        if isinstance(frame, ResultFrame) and frame.error is None:
            self._added.append(entry)
            return
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(frame, ResultFrame) and frame.error is not None:
            why = f"{frame.error.type}: {frame.error.message}"
        else:
            why = f"the worker stopped ({outcome.lost or 'timed out'}) and was restarted"
        raise REPLError(f"the REPL could not load {name}: {why}")

    # -- internals: state ---------------------------------------------------------------------

    def _enter(self, state: _State) -> None:
        """Move the session to ``state``; only the transitions of the module docstring."""
        if state not in _NEXT_STATES[self._state]:
            raise AssertionError(f"a session cannot go from {self._state.name} to {state.name}")
        self._state = state

    def _current(self) -> Worker:
        if self._state not in (_State.OPEN, _State.BROKEN) or self._worker is None:
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
        if self._state is _State.BROKEN:
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

    async def _await_ready(self, worker: Worker) -> None:
        """Return once ``worker`` got ready; otherwise stop it and raise why it did not."""
        if worker.ready is not None:
            return
        remaining = worker.started + self._options.start_timeout - anyio.current_time()
        with anyio.move_on_after(remaining):
            await worker.settled()
        if worker.ready is not None:
            return
        timed_out = worker.phase is Phase.STARTING
        await worker.stop()
        if timed_out:
            what = f"the REPL worker did not become ready within {self._options.start_timeout:g} s"
        elif worker.failure is not None:
            what = str(worker.failure)
        else:
            what = f"the REPL worker stopped during startup ({worker.exit_reason()})"
        if worker.isolation_error is not None:
            raise IsolationError(
                f"the REPL worker cannot be sandboxed as isolation={self._options.isolation!r} "
                f"requires: {worker.isolation_error}"
            ) from worker.failure
        excerpt = worker.stderr_excerpt()
        if excerpt:
            what += f"; the end of its stderr:\n{excerpt}"
        cause = self._context.error or (worker.failure and worker.failure.__cause__)
        raise WorkerStartError(what) from cause

    async def _replace(self, old: Worker, reason: str) -> Worker:
        """Stop ``old`` and start a new worker with the same context."""
        await old.stop()
        self._current()
        self.restarts += 1
        try:
            new = await self._spawn()
            await self._await_ready(new)
        except WorkerStartError as exc:
            self._current()  # closed meanwhile: that is what the caller hears
            if self._state is _State.OPEN:
                self._enter(_State.BROKEN)
            self._broken = f"the REPL worker stopped ({reason}) and could not be restarted: {exc}"
            self._log.error("rlm.worker_restart_failed", old_pid=old.pid, reason=reason)
            raise WorkerCrashedError(self._broken) from exc
        if self._state is _State.BROKEN:
            self._enter(_State.OPEN)
        self._log.warning(
            "rlm.worker_restarted",
            old_pid=old.pid,
            pid=new.pid,
            reason=reason,
            restarts=self.restarts,
        )
        return new

    async def _release(self, worker: Worker | None) -> None:
        """Stop ``worker`` for good and remove the session's directory (the server may)."""
        workdir = self._workdir
        if worker is not None and await worker.stop(workdir):
            workdir = None  # the fork server removes it once the worker is reaped
        self._workdir = None
        if workdir is not None and not _wire.remove_small_directory(workdir):
            remove = functools.partial(shutil.rmtree, workdir, ignore_errors=True)
            await anyio.to_thread.run_sync(remove)

    # -- internals: the process -----------------------------------------------------------------

    def _worker_env(self) -> dict[str, str]:
        assert self._workdir is not None
        env = scrubbed_environ()
        env.update(HOME=self._workdir, TMPDIR=self._workdir, PYTHONUNBUFFERED="1")
        env.update(self._env_extra)
        return env

    async def _spawn(self) -> Worker:
        """Start a worker (forked by the fork server if there is one) and supervise it."""
        assert self._tg is not None
        started = anyio.current_time()
        process: WorkerProcess | None = None
        if self._forkserver is not None:
            try:
                process = await self._forkserver._spawn(
                    memfd=self._context.fd,
                    workdir=self._workdir,  # None: the server makes one
                    reply_within=min(self._options.start_timeout, FORKSERVER_REPLY_TIMEOUT),
                )
                self._workdir = process.workdir
            except ForkServerUnavailable as exc:
                self._log.warning("rlm.forkserver_unavailable", error=str(exc))
                started = anyio.current_time()
        if process is None:
            if self._workdir is None:
                self._workdir = _wire.make_workdir(tempfile.gettempdir())
            try:
                env = self._worker_env()  # at exec: the parent's own never reaches it
                process = spawn_direct(
                    WORKER_PATH, env=env, cwd=self._workdir, memfd=self._context.fd
                )
            except OSError as exc:
                raise WorkerStartError(f"could not start the REPL worker: {exc}") from exc
        worker = Worker(process, started)
        self._layers = self.isolation_layers
        self._worker = worker
        self._tg.start_soon(
            functools.partial(
                supervise, worker, init=self._init_message, answer=self._answer, log=self._log
            )
        )
        if self._state is _State.CLOSED:  # closed while the fork server was forking it
            with anyio.CancelScope(shield=True):
                await self._release(worker)
            raise REPLError("the REPL session was closed")
        forked = process.parent_pid != os.getpid()
        self._log.debug("rlm.worker_spawned", pid=worker.pid, forked=forked)
        return worker

    async def _init_message(self, worker: Worker) -> dict[str, Any]:
        descriptor = dict(await self._context.descriptor())
        if worker.process.context_fd is not None:
            descriptor["fd"] = worker.process.context_fd
        memory = self._options.memory_limit or self._context.memory_limit(descriptor)
        return {
            "type": "init",
            "protocol": _wire.PROTOCOL_VERSION,
            "parent_pid": worker.process.parent_pid,
            "env": self._worker_env(),  # a forked worker takes them from here, not the server
            "cwd": self._workdir,
            "context": descriptor,
            "contexts": list(self._added),
            "output_limit": self._options.output_limit,
            "sandbox": self._sandbox_policy(memory),
            "tools": {name: inspect.getdoc(tool) or "" for name, tool in self._tools.items()},
        }

    def _context_files(self) -> tuple[str, ...]:
        """What the worker must read of the disk: a corpus's folder or files, nothing else."""
        corpus = self._context.corpus
        return () if corpus is None else corpus.roots

    def _sandbox_policy(self, memory_bytes: int) -> dict[str, Any]:
        """The ``_sandbox.SandboxPolicy`` the worker applies, as JSON."""
        assert self._workdir is not None
        return {
            "workdir": self._workdir,
            "tmpdir": self._workdir,
            "mode": self._options.isolation,
            "allow_network": self._options.allow_network,
            "allow_subprocess": self._options.allow_subprocess,
            "readable_paths": [*self._options.readable_paths, *self._context_files()],
            "memory_bytes": memory_bytes,
            "file_size_bytes": DEFAULT_WORKER_FILE_SIZE_LIMIT,
        }

    # -- internals: requests ------------------------------------------------------------------

    async def _roundtrip(
        self, message: dict[str, Any], expect: type[ReplyFrame], limit: float
    ) -> _Outcome:
        """Send a request and wait for its answer, enforcing the deadline.

        At the deadline the worker gets SIGINT; if it does not answer within the grace period
        it is killed and replaced. A worker that dies is replaced too; either way the outcome
        says so. Cancellation stops the worker (the next call starts a new one).
        """
        worker = self._current()
        request_id = next(self._ids)
        waiter = Waiter(expect)
        worker.waiters[request_id] = waiter
        try:
            try:
                await worker.send({**message, "id": request_id})
            except SEND_ERRORS:
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
            await worker.stop()
            raise
        finally:
            worker.waiters.pop(request_id, None)

    async def _answer(self, worker: Worker, frame: CallFrame | ToolFrame) -> None:
        """Answer a sub-call or a tool call of the model's code (the supervisor's callback)."""
        if isinstance(frame, CallFrame):
            await self._answer_call(worker, frame)
        else:
            await self._answer_tool(worker, frame)

    async def _answer_call(self, worker: Worker, frame: CallFrame) -> None:
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
            except _wire.FrameTooLargeError as exc:
                error = f"Error: the answers are too large to pass to the REPL ({exc})"
                reply["results"] = [error] * len(results)
                with contextlib.suppress(*SEND_ERRORS):
                    await worker.send(reply)
            except SEND_ERRORS:
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

    async def _answer_tool(self, worker: Worker, frame: ToolFrame) -> None:
        reply: dict[str, Any]
        try:
            tool = self._tools.get(frame.name)
            if tool is None:
                raise LookupError(f"there is no tool named {frame.name!r}")
            value = await _call_tool(tool, frame.args, frame.kwargs)
            reply = {"type": "tool_result", "id": frame.id, "ok": True, "value": value}
            await worker.send(reply)  # a result that is not JSON fails here, before sending
            return
        except SEND_ERRORS:
            return
        except Exception as exc:
            self._log.warning("rlm.tool_failed", tool=frame.name, error=_describe(exc))
            reply = {"type": "tool_result", "id": frame.id, "ok": False, "error": _describe(exc)}
        with contextlib.suppress(*SEND_ERRORS):
            await worker.send(reply)


# -- helpers -------------------------------------------------------------------------------------


def _write_file(path: str, value: object) -> dict[str, Any]:
    """Write a context added to a live session into a new private file; its layout."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        return _wire.write_context(fd, value)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)


def _check_positive(name: str, value: float) -> None:
    if not value > 0 or math.isnan(value):
        raise ConfigurationError(f"{name} must be a positive number of seconds")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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
        final_json=frame.final_json,
        restarted=notice is not None,
        timed_out=outcome.timed_out,
        output_truncated=frame.stdout_cut + frame.stderr_cut,
        notice=notice,
    )
