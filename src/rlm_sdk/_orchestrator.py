"""``RecursiveLM``: the RLM loop, recursion to any depth, and the run's limits.

One run is a loop over turns: ask the root model, run the reply's ``repl`` blocks in the
run's own REPL worker, read the final answer. The orchestrator is also the handler for the
worker's sub-calls: ``llm_query`` goes to the sub model; ``rlm_query`` starts a child run one
level deeper (its own REPL worker) until ``max_depth``, where it becomes a plain call.

Everything a run tree shares (usage, budgets, the event sink, the sequence counter) lives in
one ``_Tree`` made per top-level run; nothing is shared between top-level runs but what the
user handed in (providers).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import math
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Self, TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from . import _protocol as proto
from ._batch import BatchProgress, BatchResult, iter_batch
from ._chat import Chat
from ._constants import (
    DEFAULT_CELL_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_SUBCALLS,
    DEFAULT_OUTPUT_LIMIT,
)
from ._events import (
    CellFinished,
    CellStarted,
    ChildRunStarted,
    Event,
    EventBase,
    FinalAnswer,
    LimitReached,
    ModelRequest,
    ModelResponse,
    RetryScheduled,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
    TurnFinished,
    TurnStarted,
    WorkerRestarted,
)
from ._exceptions import ConfigurationError, LimitExceededError, RLMError
from ._logging import get_logger
from ._observe import request_sent_listener, retry_listener
from ._settings import load_settings
from ._sync import run_sync
from ._types import (
    CellRecord,
    Limits,
    RLMResult,
    StopReason,
    SubCallRecord,
    Trajectory,
    TurnRecord,
    Usage,
)
from .providers import ChatMessage, CompletionRequest, CompletionResponse, Provider, resolve_model
from .repl import ContextData, ForkServer, IsolationMode, REPLSession, SubCallRequest

__all__ = ["EventHandler", "RecursiveLM"]

EventHandler = Callable[[Event], None]
"""A callback given every event of a run, synchronously, in order. Keep it fast."""

OnLimit = Literal["raise", "return"]


@dataclass
class _Tree:
    """What a top-level run shares with every run below it."""

    limits: Limits
    sinks: list[Callable[[Any], None]]
    item: int | None = None
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    model_calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    exhausted: LimitExceededError | None = None
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def check(self) -> None:
        """Raise if a budget is spent; called before every model call in the tree."""
        if self.exhausted is not None:
            raise self.exhausted
        lim = self.limits
        if lim.max_model_calls is not None and self.model_calls >= lim.max_model_calls:
            self._exhaust("model_calls", f"{self.model_calls} model calls made")
        if lim.max_tokens is not None and self.tokens >= lim.max_tokens:
            self._exhaust("tokens", f"{self.tokens:,} tokens used")
        if lim.max_cost is not None and self.cost >= lim.max_cost:
            self._exhaust("cost", f"${self.cost:.4f} spent")

    def _exhaust(self, limit: str, detail: str) -> None:
        self.exhausted = LimitExceededError(
            f"budget exhausted: {detail} (limit on {limit})", limit=limit
        )
        raise self.exhausted

    def record(self, model: str, response: CompletionResponse) -> float | None:
        """Count one call against the budgets; returns its cost (reported, or from the price table)."""
        u = response.usage
        cost = u.cost
        if cost is None and model in self.prices:
            per_prompt, per_completion = self.prices[model]
            cost = (u.prompt_tokens * per_prompt + u.completion_tokens * per_completion) / 1e6
        self.model_calls += 1
        self.tokens += u.prompt_tokens + u.completion_tokens
        if cost is not None:
            self.cost += cost
        self.usage.add(model, u.prompt_tokens, u.completion_tokens, cost)
        return cost


@dataclass
class _Run:
    """One run (the root or a child) inside a tree."""

    tree: _Tree
    run_id: str
    parent_run_id: str | None
    depth: int
    model: str
    sub_model: str
    trajectory: Trajectory
    limiter: anyio.CapacityLimiter
    cell: CellRecord | None = None
    isolation: list[str] = field(default_factory=list)

    def emit(self, cls: type[EventBase], **fields: Any) -> None:
        if not self.tree.sinks:
            return
        event = cls(
            run_id=self.run_id,
            parent_run_id=self.parent_run_id,
            depth=self.depth,
            ts=time.time(),
            seq=next(self.tree.seq),
            item=self.tree.item,
            **fields,
        )
        for sink in self.tree.sinks:
            sink(event)


class RecursiveLM:
    """An async Recursive Language Model.

    The context never enters a prompt: it is loaded into a sandboxed Python REPL worker as
    ``context``; the root model reads it with code and calls sub-models from that code.

    Args:
        model: the root model, as ``"provider:model"`` (``"openai:gpt-5-mini"``,
            ``"anthropic:claude-sonnet-4-5"``, ``"ollama:qwen3"``) or a bare name used with
            ``provider``. Defaults to ``RLM_MODEL`` from the environment or ``.env``.
        sub_model: the model behind ``llm_query`` and child runs; defaults to ``RLM_SUB_MODEL``,
            then to ``model``.
        provider: serve every model name through this provider instead of resolving the
            prefix (it is shared, not closed by this object).
        max_depth: how deep ``rlm_query`` recurses: runs exist at depths ``0 .. max_depth-1``,
            and a sub-call from the deepest run is a plain completion. ``1`` (the default)
            makes every sub-call a plain completion.
        max_iterations: turns per run before one last call asks for the best answer.
        limits: every budget at once (overrides ``max_depth`` and ``max_iterations``).
        on_limit: when a budget other than iterations runs out, ``"raise"``
            :class:`LimitExceededError` (carrying the partial result) or ``"return"`` the
            result with ``stop_reason="limit"``.
        max_concurrent_subcalls: sub-calls in flight at once per run (the batched forms).
        max_workers: top-level runs holding a REPL worker at once, to bound memory; more
            ``acomplete`` calls wait for a slot. Child runs add at most ``max_depth - 1``
            levels of ``max_concurrent_subcalls`` workers each. ``None``: no bound.
        cell_timeout: seconds one ``repl`` block may run, sub-calls included.
        output_limit: characters of cell output shown to the model per turn.
        temperature: sampling temperature passed to every model call.
        max_tokens: completion-token cap passed to every model call.
        tools: functions that live in this process and can be called from the REPL.
        prices: USD per million (prompt, completion) tokens by model string, for models
            whose provider reports no cost; used for usage and ``Limits.max_cost``.
        isolation: the REPL worker's sandbox. ``"auto"`` applies every layer the host
            supports (listed in ``RLMResult.isolation``); ``"strict"`` raises
            :class:`IsolationError` if one is missing; ``"none"`` applies only resource limits
            and is for trusted code.
        allow_network: let the model's code open network connections.
        allow_subprocess: let the model's code start processes.
        readable_paths: more paths the model's code may read.
        memory_limit: bytes of address space per worker (default: sized from the context).
        forkserver: share this fork server (which this object then does not close); by
            default the object starts its own on first use and closes it in :meth:`aclose`.
        on_event: called with every event of every run, in order (see the event types).
        verbose: render each run live in the terminal (needs ``rich``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        sub_model: str | None = None,
        provider: Provider | None = None,
        max_depth: int | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
        on_limit: OnLimit = "raise",
        max_concurrent_subcalls: int = DEFAULT_MAX_CONCURRENT_SUBCALLS,
        max_workers: int | None = None,
        cell_timeout: float = DEFAULT_CELL_TIMEOUT,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        isolation: IsolationMode = "auto",
        allow_network: bool = False,
        allow_subprocess: bool = False,
        readable_paths: Sequence[str] = (),
        memory_limit: int | None = None,
        forkserver: ForkServer | None = None,
        on_event: EventHandler | None = None,
        verbose: bool = False,
    ) -> None:
        settings = load_settings()
        model = model or settings.model
        if not model:
            raise ConfigurationError(
                "no model given: pass RecursiveLM(model='openai:gpt-5-mini') or set RLM_MODEL"
            )
        self.model = model
        self.sub_model = sub_model or settings.sub_model or model
        base = limits or Limits()
        updates: dict[str, int] = {}
        if max_depth is not None:
            updates["max_depth"] = max_depth
        if max_iterations is not None:
            updates["max_iterations"] = max_iterations
        self.limits = Limits.model_validate({**base.model_dump(), **updates})
        if on_limit not in ("raise", "return"):
            raise ConfigurationError(f"on_limit must be 'raise' or 'return', not {on_limit!r}")
        if max_concurrent_subcalls < 1:
            raise ConfigurationError("max_concurrent_subcalls must be at least 1")
        self.on_limit: OnLimit = on_limit
        self.max_concurrent_subcalls = max_concurrent_subcalls
        self.cell_timeout = cell_timeout
        self.output_limit = output_limit
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.tools = dict(tools or {})
        self._tool_docs = {_tool_signature(n, f): _first_line(f) for n, f in self.tools.items()}
        self.prices = dict(prices or {})
        self._isolation_options: dict[str, Any] = {
            "isolation": isolation,
            "allow_network": allow_network,
            "allow_subprocess": allow_subprocess,
            "readable_paths": tuple(readable_paths),
            "memory_limit": memory_limit,
        }
        if isolation not in ("auto", "strict", "none"):
            raise ConfigurationError(
                f"isolation must be 'auto', 'strict' or 'none', not {isolation!r}"
            )
        self._owns_forkserver = forkserver is None
        self._forkserver = forkserver or ForkServer()
        self.on_event = on_event
        self.verbose = verbose
        self._provider = provider
        self._owned: dict[str, Provider] = {}
        self._chat: Chat | None = None
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._slots: tuple[object, anyio.CapacityLimiter] | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the providers this object created (not one passed in) and its fork server."""
        try:
            await self._close_providers()
        finally:
            if self._owns_forkserver:  # a fresh one, unstarted, keeps this object usable
                closing, self._forkserver = self._forkserver, ForkServer()
                await closing.aclose()

    async def _close_providers(self) -> None:
        """What a sync call must close before its event loop ends: the HTTP clients.

        The fork server keeps no event-loop state, so it stays up for the next call (it dies
        with this process, or in :meth:`aclose`).
        """
        owned, self._owned = self._owned, {}
        for provider in owned.values():
            await provider.aclose()

    def _with_model(self, model: str) -> RecursiveLM:
        """A twin with another root model, sharing this one's providers."""
        twin = copy.copy(self)
        twin.model = model
        twin._chat = None
        return twin

    def _resolve(self, model: str) -> tuple[Provider, str]:
        if self._provider is not None:
            return self._provider, model
        prefix = model.split(":", 1)[0] if ":" in model else ""
        cached = self._owned.get(prefix)
        if cached is not None:
            return cached, model.split(":", 1)[1] if prefix else model
        provider, name = resolve_model(model)
        self._owned[prefix] = provider
        return provider, name

    # --- public API -----------------------------------------------------------------

    async def acomplete(
        self,
        context: ContextData,
        query: str | None = None,
        *,
        on_event: EventHandler | None = None,
    ) -> RLMResult:
        """Answer ``query`` over ``context`` and return the result.

        ``context`` is a ``str``, ``bytes``, a ``list`` of strings or JSON values, or a JSON
        ``dict``. Without ``query``, the context itself states the task.

        Raises:
            LimitExceededError: a budget ran out (with ``on_limit="raise"``); ``.result``
                holds the partial answer, usage and trajectory.
            ProviderError: the root model could not be reached after retries.
        """
        return await self._top_level(context, query, on_event=on_event, item=None)

    def complete(
        self,
        context: ContextData,
        query: str | None = None,
        *,
        on_event: EventHandler | None = None,
    ) -> RLMResult:
        """Sync twin of :meth:`acomplete` (refuses to run inside an event loop)."""

        async def main() -> RLMResult:
            try:
                return await self.acomplete(context, query, on_event=on_event)
            finally:
                await self._close_providers()  # HTTP clients belong to this call's event loop

        return run_sync(main, name="complete")

    async def astream(self, context: ContextData, query: str | None = None) -> AsyncIterator[Event]:
        """Yield every event of a run as it happens; the last one is ``RunFinished``.

        A run that fails raises its error from the iterator after the events so far.
        """
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        failure: list[BaseException] = []

        async def produce(stream: MemoryObjectSendStream[Event]) -> None:
            async with stream:
                try:
                    await self._top_level(context, query, on_event=stream.send_nowait, item=None)
                except RLMError as err:
                    failure.append(err)

        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(produce, send)
            async for event in receive:
                yield event
        if failure:
            raise failure[0]

    async def abatch(
        self,
        items: Iterable[Any],
        *,
        concurrency: int = 8,
        on_progress: Callable[[BatchProgress], None] | None = None,
        on_event: EventHandler | None = None,
    ) -> list[BatchResult]:
        """Run many items concurrently; results in input order, failures caught per item.

        ``items`` are :class:`BatchItem`, ``(context, query)`` tuples, or dicts with
        ``context`` and ``query``. Events carry the item's index in ``item``.
        """
        results: list[BatchResult] = []
        async for outcome in self.abatch_iter(
            items, concurrency=concurrency, on_progress=on_progress, on_event=on_event
        ):
            results.append(outcome)
        return sorted(results, key=lambda r: r.index)

    def batch(
        self,
        items: Iterable[Any],
        *,
        concurrency: int = 8,
        on_progress: Callable[[BatchProgress], None] | None = None,
        on_event: EventHandler | None = None,
    ) -> list[BatchResult]:
        """Sync twin of :meth:`abatch`."""

        async def main() -> list[BatchResult]:
            try:
                return await self.abatch(
                    items, concurrency=concurrency, on_progress=on_progress, on_event=on_event
                )
            finally:
                await self._close_providers()

        return run_sync(main, name="batch")

    def abatch_iter(
        self,
        items: Iterable[Any],
        *,
        concurrency: int = 8,
        on_progress: Callable[[BatchProgress], None] | None = None,
        on_event: EventHandler | None = None,
    ) -> AsyncIterator[BatchResult]:
        """Like :meth:`abatch`, yielding each result as it finishes (``as_completed`` order).

        Close it if you stop early: ``async with contextlib.aclosing(rlm.abatch_iter(...))``.
        """
        return iter_batch(
            self, items, concurrency=concurrency, on_progress=on_progress, on_event=on_event
        )

    @property
    def chat(self) -> Chat:
        """The chat-completions drop-in: ``await rlm.chat.completions.create(messages=...)``."""
        if self._chat is None:
            self._chat = Chat(self)
        return self._chat

    # --- the loop -------------------------------------------------------------------

    async def _top_level(
        self,
        context: ContextData,
        query: str | None,
        *,
        on_event: EventHandler | None,
        item: int | None,
    ) -> RLMResult:
        sinks: list[Callable[[Any], None]] = [s for s in (self.on_event, on_event) if s]
        if self.verbose:
            from ._console import ConsoleView

            sinks.append(ConsoleView().handle)
        tree = _Tree(limits=self.limits, sinks=sinks, item=item, prices=self.prices)
        started = time.perf_counter()
        run = self._new_run(tree, depth=0, parent=None, model=self.model, query=query)
        wall = self.limits.max_wall_time
        try:
            async with self._worker_slot():
                with anyio.move_on_after(wall) as scope:
                    return await self._run(run, context, query, started)
        except LimitExceededError as exhausted:
            return self._limited(run, exhausted, started)
        assert scope.cancelled_caught  # only the wall-time scope can end the block without a result
        timed_out = LimitExceededError(
            f"wall time of {wall} s exceeded", limit="wall_time", max_wall_time=wall
        )
        return self._limited(run, timed_out, started)

    @contextlib.asynccontextmanager
    async def _worker_slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_workers`` slots for a top-level run (no bound when None)."""
        if self.max_workers is None:
            yield
            return
        token = anyio.lowlevel.current_token()
        if self._slots is None or self._slots[0] != token:
            self._slots = (token, anyio.CapacityLimiter(self.max_workers))
        async with self._slots[1]:
            yield

    def _limited(self, run: _Run, err: LimitExceededError, started: float) -> RLMResult:
        run.emit(LimitReached, limit=err.limit, detail=str(err))
        result = self._result(run, None, "limit", started, error=str(err))
        run.emit(RunFinished, result=result)
        err.result = result
        if self.on_limit == "raise":
            raise err
        return result

    def _new_run(
        self, tree: _Tree, *, depth: int, parent: str | None, model: str, query: str | None
    ) -> _Run:
        run_id = uuid.uuid4().hex[:16]
        return _Run(
            tree=tree,
            run_id=run_id,
            parent_run_id=parent,
            depth=depth,
            model=model,
            sub_model=self.sub_model,
            trajectory=Trajectory(
                run_id=run_id, parent_run_id=parent, depth=depth, model=model, query=query
            ),
            limiter=anyio.CapacityLimiter(self.max_concurrent_subcalls),
        )

    def _result(
        self,
        run: _Run,
        answer: str | None,
        reason: StopReason,
        started: float,
        *,
        error: str | None = None,
    ) -> RLMResult:
        run.trajectory.answer = answer
        run.trajectory.stop_reason = reason
        return RLMResult(
            answer=answer,
            stop_reason=reason,
            iterations=len(run.trajectory.turns),
            wall_time_s=time.perf_counter() - started,
            usage=run.tree.usage.model_copy(deep=True),
            trajectory=run.trajectory,
            isolation=run.isolation,
            error=error,
        )

    async def _run(
        self, run: _Run, context: ContextData, query: str | None, started: float
    ) -> RLMResult:
        log = get_logger(run_id=run.run_id, depth=run.depth)
        description = proto.describe_context(context)
        run.trajectory.context_description = description
        can_recurse = run.depth + 1 < self.limits.max_depth
        messages = [
            ChatMessage(
                role="system",
                content=proto.build_system_prompt(
                    description,
                    sub_model=run.sub_model,
                    can_recurse=can_recurse,
                    tools=self._tool_docs,
                ),
            ),
            ChatMessage(role="user", content=proto.build_user_prompt(query)),
        ]
        run.emit(
            RunStarted,
            model=run.model,
            sub_model=run.sub_model,
            query=query,
            context_description=description,
            max_iterations=self.limits.max_iterations,
            max_depth=self.limits.max_depth,
        )
        log.info("rlm.run_started", model=run.model)

        async def handler(request: SubCallRequest) -> list[str]:
            return await self._handle_subcalls(run, request)

        # The first request goes out before the worker is forked and the context encoded, so
        # both happen while the model thinks instead of delaying it.
        run.emit(TurnStarted, iteration=1)
        first = _Pending[CompletionResponse]()
        with _single_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.run, self._first_call(run, messages, first.sent))
                with anyio.move_on_after(_FIRST_SEND_WAIT):
                    await first.sent.wait()
                # One turn of the event loop first: runs started together get their first
                # requests out before any of them starts its worker.
                await anyio.lowlevel.checkpoint()
                async with REPLSession(
                    context,
                    handler=handler,
                    tools=self.tools,
                    forkserver=self._forkserver,
                    cell_timeout=self.cell_timeout,
                    output_limit=self.output_limit,
                    **self._isolation_options,
                ) as repl:
                    answer, reason = await self._turns(run, repl, messages, first)
                    run.isolation = repl.isolation_layers
        run.emit(FinalAnswer, answer=answer or "", source=reason)
        result = self._result(run, answer, reason, started)
        run.emit(RunFinished, result=result)
        log.info("rlm.run_finished", stop_reason=reason, iterations=result.iterations)
        return result

    async def _first_call(
        self, run: _Run, messages: list[ChatMessage], sent: anyio.Event
    ) -> CompletionResponse:
        token = request_sent_listener.set(sent.set)
        try:
            return await self._call_model(run, run.model, messages, "turn")
        finally:
            request_sent_listener.reset(token)

    async def _turns(
        self,
        run: _Run,
        repl: REPLSession,
        messages: list[ChatMessage],
        first: _Pending[CompletionResponse],
    ) -> tuple[str | None, StopReason]:
        """The turn loop; returns the answer and why the run ended."""
        answer: str | None = None
        reason: StopReason = "max_iterations"
        for iteration in range(1, self.limits.max_iterations + 1):
            if iteration == 1:
                response = await first.result()
            else:
                run.emit(TurnStarted, iteration=iteration)
                response = await self._call_model(run, run.model, messages, "turn")
            turn = _turn_record(iteration, run.model, response)
            run.trajectory.turns.append(turn)
            parsed = proto.parse_reply(response.text)
            code_final = await self._run_cells(run, repl, turn, parsed.code_blocks)
            feedback: str | None = None
            if code_final is not None:
                answer, reason = code_final, "final_var"
            elif parsed.final is not None and parsed.final.kind == "var":
                value = await repl.get_variable(parsed.final.value)
                if value is None:
                    feedback = proto.unknown_variable_feedback(
                        parsed.final.value, await repl.list_variables()
                    )
                else:
                    answer, reason = value, "final_var"
            elif parsed.final is not None:
                answer, reason = parsed.final.value, "final_answer"
            if answer is not None:
                turn.final_answer = answer
                run.emit(TurnFinished, iteration=iteration, final_answer=answer)
                break
            if feedback is None:
                feedback = (
                    proto.format_cell_feedback(
                        [_cell_view(c) for c in turn.cells],
                        parsed.problems,
                        limit=self.output_limit,
                    )
                    if turn.cells
                    else proto.no_code_reminder(parsed.problems)
                )
            turn.feedback = feedback
            run.emit(TurnFinished, iteration=iteration, feedback=feedback)
            messages.append(ChatMessage(role="assistant", content=response.text))
            messages.append(ChatMessage(role="user", content=feedback))
        else:
            answer = await self._final_call(run, repl, messages)
            reason = "max_iterations"
        return answer, reason

    async def _run_cells(
        self, run: _Run, repl: REPLSession, turn: TurnRecord, blocks: Sequence[str]
    ) -> str | None:
        """Run a reply's blocks in order; return a final answer the code gave, if any."""
        for index, code in enumerate(blocks):
            record = CellRecord(code=code)
            turn.cells.append(record)
            run.cell = record
            run.emit(CellStarted, iteration=turn.iteration, cell=index, code=code)
            try:
                result = await repl.run_cell(code)
            finally:
                run.cell = None
            error = result.error
            record.stdout, record.stderr = result.stdout, result.stderr
            record.error_type = error.type if error else None
            record.error = _error_text(error) if error else None
            record.duration_s = result.duration_s
            record.restarted, record.timed_out = result.restarted, result.timed_out
            record.final_answer = result.final_answer
            record.notice = result.notice
            run.emit(
                CellFinished,
                iteration=turn.iteration,
                cell=index,
                **record.model_dump(exclude={"code", "sub_calls"}),
            )
            if result.restarted:
                run.emit(WorkerRestarted, reason=record.error or "the worker was restarted")
            if result.final_answer is not None:
                return result.final_answer
        return None

    async def _final_call(
        self, run: _Run, repl: REPLSession, messages: list[ChatMessage]
    ) -> str | None:
        """The iteration limit was reached: one last call for the best answer."""
        final_messages = [*messages, ChatMessage(role="user", content=proto.final_call_prompt())]
        iteration = len(run.trajectory.turns) + 1
        run.emit(TurnStarted, iteration=iteration)
        response = await self._call_model(run, run.model, final_messages, "final")
        parsed = proto.parse_reply(response.text)
        run.trajectory.turns.append(_turn_record(iteration, run.model, response))
        answer: str | None
        if parsed.final is not None and parsed.final.kind == "var":
            answer = await repl.get_variable(parsed.final.value)
        elif parsed.final is not None:
            answer = parsed.final.value
        else:
            answer = response.text.strip() or None
        run.trajectory.turns[-1].final_answer = answer
        run.emit(TurnFinished, iteration=iteration, final_answer=answer)
        return answer

    async def _call_model(
        self,
        run: _Run,
        model: str,
        messages: list[ChatMessage],
        purpose: Literal["turn", "final", "sub_call"],
    ) -> CompletionResponse:
        run.tree.check()
        provider, name = self._resolve(model)
        run.emit(ModelRequest, model=model, messages=len(messages), purpose=purpose)

        def on_retry(provider_name: str, attempt: int, delay_s: float, reason: str) -> None:
            run.emit(
                RetryScheduled,
                provider=provider_name,
                attempt=attempt,
                delay_s=delay_s,
                reason=reason,
            )

        token = retry_listener.set(on_retry)
        try:
            response = await provider.acomplete(
                CompletionRequest(
                    model=name,
                    messages=messages,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                )
            )
        finally:
            retry_listener.reset(token)
        cost = run.tree.record(model, response)
        if cost != response.usage.cost:  # priced from the user's table
            usage = response.usage.model_copy(update={"cost": cost})
            response = response.model_copy(update={"usage": usage})
        run.emit(
            ModelResponse,
            model=model,
            text=response.text,
            latency_s=response.latency_s,
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            cost=response.usage.cost,
            purpose=purpose,
        )
        return response

    # --- sub-calls ------------------------------------------------------------------

    async def _handle_subcalls(self, run: _Run, request: SubCallRequest) -> list[str]:
        """Serve one sub-call frame from the worker: every prompt, concurrently, in order."""
        results = [""] * len(request.prompts)
        cell = run.cell

        async def one(i: int, prompt: str) -> None:
            async with run.limiter:
                results[i] = await self._sub_call(run, cell, request.kind, prompt, request.model)

        if len(request.prompts) == 1:
            await one(0, request.prompts[0])
        else:
            async with anyio.create_task_group() as tg:
                for i, prompt in enumerate(request.prompts):
                    tg.start_soon(one, i, prompt)
        return results

    async def _sub_call(
        self,
        run: _Run,
        cell: CellRecord | None,
        kind: Literal["llm", "rlm"],
        prompt: str,
        model: str | None,
    ) -> str:
        model = model or run.sub_model
        call_id = uuid.uuid4().hex[:12]
        record = SubCallRecord(
            kind=kind, model=model, depth=run.depth + 1, prompt=prompt, response=""
        )
        if cell is not None:
            cell.sub_calls.append(record)
        run.emit(SubCallStarted, call_id=call_id, kind=kind, model=model, prompt=prompt)
        started = time.perf_counter()
        try:
            if kind == "rlm" and run.depth + 1 < self.limits.max_depth:
                child = self._new_run(
                    run.tree, depth=run.depth + 1, parent=run.run_id, model=model, query=None
                )
                record.child = child.trajectory
                run.emit(ChildRunStarted, call_id=call_id, child_run_id=child.run_id)
                child_result = await self._run(child, prompt, None, time.perf_counter())
                if child_result.answer is None:
                    record.error = (
                        f"the child run ended without an answer ({child_result.stop_reason})"
                    )
                    record.response = f"Error: {record.error}"
                else:
                    record.response = child_result.answer
            else:
                response = await self._call_model(
                    run, model, [ChatMessage(role="user", content=prompt)], "sub_call"
                )
                record.response = response.text
                record.prompt_tokens = response.usage.prompt_tokens
                record.completion_tokens = response.usage.completion_tokens
                record.cost = response.usage.cost
        except LimitExceededError as err:
            record.error = str(err)
            record.response = f"Error: {err}"
        except Exception as err:  # one failed sub-call never fails its siblings or the cell
            record.error = f"{type(err).__name__}: {err}"
            record.response = f"Error: {record.error}"
            if not isinstance(err, RLMError):
                get_logger(run_id=run.run_id, depth=run.depth).warning(
                    "rlm.sub_call_failed", error=record.error, model=model
                )
        record.duration_s = time.perf_counter() - started
        run.emit(
            SubCallFinished,
            call_id=call_id,
            **record.model_dump(exclude={"depth", "prompt", "child"}),
        )
        return record.response


