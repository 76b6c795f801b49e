"""OpenTelemetry spans from a run's events: the tree, the GenAI attributes, errors, content, context."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from rlm_sdk import (
    Event,
    ModelRequest,
    ModelResponse,
    OpenAICompatibleProvider,
    RecursiveLM,
    RetryScheduled,
    RLMError,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_sdk.otel import CAPTURE_CONTENT_ENV, OTelTracer, continue_trace
from rlm_sdk.testing import FakeChatServer, ScriptedProvider

pytestmark = pytest.mark.integration

F = "```"
ROOT_MARK = "[root]"
KEY = "sk-otel-test-0123456789abcdef"


def repl(src: str) -> str:
    return f"Let me run this.\n{F}repl\n{src}\n{F}"


# --- a run tree to trace: a TEST/DEMO double plays the model -----------------------------------


async def tree_model(body: dict[str, Any]) -> str:
    """Root: a failing cell, then a fan-out of three ``llm_query`` and one child run, then the
    answer. Child: one ``llm_query``, then its answer. Plain sub-calls answer ``re: PROMPT``,
    the first prompt of the fan-out slowest, so their replies arrive out of order."""
    messages = body["messages"]
    if messages[0]["role"] != "system":
        prompt = messages[-1]["content"]
        await anyio.sleep({"alpha": 0.3, "beta": 0.15}.get(prompt, 0.0))
        return f"re: {prompt}"
    turns = sum(1 for m in messages if m["role"] == "assistant")
    if ROOT_MARK in messages[1]["content"]:
        if turns == 0:
            return repl("x = 1 / 0")
        if turns == 1:
            return repl(
                "parts = llm_query_batched(['alpha', 'beta', 'gamma'])\n"
                "child = rlm_query('find the word in: the word is blue')\n"
                "print(parts, child)"
            )
        return "FINAL(done)"
    if turns == 0:
        return repl("print(llm_query('inner'))")
    return "FINAL(blue)"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


async def run_tree(
    server: FakeChatServer,
    tracer: Callable[[Event], None],
    query: str = f"{ROOT_MARK} What is the word?",
) -> None:
    provider = OpenAICompatibleProvider(base_url=server.base_url, api_key="sk-local-test")
    async with (
        provider,
        RecursiveLM(
            "root-model", sub_model="sub-model", provider=provider, max_depth=2, on_event=tracer
        ) as rlm,
    ):
        result = await rlm.acomplete("the context", query)
    assert result.answer == "done"


class Tree:
    """Finished spans, by parent."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def children(self, span: ReadableSpan, name: str | None = None) -> list[ReadableSpan]:
        found = [
            s
            for s in self.spans
            if s.parent is not None and s.parent.span_id == span.context.span_id
        ]
        found.sort(key=lambda s: s.start_time or 0)
        return [s for s in found if name is None or s.name == name]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def shape(self, span: ReadableSpan) -> list[Any]:
        """The names below ``span``, nested, in start order."""
        return [
            c.name if not self.children(c) else [c.name, self.shape(c)] for c in self.children(span)
        ]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- the tree ------------------------------------------------------------------------------------


