"""The server with tracing on: every run becomes spans, children of the caller's ``traceparent``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import ROOT, LiveServer, two_turn_policy

pytestmark = pytest.mark.integration

StartServer = Callable[..., LiveServer]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, for this test only: an SDK with an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield exporter
    provider.shutdown()


def run_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "invoke_agent rlm"]


async def test_chat_completions_continue_the_callers_trace(
    live_server: StartServer, exporter: InMemorySpanExporter
) -> None:
    """A /v1 request with ``traceparent``: the run's span is a child of the caller's span."""
    server = live_server(ScriptedProvider(two_turn_policy), otel=True)
    async with httpx.AsyncClient(base_url=server.url) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"model": f"rlm:{ROOT}", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": TRACEPARENT},
        )
    assert reply.status_code == 200, reply.text
    (run,) = run_spans(exporter)
    assert run.parent is not None
    assert (run.context.trace_id, run.parent.span_id) == (int(TRACE_ID, 16), int(PARENT_ID, 16))
    names = [s.name for s in exporter.get_finished_spans()]
    assert {"turn", f"chat {ROOT}", "execute_tool repl"} <= set(names), names


async def test_page_runs_continue_the_callers_trace(
    live_server: StartServer, exporter: InMemorySpanExporter
) -> None:
    """A run the page starts runs in the registry's task group, and still joins the caller's trace."""
    server = live_server(ScriptedProvider(two_turn_policy), otel=True)
    async with httpx.AsyncClient(base_url=server.url) as client:
        started = await client.post(
            "/api/runs", params={"query": "q"}, content=b"ctx", headers={"traceparent": TRACEPARENT}
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        with anyio.fail_after(20):
            while (await client.get(f"/api/runs/{run_id}")).json()["status"] == "running":
                await anyio.sleep(0.05)
    (run,) = run_spans(exporter)
    assert run.parent is not None and run.parent.span_id == int(PARENT_ID, 16)


async def test_without_otel_the_server_records_nothing(
    live_server: StartServer, exporter: InMemorySpanExporter
) -> None:
    """Tracing is off unless the config asks: the same request leaves no span."""
    server = live_server(ScriptedProvider(two_turn_policy))
    async with httpx.AsyncClient(base_url=server.url) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"model": f"rlm:{ROOT}", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": TRACEPARENT},
        )
    assert reply.status_code == 200
    assert exporter.get_finished_spans() == ()
