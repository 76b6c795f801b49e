"""OpenTelemetry traces of runs: a sink that turns a run's events into spans.

Install ``rlm-sdk[otel]`` (it adds ``opentelemetry-api``, nothing else) and pass an
:class:`OTelTracer` as an event sink::

    from rlm_sdk import RecursiveLM
    from rlm_sdk.otel import OTelTracer

    rlm = RecursiveLM("openai:gpt-5-mini", on_event=OTelTracer())

Why it is built this way:

* **A reader of the event stream**, like the console view and the JSONL recorder: every
  span and attribute comes from an event, so the trace says what the trajectory says, and
  the run's code knows nothing of tracing.
* **The API only.** As OpenTelemetry asks of libraries, this module never configures an SDK
  or an exporter; the application does. Until one is configured (or when the sampler drops
  the trace) a run's span does not record, and the sink then skips every event of that run
  and of its children after one dictionary look-up.
* **Parents from the run, not from the context.** Sinks are called synchronously in the
  task that emitted the event, so at a top-level ``RunStarted`` the caller's current span
  (an application's span, a batch's, a server request's) is current: it becomes the run's
  parent. Below that, every span is started with an explicit parent taken from the run's own
  state, keyed by ``run_id`` and, inside a run, by a sub-call's ``call_id``; nothing is ever
  attached to the context, so concurrent runs and the interleaved sub-calls of a fan-out
  cannot adopt each other's spans, and no span of ours leaks into the caller's context.
* **Spans always end.** Every run's last event is ``RunFinished``, whatever stopped it; it
  ends what the run left open (a request that failed, a cell that was cancelled) with the
  run's error, and then the run's span.
* **No content by default.** The query, prompts, replies, code, cell output (a cell's error
  message included) and answers are recorded only when asked (``capture_content=True`` or
  ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). The SDK's own error messages
  (a provider's refusal, a failed sub-call) are always recorded. Every text goes through the
  JSONL recorder's redaction of provider keys first.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
except ImportError as err:
    raise ImportError(
        "rlm_sdk.otel needs OpenTelemetry's API, which is not installed: "
        "pip install 'rlm-sdk[otel]'"
    ) from err

from ._constants import VERSION
from ._events import (
    CellFinished,
    CellStarted,
    ChildRunStarted,
    ConfirmationAsked,
    Event,
    HistoryCompacted,
    LimitReached,
    ModelRequest,
    ModelResponse,
    ProtocolSwitched,
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
from ._exceptions import ConfigurationError
from ._recorder import known_secrets, redact
from .providers import split_model

__all__ = ["CAPTURE_CONTENT_ENV", "OTelTracer", "continue_trace"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The OpenTelemetry GenAI variable that switches content capture on (``true``)."""
_CAPTURE_VALUES = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})
_AGENT = "rlm"
_TOOL = "repl"
_SCOPE = "rlm_sdk"

Attributes = dict[str, Any]


def _ns(ts: float) -> int:
    return int(ts * 1e9)


@functools.lru_cache(maxsize=256)
def _split(model: str) -> tuple[str, str]:
    """The provider and model name of a model string, as the router reads it."""
    try:
        return split_model(model)
    except ConfigurationError:
        return "openai", model


def _model_attributes(model: str) -> Attributes:
    """``gen_ai.provider.name`` and ``gen_ai.request.model``, read from a model string."""
    provider, name = _split(model)
    return {"gen_ai.provider.name": provider, "gen_ai.request.model": name}


def _error_type(text: str) -> str:
    """The exception class an ``"Type: message"`` error names, else ``_OTHER``."""
    head = text.split(":", 1)[0].strip()
    return head if head.isidentifier() else "_OTHER"


def _messages(role: str, text: str, finish_reason: str | None = None) -> str:
    """One message in the GenAI conventions' JSON form, for ``gen_ai.*.messages``."""
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return json.dumps([message], ensure_ascii=False)


@dataclass
class _Call:
    """A sub-call's span, and its model request's while one is in flight."""

    span: Span
    ctx: otel_context.Context
    prompt: str | None
    request: Span | None = None