_FIRST_SEND_WAIT = 0.05
"""Seconds the worker's start waits for the first request to be written (providers that
cannot tell when that happens just cost this much delay, hidden behind the model's latency)."""

T = TypeVar("T")


class _Pending(Generic[T]):
    """The outcome of a coroutine run as a task: awaited later, errors kept for the awaiter."""

    def __init__(self) -> None:
        self.sent = anyio.Event()
        self._done = anyio.Event()
        self._value: T | None = None
        self._error: Exception | None = None

    async def run(self, coro: Coroutine[Any, Any, T]) -> None:
        try:
            self._value = await coro
        except Exception as err:  # handed to whoever awaits the result
            self._error = err
        finally:
            self.sent.set()
            self._done.set()

    async def result(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


@contextlib.contextmanager
def _single_errors() -> Iterator[None]:
    """Let one error out of a task group as itself, not wrapped in an exception group."""
    inner: BaseException | None = None
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        inner = group.exceptions[0]
    if inner is not None:
        raise inner


def _tool_signature(name: str, fn: Callable[..., Any]) -> str:
    try:
        return f"{name}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return f"{name}(...)"


def _first_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or "a tool provided by the application"
    return doc.strip().splitlines()[0]


def _turn_record(iteration: int, model: str, response: CompletionResponse) -> TurnRecord:
    return TurnRecord(
        iteration=iteration,
        model=model,
        reply=response.text,
        latency_s=response.latency_s,
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        cost=response.usage.cost,
    )


def _error_text(error: Any) -> str:
    text = f"{error.type}: {error.message}"
    if error.traceback:
        text = (
            f"{error.traceback.rstrip()}\n{text}"
            if error.type not in error.traceback
            else error.traceback
        )
    return text


def _cell_view(cell: CellRecord) -> dict[str, Any]:
    return {
        "notice": cell.notice,
        "stdout": cell.stdout,
        "stderr": cell.stderr,
        "error": cell.error,
        "restarted": cell.restarted,
    }
