"""One worker process on the parent side: its lifecycle as one explicit state, and its supervisor.

Why a state machine: a worker can end in many ways (its own exit, a crash, garbage on the
channel, a deadline, a restart, the session closing, cancellation), often two at once, and
every one of them must leave it killed, reaped and its descriptors closed, with each waiting
request woken exactly once. Flags for each fact (ready, failed, settled, finished, detached)
let half-true combinations slip through; one phase does not:

    STARTING --ready frame--> READY --kill or exit--> STOPPING --reaped--> GONE
        \\_____________________kill or exit____________/

- ``STARTING``: spawned; the handshake and the context load are under way.
- ``READY``: it said ``ready``; it serves requests.
- ``STOPPING``: killed, or found dead; nothing more is sent to it.
- ``GONE``: reaped (or handed to the fork server to reap), its descriptors closed, every
  request still waiting on it woken. Only its supervisor moves it here, once.

Every path that ends a worker goes through :meth:`Worker.stop`: kill the process group, then
wait, shielded and bounded, for ``GONE`` (a worker handed to the fork server at close is
reaped there, and ``GONE`` follows before the session's task group exits).
:func:`supervise` is the task that owns a worker from spawn to ``GONE``: it sends the init frame, reads and validates frames (replies wake
their requests, sub-calls and tool calls go to the session), keeps the end of the worker's
stderr, watches for its exit, and reaps it in a ``finally`` that no cancellation skips.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from rlm_sdk._constants import WORKER_EXIT_GRACE, WORKER_REAP_TIMEOUT
from rlm_sdk._exceptions import REPLError, WorkerProtocolError, WorkerStartError
from rlm_sdk._logging import BoundLog

from . import _wire
from ._process import WorkerProcess
from ._types import (
    WORKER_FRAMES,
    CallFrame,
    FatalFrame,
    ReadyFrame,
    ReplyFrame,
    ResultFrame,
    ToolFrame,
    VarFrame,
    VarsFrame,
    WorkerFrame,
)

__all__ = ["SEND_ERRORS", "Phase", "Waiter", "Worker", "parse_frame", "supervise"]

SEND_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
"""What sending to a worker that is gone raises."""
_READ_ENDS = (EOFError, anyio.ClosedResourceError, OSError)
_STDERR_TAIL = 8192
_STDERR_READ = 65536


class Phase(enum.Enum):
    """Where one worker process is in its life (see the module docstring)."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    GONE = "gone"


_NEXT_PHASES = {
    Phase.STARTING: {Phase.READY, Phase.STOPPING},
    Phase.READY: {Phase.STOPPING},
    Phase.STOPPING: {Phase.GONE},
    Phase.GONE: set(),
}


class Waiter:
    """A request of the parent waiting for the worker's answer (or the worker's end)."""

    __slots__ = ("done", "expect", "frame")

    def __init__(self, expect: type[ReplyFrame]) -> None:
        self.done = anyio.Event()
        self.expect = expect
        self.frame: ReplyFrame | None = None


