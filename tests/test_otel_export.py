"""Spans over OTLP into a real backend, Arize Phoenix on 127.0.0.1, and read back from it.

Phoenix comes from the ``tracing`` dependency group (about 600 MB, so not in ``dev``). The
test starts ``phoenix serve`` on free loopback ports with everything that would reach outside
switched off, and stops it by its PID (its process group), reaped. Without the group the test
is skipped locally; with ``CI`` set it fails. Phoenix takes 20-40 s to start on two busy
cores, so everything that needs it is one test, run by one worker.

The spans Phoenix stored are compared with what the OpenTelemetry SDK handed to the exporter
(an in-memory copy), so the whole tree must arrive, parents included. ``rlm-sdk serve
--otel`` is checked the same way, with the trace a client's ``traceparent`` names. The
trace's page in Phoenix's UI is saved to ``test-artifacts/phoenix-trace.png`` (the guide's
screenshot comes from it).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rlm_sdk import RecursiveLM
from rlm_sdk.otel import OTelTracer
from rlm_sdk.testing import NIAH_QUERY, ScriptedProvider, make_haystack
from tests.server.helpers import CHROMIUM, IN_CI, ROOT_MARK, chromium_page, nested_policy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
INSTALL = "uv sync --all-extras --group tracing"
READY_TIMEOUT = 150.0
PHOENIX_ENV = {
    # Nothing on its own initiative: no fonts, telemetry, sandbox download or docs server.
    "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    "PHOENIX_TELEMETRY_ENABLED": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    "PHOENIX_ENABLE_MCP_SERVER": "false",
    "PHOENIX_ALLOWED_SANDBOX_PROVIDERS": "NONE",
    "PHOENIX_HOST": "127.0.0.1",
}


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def phoenix_server(workdir: Path) -> Iterator[str]:
    """``phoenix serve`` on 127.0.0.1; yields its base URL; stopped by PID and reaped."""
    exe = Path(sys.executable).with_name("phoenix")
    if not exe.exists():
        message = f"Arize Phoenix is not installed; the tracing test needs its group: {INSTALL}"
        if IN_CI:
            pytest.fail(f"{message} (CI must install it: see .ci/run)")
        pytest.skip(message)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env |= PHOENIX_ENV | {
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_WORKING_DIR": str(workdir),
    }
    log = workdir / "phoenix.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"phoenix serve did not start (exit {proc.returncode}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


async def stored_spans(phoenix: str, trace_id: str, count: int) -> list[dict[str, Any]]:
    """The spans Phoenix stored for ``trace_id``, once there are ``count`` of them (it ingests
    asynchronously)."""
    url = f"{phoenix}/v1/projects/default/spans/otlpv1"
    spans: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        with anyio.move_on_after(30):
            while True:
                reply = await client.get(url, params={"trace_id": trace_id, "limit": 1000})
                if reply.status_code == 200:
                    spans = reply.json()["data"]
                    if len(spans) >= count:
                        break
                await anyio.sleep(0.2)
    return spans


def attribute(span: dict[str, Any], key: str) -> Any:
    for item in span["attributes"] or ():
        if item["key"] == key:
            return next(v for v in item["value"].values() if v is not None)
    return None


async def export_a_run(phoenix: str) -> tuple[str, set[tuple[str, str | None, str]]]:
    """A depth-2 run under an application's span, exported in batches over OTLP/HTTP, as an
    application would; returns its trace id and (span, parent, name) as the SDK saw them."""
    copy = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "rlm-sdk-tests"}))
    provider.add_span_processor(SimpleSpanProcessor(copy))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix}/v1/traces"))
    )
    tracer = OTelTracer(tracer_provider=provider, capture_content=True)
    scripted = ScriptedProvider(nested_policy)  # a TEST/DEMO double: no model is called
    async with RecursiveLM(
        "openai:gpt-5-mini", sub_model="openai:gpt-5-nano", provider=scripted, max_depth=2
    ) as rlm:
        with provider.get_tracer("app").start_as_current_span("answer a question") as app:
            result = await rlm.acomplete(
                "The sky is blue today.\n" * 50,
                f"{ROOT_MARK} What colour is the sky?",
                on_event=tracer,
            )
    assert result.answer == "blue"
    provider.force_flush()
    provider.shutdown()
    sent = {
        (
            format(s.context.span_id, "016x"),
            None if s.parent is None else format(s.parent.span_id, "016x"),
            s.name,
        )
        for s in copy.get_finished_spans()
    }
    return format(app.get_span_context().trace_id, "032x"), sent


def serve_with_otel(phoenix: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``rlm-sdk serve --offline --otel`` exporting to Phoenix; its URL and start-up lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix,
        "OTEL_SERVICE_NAME": "rlm-sdk-serve-tests",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_sdk.cli", "serve", "--port", "0", "--offline", "--otel"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(4)]
    m = re.search(r"(http://127\.0\.0\.1:\d+)/", lines[0])
    assert m, f"rlm-sdk serve did not start: {lines!r}"
    return proc, m.group(1), lines


async def serve_a_traced_request(phoenix: str) -> tuple[str, str, list[str]]:
    """One ``/v1/chat/completions`` request carrying ``traceparent`` to ``serve --otel``;
    returns the trace and parent span ids it named, and the server's start-up lines."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    haystack, number = make_haystack(2_000, seed=5)
    proc, url, lines = serve_with_otel(phoenix)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            reply = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "rlm:scripted-niah",
                    "messages": [
                        {"role": "user", "content": haystack},
                        {"role": "user", "content": NIAH_QUERY},
                    ],
                },
                headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == str(number)
    finally:
        proc.terminate()  # a graceful stop also flushes the spans still batched
        proc.communicate(timeout=30)
    return trace_id, parent_id, lines


