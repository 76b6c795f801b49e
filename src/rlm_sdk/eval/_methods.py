"""Methods: what answers a sample. The RLM, a direct call, or any async callable of yours.

Every method is handed the same :class:`Sample` object, so all of them see byte-identical
contexts and queries (the paired design the report's win/tie/loss counts rely on). The RLM
method is a user of :class:`~rlm_sdk.RecursiveLM`'s public API and nothing else; the direct
method is one :class:`~rlm_sdk.providers.CompletionRequest` through the same provider.

The direct call has to decide whether the whole context fits the model's window before it
spends anything. It uses the SDK's own table and estimate (:func:`rlm_sdk.context_window`,
:func:`rlm_sdk.estimate_tokens`, which over-counts English by 5 to 15 %), keeping
``reply_tokens`` of the window for the answer. A model whose window is unknown is sent the
prompt, and a provider's refusal that names the context length is recorded as an overflow
too. With ``truncate=True`` (the ``direct-truncate`` method) the middle of the context is
cut instead, keeping its head and tail, and the row says how many characters went.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from rlm_sdk import (
    APIStatusError,
    ConfigurationError,
    Event,
    JSONLRecorder,
    LimitExceededError,
    ModelResponse,
    ProviderError,
    RecursiveLM,
    RLMError,
    RLMResult,
    Trajectory,
    Usage,
    context_window,
    estimate_tokens,
)
from rlm_sdk.providers import ChatMessage, CompletionRequest, Provider

from ._sample import Sample

__all__ = [
    "DIRECT_SYSTEM_PROMPT",
    "DirectMethod",
    "FunctionMethod",
    "Method",
    "MethodFunction",
    "Outcome",
    "RLMMethod",
    "Status",
    "Trial",
    "direct_prompt",
]

Status = Literal[
    "answered",  # an answer came back (it may still be wrong)
    "overflow",  # the direct call's prompt does not fit the model's window; scores 0
    "no_answer",  # the method ended without an answer
    "limit",  # a budget of the run ran out
    "provider_error",  # the model provider failed after its retries
    "error",  # anything else went wrong
    "cost_cap",  # stopped because the eval's cost cap was reached; runs again on resume
]

DIRECT_SYSTEM_PROMPT = (
    "Answer the question that follows the text. The text comes first, then a line of "
    "dashes, then the question."
)
DEFAULT_REPLY_TOKENS = 1024
_CONTEXT_LENGTH_WORDS = ("context length", "context window", "too long", "too many tokens")


class Outcome(BaseModel):
    """What one method did with one sample (the runner adds score, latency and ids)."""

    answer: str | None
    status: Status = "answered"
    error: str | None = None
    turns: int = 0
    sub_calls: int = 0
    depth: int = 0
    """The deepest child run (0: the root run only, or not an RLM)."""
    usage: Usage = Field(default_factory=Usage)
    run_id: str | None = None
    trajectory: str | None = None
    """The trajectory file, relative to the eval's output folder."""
    detail: dict[str, Any] = Field(default_factory=dict)
    """Method-specific facts: the direct call's estimated tokens and window, what was cut."""


@dataclass
class Trial:
    """What the runner gives a built-in method for one sample: where to record, whom to ask."""

    provider: Provider
    out_dir: Path
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    on_cost: Callable[[float], None] = lambda cost: None
    """Called with the cost of every model call as it finishes (the eval's cost cap)."""
    usage: Usage = field(default_factory=Usage)
    """Calls seen so far, from events: what a cancelled run had spent."""

    def seen(self, event: Event) -> None:
        """Count a model call's cost as it happens."""
        if isinstance(event, ModelResponse):
            self.usage.add(event.model, event.prompt_tokens, event.completion_tokens, event.cost)
            if event.cost:
                self.on_cost(event.cost)

    def price(self, model: str, prompt: int, completion: int, cost: float | None) -> float | None:
        """A call's cost: reported, else from the price table, else unknown."""
        if cost is None and model in self.prices:
            per_prompt, per_completion = self.prices[model]
            cost = (prompt * per_prompt + completion * per_completion) / 1e6
        return cost


class Method:
    """A way of answering samples. Subclass it, or pass any async callable to the eval.

    Attributes:
        name: how the results and the report call it (unique within an eval).
    """

    name: str = "method"

    def config(self) -> dict[str, Any]:
        """What the method is, as JSON: a results file refuses a different one under the same name."""
        return {"kind": type(self).__name__}

    async def open(self, provider: Provider, prices: Mapping[str, tuple[float, float]]) -> None:
        """Called once before the first sample, with the eval's shared provider."""

    async def aclose(self) -> None:
        """Called once after the last sample."""

    async def run(self, sample: Sample, trial: Trial) -> Outcome:
        """Answer one sample."""
        raise NotImplementedError(type(self).__name__)