class Worker:
    """One worker process, its phase, and the requests waiting on it; a restart replaces it."""

    def __init__(self, process: WorkerProcess, started: float) -> None:
        self.process = process
        self.pid = process.pid
        self.started = started
        self.phase = Phase.STARTING
        self._changed = anyio.Event()
        self.ready: ReadyFrame | None = None
        """What the worker reported when it got ready (it did, if this is set)."""
        self.failure: REPLError | None = None
        """Why it stopped, when that was not simply its exit (a fatal frame, garbage)."""
        self.isolation_error: str | None = None
        """Why the sandbox could not be applied, when the worker said so (a ``fatal`` frame)."""
        self.scope = anyio.CancelScope()
        """Everything its supervisor runs: reading it, draining its stderr, answering it."""
        self.send_lock = anyio.Lock(fast_acquire=True)
        self.waiters: dict[int, Waiter] = {}
        self.in_flight: set[anyio.CancelScope] = set()
        """The sub-calls and tool calls being answered; a cell's result cancels them."""
        self._stderr_tail = bytearray()

    @property
    def stopped(self) -> bool:
        """Killed, dead or reaped: it will answer nothing more."""
        return self.phase in (Phase.STOPPING, Phase.GONE)

    def enter(self, phase: Phase) -> None:
        """Move to ``phase``; only the transitions of the module docstring are allowed."""
        if phase not in _NEXT_PHASES[self.phase]:
            raise AssertionError(f"a worker cannot go from {self.phase.name} to {phase.name}")
        self.phase = phase
        self._changed.set()
        self._changed = anyio.Event()
        if phase is Phase.GONE:
            for waiter in self.waiters.values():
                waiter.done.set()

    async def settled(self) -> None:
        """Wait until the worker is no longer starting (ready, or never will be)."""
        while self.phase is Phase.STARTING:
            await self._changed.wait()

    async def gone(self) -> None:
        """Wait until the worker is reaped and its descriptors are closed."""
        while self.phase is not Phase.GONE:
            await self._changed.wait()

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (it and everything it started)."""
        if not self.stopped:
            self.enter(Phase.STOPPING)
        self.process.kill()

    async def stop(self, workdir: str | None = None) -> bool:
        """Kill the worker and wait until it is gone: shielded, and bounded.

        The one way every path ends a worker. A worker started here is reaped through its
        pidfd before this returns. With ``workdir``, a live worker of the fork server is left
        to it instead: the server kills the group, reaps the worker and then removes
        ``workdir``, and True says so (the caller must not remove it). Then this returns at
        once: the session's closing waits for nothing the server does, and the supervisor
        closes the worker's descriptors before the session's task group exits (waiting for
        that here costs closing an extra ~0.1 ms, measured, for no gain).
        """
        handed_over = (
            workdir is not None and not self.stopped and self.process.close_via_server(workdir)
        )
        self.kill()
        self.scope.cancel()  # stop reading it; its supervisor reaps it and closes its pipes
        if not handed_over:
            with anyio.CancelScope(shield=True), anyio.move_on_after(WORKER_REAP_TIMEOUT):
                await self.gone()
        return handed_over

    def interrupt(self) -> None:
        """SIGINT the worker: a KeyboardInterrupt in the running cell."""
        self.process.interrupt()

    async def send(self, message: dict[str, Any]) -> None:
        """Send one frame. Raises one of ``SEND_ERRORS`` if the worker is gone."""
        frame = _wire.encode_frame(message)
        async with self.send_lock:
            await self.process.channel.send(frame)

    def add_stderr(self, chunk: bytes) -> None:
        self._stderr_tail += chunk
        del self._stderr_tail[:-_STDERR_TAIL]

    def stderr_excerpt(self) -> str:
        """The end of what the worker itself wrote to stderr (a crash's traceback)."""
        return self._stderr_tail.decode("utf-8", "replace").strip()

    def exit_reason(self) -> str:
        """Why it stopped, in words for a log line or the model."""
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


async def supervise(
    worker: Worker,
    *,
    init: Callable[[Worker], Awaitable[dict[str, Any]]],
    answer: Callable[[Worker, CallFrame | ToolFrame], Coroutine[Any, Any, None]],
    log: BoundLog,
) -> None:
    """Own ``worker`` from spawn to ``GONE``; run it in the session's task group.

    ``init`` makes the init frame (raising :class:`~rlm_sdk.WorkerStartError` when it cannot);
    ``answer`` answers one sub-call or tool call, in a task of its own. Whatever ends the
    worker (its exit, garbage, a kill, cancellation), the ``finally`` kills what is left of its
    group, reaps it (or leaves it to the fork server), keeps what it wrote to stderr, closes
    its descriptors and moves it to ``GONE``, which wakes every request still waiting on it.
    """
    try:
        with worker.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watcher, _drain_stderr, worker)
                tg.start_soon(_watcher, _watch_exit, worker)
                tg.start_soon(_send_init, worker, init)
                try:
                    await _read_frames(worker, tg, answer, log)
                except WorkerProtocolError as exc:
                    worker.failure = exc
                    log.error("rlm.worker_protocol_error", pid=worker.pid, error=str(exc))
                tg.cancel_scope.cancel()
    except Exception as exc:  # a bug here must not take the caller's task group down
        worker.failure = worker.failure or REPLError(f"supervising the worker failed: {exc!r}")
        log.error("rlm.worker_supervision_failed", pid=worker.pid, error=repr(exc))
    except anyio.get_cancelled_exc_class():
        pass  # the session is going: cleaned up below, then done (see _watcher)
    finally:
        with anyio.CancelScope(shield=True):
            worker.kill()
            if not worker.process.detached:
                with anyio.move_on_after(WORKER_REAP_TIMEOUT):
                    await worker.process.wait()
                worker.add_stderr(worker.process.read_stderr())  # what it wrote before dying
            worker.process.close()
            worker.enter(Phase.GONE)
            log.debug("rlm.worker_exited", pid=worker.pid, reason=worker.exit_reason())