@dataclass
class _RunSpans:
    """The open spans of one run."""

    span: Span
    ctx: otel_context.Context
    """The run span's context: the parent of its turns."""
    base: otel_context.Context
    """The context the run started in; every context below is derived from it."""
    turn: Span | None = None
    cell: Span | None = None
    request: Span | None = None
    """The run's own model request in flight (a turn's, the final call's, a compaction's)."""
    reply: Attributes | None = None
    """The turn's reply attributes, set on its span when it ends (one call, not two)."""
    calls: dict[str, _Call] = field(default_factory=dict)
    _turn_ctx: otel_context.Context | None = None
    _cell_ctx: otel_context.Context | None = None

    # A span's context is made only when a child needs it: most cells have no sub-call.
    def turn_ctx(self) -> otel_context.Context:
        if self.turn is None:
            return self.ctx
        if self._turn_ctx is None:
            self._turn_ctx = trace.set_span_in_context(self.turn, self.base)
        return self._turn_ctx

    def cell_ctx(self) -> otel_context.Context:
        if self.cell is None:
            return self.turn_ctx()
        if self._cell_ctx is None:
            self._cell_ctx = trace.set_span_in_context(self.cell, self.base)
        return self._cell_ctx


class OTelTracer:
    """An event sink that records each run as OpenTelemetry spans.

    Use it as ``on_event=OTelTracer()`` on :class:`~rlm_sdk.RecursiveLM` (every run of the
    object) or on one call. One instance serves any number of runs at once, on any number
    of event loops. Spans go to the tracer provider the application configured; without
    one, nothing is recorded and the cost is a dictionary look-up per event.

    The spans, nested as the run is: ``invoke_agent rlm`` (a run, root or child) >
    ``turn`` > ``chat MODEL`` (each model request, by the OpenTelemetry GenAI conventions)
    and ``execute_tool repl`` (each cell) > ``llm_query`` / ``rlm_query`` (each sub-call) >
    ``chat MODEL`` or a child run's ``invoke_agent rlm``.

    Args:
        tracer_provider: the provider to use; by default the global one, looked up when a
            span starts, so an SDK configured later is still used.
        capture_content: record the query, prompts, replies, code, output, answers and
            error messages; by default read from
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true`` turns it on).
            Provider keys are redacted, as in :class:`~rlm_sdk.JSONLRecorder`.
        redact: more secret strings to scrub from captured content.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, VERSION, tracer_provider)
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").lower() in _CAPTURE_VALUES
        self.capture_content = capture_content
        self._secrets = known_secrets(redact)
        self._runs: dict[str, _RunSpans | None] = {}
        """Open runs by id; ``None`` for a run that is not recorded."""
        self._children: dict[str, otel_context.Context] = {}
        """A child run's parent (its sub-call's context) by the child's run id."""
        self._handlers: dict[type[Any], Callable[[Any, _RunSpans], None]] = {
            TurnStarted: self._turn_started,
            TurnFinished: self._turn_finished,
            ModelRequest: self._model_request,
            ModelResponse: self._model_response,
            RetryScheduled: self._retry,
            ReplyParsed: self._reply_parsed,
            ConfirmationAsked: self._confirmation_asked,
            HistoryCompacted: self._history_compacted,
            ProtocolSwitched: self._protocol_switched,
            CellStarted: self._cell_started,
            CellFinished: self._cell_finished,
            WorkerRestarted: self._worker_restarted,
            SubCallStarted: self._sub_call_started,
            SubCallFinished: self._sub_call_finished,
            ChildRunStarted: self._child_run_started,
            LimitReached: self._limit_reached,
        }

    def __call__(self, event: Event) -> None:
        """The sink: record one event."""
        run = self._runs.get(event.run_id)
        if run is None:  # not recorded, not started, or already finished
            if isinstance(event, RunStarted):
                self._run_started(event)
            elif isinstance(event, RunFinished):
                self._runs.pop(event.run_id, None)
            return
        if isinstance(event, RunFinished):
            self._run_finished(event, run)
            return
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, run)

    def __repr__(self) -> str:
        return f"OTelTracer(capture_content={self.capture_content})"

    # --- content --------------------------------------------------------------------------

    def _text(self, text: str) -> str:
        return redact(text, self._secrets)

    def _content(
        self, attributes: Attributes, name: str, text: str | None, *, role: str | None = None
    ) -> None:
        """With content on, ``text`` (as a GenAI message of ``role``, if given), redacted."""
        if self.capture_content and text is not None:
            attributes[name] = self._text(text if role is None else _messages(role, text))

    def _fail(self, span: Span, error_type: str, message: str | None) -> None:
        """Mark ``span`` failed with ``error.type`` and, when given, a (redacted) message."""
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, self._text(message or error_type)))

    # --- runs ------------------------------------------------------------------------------

    def _run_started(self, event: RunStarted) -> None:
        if event.parent_run_id is None:
            base = otel_context.get_current()
        else:
            parent = self._runs.get(event.parent_run_id)
            if parent is None:  # the parent run is not recorded: neither is its child
                self._runs[event.run_id] = None
                return
            base = self._children.pop(event.run_id, parent.ctx)
        attributes: Attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": _AGENT,
            **_model_attributes(event.model),
            "rlm.run_id": event.run_id,
            "rlm.depth": event.depth,
            "rlm.model": event.model,
            "rlm.sub_model": event.sub_model,
            "rlm.max_iterations": event.max_iterations,
            "rlm.max_depth": event.max_depth,
        }
        if event.parent_run_id is not None:
            attributes["rlm.parent_run_id"] = event.parent_run_id
        if event.item is not None:
            attributes["rlm.item"] = event.item
        self._content(attributes, "gen_ai.input.messages", event.query, role="user")
        self._content(attributes, "rlm.context_description", event.context_description)
        span = self._tracer.start_span(
            f"invoke_agent {_AGENT}",
            context=base,
            attributes=attributes,
            start_time=_ns(event.ts),
        )
        if not span.is_recording():
            self._runs[event.run_id] = None
            return
        self._runs[event.run_id] = _RunSpans(span, trace.set_span_in_context(span, base), base)

    def _run_finished(self, event: RunFinished, run: _RunSpans) -> None:
        del self._runs[event.run_id]
        result = event.result
        end = _ns(event.ts)
        failed = result.answer is None and result.stop_reason in ("error", "cancelled", "limit")
        why = result.error or result.stop_reason
        error_type = _error_type(why) if result.stop_reason == "error" else result.stop_reason
        # What the run left open ends with it: its sub-calls in flight, and the innermost of
        # its own spans, where the error happened, carry the error.
        innermost = True
        if run.turn is not None and run.reply:
            run.turn.set_attributes(run.reply)
        for call in run.calls.values():
            for span in (call.request, call.span):
                if span is not None:
                    if failed:
                        self._fail(span, error_type, why)
                    span.end(end)
        for span in (run.request, run.cell, run.turn):
            if span is not None:
                if failed and innermost:
                    self._fail(span, error_type, why)
                    innermost = False
                span.end(end)
        span = run.span
        span.set_attributes(
            {
                "rlm.stop_reason": result.stop_reason,
                "rlm.iterations": result.iterations,
                "rlm.isolation": list(result.isolation),
            }
        )
        if event.depth == 0:  # usage is counted over the tree: only the root's is its own
            usage = result.usage
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "rlm.usage.model_calls": usage.calls,
                }
            )
            if usage.cost is not None:
                span.set_attribute("rlm.usage.cost", usage.cost)
        if result.answer is not None and self.capture_content:
            output = _messages("assistant", result.answer, result.stop_reason)
            span.set_attribute("gen_ai.output.messages", self._text(output))
        if failed:
            self._fail(span, error_type, why)
        span.end(end)

    def _child_run_started(self, event: ChildRunStarted, run: _RunSpans) -> None:
        call = run.calls.get(event.call_id)
        self._children[event.child_run_id] = call.ctx if call is not None else run.ctx

    def _limit_reached(self, event: LimitReached, run: _RunSpans) -> None:
        run.span.add_event(
            "rlm.limit_reached",
            {"rlm.limit": event.limit, "rlm.limit.detail": event.detail},
            _ns(event.ts),
        )

    # --- turns and model requests ------------------------------------------------------------

    def _turn_started(self, event: TurnStarted, run: _RunSpans) -> None:
        span = self._tracer.start_span(
            "turn",
            context=run.ctx,
            attributes={"rlm.iteration": event.iteration},
            start_time=_ns(event.ts),
        )
        run.turn, run._turn_ctx = span, None

    def _turn_finished(self, event: TurnFinished, run: _RunSpans) -> None:
        if run.turn is not None:
            attributes = run.reply or {}
            if event.final_answer is not None:
                attributes["rlm.answered"] = True
            if attributes:
                run.turn.set_attributes(attributes)
            run.turn.end(_ns(event.ts))
        run.turn = run._turn_ctx = run.reply = None

    def _reply_parsed(self, event: ReplyParsed, run: _RunSpans) -> None:
        # Only what is out of the ordinary (every attribute costs time on every turn): the
        # blocks show as the turn's cells, and most replies use ```repl fences.
        attributes: Attributes = {}
        if event.fence not in (None, "repl"):
            attributes["rlm.reply.fence"] = event.fence
        if event.final is not None:
            attributes["rlm.reply.final"] = event.final
        if event.problems:
            attributes["rlm.reply.problems"] = list(event.problems)
        run.reply = attributes or None

    def _confirmation_asked(self, event: ConfirmationAsked, run: _RunSpans) -> None:
        attributes: Attributes = {}
        self._content(attributes, "rlm.answer", event.answer)
        (run.turn or run.span).add_event("rlm.confirmation_asked", attributes, _ns(event.ts))

    def _history_compacted(self, event: HistoryCompacted, run: _RunSpans) -> None:
        (run.turn or run.span).add_event(
            "rlm.history_compacted",
            {
                "rlm.compaction.turns": event.turns,
                "rlm.compaction.tokens_before": event.tokens_before,
                "rlm.compaction.tokens_after": event.tokens_after,
                "rlm.compaction.window": event.window,
            },
            _ns(event.ts),
        )

    def _protocol_switched(self, event: ProtocolSwitched, run: _RunSpans) -> None:
        (run.turn or run.span).add_event(
            "rlm.protocol_switched",
            {
                "rlm.protocol.from": event.from_protocol,
                "rlm.protocol.to": event.to_protocol,
                "rlm.protocol.reason": self._text(event.reason),
            },
            _ns(event.ts),
        )

    def _model_request(self, event: ModelRequest, run: _RunSpans) -> None:
        call = run.calls.get(event.call_id) if event.call_id is not None else None
        attributes: Attributes = {
            "gen_ai.operation.name": "chat",
            **_model_attributes(event.model),
            "rlm.purpose": event.purpose,
        }
        if call is not None:
            self._content(attributes, "gen_ai.input.messages", call.prompt, role="user")
        span = self._tracer.start_span(
            f"chat {attributes['gen_ai.request.model']}",
            context=call.ctx if call is not None else run.turn_ctx(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(event.ts),
        )
        if call is not None:
            call.request = span
        else:
            run.request = span

    def _model_response(self, event: ModelResponse, run: _RunSpans) -> None:
        call = run.calls.get(event.call_id) if event.call_id is not None else None
        span = call.request if call is not None else run.request
        if span is None:
            return
        attributes: Attributes = {
            "gen_ai.response.model": event.response_model or _split(event.model)[1],
            "gen_ai.usage.input_tokens": event.prompt_tokens,
            "gen_ai.usage.output_tokens": event.completion_tokens,
        }
        if event.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = [event.finish_reason]
        if event.cost is not None:
            attributes["rlm.cost"] = event.cost
        if self.capture_content:
            output = _messages("assistant", event.text, event.finish_reason or "stop")
            attributes["gen_ai.output.messages"] = self._text(output)
        span.set_attributes(attributes)
        span.end(_ns(event.ts))
        if call is not None:
            call.request = None
        else:
            run.request = None

    def _retry(self, event: RetryScheduled, run: _RunSpans) -> None:
        call = run.calls.get(event.call_id) if event.call_id is not None else None
        span = (call.request if call is not None else run.request) or run.span
        span.add_event(
            "rlm.retry_scheduled",
            {
                "rlm.retry.attempt": event.attempt,
                "rlm.retry.delay_s": event.delay_s,
                "rlm.retry.reason": event.reason,
                "rlm.retry.provider": event.provider,
            },
            _ns(event.ts),
        )

    # --- cells and sub-calls -------------------------------------------------------------------

    def _cell_started(self, event: CellStarted, run: _RunSpans) -> None:
        attributes: Attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": _TOOL,
        }
        if event.cell:  # the second block of a reply, or later
            attributes["rlm.cell"] = event.cell
        self._content(attributes, "gen_ai.tool.call.arguments", event.code)
        span = self._tracer.start_span(
            f"execute_tool {_TOOL}",
            context=run.turn_ctx(),
            attributes=attributes,
            start_time=_ns(event.ts),
        )
        run.cell, run._cell_ctx = span, None

    def _cell_finished(self, event: CellFinished, run: _RunSpans) -> None:
        span = run.cell
        if span is None:
            return
        attributes: Attributes = {}  # the flags only when set: every attribute costs time
        if event.restarted:
            attributes["rlm.cell.restarted"] = True
        if event.timed_out:
            attributes["rlm.cell.timed_out"] = True
        if event.final_answer is not None:
            attributes["rlm.cell.final"] = True
        self._content(attributes, "gen_ai.tool.call.result", event.stdout)
        if event.stderr:
            self._content(attributes, "rlm.cell.stderr", event.stderr)
        if attributes:
            span.set_attributes(attributes)
        if event.error_type is not None or event.timed_out:
            # The message is the model's code's output: content, shown only when captured.
            message = event.error if self.capture_content else None
            self._fail(span, event.error_type or "timeout", message)
        span.end(_ns(event.ts))
        run.cell = run._cell_ctx = None

    def _worker_restarted(self, event: WorkerRestarted, run: _RunSpans) -> None:
        attributes: Attributes = {}
        self._content(attributes, "rlm.reason", event.reason)
        (run.cell or run.turn or run.span).add_event(
            "rlm.worker_restarted", attributes, _ns(event.ts)
        )

    def _sub_call_started(self, event: SubCallStarted, run: _RunSpans) -> None:
        attributes: Attributes = {
            "rlm.call_id": event.call_id,
            "rlm.sub_call.kind": event.kind,
            "rlm.model": event.model,
        }
        self._content(attributes, "rlm.prompt", event.prompt)
        span = self._tracer.start_span(
            f"{event.kind}_query",
            context=run.cell_ctx(),
            attributes=attributes,
            start_time=_ns(event.ts),
        )
        prompt = event.prompt if self.capture_content else None
        run.calls[event.call_id] = _Call(span, trace.set_span_in_context(span, run.base), prompt)

    def _sub_call_finished(self, event: SubCallFinished, run: _RunSpans) -> None:
        call = run.calls.pop(event.call_id, None)
        if call is None:
            return
        end = _ns(event.ts)
        if call.request is not None:  # its model request failed: it got no reply
            if event.error is not None:
                self._fail(call.request, _error_type(event.error), event.error)
            call.request.end(end)
        span = call.span
        if event.error is not None:
            self._fail(span, _error_type(event.error), event.error)
        else:
            attributes: Attributes = {"rlm.cached": True} if event.cached else {}
            self._content(attributes, "rlm.response", event.response)
            span.set_attributes(attributes)
        span.end(end)


@contextlib.contextmanager
def continue_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Within the block, runs continue the trace that ``headers`` carry.

    Reads W3C ``traceparent`` (and ``tracestate``), or whatever propagator the application
    configured, from an incoming request's headers: a run started inside becomes a child of
    the caller's span. Without such headers the current context is kept. ``rlm-sdk serve
    --otel`` wraps every request in it.
    """
    token = otel_context.attach(propagate.extract(headers, context=otel_context.get_current()))
    try:
        yield
    finally:
        otel_context.detach(token)


def _configure_sdk() -> bool:
    """Install an SDK tracer provider that exports OTLP over HTTP, configured by the standard
    ``OTEL_*`` variables, unless one is installed already (by the application, or by
    ``opentelemetry-instrument``). Returns whether it installed one.

    For front ends only (``rlm-sdk serve --otel``): a library never configures the SDK.

    Raises:
        ImportError: ``opentelemetry-sdk`` or ``opentelemetry-exporter-otlp-proto-http`` is
            not installed.
    """
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "rlm-sdk"}))
    provider = SDKTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
