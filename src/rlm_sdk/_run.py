"""One run tree: the turn loop, the REPL it drives, and sub-calls down to any depth.

A run is a loop over turns, every turn the same: ask the root model, run the reply's
``repl`` blocks in the run's own REPL worker, read the final answer or tell the model what
the code printed. The run is also the handler of its worker's sub-calls: ``llm_query`` is a
plain model call; ``rlm_query`` starts a child run, one level deeper with its own worker,
while the budget allows recursion.

What a top-level run shares with every run below it is one :class:`_Tree`: the settings it
started with, the :class:`~rlm_sdk._budget.Budget` (every limit, enforced there), and the
event sink. Every event goes to a :class:`~rlm_sdk._trajectory.TrajectoryBuilder` first,
and the trajectory a result holds is the one that builder made: there is no second record.

The worker starts while the first model call is in flight. Each run's REPL is opened by a
task of its own (:class:`_LazyREPL`) once the run's first request is on the wire; turns
only ever ask it for the session, so no turn is special.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from . import _protocol as proto
from . import _window as window
from ._budget import Budget
from ._cache import SubCallCache, through_cache
from ._cells import cell_view, error_text
from ._compaction import HistoryWindow, sub_call_chars
from ._constants import DEFAULT_COMPACT_AT, MAX_EMPTY_REPLIES
from ._conversation import Conversation, Dialect
from ._events import (
    CellFinished,
    CellStarted,
    ChildRunStarted,
    ConfirmationAsked,
    Event,
    EventBase,
    FinalAnswer,
    LimitReached,
    ModelRequest,
    ModelResponse,
    ReplyParsed,
    RetryScheduled,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
    TurnFinished,
    TurnStarted,
    WorkerRestarted,
)
from ._exceptions import (
    APIStatusError,
    ConfigurationError,
    EmptyReplyError,
    LimitExceededError,
    RLMError,
    SingleErrors,
)
from ._lazy_repl import _LazyREPL
from ._logging import get_logger
from ._observe import current_observer
from ._output import OutputCheck
from ._trajectory import TrajectoryBuilder
from ._types import Limits, RLMResult, StopReason, Usage
from .providers import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    Provider,
    ToolSpec,
    supports_tools,
)
from .repl import CellResult, ContextData, ForkServer, REPLOptions, REPLSession, SubCallRequest

__all__ = ["Carry", "Handoff", "RunSettings", "run_tree"]

EventSink = Callable[[Event], None]


class Handoff:
    """A run's context, passed down to the one place that consumes it, and held nowhere else.

    A context may be a gigabyte. A frame that names it as a local keeps it alive as long as
    the frame lives, and a frame caught in a reference cycle (an exception's traceback, which
    cancelled tasks create in asyncio and anyio) lives until the cyclic garbage collector
    runs, with every frame above it on the stack: a script calling ``complete()`` once per
    document would grow by a document per call. So each entry point wraps the context in a
    handoff and deletes its own name for it; the run's REPL takes it out when it opens, and
    drops it once the worker's memfd holds it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: ContextData) -> None:
        self._value: ContextData | None = value

    def peek(self) -> ContextData | None:
        return self._value

    def take(self) -> ContextData | None:
        value, self._value = self._value, None
        return value


@dataclass(frozen=True)
class RunSettings:
    """What a top-level run reads from its :class:`~rlm_sdk.RecursiveLM`, fixed at its start."""

    model: str
    sub_model: str
    provider: Provider
    limits: Limits
    repl: REPLOptions
    forkserver: ForkServer
    tools: Mapping[str, Callable[..., Any]]
    tool_docs: Mapping[str, str]
    prices: Mapping[str, tuple[float, float]]
    temperature: float | None = None
    max_tokens: int | None = None
    context_windows: Mapping[str, int] = field(default_factory=dict)
    """The user's context windows by model string or name, over the known ones."""
    compact_at: float | None = DEFAULT_COMPACT_AT
    """Compact a run's history when it passes this fraction of the model's window."""
    protocol: Literal["fenced", "tools", "auto"] = "fenced"
    """How the model runs code: fenced blocks, the REPL as a tool, or tools where supported."""
    cache: SubCallCache | None = None
    """Where plain sub-calls are looked up and stored (``RecursiveLM(cache=...)``)."""