MethodFunction = Callable[[Sample], Awaitable["str | Outcome | None"]]
"""A user-defined method: given a sample, return its answer (or an :class:`Outcome`)."""


class FunctionMethod(Method):
    """A user-defined method from an async callable ``fn(sample) -> str | Outcome | None``."""

    def __init__(self, fn: MethodFunction, name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigurationError(f"a method is a name or an async callable, not {fn!r}")
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "custom"))

    def config(self) -> dict[str, Any]:
        return {"kind": "function", "function": getattr(self.fn, "__qualname__", repr(self.fn))}

    async def run(self, sample: Sample, trial: Trial) -> Outcome:
        made = self.fn(sample)
        got = await made if inspect.isawaitable(made) else made
        if isinstance(got, Outcome):
            return got
        if got is not None and not isinstance(got, str):
            raise ConfigurationError(f"method {self.name} returned {type(got).__name__}, not str")
        return Outcome(answer=got, status="answered" if got is not None else "no_answer")


def _walk(trajectory: Trajectory) -> tuple[int, int]:
    """Sub-calls made in a run tree, and its deepest child run."""
    calls, depth = 0, trajectory.depth
    for turn in trajectory.turns:
        for cell in turn.cells:
            for call in cell.sub_calls:
                calls += 1
                if call.child is not None:
                    more, deeper = _walk(call.child)
                    calls, depth = calls + more, max(depth, deeper)
    return calls, depth


def _status(result: RLMResult) -> Status:
    if result.stop_reason == "limit":
        return "limit"
    if result.stop_reason == "error":
        return "error"
    return "answered" if result.answer is not None else "no_answer"


class RLMMethod(Method):
    """The RLM, in any configuration: every keyword is a :class:`RecursiveLM` argument.

    Args:
        model: the root model (default: the eval's ``model``).
        name: the method's name in the results (``rlm`` by default; give each configuration
            its own, such as ``rlm-depth2``).
        options: :class:`RecursiveLM` keywords (``sub_model``, ``max_depth``, ``limits``,
            ``protocol``, ...). ``provider`` and ``on_limit`` are set by the eval.
    """

    def __init__(self, model: str | None = None, *, name: str = "rlm", **options: Any) -> None:
        self.model = model
        self.name = name
        self.options = options
        self._rlm: RecursiveLM | None = None

    def config(self) -> dict[str, Any]:
        shown = {k: _jsonable(v) for k, v in sorted(self.options.items())}
        return {"kind": "rlm", "model": self.model, **shown}

    async def open(self, provider: Provider, prices: Mapping[str, tuple[float, float]]) -> None:
        options = {"prices": dict(prices), **self.options}
        self._rlm = RecursiveLM(self.model, provider=provider, on_limit="return", **options)
        self.model = self._rlm.model

    async def aclose(self) -> None:
        if self._rlm is not None:
            await self._rlm.aclose()

    async def run(self, sample: Sample, trial: Trial) -> Outcome:
        if self._rlm is None:
            raise ConfigurationError("RLMMethod.open() was not called")
        name = f"trajectories/{sample.id}.{_safe(self.name)}.jsonl"
        path = trial.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a resumed sample starts its trajectory again
        with JSONLRecorder(path) as recorder:

            def sink(event: Event) -> None:
                recorder(event)
                trial.seen(event)

            error: str | None = None
            status: Status | None = None
            try:
                result = await self._rlm.acomplete(sample.context, sample.query, on_event=sink)
            except LimitExceededError as err:  # on_limit="return" makes this rare
                if err.result is None:
                    raise
                result, status, error = err.result, "limit", str(err)
            except ProviderError as err:
                if err.result is None:
                    return Outcome(
                        answer=None, status="provider_error", error=str(err), trajectory=name
                    )
                result, status, error = err.result, "provider_error", f"{type(err).__name__}: {err}"
            except RLMError as err:
                if err.result is None:
                    return Outcome(answer=None, status="error", error=str(err), trajectory=name)
                result, status, error = err.result, "error", f"{type(err).__name__}: {err}"
        sub_calls, depth = _walk(result.trajectory)
        return Outcome(
            answer=result.answer if status is None else None,
            status=status or _status(result),
            error=error or result.error,
            turns=result.iterations,
            sub_calls=sub_calls,
            depth=depth,
            usage=result.usage,
            run_id=result.run_id,
            trajectory=name,
            detail={"stop_reason": result.stop_reason},
        )


def direct_prompt(context: str, query: str) -> list[ChatMessage]:
    """The direct call's messages: the whole context, a line of dashes, the question."""
    return [
        ChatMessage(role="system", content=DIRECT_SYSTEM_PROMPT),
        ChatMessage(role="user", content=f"{context}\n\n----------\n\n{query}"),
    ]