async def test_a_run_tree_becomes_nested_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Depth 2, a fan-out, a retry and a failed cell: spans nest as the run did, under the caller's span."""
    with FakeChatServer(tree_model) as server:
        server.respond_next(429, headers={"retry-after-ms": "10"})
        with provider.get_tracer("app").start_as_current_span("app request") as app:
            await run_tree(server, OTelTracer(tracer_provider=provider))
    tree = Tree(exporter.get_finished_spans())

    (root,) = [s for s in tree.named("invoke_agent rlm") if attrs(s)["rlm.depth"] == 0]
    assert root.parent is not None and root.parent.span_id == app.get_span_context().span_id
    assert {s.context.trace_id for s in tree.spans} == {app.get_span_context().trace_id}
    assert tree.shape(root) == [
        ["turn", ["chat root-model", "execute_tool repl"]],
        [
            "turn",
            [
                "chat root-model",
                [
                    "execute_tool repl",
                    [
                        ["llm_query", ["chat sub-model"]],
                        ["llm_query", ["chat sub-model"]],
                        ["llm_query", ["chat sub-model"]],
                        [
                            "rlm_query",
                            [
                                [
                                    "invoke_agent rlm",
                                    [
                                        [
                                            "turn",
                                            [
                                                "chat sub-model",
                                                [
                                                    "execute_tool repl",
                                                    [["llm_query", ["chat sub-model"]]],
                                                ],
                                            ],
                                        ],
                                        ["turn", ["chat sub-model"]],
                                    ],
                                ]
                            ],
                        ],
                    ],
                ],
            ],
        ],
        ["turn", ["chat root-model"]],
    ]
    assert all(s.end_time is not None and s.end_time >= (s.start_time or 0) for s in tree.spans)

    root_attrs = attrs(root)
    assert root_attrs["gen_ai.operation.name"] == "invoke_agent"
    assert root_attrs["rlm.stop_reason"] == "final_answer"
    assert root_attrs["rlm.iterations"] == 3
    assert root_attrs["rlm.usage.model_calls"] == 9
    assert root_attrs["gen_ai.usage.input_tokens"] > 0
    assert isinstance(root_attrs["rlm.isolation"], tuple)
    assert root.status.status_code is StatusCode.UNSET

    (child,) = [s for s in tree.named("invoke_agent rlm") if attrs(s)["rlm.depth"] == 1]
    assert attrs(child)["rlm.parent_run_id"] == root_attrs["rlm.run_id"]
    assert "rlm.usage.model_calls" not in attrs(child)  # the tree's usage is the root's

    first_chat = tree.children(tree.children(root, "turn")[0], "chat root-model")[0]
    chat = attrs(first_chat)
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "openai"
    assert chat["gen_ai.request.model"] == "root-model"
    assert chat["gen_ai.response.model"] == "root-model"
    assert chat["gen_ai.response.finish_reasons"] == ("stop",)
    assert chat["gen_ai.usage.output_tokens"] > 0
    assert chat["rlm.purpose"] == "turn"
    assert first_chat.kind is trace.SpanKind.CLIENT
    (retry,) = first_chat.events
    assert retry.name == "rlm.retry_scheduled"
    assert dict(retry.attributes or {})["rlm.retry.reason"] == "status 429"

    failed_cell = tree.children(tree.children(root, "turn")[0], "execute_tool repl")[0]
    assert failed_cell.status.status_code is StatusCode.ERROR
    assert attrs(failed_cell)["error.type"] == "ZeroDivisionError"
    assert failed_cell.status.description == "ZeroDivisionError"  # the message is content
    assert all(s.status.status_code is StatusCode.UNSET for s in tree.spans if s is not failed_cell)