@dataclass
class _Tree:
    """What every run of one top-level run shares."""

    settings: RunSettings
    budget: Budget
    sinks: Sequence[EventSink]
    item: int | None
    trajectories: TrajectoryBuilder = field(default_factory=TrajectoryBuilder)
    tools_refused: set[str] = field(default_factory=set)
    """Models whose server refused tools in this tree: later runs use fenced text at once."""
    seq: itertools.count[int] = field(default_factory=itertools.count)


@dataclass
class Carry:
    """What a session's query brings to its root run (see ``_session.py``): the session's
    REPL in place of a fresh one, the conversation so far (after the system prompt), what the
    prompts say; ``messages`` and ``handler`` are the run's, set when it starts."""

    repl: _LazyREPL
    history: list[ChatMessage]
    description: str
    prompt: str
    messages: list[ChatMessage] = field(default_factory=list)
    handler: Callable[[SubCallRequest], Any] | None = None


class _Run:
    """One run (the root or a child) of a tree; it observes its own model calls."""

    def __init__(self, tree: _Tree, *, depth: int, parent: str | None, model: str) -> None:
        self.tree = tree
        self.run_id = os.urandom(8).hex()
        self.parent_run_id = parent
        self.depth = depth
        self.model = model
        self.repl = _LazyREPL()
        self.subcalls = anyio.CapacityLimiter(tree.settings.limits.max_concurrent_subcalls)
        self.result: RLMResult | None = None
        self.output: OutputCheck | None = None
        """The root's check of its answers against ``output_type`` (``_output.py``)."""
        self.log = get_logger(run_id=self.run_id, depth=depth)

    def emit(self, cls: type[EventBase], **fields: Any) -> None:
        tree = self.tree
        event: Any = cls(
            run_id=self.run_id,
            parent_run_id=self.parent_run_id,
            depth=self.depth,
            ts=time.time(),
            seq=next(tree.seq),
            item=tree.item,
            **fields,
        )
        tree.trajectories(event)
        for sink in tree.sinks:
            sink(event)

    # the CallObserver protocol (rlm_sdk._observe)
    def retry_scheduled(self, provider: str, attempt: int, delay_s: float, reason: str) -> None:
        self.emit(
            RetryScheduled, provider=provider, attempt=attempt, delay_s=delay_s, reason=reason
        )

    def request_sent(self) -> None:
        self.repl.wanted.set()


class _SubCallObserver:
    """Observes a sub-call's model call for its run, so that its retries name the sub-call."""

    __slots__ = ("call_id", "run")

    def __init__(self, run: _Run, call_id: str) -> None:
        self.run = run
        self.call_id = call_id

    def retry_scheduled(self, provider: str, attempt: int, delay_s: float, reason: str) -> None:
        self.run.emit(
            RetryScheduled,
            provider=provider,
            attempt=attempt,
            delay_s=delay_s,
            reason=reason,
            call_id=self.call_id,
        )

    def request_sent(self) -> None:
        self.run.request_sent()


async def run_tree(
    settings: RunSettings,
    context: Handoff,
    query: str | None,
    *,
    sinks: Sequence[EventSink],
    item: int | None,
    model: str | None = None,
    carry: Carry | None = None,
    output: OutputCheck | None = None,
) -> RLMResult:
    """Run a top-level run (``model`` overrides the settings' root model) and its tree;
    ``output`` checks the root's answers (a failed check raises ``OutputValidationError``).

    Raises:
        LimitExceededError: a budget ran out; ``.result`` is the partial result.
        RLMError: the run failed (provider, worker); ``.result`` is the partial result.
    """
    tree = _Tree(settings, Budget(settings.limits, settings.prices), sinks, item)
    root = _Run(tree, depth=0, parent=None, model=model or settings.model)
    root.output = output
    if carry is not None:  # a session's query: its REPL stays open, and routes here
        root.repl = carry.repl
        carry.handler = lambda request: _sub_calls(root, request)
    try:
        with tree.budget.wall_clock():
            return await _run(root, context, query, carry)
    except LimitExceededError as err:
        err.result = root.result
        raise


