"""Sessions: a conversation of queries that share one REPL worker and one history.

A plain run starts a worker, loads its context, answers, and reaps the worker. A session
keeps what the next query would otherwise rebuild:

- **The worker.** One :class:`~rlm_sdk.repl.REPLSession`, owned by a task of the session
  (:class:`_Owner`), so it outlives the queries' task groups. It is opened the way a run
  opens its own (while the first model call is in flight) and closed, killing and reaping
  the process, when the session closes or has been idle for ``idle_timeout`` seconds. Its
  sub-call handler routes to whichever query is running: queries take turns (a lock), so
  there is never more than one.
- **The conversation.** Each query's root run starts from the earlier queries' messages
  (:class:`~rlm_sdk._run.Carry`), its final reply included, so the model sees what it did;
  the run's own compaction (``_compaction.py``) folds them when they near the window, and
  what it folds goes to the REPL's ``history`` list, which persists like any variable.
- **The contexts.** The first query's context is ``context``; a later query's is added to
  the live worker as ``context_1``, ``context_2``, ... (``REPLSession.add_context``), and
  the system prompt lists every one.

Each query is a top-level run of its own: its own budget (limits apply per query), result,
usage and trajectory; the session sums the usage. A query that fails or is cancelled leaves
no turns in the history; if it was cancelled inside a cell, the worker was killed, and the
next query's first cell gets a fresh one and the notice that variables were lost.

The sync twin runs the same object on an event loop of its own, in a thread (anyio's
blocking portal), since the worker and its task must live across calls, which a fresh
event loop per call (as ``complete()`` uses) would end.
"""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from . import _protocol as proto
from ._events import Event, ModelResponse
from ._exceptions import ConfigurationError, RLMError, SessionClosedError
from ._lazy_repl import _OPEN_AFTER, _LazyREPL
from ._logging import get_logger
from ._output import OutputShape, output_shape
from ._run import Carry, Handoff, RunSettings
from ._types import ModelUsage, RLMResult, Usage
from .providers import ChatMessage
from .repl import ContextData, Corpus, REPLSession, SubCallRequest
from .repl._corpus import is_paths

__all__ = ["Session"]

_ANSWER_CHARS = 4_000
"""Characters of an earlier answer the history keeps when the reply did not contain it."""
_NO_QUERY = "Error: no query of this session is running"


class _Unset:
    """The marker of ``acomplete``'s second argument left out (``None`` means no query)."""


_UNSET = _Unset()


class _Host(Protocol):
    """What a session needs of its :class:`~rlm_sdk.RecursiveLM` (no import of it: no cycle)."""

    def _run_settings(self) -> RunSettings: ...

    async def _close_providers(self) -> None: ...

    async def _top_level(
        self,
        context: Handoff,
        query: str | None,
        *,
        on_event: Callable[[Event], None] | None,
        item: int | None = None,
        model: str | None = None,
        carry: Carry | None = None,
        output: OutputShape | None = None,
    ) -> RLMResult: ...


class _Owner:
    """The task that owns the session's worker: opens it when first wanted, closes it once.

    A ``REPLSession`` must be entered and left by the same task, and the queries' tasks come
    and go, so this one (in the session's task group) does both.
    """

    def __init__(self, open_repl: Callable[[], REPLSession]) -> None:
        self._open: Callable[[], REPLSession] | None = open_repl
        self.wanted = anyio.Event()
        self.repl: REPLSession | None = None
        self.error: Exception | None = None
        self.gone = anyio.Event()
        self._ready = anyio.Event()
        self._closing = anyio.Event()

    async def own(self) -> None:
        try:
            await self.wanted.wait()
            if self._closing.is_set() or self._open is None:
                return
            opener, self._open = self._open, None  # it holds the first context: let it go
            async with opener() as repl:
                del opener
                self.repl = repl
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:  # the caller of get() hears it
            self.error = exc
        finally:
            self.repl = None
            self._open = None
            self._ready.set()
            self.gone.set()

    async def get(self) -> REPLSession:
        self.wanted.set()
        await self._ready.wait()
        if self.repl is None:
            if self.error is not None:
                raise self.error
            raise SessionClosedError("the session's REPL is closed")
        return self.repl

    @property
    def isolation(self) -> list[str]:
        return [] if self.repl is None else self.repl.isolation_layers

    def close(self) -> None:
        self._closing.set()
        self.wanted.set()


