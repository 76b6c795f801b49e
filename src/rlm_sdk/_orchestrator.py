"""``RecursiveLM``: the object users hold, and the ways in to a run.

It keeps the configuration and the resources runs share (providers behind one
:class:`~rlm_sdk.providers.ModelRouter`, a fork server), and offers every way to start a
run: ``acomplete`` and its sync twin, ``astream``, batches, and the chat-completions drop-in.
Each of them ends in :func:`rlm_sdk._run.run_tree` with a snapshot of the configuration
taken when the run starts; the loop itself lives there.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, Self, TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream
from pydantic import ValidationError

from ._batch import BatchItem, BatchProgress, BatchResult, iter_batch
from ._cache import CacheStore, make_cache
from ._chat import ChatCompletion, messages_to_run, to_chat_completion
from ._constants import DEFAULT_COMPACT_AT
from ._events import Event
from ._exceptions import ConfigurationError, LimitExceededError, RLMError
from ._frontend import console_view
from ._output import (
    DEFAULT_OUTPUT_RETRIES,
    OutputCheck,
    OutputShape,
    output_json,
    output_shape,
    reply_format_shape,
)
from ._run import Carry, EventSink, Handoff, RunSettings, run_tree
from ._session import Session
from ._settings import load_settings
from ._sync import run_sync
from ._types import Limits, RLMResult
from .providers import ModelRouter, Provider, supports_tools
from .repl import ContextData, Corpus, ForkServer, IsolationMode, REPLOptions
from .repl._corpus import is_paths

__all__ = ["EventHandler", "RecursiveLM"]

EventHandler = Callable[[Event], None]
"""A callback given every event of a run, synchronously, in order. Keep it fast."""

OnLimit = Literal["raise", "return"]
CodeProtocol = Literal["fenced", "tools", "auto"]
T = TypeVar("T")


class RecursiveLM:
    """An async Recursive Language Model.

    The context never enters a prompt: it is loaded into a sandboxed Python REPL worker as
    ``context``; the root model reads it with code and calls sub-models from that code.

    Args:
        model: the root model, as ``"provider:model"`` (``"openai:gpt-5-mini"``,
            ``"anthropic:claude-sonnet-4-5"``, ``"ollama:qwen3"``) or a bare name for an
            OpenAI-compatible server. Defaults to ``RLM_MODEL`` from the environment or ``.env``.
        sub_model: the model behind ``llm_query`` and child runs; defaults to ``RLM_SUB_MODEL``,
            then to ``model``.
        provider: serve every model string, unchanged, through this provider instead of
            routing each by its prefix (it is shared, not closed by this object).
        max_depth: how deep ``rlm_query`` recurses: runs exist at depths ``0 .. max_depth-1``,
            and a sub-call from the deepest run is a plain completion. ``1`` (the default)
            makes every sub-call a plain completion. Overrides ``limits.max_depth``.
        max_iterations: turns per run before one last call asks for the best answer.
            Overrides ``limits.max_iterations``.
        limits: every budget at once (:class:`Limits`: calls, tokens, cost, wall time,
            sub-calls in flight per run).
        on_limit: when a budget other than iterations runs out, ``"raise"``
            :class:`LimitExceededError` (carrying the partial result) or ``"return"`` the
            result with ``stop_reason="limit"``.
        max_workers: top-level runs holding a REPL worker at once, to bound memory; more
            ``acomplete`` calls wait for a slot. Child runs add at most ``max_depth - 1``
            levels of ``limits.max_concurrent_subcalls`` workers each. ``None``: no bound.
        temperature: sampling temperature passed to every model call.
        max_tokens: completion-token cap passed to every model call.
        context_windows: context windows in tokens by model string or name
            (``{"ollama:qwen3:8b": 8192}``), over the table of known models
            (``rlm_sdk.context_window``). A sub-call whose prompt cannot fit its model's
            window gets an ``"Error: ..."`` answer without a call.
        compact_at: when a run's history passes this fraction of its model's window, the
            model summarises the older turns, which stay readable in the REPL as
            ``history``. ``None`` turns compaction off.
        protocol: how the model runs code and answers. ``"fenced"`` (the default): it writes
            ```` ```repl ```` blocks and ``FINAL(...)`` in text, which every chat server
            takes and real models' dialects are read from. ``"tools"``: it calls ``repl(code)``
            and ``final_answer(...)`` through the provider's tool calling, so it cannot write
            past its code and imagine the output (the provider must support tools).
            ``"auto"``: tools where the provider says it supports them, else fenced. A server
            that refuses tools switches that run to fenced text.
        tools: functions that live in this process and can be called from the REPL.
        prices: USD per million (prompt, completion) tokens by model string, for models
            whose provider reports no cost; used for usage and ``Limits.max_cost``.
        repl_options: the REPL worker's sandbox and bounds (:class:`REPLOptions`: isolation,
            network, subprocesses, readable paths, memory, ``cell_timeout``,
            ``output_limit``).
        isolation: ``"auto"`` applies every sandbox layer the host supports (listed in
            ``RLMResult.isolation``); ``"strict"`` raises :class:`IsolationError` if one is
            missing; ``"none"`` applies only resource limits and is for trusted code.
            Overrides ``repl_options.isolation``.
        forkserver: share this fork server (which this object then does not close); by
            default the object starts its own on first use and closes it in :meth:`aclose`.
        on_event: called with every event of every run, in order (see the event types).
        verbose: render each run live in the terminal (needs the ``cli`` extra: ``rich``).
        output_retries: with an ``output_type``, how many answers that do not match it the
            model may replace (each one is sent back with the reasons) before the run raises
            :class:`OutputValidationError`.
        cache: answer repeated plain sub-calls (``llm_query``, ``llm_query_batched``) from a
            store: ``True`` for a :class:`MemoryCache` of this object's own, or a store
            (:class:`MemoryCache`, :class:`SQLiteCache`, any :class:`CacheStore`) that may
            be shared. Root and child turns are never cached. ``None`` (the default): off.

    Raises:
        ConfigurationError: no model, or an invalid option.
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
        max_workers: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        context_windows: Mapping[str, int] | None = None,
        compact_at: float | None = DEFAULT_COMPACT_AT,
        protocol: CodeProtocol = "fenced",
        tools: Mapping[str, Callable[..., Any]] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        repl_options: REPLOptions | None = None,
        isolation: IsolationMode | None = None,
        forkserver: ForkServer | None = None,
        on_event: EventHandler | None = None,
        verbose: bool = False,
        output_retries: int = DEFAULT_OUTPUT_RETRIES,
        cache: bool | CacheStore | None = None,
    ) -> None:
        settings = load_settings()
        model = model or settings.model
        if not model:
            raise ConfigurationError(
                "no model given: pass RecursiveLM(model='openai:gpt-5-mini') or set RLM_MODEL"
            )
        if on_limit not in ("raise", "return"):
            raise ConfigurationError(f"on_limit must be 'raise' or 'return', not {on_limit!r}")
        if (
            isinstance(output_retries, bool)
            or not isinstance(output_retries, int)
            or output_retries < 0
        ):
            raise ConfigurationError(f"output_retries must be 0 or more, not {output_retries!r}")
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError("max_workers must be at least 1")
        if protocol not in ("fenced", "tools", "auto"):
            raise ConfigurationError(
                f"protocol must be 'fenced', 'tools' or 'auto', not {protocol!r}"
            )
        if protocol == "tools" and provider is not None and not supports_tools(provider, model):
            raise ConfigurationError(
                f"protocol='tools' needs a provider with tool calling, and {provider!r} has "
                "none; use protocol='auto' or 'fenced'"
            )
        if compact_at is not None and not 0 < compact_at < 1:
            raise ConfigurationError(f"compact_at must be between 0 and 1, not {compact_at!r}")
        if any(not isinstance(n, int) or n < 1 for n in (context_windows or {}).values()):
            raise ConfigurationError("context_windows maps model strings to positive token counts")
        self.model = model
        self.sub_model = sub_model or settings.sub_model or model
        self.limits: Limits = _validated(
            limits or Limits(), max_depth=max_depth, max_iterations=max_iterations
        )
        self.repl_options: REPLOptions = _validated(
            repl_options or REPLOptions(), isolation=isolation
        )
        self.on_limit: OnLimit = on_limit
        self.max_workers = max_workers
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.context_windows = dict(context_windows or {})
        self.compact_at = compact_at
        self.protocol: CodeProtocol = protocol
        self.tools = dict(tools or {})
        self.prices = dict(prices or {})
        self.on_event = on_event
        self.verbose = verbose
        self.output_retries = output_retries
        self._cache = make_cache(cache)
        self._router = ModelRouter() if provider is None else None
        self._provider: Provider = provider or self._router  # type: ignore[assignment]
        self._owns_forkserver = forkserver is None
        self._forkserver = forkserver or ForkServer()
        self._slots: tuple[object, anyio.CapacityLimiter] | None = None
        self.chat = Chat(self)
        """The chat-completions drop-in: ``await rlm.chat.completions.create(messages=...)``."""

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the providers this object made (not one passed in) and its fork server."""
        try:
            await self._close_providers()
        finally:
            if self._owns_forkserver:  # a fresh one, unstarted, keeps this object usable
                closing, self._forkserver = self._forkserver, ForkServer()
                await closing.aclose()

    async def _close_providers(self) -> None:
        """What a sync call must close before its event loop ends: the HTTP connections.

        The fork server keeps no event-loop state, so it stays up for the next call (it dies
        with this process, or in :meth:`aclose`).
        """
        if self._router is not None:
            await self._router.aclose()

    def _sync(self, fn: Callable[[], Awaitable[T]], name: str, async_name: str | None = None) -> T:
        """Run ``fn`` on a fresh event loop, closing this loop's connections after it."""

        async def main() -> T:
            try:
                return await fn()
            finally:
                await self._close_providers()  # connections belong to this call's event loop

        return run_sync(main, name=name, async_name=async_name)

    # --- public API -----------------------------------------------------------------

    async def acomplete(
        self,
        context: ContextData,
        query: str | None = None,
        *,
        on_event: EventHandler | None = None,
        output_type: Any = None,
    ) -> RLMResult:
        """Answer ``query`` over ``context`` and return the result.

        ``context`` is a ``str``, ``bytes``, a ``list`` of strings or JSON values, or a JSON
        ``dict``. Without ``query``, the context itself states the task.

        ``output_type`` (a pydantic model, a ``TypedDict``, another type pydantic validates,
        or a JSON Schema ``dict``) is shown to the model, and the answer must match it:
        ``result.output`` is then the typed value, and ``result.answer`` the raw text. An
        answer that does not match goes back to the model with the reasons, up to
        ``output_retries`` times.

        Raises:
            LimitExceededError: a budget ran out (with ``on_limit="raise"``); ``.result``
                holds the partial answer, usage and trajectory.
            OutputValidationError: no answer matched ``output_type``; it carries the last
                value and its problems.
            ProviderError: the root model could not be reached after retries; ``.result``
                holds what the run had done.
            REPLError, IsolationError: the REPL worker failed or cannot be sandboxed.
            ConfigurationError: ``output_type`` cannot be validated (raised at once).
        """
        handoff = Handoff(context)
        del context  # the run's REPL holds it, and lets it go once the worker has it
        shape = _shape(output_type)
        return await self._top_level(handoff, query, on_event=on_event, output=shape)

    def complete(
        self,
        context: ContextData,
        query: str | None = None,
        *,
        on_event: EventHandler | None = None,
        output_type: Any = None,
    ) -> RLMResult:
        """Sync twin of :meth:`acomplete` (refuses to run inside an event loop)."""
        handoff = Handoff(context)
        del context  # this frame sits above the event loop: it must not keep the context
        shape = _shape(output_type)
        return self._sync(
            lambda: self._top_level(handoff, query, on_event=on_event, output=shape), "complete"
        )

    async def astream(
        self, context: ContextData, query: str | None = None, *, output_type: Any = None
    ) -> AsyncIterator[Event]:
        """Yield every event of a run as it happens; the last one is ``RunFinished``.

        A run that fails raises its error from the iterator after the events so far.
        ``output_type`` is as in :meth:`acomplete`.
        """
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        failure: list[BaseException] = []
        handoff = Handoff(context)
        del context
        shape = _shape(output_type)

        async def produce(stream: MemoryObjectSendStream[Event]) -> None:
            async with stream:
                try:
                    await self._top_level(handoff, query, on_event=stream.send_nowait, output=shape)
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
        output_type: Any = None,
    ) -> list[BatchResult]:
        """Run many items concurrently; results in input order, failures caught per item.

        ``items`` are :class:`BatchItem`, ``(context, query)`` tuples, or dicts with
        ``context`` and ``query``. Events carry the item's index in ``item``.
        ``output_type`` (as in :meth:`acomplete`) applies to every item but those whose
        :class:`BatchItem` names their own.
        """
        results: list[BatchResult] = []
        async for outcome in self.abatch_iter(
            items,
            concurrency=concurrency,
            on_progress=on_progress,
            on_event=on_event,
            output_type=output_type,
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
        output_type: Any = None,
    ) -> list[BatchResult]:
        """Sync twin of :meth:`abatch`."""
        return self._sync(
            lambda: self.abatch(
                items,
                concurrency=concurrency,
                on_progress=on_progress,
                on_event=on_event,
                output_type=output_type,
            ),
            "batch",
        )

    def abatch_iter(
        self,
        items: Iterable[Any],
        *,
        concurrency: int = 8,
        on_progress: Callable[[BatchProgress], None] | None = None,
        on_event: EventHandler | None = None,
        output_type: Any = None,
    ) -> AsyncIterator[BatchResult]:
        """Like :meth:`abatch`, yielding each result as it finishes (``as_completed`` order).

        Close it if you stop early: ``async with contextlib.aclosing(rlm.abatch_iter(...))``.
        """
        shared = _shape(output_type)  # compiled once for the batch; a bad one raises now

        async def run_one(item: BatchItem, index: int) -> RLMResult:
            shape = shared if item.output_type is None else _shape(item.output_type)
            return await self._top_level(
                Handoff(item.context), item.query, on_event=on_event, item=index, output=shape
            )

        return iter_batch(run_one, items, concurrency=concurrency, on_progress=on_progress)

    def session(self, *, idle_timeout: float | None = None) -> Session:
        """A conversation: one REPL worker kept between queries, and the turns remembered.

        ``async with rlm.session() as s:`` (or ``with`` for the sync twin, ``s.complete``);
        ``await s.acomplete(context, query)``, then ``await s.acomplete(follow_up)``. A
        session idle for ``idle_timeout`` seconds closes itself and reaps its worker.
        """
        return Session(self, idle_timeout=idle_timeout)

    # --- the way in to every run -------------------------------------------------------

    async def _top_level(
        self,
        context: Handoff,
        query: str | None,
        *,
        on_event: EventHandler | None,
        item: int | None = None,
        model: str | None = None,
        carry: Carry | None = None,
        output: OutputShape | None = None,
    ) -> RLMResult:
        sinks: list[EventSink] = [s for s in (self.on_event, on_event) if s]
        if self.verbose:
            sinks.append(console_view().handle)
        if is_paths(context.peek()):  # files on disk: list them (a folder walk) off the loop
            paths: Any = context.take()
            context = Handoff(await anyio.to_thread.run_sync(Corpus, paths))
        async with self._worker_slot():
            try:
                return await run_tree(
                    self._run_settings(),
                    context,
                    query,
                    sinks=sinks,
                    item=item,
                    model=model,
                    carry=carry,
                    output=None if output is None else OutputCheck(output, self.output_retries),
                )
            except LimitExceededError as exhausted:
                if self.on_limit == "return" and exhausted.result is not None:
                    return exhausted.result
                raise

    def _run_settings(self) -> RunSettings:
        """This object's configuration now, for one top-level run (later changes don't reach it)."""
        return RunSettings(
            model=self.model,
            sub_model=self.sub_model,
            provider=self._provider,
            limits=self.limits,
            repl=self.repl_options,
            forkserver=self._forkserver,
            tools=dict(self.tools),
            tool_docs={_tool_signature(n, f): _first_line(f) for n, f in self.tools.items()},
            prices=dict(self.prices),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            context_windows=dict(self.context_windows),
            compact_at=self.compact_at,
            protocol=self.protocol,
            cache=self._cache,
        )

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


class Completions:
    """``create`` and ``create_sync``, shaped like the OpenAI client's."""

    def __init__(self, rlm: RecursiveLM) -> None:
        self._rlm = rlm

    async def create(
        self,
        *,
        messages: Iterable[Mapping[str, Any]],
        model: str | None = None,
        context: ContextData | None = None,
        response_format: Any = None,
        **_ignored: Any,
    ) -> ChatCompletion:
        """Run the RLM on a chat request; extra OpenAI parameters are accepted and ignored.

        The last ``user`` message is the query, the messages before it the context (unless
        ``context`` is given); ``model`` replaces the root model for this call.
        ``response_format`` is OpenAI's (``{"type": "json_schema", "json_schema": {"name":
        ..., "schema": {...}}}``, ``{"type": "json_object"}``) or an ``output_type``: the
        answer must match it, and the message's content is the typed answer as JSON.
        """
        shape = reply_format_shape(response_format)
        derived_context, query = messages_to_run(messages)
        handoff = Handoff(derived_context if context is None else context)
        del derived_context, context
        result = await self._rlm._top_level(
            handoff, query, on_event=None, model=model, output=shape
        )
        content = None if shape is None or result.answer is None else output_json(result.output)
        return to_chat_completion(result, model or self._rlm.model, content=content)

    def create_sync(
        self,
        *,
        messages: Iterable[Mapping[str, Any]],
        model: str | None = None,
        context: ContextData | None = None,
        response_format: Any = None,
        **ignored: Any,
    ) -> ChatCompletion:
        """Sync twin of :meth:`create`."""
        return self._rlm._sync(
            lambda: self.create(
                messages=messages,
                model=model,
                context=context,
                response_format=response_format,
                **ignored,
            ),
            "create_sync",
            "create",
        )


class Chat:
    """``rlm.chat.completions.create(...)``, the OpenAI client's spelling."""

    def __init__(self, rlm: RecursiveLM) -> None:
        self.completions = Completions(rlm)


def _shape(output_type: Any) -> OutputShape | None:
    """``output_type`` compiled (``None``: the answer is plain text)."""
    return None if output_type is None else output_shape(output_type)


def _validated(base: Any, **overrides: Any) -> Any:
    """``base`` (a pydantic model) with the given keywords that are not None, validated."""
    updates = {k: v for k, v in overrides.items() if v is not None}
    if not updates:
        return base
    try:
        return type(base).model_validate({**base.model_dump(), **updates})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid option: {problems}") from err


def _tool_signature(name: str, fn: Callable[..., Any]) -> str:
    try:
        return f"{name}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return f"{name}(...)"


def _first_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or "a tool provided by the application"
    return doc.strip().splitlines()[0]