async def _run(
    run: _Run, context: Handoff, query: str | None, carry: Carry | None = None
) -> RLMResult:
    """One run, from ``RunStarted`` to ``RunFinished`` (emitted however it ends)."""
    started = time.perf_counter()
    tree = run.tree
    description = proto.describe_context(context.peek()) if carry is None else carry.description
    protocol = _dialect(run)
    prompts = {
        dialect: proto.build_system_prompt(
            description,
            sub_model=tree.settings.sub_model,
            can_recurse=tree.budget.can_recurse(run.depth),
            tools=tree.settings.tool_docs,
            sub_chars=sub_call_chars(
                tree.settings.sub_model, tree.settings.context_windows, tree.settings.max_tokens
            ),
            protocol=dialect,
        )
        for dialect in {protocol, "fenced"}
    }
    messages = [
        ChatMessage(role="system", content=prompts[protocol]),
        *(() if carry is None else carry.history),
        ChatMessage(
            role="user", content=proto.build_user_prompt(query) if carry is None else carry.prompt
        ),
    ]
    if run.output is not None:  # the answer's schema goes with the query
        told = messages[-1].content + run.output.instructions(protocol)
        messages[-1] = ChatMessage(role="user", content=told)
    if carry is not None:
        carry.messages = messages
    run.emit(
        RunStarted,
        model=run.model,
        sub_model=tree.settings.sub_model,
        query=query,
        context_description=description,
        max_iterations=tree.budget.max_iterations,
        max_depth=tree.settings.limits.max_depth,
    )
    run.log.info("rlm.run_started", model=run.model)

    def open_session() -> REPLSession:
        async def handler(request: SubCallRequest) -> list[str]:
            return await _sub_calls(run, request)

        return REPLSession(
            context.take(),
            handler=handler,
            tools=tree.settings.tools,
            options=tree.settings.repl,
            forkserver=tree.settings.forkserver,
        )

    try:
        with SingleErrors():
            async with anyio.create_task_group() as tg:
                run.repl.start(tg, open_session)
                try:
                    answer, reason = await _turns(run, messages, protocol, prompts["fenced"])
                finally:
                    await run.repl.close()
                    context.take()  # a REPL never opened: drop it now
    except BaseException as exc:
        reason, error = _why_stopped(run, exc)
        _finish(run, None, reason, started, error=error)
        if isinstance(exc, RLMError):
            exc.result = run.result
        raise
    run.emit(FinalAnswer, answer=answer or "", source=reason)
    return _finish(run, answer, reason, started)


def _dialect(run: _Run) -> Dialect:
    """The protocol this run starts with: ``auto`` is tools where the provider has them and
    no server of this tree refused them for the model.

    Raises:
        ConfigurationError: ``protocol="tools"`` with a provider that has no tool calling.
    """
    settings = run.tree.settings
    if settings.protocol == "fenced" or run.model in run.tree.tools_refused:
        return "fenced"
    able = supports_tools(settings.provider, run.model)
    if settings.protocol == "tools" and not able:
        raise ConfigurationError(
            f"protocol='tools' needs a provider with tool calling, and {settings.provider!r} "
            f"has none for {run.model!r}; use protocol='auto' or 'fenced'"
        )
    return "tools" if able else "fenced"


def _why_stopped(run: _Run, exc: BaseException) -> tuple[StopReason, str]:
    """The stop reason and error text of a run that ended by an exception."""
    budget = run.tree.budget
    limit: LimitExceededError | None = None
    if isinstance(exc, LimitExceededError):
        limit = exc
    elif isinstance(exc, anyio.get_cancelled_exc_class()) and budget.out_of_time():
        limit = budget.exhausted()  # the wall-time deadline cancelled the tree
    if limit is not None:
        run.emit(LimitReached, limit=limit.limit, detail=str(limit))
        return "limit", str(limit)
    if isinstance(exc, Exception):
        run.log.info("rlm.run_failed", error=f"{type(exc).__name__}: {exc}")
        return "error", f"{type(exc).__name__}: {exc}"
    return "cancelled", "the run was cancelled"