class _QueryREPL(_LazyREPL):
    """One query's view of the session's REPL: held for the run, never closed by it."""

    def __init__(self, owner: _Owner) -> None:
        super().__init__()
        self._owner = owner

    def start(self, tg: anyio.abc.TaskGroup, open_session: Callable[[], REPLSession]) -> None:
        tg.start_soon(self._hold)

    async def _hold(self) -> None:
        try:
            if self._owner.repl is None and not self._owner.wanted.is_set():
                # Not open yet: open it as a fresh run would, while the first call is out.
                with anyio.move_on_after(_OPEN_AFTER):
                    await self.wanted.wait()
                await anyio.lowlevel.checkpoint()
                if not self._released.is_set():
                    self._owner.wanted.set()
            await self._released.wait()
        except anyio.get_cancelled_exc_class():
            return
        finally:
            self.isolation = self._owner.isolation

    async def get(self) -> REPLSession:
        self.wanted.set()
        return await self._owner.get()


class Session:
    """A conversation with a :class:`~rlm_sdk.RecursiveLM`: queries that share one REPL.

    Made by :meth:`RecursiveLM.session`; enter it (``async with``, or ``with`` for the sync
    twin) before the first query. Queries run one at a time, in the order they are made.

    Attributes:
        id: a random id for logs and front ends.
        results: every query's result, in order (failed queries' partial results are in
            their errors, and in :attr:`usage`).
        contexts: the REPL names of the contexts given so far (``context``, ``context_1``...).
    """

    def __init__(self, host: _Host, *, idle_timeout: float | None = None) -> None:
        if idle_timeout is not None and not (idle_timeout > 0 and math.isfinite(idle_timeout)):
            raise ConfigurationError("idle_timeout must be a positive number of seconds")
        self._host = host
        self.idle_timeout = idle_timeout
        self.id = uuid.uuid4().hex[:16]
        self.results: list[RLMResult] = []
        self.contexts: list[str] = []
        self._described: list[str] = []
        self._spent: list[Usage] = []
        self._history: list[ChatMessage] = []
        self._owner: _Owner | None = None
        self._carry: Carry | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()
        self._busy = False
        self._last = 0.0
        self._closed: str | None = None
        self._closed_event: anyio.Event | None = None
        self._entered = False
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None = None
        self._held: AbstractContextManager[Session] | None = None
        self._log = get_logger(session=self.id)

    # --- state -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the session is closed (by :meth:`aclose` or its idle timeout)."""
        return self._closed is not None

    @property
    def pid(self) -> int | None:
        """The REPL worker's process id while one runs."""
        owner = self._owner
        return None if owner is None or owner.repl is None else owner.repl.pid

    @property
    def usage(self) -> Usage:
        """Calls, tokens and cost over every query so far, failed ones included."""
        total = Usage()
        for usage in self._spent:
            for model, part in usage.models.items():
                into = total.models.setdefault(model, ModelUsage())
                for name, value in part:
                    mine = getattr(into, name)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        setattr(into, name, value if mine is None else mine + value)
        return total

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise ConfigurationError("a session can be entered only once")
        self._entered = True
        self._closed_event = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._last = anyio.current_time()
        if self.idle_timeout is not None:
            self._tg.start_soon(self._watch_idle, self.idle_timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session: its worker is killed and reaped before this returns; idempotent."""
        self._close("closed by its owner")
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()  # the idle watcher; the owner closes shielded
            await tg.__aexit__(None, None, None)

    async def wait_closed(self) -> None:
        """Wait until the session closes: :meth:`aclose`, or its idle timeout.

        Raises:
            SessionClosedError: the session was never entered.
        """
        if self._closed_event is None:
            raise SessionClosedError("enter the session first: `async with rlm.session() as s:`")
        await self._closed_event.wait()

    def _close(self, why: str) -> None:
        if self._closed is None:
            self._closed = why
            self._log.debug("rlm.session_closed", reason=why, queries=len(self.results))
        if self._owner is not None:
            self._owner.close()
        if self._closed_event is not None:
            self._closed_event.set()

    async def _watch_idle(self, idle: float) -> None:
        while self._closed is None:
            if self._busy:  # the clock starts again when the query ends
                await anyio.sleep(idle)
                continue
            left = self._last + idle - anyio.current_time()
            if left <= 0:
                self._close(f"idle for more than {idle:g} s")
                return
            await anyio.sleep(left)

    # --- queries -----------------------------------------------------------------------

    async def acomplete(
        self,
        context_or_query: ContextData | str | None,
        query: str | _Unset | None = _UNSET,
        *,
        on_event: Callable[[Event], None] | None = None,
        output_type: Any = None,
    ) -> RLMResult:
        """Ask the next query: ``acomplete(query)`` goes on over the contexts so far;
        ``acomplete(context, query)`` brings a new one (``context`` for the first,
        ``context_1``, ``context_2``... after it; ``query=None``: the context states the task).
        ``output_type`` types this query's answer, as in :meth:`RecursiveLM.acomplete`.

        Raises:
            SessionClosedError: the session is closed, or was never entered.
            ConfigurationError: no query and no new context, or an ``output_type`` that
                cannot be validated.
            OutputValidationError: no answer matched ``output_type``.
            REPLError: a new context could not be loaded into the worker.
            LimitExceededError, ProviderError, ...: as :meth:`RecursiveLM.acomplete`.
        """
        context: Any
        if isinstance(query, _Unset):  # one argument: the query
            context, text = None, context_or_query
            if not isinstance(text, str):
                raise ConfigurationError("a follow-up without a new context takes a str query")
        else:
            context, text = context_or_query, query
        del context_or_query
        if context is None and text is None:
            raise ConfigurationError("a query needs a question or a new context")
        shape = None if output_type is None else output_shape(output_type)
        handoff = Handoff(context)
        del context
        async with self._lock:
            self._check_open()
            self._busy = True
            try:
                return await self._query(handoff, text, on_event, shape)
            finally:
                self._busy = False
                self._carry = None
                self._last = anyio.current_time()

    def complete(
        self,
        context_or_query: ContextData | str | None,
        query: str | _Unset | None = _UNSET,
        *,
        on_event: Callable[[Event], None] | None = None,
        output_type: Any = None,
    ) -> RLMResult:
        """Sync twin of :meth:`acomplete`, for a session entered with ``with``."""
        portal = self._portal
        if portal is None:
            raise ConfigurationError(
                "complete() needs a session entered with `with rlm.session() as s:`; "
                "in async code use `async with` and `await s.acomplete(...)`"
            )
        call = functools.partial(
            self.acomplete, context_or_query, query, on_event=on_event, output_type=output_type
        )
        return portal.call(call)

    def _check_open(self) -> None:
        if not self._entered:
            raise SessionClosedError("enter the session first: `async with rlm.session() as s:`")
        if self._closed is not None:
            raise SessionClosedError(f"the session is closed ({self._closed})")

    async def _query(
        self,
        handoff: Handoff,
        query: str | None,
        on_event: Callable[[Event], None] | None,
        output: OutputShape | None,
    ) -> RLMResult:
        context: Any = handoff.take()
        if is_paths(context):  # files on disk: list them (a folder walk) off the loop
            context = await anyio.to_thread.run_sync(Corpus, context)
        new: str | None = None
        if self._owner is None:  # the first query: its context (if any) is `context`
            self._start(context)
        elif context is not None:
            new = f"context_{len(self.contexts)}"
            description = proto.describe_context(context)
            repl = await self._owner.get()
            await repl.add_context(new, context)
            self.contexts.append(new)
            self._described.append(description)
        del context
        assert self._owner is not None
        carry = Carry(
            repl=_QueryREPL(self._owner),
            history=list(self._history),
            description=self._description(),
            prompt=self._prompt(query, new),
        )
        self._carry = carry
        final: list[str] = []

        def sink(event: Event) -> None:
            root = isinstance(event, ModelResponse) and event.depth == 0
            if root and event.purpose != "compaction":  # type: ignore[union-attr]
                final[:] = [event.text]  # type: ignore[union-attr]
            if on_event is not None:
                on_event(event)

        try:
            result = await self._host._top_level(
                Handoff(None),  # type: ignore[arg-type]  # the REPL holds the contexts
                query,
                on_event=sink,
                carry=carry,
                output=output,
            )
        except RLMError as err:
            if err.result is not None:
                self._spent.append(err.result.usage)
            raise
        self._spent.append(result.usage)
        self.results.append(result)
        self._history = [*carry.messages[1:], _last_reply(final, result.answer)]
        return result

    def _start(self, context: ContextData | None) -> None:
        """The first query: the owner of the worker, which opens it when a run wants it."""
        settings = self._host._run_settings()
        self.contexts.append("context")
        self._described.append(proto.describe_context(context))
        handoff = Handoff(context) if context is not None else None
        del context

        def open_repl() -> REPLSession:
            return REPLSession(
                None if handoff is None else handoff.take(),
                handler=self._dispatch,
                tools=settings.tools,
                options=settings.repl,
                forkserver=settings.forkserver,
            )

        self._owner = _Owner(open_repl)
        assert self._tg is not None
        self._tg.start_soon(self._owner.own)

    async def _dispatch(self, request: SubCallRequest) -> list[str]:
        """The worker's sub-calls go to the query running now."""
        carry = self._carry
        if carry is None or carry.handler is None:
            return [_NO_QUERY] * len(request.prompts)
        answers: list[str] = await carry.handler(request)
        return answers

    def _description(self) -> str:
        """What the system prompt says of the contexts (it reads: `context` (this))."""
        text = self._described[0]
        if len(self.contexts) > 1:
            later = "; ".join(
                f"`{name}` ({what})"
                for name, what in zip(self.contexts[1:], self._described[1:], strict=True)
            )
            text += f"). Later queries of this conversation added {later} (same REPL"
        if self.results:
            text += (
                "; the REPL is kept for the whole conversation, so what earlier code "
                "defined is still there: SHOW_VARS() lists it"
            )
        return text

    def _prompt(self, query: str | None, new: str | None) -> str:
        """The user message of this query."""
        if not self.results:
            return proto.build_user_prompt(query)
        if query is None:
            head = f"A follow-up in the same conversation: the new context `{new}` states the task."
        else:
            head = f"A follow-up query in the same conversation: {query}"
        added = f" It comes with a new context, `{new}`." if new is not None and query else ""
        return (
            f"{head}{added}\n\nThe REPL still holds `context` and everything your code defined "
            "for earlier queries. Work in the REPL as before, then give the final answer."
        )

    # --- the sync twin -------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise ConfigurationError(
                "`with rlm.session()` cannot be used in a running event loop; "
                "use `async with rlm.session() as s:` instead"
            )
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:  # entered and left by one task of the portal, as a task group must be
            self._held = self._portal.wrap_async_context_manager(_SyncHold(self))
            self._held.__enter__()
        except BaseException:
            self._leave_portal()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Sync twin of :meth:`aclose` (closes this session's connections too)."""
        held, self._held = self._held, None
        if self._portal is None or held is None:
            return
        try:
            held.__exit__(None, None, None)
        finally:
            self._leave_portal()

    def _leave_portal(self) -> None:
        cm, self._portal_cm, self._portal = self._portal_cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)


class _SyncHold:
    """The sync twin's session, entered and left in one task of its event loop."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def __aenter__(self) -> Session:
        return await self._session.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._session.aclose()
        finally:
            await self._session._host._close_providers()  # they belong to this event loop


def _last_reply(final: list[str], answer: str | None) -> ChatMessage:
    """The final reply as the history keeps it, with the answer when the reply lacked it."""
    text, _ = proto.split_reasoning(final[0]) if final else ("", None)
    text = text.strip()
    if answer is not None and answer.strip() not in text:
        note = proto.truncate_middle(answer, _ANSWER_CHARS)
        text = f"{text}\n\n(The answer given: {note})" if text else f"(The answer given: {note})"
    return ChatMessage(role="assistant", content=text or "(no answer)")
