"""Conversations the server keeps: one :class:`~rlm_sdk.Session` per client-chosen id.

A client that sends ``X-RLM-Session: <id>`` with ``/v1/chat/completions`` (or asks a
follow-up on the page) talks to one session per id: one REPL worker kept between its
requests, and the earlier turns remembered. The first request of an id is read as without
the header (the last user message is the query, the messages before it the context); a later
one reads only its last user message, as a follow-up, since the session already holds the
rest. An id whose session was closed (idle, evicted, the server restarted) starts again from
its messages, so a client never has to know.

Every session lives in a task of the pool's task group (a session is entered and left by one
task), which waits for the session to close: by its idle timeout, or cancelled when the pool
evicts it or shuts down. The number of live sessions is bounded: past it, the least recently
used idle one is closed, and when none is idle the request is refused.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from rlm_sdk import RecursiveLM, RLMResult, Session, SessionClosedError
from rlm_sdk.repl import ContextData

from ._http import ApiError
from ._jobs import RunOptions
from ._runs import EventSink

__all__ = ["SESSION_HEADER", "SessionPool", "session_id"]

SESSION_HEADER = "X-RLM-Session"
"""The request header naming a conversation; the response repeats it."""
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def session_id(value: str | None) -> str | None:
    """A valid session id from a header (``None`` without one), or a 400 error."""
    if value is None:
        return None
    if not _ID.fullmatch(value):
        raise ApiError(
            400,
            f"{SESSION_HEADER} must be 1 to 128 letters, digits, '.', '_', ':' or '-'",
            param=SESSION_HEADER,
            code="invalid_session",
        )
    return value


@dataclass(eq=False)
class _Entry:
    id: str
    options: RunOptions
    session: Session | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    active: int = 0
    last: float = 0.0


class SessionPool:
    """The live sessions of one app, at most ``limit``, each closed after ``idle`` seconds."""

    def __init__(self, limit: int, idle: float) -> None:
        self.limit = limit
        self.idle = idle
        self._live: dict[str, _Entry] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def __len__(self) -> int:
        return len(self._live)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Hold the sessions' tasks; leaving closes every session and reaps its worker."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                for entry in list(self._live.values()):
                    entry.scope.cancel()

    def options(self, sid: str) -> RunOptions | None:
        """The options of a live session (``None`` when there is none by that id)."""
        entry = self._live.get(sid)
        return None if entry is None else entry.options

    def pid(self, sid: str) -> int | None:
        """The worker process of a live session, if it has one."""
        entry = self._live.get(sid)
        return None if entry is None or entry.session is None else entry.session.pid

    async def ask(
        self,
        sid: str,
        options: RunOptions,
        make_rlm: Callable[[], RecursiveLM],
        context: ContextData | None,
        query: str | None,
        on_event: EventSink | None = None,
        *,
        resume: bool = False,
        output_type: Any = None,
    ) -> RLMResult:
        """Ask session ``sid`` (opened for ``options`` if it is not live): the first query
        over ``context``, later ones a follow-up ``query``. ``resume``: only a live session
        will do (the caller has no context to start again from).

        Raises:
            ApiError: 409 when ``resume`` and the session is gone.
            ApiError: 429 when every slot holds a busy session; 400 when a follow-up has no
                query or names other models than the session's.
        """
        for _ in range(2):
            entry = self._live.get(sid)
            if entry is None and resume:
                raise ApiError(409, f"session {sid!r} has closed", code="session_closed")
            if entry is None:
                entry = await self._open(sid, options, make_rlm)
            elif (entry.options.model, entry.options.sub_model) != (
                options.model,
                options.sub_model,
            ):
                raise ApiError(
                    400,
                    f"session {sid!r} runs {entry.options.model!r}; start a new session to "
                    "change the model",
                    param="model",
                    code="session_model_mismatch",
                )
            session = entry.session
            assert session is not None
            entry.active += 1
            try:
                if not session.results and entry.active == 1:
                    return await session.acomplete(
                        context, query, on_event=on_event, output_type=output_type
                    )
                if not query:
                    raise ApiError(400, "a follow-up needs a user message", param="messages")
                return await session.acomplete(query, on_event=on_event, output_type=output_type)
            except SessionClosedError:
                continue  # closed under us (idle): start again from the messages
            finally:
                entry.active -= 1
                entry.last = anyio.current_time()
        raise ApiError(503, f"session {sid!r} kept closing", code="session_closed")

    async def _open(
        self, sid: str, options: RunOptions, make_rlm: Callable[[], RecursiveLM]
    ) -> _Entry:
        if self._tg is None or self.limit == 0:
            raise ApiError(
                400, f"this server keeps no sessions ({SESSION_HEADER})", code="sessions_off"
            )
        if len(self._live) >= self.limit:
            idle = [e for e in self._live.values() if e.active == 0 and e.session is not None]
            if not idle:
                raise ApiError(
                    429,
                    f"all {self.limit} sessions are busy; try again later",
                    type="rate_limit_error",
                    code="too_many_sessions",
                )
            oldest = min(idle, key=lambda e: e.last)
            self._live.pop(oldest.id, None)
            oldest.scope.cancel()
        entry = _Entry(sid, options, last=anyio.current_time())
        self._live[sid] = entry
        try:
            await self._tg.start(self._hold, entry, make_rlm)
        except BaseException:
            if self._live.get(sid) is entry:
                del self._live[sid]
            raise
        return entry

    async def _hold(
        self,
        entry: _Entry,
        make_rlm: Callable[[], RecursiveLM],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with entry.scope:
                async with make_rlm() as rlm, rlm.session(idle_timeout=self.idle) as session:
                    entry.session = session
                    task_status.started()
                    await session.wait_closed()
        finally:
            if self._live.get(entry.id) is entry:
                del self._live[entry.id]
