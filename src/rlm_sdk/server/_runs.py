"""Runs held in memory by id: live runs the page started, and trajectories it opened.

A run's events are kept as JSON lines in order, so a subscriber that arrives late (or
reconnects with ``Last-Event-ID``) gets the backlog and then follows live; a saved
trajectory is the same thing with every event already in. Live runs are tasks in the
registry's task group, which the app's lifespan owns: each has its own cancel scope, so
Stop (or server shutdown) cancels the run, and with it its REPL workers. The registry
lives on the app, never at module level.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from rlm_sdk import Event, ProviderError, RLMError, RLMResult
from rlm_sdk._frontend import get_logger

__all__ = ["EventSink", "Job", "RunRegistry", "RunStatus", "ServerRun"]

RunStatus = Literal["running", "finished", "cancelled", "error", "saved"]
EventSink = Callable[[Event], None]
Job = Callable[[EventSink], Awaitable[RLMResult]]


@dataclass(eq=False)
class ServerRun:
    """One run as the server holds it: its events so far and how it ended."""

    id: str
    status: RunStatus = "running"
    events: list[str] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    scope: anyio.CancelScope | None = None
    session: str | None = None
    """The server session the run asked in (the page offers a follow-up while it lives)."""
    _changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def done(self) -> bool:
        return self.status != "running"

    def add(self, event: Event) -> None:
        self.events.append(event.model_dump_json())
        self._notify()

    def end(self, status: RunStatus, *, error: str | None = None) -> None:
        self.status, self.error = status, error
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        """Wait until an event is added or the run ends."""
        await self._changed.wait()

    async def follow(self, start: int = 0) -> AsyncGenerator[tuple[int, str], None]:
        """Every event from index ``start`` on, waiting for new ones until the run is done."""
        index = start
        while True:
            while index < len(self.events):
                yield index, self.events[index]
                index += 1
            if self.done:
                return
            await self.changed()

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "events": len(self.events),
            "answer": self.answer,
            "error": self.error,
            "created": self.created,
            "session": self.session,
        }


class RunRegistry:
    """The server's runs by id; start it with ``async with registry.running():``."""

    def __init__(self, max_kept: int) -> None:
        self._runs: dict[str, ServerRun] = {}
        self._max_kept = max_kept
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the live runs' task group; leaving cancels every run still going."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def get(self, run_id: str) -> ServerRun | None:
        return self._runs.get(run_id)

    def start(self, job: Job) -> ServerRun:
        """Start ``job(sink)`` as a live run and return it at once."""
        if self._tg is None:
            raise RuntimeError("the run registry is not running (the app's lifespan did not start)")
        run = self._add(ServerRun(id=uuid.uuid4().hex))
        run.scope = scope = anyio.CancelScope()
        self._tg.start_soon(_drive, run, scope, job)
        return run

    def add_saved(self, events: list[Event]) -> ServerRun:
        """Hold a loaded trajectory's events as a finished run, for the page to replay."""
        run = ServerRun(id=uuid.uuid4().hex, status="saved")
        for event in events:
            run.add(event)
        return self._add(run)

    def stop(self, run_id: str) -> ServerRun | None:
        """Cancel a live run; finished runs are left as they are."""
        run = self._runs.get(run_id)
        if run is not None and run.scope is not None and not run.done:
            run.scope.cancel()
        return run

    def _add(self, run: ServerRun) -> ServerRun:
        self._runs[run.id] = run
        finished = [r for r in self._runs.values() if r.done]
        for old in finished[: max(0, len(self._runs) - self._max_kept)]:
            del self._runs[old.id]
        return run


async def _drive(run: ServerRun, scope: anyio.CancelScope, job: Job) -> None:
    """Run one job in the run's own cancel scope and record how it ended."""
    log = get_logger(server_run=run.id)
    with scope:
        try:
            result = await job(run.add)
        except ProviderError as err:
            run.end("error", error=f"the model provider failed: {type(err).__name__}: {err}")
            return
        except RLMError as err:
            run.end("error", error=f"{type(err).__name__}: {err}")
            return
        except Exception as err:  # the server must outlive a failing run; the page shows it
            log.error("rlm.server.run_failed", error=repr(err))
            run.end("error", error=f"internal error: {type(err).__name__}: {err}")
            return
        run.answer = result.answer
        run.end("finished")
        return
    run.end("cancelled", error="stopped")