def _prompt_tokens(messages: list[ChatMessage]) -> int:
    return sum(estimate_tokens(m.content) + 4 for m in messages)


def cut_middle(context: str, keep: int) -> str:
    """``context`` with its middle replaced by a marker, keeping ``keep`` characters."""
    if keep >= len(context):
        return context
    head = keep // 2
    tail = keep - head
    cut = len(context) - keep
    return f"{context[:head]}\n[... {cut:,} characters cut ...]\n{context[len(context) - tail :]}"


def _refused_as_too_long(err: ProviderError) -> bool:
    if not isinstance(err, APIStatusError) or err.status_code not in (400, 413, 422):
        return False
    text = f"{err.message} {err.body_excerpt or ''}".lower()
    return any(word in text for word in _CONTEXT_LENGTH_WORDS)


class DirectMethod(Method):
    """The whole context and the question in one prompt: the baseline an RLM must beat.

    Args:
        model: the model (default: the eval's ``model``).
        name: ``direct`` by default, ``direct-truncate`` with ``truncate``.
        truncate: cut the middle of a context that does not fit, rather than record an
            overflow.
        window: the model's context window in tokens; default from
            ``context_windows`` and the SDK's table of known models.
        context_windows: windows by model string or name, as ``RecursiveLM`` takes them.
        reply_tokens: tokens of the window kept for the answer (also sent as
            ``max_tokens`` when ``max_tokens`` is not given).
        max_tokens: sent with the request (default ``reply_tokens``).
        temperature: sent with the request.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        name: str | None = None,
        truncate: bool = False,
        window: int | None = None,
        context_windows: Mapping[str, int] | None = None,
        reply_tokens: int = DEFAULT_REPLY_TOKENS,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        self.model = model
        self.name = name or ("direct-truncate" if truncate else "direct")
        self.truncate = truncate
        self.window = window
        self.context_windows = dict(context_windows or {})
        self.reply_tokens = reply_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._provider: Provider | None = None

    def config(self) -> dict[str, Any]:
        return {
            "kind": "direct",
            "model": self.model,
            "truncate": self.truncate,
            "window": self._window(),
            "reply_tokens": self.reply_tokens,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _window(self) -> int | None:
        if self.window is not None:
            return self.window
        return context_window(self.model, self.context_windows) if self.model else None

    async def open(self, provider: Provider, prices: Mapping[str, tuple[float, float]]) -> None:
        """Keep the eval's provider.

        Raises:
            ConfigurationError: no model (neither given, nor the eval's, nor ``RLM_MODEL``).
        """
        if not self.model:
            raise ConfigurationError(
                f"method {self.name} needs a model: pass model=, --model, or set RLM_MODEL"
            )
        self._provider = provider

    async def run(self, sample: Sample, trial: Trial) -> Outcome:
        if self._provider is None or self.model is None:
            raise ConfigurationError("DirectMethod.open() was not called")
        window = self._window()
        messages = direct_prompt(sample.context, sample.query)
        tokens = _prompt_tokens(messages)
        detail: dict[str, Any] = {"estimated_tokens": tokens, "window": window}
        if window is not None and tokens + self.reply_tokens > window:
            if not self.truncate:
                return Outcome(answer=None, status="overflow", detail=detail)
            others = _prompt_tokens(direct_prompt("", sample.query))
            room = window - self.reply_tokens - others - 16  # 16: the marker's line
            if room <= 0:
                return Outcome(answer=None, status="overflow", detail=detail)
            per_char = max(1e-9, estimate_tokens(sample.context) / max(1, len(sample.context)))
            keep = int(room / per_char)
            while keep > 0 and estimate_tokens(sample.context[:keep]) > room:
                keep = int(keep * 0.98)  # the estimate is not linear for mixed scripts
            messages = direct_prompt(cut_middle(sample.context, keep), sample.query)
            detail.update(
                cut_chars=len(sample.context) - keep, sent_tokens=_prompt_tokens(messages)
            )
        request = CompletionRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens or self.reply_tokens,
            temperature=self.temperature,
        )
        started = time.perf_counter()
        try:
            response = await self._provider.acomplete(request)
        except ProviderError as err:
            if _refused_as_too_long(err):
                return Outcome(answer=None, status="overflow", error=str(err), detail=detail)
            return Outcome(
                answer=None,
                status="provider_error",
                error=f"{type(err).__name__}: {err}",
                detail=detail,
            )
        u = response.usage
        cost = trial.price(self.model, u.prompt_tokens, u.completion_tokens, u.cost)
        usage = Usage()
        usage.add(self.model, u.prompt_tokens, u.completion_tokens, cost)
        if cost:
            trial.on_cost(cost)
        detail["latency_s"] = round(time.perf_counter() - started, 4)
        return Outcome(
            answer=response.text,
            status="answered",
            turns=1,
            usage=usage,
            detail=detail,
        )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)