def _finish(
    run: _Run,
    answer: str | None,
    reason: StopReason,
    started: float,
    *,
    error: str | None = None,
) -> RLMResult:
    trajectory = run.tree.trajectories.runs[run.run_id]
    result = RLMResult(
        answer=answer,
        stop_reason=reason,
        iterations=len(trajectory.turns),
        wall_time_s=time.perf_counter() - started,
        usage=_usage_copy(run.tree.budget.usage),
        trajectory=trajectory,
        isolation=run.repl.isolation,
        error=error,
        output=None if run.output is None or answer is None else run.output.value,
    )
    run.result = result
    run.emit(RunFinished, result=result)
    run.log.info("rlm.run_finished", stop_reason=reason, iterations=result.iterations)
    return result


def _usage_copy(usage: Usage) -> Usage:
    """What ``model_copy(deep=True)`` gives, without ``copy.deepcopy`` (~0.1 ms a run, measured
    under cProfile): every field of a ``ModelUsage`` is a number."""
    return Usage(models={name: entry.model_copy() for name, entry in usage.models.items()})


# --- turns ---------------------------------------------------------------------------------


async def _turns(
    run: _Run, messages: list[ChatMessage], protocol: Dialect, fenced_prompt: str
) -> tuple[str | None, StopReason]:
    """The turn loop; returns the answer and why the run ended."""
    settings = run.tree.settings
    repl = run.repl

    async def ask(
        request: list[ChatMessage],
        purpose: Literal["turn", "final", "compaction"],
        tools: list[ToolSpec] | None,
    ) -> CompletionResponse:
        return await _ask(run, run.model, request, purpose, tools=tools)

    async def archive(code: str) -> object:
        return await (await repl.get()).run_cell(code)

    window = HistoryWindow(
        run.model,
        settings.context_windows,
        settings.compact_at,
        settings.max_tokens,
        messages[-1].content,  # the query (a session's follow-up comes after earlier turns)
    )
    state = Conversation(
        run.model, window, protocol, fenced_prompt, run.tree.tools_refused, ask, archive, run.emit
    )
    for iteration in range(1, run.tree.budget.max_iterations + 1):
        run.tree.budget.charge_call()  # a turn the budget forbids does not start
        run.emit(TurnStarted, iteration=iteration)
        response = await state.send(messages, iteration, "turn")
        if response.tool_calls:
            answer, reason, said, feedback = await _tool_turn(run, state, iteration, response)
        else:
            answer, reason, said, feedback = await _text_turn(run, state, iteration, response)
        if answer is not None:
            run.emit(TurnFinished, iteration=iteration, final_answer=answer)
            return answer, reason
        run.emit(TurnFinished, iteration=iteration, feedback=feedback)
        messages.extend(said)
    return await _final_call(run, messages, state), "max_iterations"


Turn = tuple[str | None, StopReason, list[ChatMessage], str]
"""A turn's answer (if taken), why, the messages it adds to the history, and its feedback."""


async def _text_turn(
    run: _Run, state: Conversation, iteration: int, response: CompletionResponse
) -> Turn:
    """A reply in text: its code blocks run, then its final answer is read (see ``_reply``)."""
    parsed = proto.parse_reply(response.text)
    problems = list(parsed.problems)
    if parsed.empty:
        state.empty += 1
        problems.append(proto.empty_reply_problem(state.empty, MAX_EMPTY_REPLIES))
    else:
        state.empty = 0
    run.emit(
        ReplyParsed,
        iteration=iteration,
        fence=parsed.fence,
        code_blocks=len(parsed.code_blocks),
        final=None if parsed.final is None else parsed.final.kind,
        notes=list(parsed.notes),
        problems=problems,
    )
    if state.empty >= MAX_EMPTY_REPLIES:
        raise EmptyReplyError(
            f"the model sent {state.empty} empty replies in a row", replies=state.empty
        )
    cells, code_answer = await _run_cells(run, state, iteration, parsed.code_blocks)
    answer, reason, notes = await _settle(run, state, iteration, parsed.final, cells, code_answer)
    if answer is not None:
        return answer, reason, [], ""
    feedback = (
        proto.format_cell_feedback(
            [cell_view(c) for c in cells],
            [*problems, *notes],
            limit=run.tree.settings.repl.output_limit,
        )
        if cells
        else proto.no_code_reminder(
            [*problems, *notes], empty=parsed.empty, answered=parsed.final is not None
        )
    )
    said = [
        ChatMessage(role="assistant", content=parsed.history or "(empty reply)"),
        ChatMessage(role="user", content=feedback),
    ]
    return None, reason, said, feedback