async def test_interleaved_sub_calls_pair_requests_by_call_id(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Replies to a fan-out arrive out of order; each chat span still sits under its own sub-call."""
    with FakeChatServer(tree_model) as server:
        await run_tree(server, OTelTracer(tracer_provider=provider, capture_content=True))
    tree = Tree(exporter.get_finished_spans())
    calls = tree.named("llm_query")
    assert len(calls) == 4
    ends = []
    for call in calls:
        (chat,) = tree.children(call)
        prompt = attrs(call)["rlm.prompt"]
        assert json.loads(attrs(chat)["gen_ai.input.messages"])[0]["parts"][0]["content"] == prompt
        output = json.loads(attrs(chat)["gen_ai.output.messages"])[0]
        assert output["parts"][0]["content"] == f"re: {prompt}"
        assert attrs(call)["rlm.response"] == f"re: {prompt}"
        ends.append((chat.end_time, prompt))
    assert [p for _, p in sorted(ends) if p in ("alpha", "beta", "gamma")] == [
        "gamma",
        "beta",
        "alpha",
    ]


def test_concurrent_retries_land_on_their_own_request(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Two sub-calls' requests in flight at once: a retry goes to the request of its ``call_id``."""
    tracer = OTelTracer(tracer_provider=provider)
    base = {"run_id": "r1", "depth": 0}
    events: list[Event] = [
        RunStarted(
            **base,
            model="m",
            sub_model="s",
            query=None,
            context_description="",
            max_iterations=3,
            max_depth=1,
        ),
        SubCallStarted(**base, call_id="a", kind="llm", model="s", prompt="pa"),
        SubCallStarted(**base, call_id="b", kind="llm", model="s", prompt="pb"),
        ModelRequest(**base, model="s", messages=1, purpose="sub_call", call_id="a"),
        ModelRequest(**base, model="s", messages=1, purpose="sub_call", call_id="b"),
        RetryScheduled(
            **base, provider="openai", attempt=1, delay_s=0.1, reason="timeout", call_id="b"
        ),
        ModelResponse(
            **base,
            model="s",
            text="ra",
            latency_s=0.1,
            prompt_tokens=1,
            completion_tokens=2,
            purpose="sub_call",
            call_id="a",
        ),
        SubCallFinished(**base, call_id="a", kind="llm", model="s", response="ra", duration_s=0.1),
        ModelResponse(
            **base,
            model="s",
            text="rb",
            latency_s=0.1,
            prompt_tokens=3,
            completion_tokens=4,
            purpose="sub_call",
            call_id="b",
        ),
        SubCallFinished(**base, call_id="b", kind="llm", model="s", response="rb", duration_s=0.1),
    ]
    for event in events:
        tracer(event)
    tree = Tree(exporter.get_finished_spans())
    by_call = {attrs(s)["rlm.call_id"]: tree.children(s)[0] for s in tree.named("llm_query")}
    assert [e.name for e in by_call["b"].events] == ["rlm.retry_scheduled"]
    assert by_call["a"].events == ()
    assert attrs(by_call["b"])["gen_ai.usage.output_tokens"] == 4


# --- failures --------------------------------------------------------------------------------------


async def test_a_failed_request_marks_its_span_and_the_run(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A provider error on the second turn: its chat span and the run span carry the error, and every span ended."""
    with FakeChatServer(tree_model) as server:
        server.respond_next(400)  # the first turn's request is refused
        client = OpenAICompatibleProvider(base_url=server.base_url, api_key="sk-local-test")
        async with client, RecursiveLM("root-model", provider=client) as rlm:
            with pytest.raises(RLMError):
                await rlm.acomplete("ctx", ROOT_MARK, on_event=OTelTracer(tracer_provider=provider))
    tree = Tree(exporter.get_finished_spans())
    (run,) = tree.named("invoke_agent rlm")
    (turn,) = tree.children(run, "turn")
    (chat,) = tree.children(turn)
    assert attrs(run)["rlm.stop_reason"] == "error"
    for span in (chat, run):
        assert span.status.status_code is StatusCode.ERROR
        assert attrs(span)["error.type"] == "BadRequestError"
        assert "injected status 400" in (span.status.description or "")
    assert turn.status.status_code is StatusCode.UNSET


async def test_a_cancelled_run_ends_its_open_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A run cancelled during a cell ends the cell, the turn and the run, marked cancelled."""
    started = anyio.Event()

    def on_cell(event: Event) -> None:
        if event.type == "cell_started":
            started.set()

    scripted = ScriptedProvider([repl("import time\ntime.sleep(30)")])
    async with RecursiveLM("m", provider=scripted) as rlm:
        tracer = OTelTracer(tracer_provider=provider)
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: rlm.acomplete("ctx", "q", on_event=lambda e: (tracer(e), on_cell(e)))
            )
            await started.wait()
            tg.cancel_scope.cancel()
    tree = Tree(exporter.get_finished_spans())
    (run,) = tree.named("invoke_agent rlm")
    (cell,) = tree.named("execute_tool repl")
    assert attrs(run)["rlm.stop_reason"] == "cancelled"
    assert [attrs(s)["error.type"] for s in (cell, run)] == ["cancelled", "cancelled"]
    assert tracer._runs == {}


# --- content -------------------------------------------------------------------------------------


async def test_no_content_is_recorded_by_default(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Without the switch, no query, prompt, reply, code, output or answer appears in any span."""
    with FakeChatServer(tree_model) as server:
        await run_tree(server, OTelTracer(tracer_provider=provider))
    dumped = "\n".join(s.to_json() for s in exporter.get_finished_spans())
    for text in (
        "What is the word",
        "alpha",
        "re: gamma",
        "1 / 0",
        "division by zero",
        "FINAL",
        "blue",
    ):
        assert text not in dumped


async def test_content_is_captured_when_switched_on_with_keys_redacted(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GenAI capture variable turns content on; a provider key in it is redacted."""
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeChatServer(tree_model) as server:
        await run_tree(server, OTelTracer(tracer_provider=provider), f"{ROOT_MARK} {KEY} the word?")
    tree = Tree(exporter.get_finished_spans())
    dumped = "\n".join(s.to_json() for s in tree.spans)
    assert KEY not in dumped
    (root,) = [s for s in tree.named("invoke_agent rlm") if attrs(s)["rlm.depth"] == 0]
    query = json.loads(attrs(root)["gen_ai.input.messages"])[0]["parts"][0]["content"]
    assert query == f"{ROOT_MARK} [REDACTED] the word?"
    assert json.loads(attrs(root)["gen_ai.output.messages"])[0]["parts"][0]["content"] == "done"
    cells = sorted(tree.named("execute_tool repl"), key=lambda s: s.start_time or 0)
    assert attrs(cells[0])["gen_ai.tool.call.arguments"] == "x = 1 / 0"
    assert "division by zero" in (cells[0].status.description or "")
    outputs = [attrs(c).get("gen_ai.tool.call.result", "") for c in cells]
    assert any("re: alpha" in out and "blue" in out for out in outputs), outputs


# --- context and cost ------------------------------------------------------------------------------


async def test_batch_runs_are_children_of_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Each item of ``abatch`` becomes its own run span under the span that started the batch."""
    scripted = ScriptedProvider(lambda request: "FINAL(ok)")
    async with RecursiveLM(
        "m", provider=scripted, on_event=OTelTracer(tracer_provider=provider)
    ) as rlm:
        with provider.get_tracer("app").start_as_current_span("batch") as batch:
            results = await rlm.abatch([("a", "q"), ("b", "q"), ("c", "q")], concurrency=3)
    assert [r.result.answer for r in results if r.result] == ["ok", "ok", "ok"]
    runs = Tree(exporter.get_finished_spans()).named("invoke_agent rlm")
    assert sorted(attrs(s)["rlm.item"] for s in runs) == [0, 1, 2]
    assert {s.parent.span_id for s in runs if s.parent} == {batch.get_span_context().span_id}
    assert len({s.context.span_id for s in runs}) == 3


async def test_continue_trace_makes_a_run_a_child_of_a_remote_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A W3C ``traceparent`` header names the run's parent: same trace, that span as parent."""
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    scripted = ScriptedProvider(lambda request: "FINAL(ok)")
    async with RecursiveLM("m", provider=scripted) as rlm:
        with continue_trace({"traceparent": f"00-{trace_id}-{span_id}-01"}):
            await rlm.acomplete("ctx", "q", on_event=OTelTracer(tracer_provider=provider))
    (run,) = Tree(exporter.get_finished_spans()).named("invoke_agent rlm")
    assert run.parent is not None and run.parent.is_remote
    assert (run.context.trace_id, run.parent.span_id) == (int(trace_id, 16), int(span_id, 16))
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked into this context


@pytest.mark.parametrize("how", ["no SDK configured", "no-op provider", "sampled out"])
async def test_runs_that_are_not_recorded_leave_nothing_behind(
    how: str, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an SDK, or with the trace sampled out, no span is exported and the sink holds no state."""
    tracer_provider: trace.TracerProvider | None = None
    if how == "no SDK configured":  # the global provider, as a process that set none has it
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    elif how == "no-op provider":
        tracer_provider = trace.NoOpTracerProvider()
    else:
        tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OTelTracer(tracer_provider=tracer_provider)
    held: list[dict[str, object]] = []

    def watch(event: Event) -> None:
        tracer(event)
        held.append(dict(tracer._runs))

    with FakeChatServer(tree_model) as server:
        await run_tree(server, watch)
    assert max(len(h) for h in held) == 2  # the root and its child, both marked unrecorded
    assert all(v is None for h in held for v in h.values())
    assert tracer._runs == {}
    assert exporter.get_finished_spans() == ()


def test_capture_defaults_to_off_and_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Content capture is off unless the variable says true (any case)."""
    assert OTelTracer().capture_content is False
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "TRUE")
    assert OTelTracer().capture_content is True
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "false")
    assert OTelTracer().capture_content is False
    assert OTelTracer(capture_content=True).capture_content is True


def test_without_the_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing rlm_sdk.otel without opentelemetry-api fails with the install command."""
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "rlm_sdk.otel")
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'rlm-sdk\[otel\]'"):
        importlib.import_module("rlm_sdk.otel")