async def screenshot_trace(phoenix: str, trace_id: str) -> None:
    """Phoenix's page for the trace, with a model request selected, saved as a PNG."""
    async with httpx.AsyncClient() as client:
        projects = (await client.get(f"{phoenix}/v1/projects")).json()["data"]
    project = next(p["id"] for p in projects if p["name"] == "default")
    async with chromium_page() as page:
        await page.set_viewport_size({"width": 1600, "height": 1000})
        await page.goto(f"{phoenix}/projects/{project}/traces/{trace_id}")
        await page.locator("text=invoke_agent rlm >> visible=true").first.wait_for(timeout=30_000)
        await page.locator("text=chat gpt-5-mini >> visible=true").first.click()
        # The selected span's details: its reply, under "Output".
        await page.locator("text=Let me look at the context. >> visible=true").first.wait_for(
            timeout=30_000
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "phoenix-trace.png"))


async def test_spans_reach_phoenix_over_otlp_whole(tmp_path: Path) -> None:
    """An application's run and a ``serve --otel`` run arrive in Phoenix as the trees the SDK exported, under their callers' spans."""
    with phoenix_server(tmp_path) as phoenix:
        trace_id, sent = await export_a_run(phoenix)
        stored = await stored_spans(phoenix, trace_id, len(sent))
        assert {(s["span_id"], s["parent_span_id"], s["name"]) for s in stored} == sent
        chats = [s for s in stored if s["name"] == "chat gpt-5-mini"]
        assert len(chats) == 2
        assert {attribute(s, "gen_ai.request.model") for s in chats} == {"gpt-5-mini"}
        assert all(attribute(s, "gen_ai.usage.input_tokens") > 0 for s in chats)

        served_trace, parent_id, lines = await serve_a_traced_request(phoenix)
        assert f"tracing: OpenTelemetry spans, OTLP over HTTP to {phoenix}/v1/traces" in lines[3]
        served = await stored_spans(phoenix, served_trace, 5)
        (run,) = [s for s in served if s["name"] == "invoke_agent rlm"]
        assert run["parent_span_id"] == parent_id
        assert {"turn", "chat scripted-niah", "execute_tool repl"} <= {s["name"] for s in served}

        if Path(CHROMIUM).exists() or IN_CI:
            await screenshot_trace(phoenix, trace_id)