async def _tool_turn(
    run: _Run, state: Conversation, iteration: int, response: CompletionResponse
) -> Turn:
    """A reply with tool calls: each runs in order and gets its result, even a broken one.

    A final answer among them follows the same rules as ``FINAL`` in text: written after
    code in the same reply, it waits for the model to confirm it.
    """
    state.empty = 0
    actions = proto.read_tool_calls(response.tool_calls)
    final = next((a for a in actions if a.final is not None), None)
    run.emit(
        ReplyParsed,
        iteration=iteration,
        fence="tool_call",
        code_blocks=sum(a.code is not None for a in actions),
        final=None if final is None or final.final is None else final.final.kind,
        notes=[f"{len(actions)} tool call(s): {', '.join(a.call.name for a in actions)}"],
        problems=[f"{a.call.name}: {a.error}" for a in actions if a.error is not None],
    )
    results: dict[str, str] = {}
    cells: list[CellResult] = []
    code_answer: str | None = None
    last_code = ""
    limit = run.tree.settings.repl.output_limit
    for action in actions:
        if action.error is not None:
            results[action.call.id] = f"Error: {action.error}"
        elif action.code is not None and code_answer is None:
            last_code = action.call.id
            ran, code_answer = await _run_cells(run, state, iteration, [action.code], len(cells))
            cells.extend(ran)
            results[action.call.id] = proto.format_cell_feedback(
                [cell_view(c) for c in ran], [], limit=limit
            )
    answer, reason, notes = await _settle(
        run, state, iteration, None if final is None else final.final, cells, code_answer
    )
    if answer is not None:
        return answer, reason, [], ""
    if notes and final is None:  # the answer its code gave was rejected (``_vet``)
        results[last_code] += "\n\n" + "\n".join(notes)
    for action in actions:
        if action is final:
            results[action.call.id] = " ".join(notes) or "Not taken."
        results.setdefault(action.call.id, "Not run: an earlier call already gave the answer.")
    said = [
        ChatMessage(role="assistant", content=response.text, tool_calls=tuple(response.tool_calls)),
        *(
            ChatMessage(role="tool", content=results[a.call.id], tool_call_id=a.call.id)
            for a in actions
        ),
    ]
    return None, reason, said, "\n\n".join(results[a.call.id] for a in actions)


async def _settle(
    run: _Run,
    state: Conversation,
    iteration: int,
    final: proto.FinalAnswer | None,
    cells: Sequence[CellResult],
    code_answer: str | None,
) -> tuple[str | None, StopReason, list[str]]:
    """The turn's answer, if it has one it can take; else what to tell the model about it.

    An answer written in the same reply as code was written before the model saw the
    code's output. It stands when it names a variable that code bound, with no cell
    failing; otherwise the model is asked once to confirm it, after seeing the output.
    """
    if code_answer is not None:
        rejected = await _vet(run, state, iteration, code_answer, cells[-1].final_json)
        return None if rejected else code_answer, "final_var", rejected
    if final is None:
        return None, "final_answer", []
    answer, name = await _resolve(run, state, final)
    if answer is None:
        repl = await run.repl.get()
        variables = await repl.list_variables()
        return None, "final_var", [proto.unknown_variable_feedback(final.value, variables)]
    reason: StopReason = "final_answer" if name is None else "final_var"
    if rejected := await _vet(run, state, iteration, answer, name=name):
        return None, reason, rejected
    if cells and answer != state.unconfirmed:
        bound = {n for cell in cells for n in cell.defined_names}
        failed = any(cell.error is not None or cell.restarted for cell in cells)
        if name is None or name not in bound or failed:
            state.unconfirmed = answer
            run.emit(ConfirmationAsked, iteration=iteration, answer=answer)
            return None, reason, [proto.confirm_final_prompt(final)]
    return answer, reason, []


async def _vet(
    run: _Run,
    state: Conversation,
    iteration: int,
    answer: str,
    value_json: str | None = None,
    *,
    name: str | None = None,
    last: bool = False,
) -> list[str]:
    """``[]`` when the answer may stand (no ``output_type``, or it matches); else what the
    model is told (see ``OutputCheck.review``, which raises when no retry is left)."""
    if run.output is None:
        return []
    if value_json is None and name is not None:
        value_json = await (await run.repl.get()).get_variable_json(name)
    return run.output.review(answer, value_json, iteration, run.emit, state.protocol, last=last)