def parse_frame(segmented: bool, payload: bytes | bytearray) -> WorkerFrame:
    """Validate a frame from the (untrusted) worker; anything unexpected is a protocol error."""
    try:
        if segmented:
            return WORKER_FRAMES.validate_python(_wire.decode_segmented(payload))
        return WORKER_FRAMES.validate_json(payload)
    except ValueError as exc:  # pydantic's ValidationError, bad JSON, bad segments, bad UTF-8
        raise WorkerProtocolError(
            f"the REPL worker sent an invalid frame: {bytes(payload[:200])!r}"
        ) from exc


async def _send_init(worker: Worker, init: Callable[[Worker], Awaitable[dict[str, Any]]]) -> None:
    try:
        message = await init(worker)
    except WorkerStartError as exc:  # the context could not be written
        worker.failure = exc
        worker.kill()
        return
    try:
        await worker.send(message)
    except SEND_ERRORS:
        worker.kill()  # it died; the reader reports how


async def _watcher(watch: Callable[[Worker], Awaitable[None]], worker: Worker) -> None:
    """Run one of a worker's watchers: cancelled, it is simply done.

    A watcher only waits (for output, for the exit), so its cancellation, the usual end of
    every worker, means nothing but "stop". Ending the task by returning, not raising, keeps
    the event loop's task bookkeeping from keeping the cancellation: its traceback would hold
    every frame of the stack, and whatever they hold (a run's context), until the cyclic
    garbage collector runs.
    """
    try:
        await watch(worker)
    except anyio.get_cancelled_exc_class():
        return


async def _drain_stderr(worker: Worker) -> None:
    """Keep the end of what the worker itself wrote to stderr (startup errors, segfaults)."""
    fd = worker.process.stderr
    with contextlib.suppress(anyio.ClosedResourceError, OSError):
        while True:
            try:
                chunk: bytes | None = os.read(fd, _STDERR_READ)
            except BlockingIOError:
                chunk = None  # wait outside the handler (see _wire.py)
            if chunk is None:
                await anyio.wait_readable(fd)
                continue
            if not chunk:
                return
            worker.add_stderr(chunk)


async def _watch_exit(worker: Worker) -> None:
    """When the worker exits, it is STOPPING; a grace later, stop waiting for its channel."""
    await worker.process.wait()
    worker.kill()  # what is left of its group dies with it
    await anyio.sleep(WORKER_EXIT_GRACE)  # a forked child that escaped the group may hold it
    worker.scope.cancel()


async def _read_frames(
    worker: Worker,
    tg: anyio.abc.TaskGroup,
    answer: Callable[[Worker, CallFrame | ToolFrame], Coroutine[Any, Any, None]],
    log: BoundLog,
) -> None:
    """Dispatch frames until the channel ends; garbage raises WorkerProtocolError."""
    channel = worker.process.channel
    while True:
        try:
            segmented, payload = await channel.receive_frame()
        except _wire.FrameTooLargeError as exc:
            raise WorkerProtocolError(f"the REPL worker announced {exc}") from exc
        except _READ_ENDS:
            return  # the worker is gone, possibly in the middle of a frame
        frame = parse_frame(segmented, payload)
        if isinstance(frame, CallFrame | ToolFrame):
            tg.start_soon(answer, worker, frame)
        elif isinstance(frame, ResultFrame | VarFrame | VarsFrame):
            _deliver(worker, frame)
        else:
            _on_lifecycle(worker, frame, log)
        # More may be buffered: yield before reading on, so that the handler just started
        # (or the caller just woken) runs first and a flood of frames cannot starve the
        # loop. A drained pipe needs no checkpoint: waiting for it yields anyway.
        if not channel.drained:
            await anyio.lowlevel.checkpoint()


def _deliver(worker: Worker, frame: ReplyFrame) -> None:
    """Hand a reply to the request waiting for it."""
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


def _on_lifecycle(worker: Worker, frame: ReadyFrame | FatalFrame, log: BoundLog) -> None:
    if isinstance(frame, ReadyFrame):
        if frame.protocol != _wire.PROTOCOL_VERSION:
            raise WorkerProtocolError(f"the REPL worker speaks protocol {frame.protocol}")
        if worker.phase is not Phase.STARTING:
            return  # killed while it was getting ready
        worker.ready = frame
        worker.enter(Phase.READY)
        startup = anyio.current_time() - worker.started
        log.debug("rlm.worker_isolated", pid=worker.pid, layers=frame.isolation)
        log.debug("rlm.worker_ready", pid=worker.pid, startup_s=startup, load_s=frame.load_s)
    else:
        worker.failure = WorkerStartError(f"the REPL worker could not start: {frame.message}")
        if frame.kind == "isolation":
            worker.isolation_error = frame.message