async def _resolve(
    run: _Run, state: Conversation, final: proto.FinalAnswer
) -> tuple[str | None, str | None]:
    """A final answer's text, and the variable it came from (``None`` for literal text).

    ``FINAL_VAR(name)`` is the variable's value (``None`` if there is none); ``FINAL(name)``
    is the value of a variable the run's code bound, else the text itself.
    """
    if final.kind == "var":
        value = await (await run.repl.get()).get_variable(final.value)
        return value, final.value
    if final.name is not None and final.name in state.defined:
        value = await (await run.repl.get()).get_variable(final.name)
        if value is not None:
            return value, final.name
    return final.value, None


async def _run_cells(
    run: _Run, state: Conversation, iteration: int, blocks: Sequence[str], first: int = 0
) -> tuple[list[CellResult], str | None]:
    """Run a reply's blocks in order (numbered from ``first``), until one gives a final answer."""
    results: list[CellResult] = []
    if not blocks:
        return results, None
    repl = await run.repl.get()
    for index, code in enumerate(blocks, start=first):
        run.emit(CellStarted, iteration=iteration, cell=index, code=code)
        result = await repl.run_cell(code)
        results.append(result)
        error = result.error
        run.emit(
            CellFinished,
            iteration=iteration,
            cell=index,
            stdout=result.stdout,
            stderr=result.stderr,
            error_type=None if error is None else error.type,
            error=None if error is None else error_text(error),
            duration_s=result.duration_s,
            restarted=result.restarted,
            timed_out=result.timed_out,
            final_answer=result.final_answer,
            notice=result.notice,
        )
        if result.restarted:
            reason = "the worker was restarted" if error is None else error_text(error)
            run.emit(WorkerRestarted, reason=reason)
            state.defined.clear()
        state.defined.update(result.defined_names)
        if result.final_answer is not None:
            return results, result.final_answer
    return results, None


async def _final_call(run: _Run, messages: list[ChatMessage], state: Conversation) -> str | None:
    """The iteration limit was reached: one last call for the best answer."""
    iteration = run.tree.budget.max_iterations + 1
    run.tree.budget.charge_call()
    run.emit(TurnStarted, iteration=iteration)
    prompt = proto.final_call_prompt(state.protocol)
    if run.output is not None:
        prompt += run.output.final_note()
    final_messages = [*messages, ChatMessage(role="user", content=prompt)]
    response = await state.send(final_messages, iteration, "final")
    called = [a.final for a in proto.read_tool_calls(response.tool_calls) if a.final is not None]
    final = called[0] if called else proto.parse_reply(response.text).final
    answer: str | None
    name: str | None = None
    if final is not None:
        answer, name = await _resolve(run, state, final)
    else:
        answer = response.text.strip() or None
    if answer is not None:  # no turn is left to fix an answer that does not match
        await _vet(run, state, iteration, answer, name=name, last=True)
    run.emit(TurnFinished, iteration=iteration, final_answer=answer)
    return answer


async def _ask(
    run: _Run,
    model: str,
    messages: list[ChatMessage],
    purpose: Literal["turn", "final", "sub_call", "compaction"],
    *,
    tools: list[ToolSpec] | None = None,
    call_id: str | None = None,
) -> CompletionResponse:
    """One model call, charged to the budget and observed by ``run`` (for the sub-call
    ``call_id``, if it serves one).

    The response's text comes back without its ``<think>`` blocks, which join the
    provider's reasoning field in ``reasoning``; the event keeps the raw text.
    """
    tree = run.tree
    tree.budget.charge_call()
    run.emit(ModelRequest, model=model, messages=len(messages), purpose=purpose, call_id=call_id)
    request = CompletionRequest(
        model=model,
        messages=messages,
        temperature=tree.settings.temperature,
        max_tokens=tree.settings.max_tokens,
        tools=tools,
    )
    token = current_observer.set(run if call_id is None else _SubCallObserver(run, call_id))
    try:
        response = await tree.settings.provider.acomplete(request)
    finally:
        current_observer.reset(token)
    cost = tree.budget.record(model, response)
    raw = response.text
    text, thoughts = proto.split_reasoning(raw)
    reasoning = "\n\n".join(r for r in (response.reasoning, thoughts) if r) or None
    update: dict[str, Any] = {}
    if cost != response.usage.cost:  # priced from the user's table
        update["usage"] = response.usage.model_copy(update={"cost": cost})
    if text is not raw or reasoning != response.reasoning:
        update.update(text=text, reasoning=reasoning)
    if update:
        response = response.model_copy(update=update)
    run.emit(
        ModelResponse,
        model=model,
        text=raw,
        reasoning=reasoning,
        tool_calls=list(response.tool_calls),
        finish_reason=response.finish_reason,
        response_model=response.model,
        latency_s=response.latency_s,
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        cost=response.usage.cost,
        purpose=purpose,
        call_id=call_id,
    )
    return response


# --- sub-calls -----------------------------------------------------------------------------


async def _sub_calls(run: _Run, request: SubCallRequest) -> list[str]:
    """Serve one sub-call frame from the worker: every prompt, concurrently, in order."""
    results = [""] * len(request.prompts)

    async def one(i: int, prompt: str) -> None:
        async with run.subcalls:
            results[i] = await _sub_call(run, request.kind, prompt, request.model)

    if len(request.prompts) == 1:
        await one(0, request.prompts[0])
    else:
        async with anyio.create_task_group() as tg:
            for i, prompt in enumerate(request.prompts):
                tg.start_soon(one, i, prompt)
    return results


async def _sub_call(run: _Run, kind: Literal["llm", "rlm"], prompt: str, model: str | None) -> str:
    """One sub-call; a failure becomes an ``"Error: ..."`` answer, never the cell's failure."""
    model = model or run.tree.settings.sub_model
    call_id = uuid.uuid4().hex[:12]
    run.emit(SubCallStarted, call_id=call_id, kind=kind, model=model, prompt=prompt)
    started = time.perf_counter()
    usage: dict[str, Any] = {}
    response = ""
    error: str | None = None
    try:
        if kind == "rlm" and run.tree.budget.can_recurse(run.depth):
            child = _Run(run.tree, depth=run.depth + 1, parent=run.run_id, model=model)
            run.emit(ChildRunStarted, call_id=call_id, child_run_id=child.run_id)
            child_result = await _run(child, Handoff(prompt), None)
            if child_result.answer is None:
                error = f"the child run ended without an answer ({child_result.stop_reason})"
            response = child_result.answer or ""
        else:
            settings = run.tree.settings
            tokens = window.estimate_tokens(prompt) + window.MESSAGE_OVERHEAD_TOKENS
            size = window.context_window(model, settings.context_windows)
            if size is not None and tokens > size - window.reply_reserve(size, settings.max_tokens):
                raise _Oversize(window.oversize_error(model, tokens, size))
            try:
                messages = [ChatMessage(role="user", content=prompt)]
                reply, cached = await through_cache(
                    settings,
                    run.tree.budget,
                    model,
                    messages,
                    lambda: _ask(run, model, messages, "sub_call", call_id=call_id),
                )
            except APIStatusError as err:
                if not window.is_context_length_error(err):
                    raise
                raise _Oversize(window.oversize_error(model, tokens, size, sent=True)) from err
            response = reply.text
            usage = {
                "prompt_tokens": reply.usage.prompt_tokens,
                "completion_tokens": reply.usage.completion_tokens,
                "cost": reply.usage.cost,
                "reasoning": reply.reasoning,
                "cached": cached,
            }
    except (LimitExceededError, _Oversize) as err:
        error = str(err)
    except Exception as err:  # one failed sub-call never fails its siblings or the cell
        error = f"{type(err).__name__}: {err}"
        if not isinstance(err, RLMError):
            run.log.warning("rlm.sub_call_failed", error=error, model=model)
    if error is not None:
        response = f"Error: {error}"
    run.emit(
        SubCallFinished,
        call_id=call_id,
        kind=kind,
        model=model,
        response=response,
        error=error,
        duration_s=time.perf_counter() - started,
        **usage,
    )
    return response


# --- helpers -------------------------------------------------------------------------------


class _Oversize(Exception):
    """A sub-call prompt that cannot fit its model's window (the text is the model's message)."""
