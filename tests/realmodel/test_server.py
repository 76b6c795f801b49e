"""`rlm-sdk serve` backed by the real model: the official `openai` client, and the web page.

The page test saves a screenshot of the finished run to ``test-artifacts/realmodel-page.png``
at the top of the checkout (ignored by git), for a person to look at.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rlm_sdk import Event, ModelResponse, TurnStarted
from rlm_sdk._events import event_adapter
from tests.realmodel.llama import MODEL, LlamaServer
from tests.server.helpers import serve_in_thread

pytestmark = [pytest.mark.realmodel, pytest.mark.integration, pytest.mark.timeout(300)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CONTEXT = "\n".join(f"Order {n}: {n % 4} boxes of tea." for n in range(1, 40))
QUERY = "How many boxes were in order 7?"
STOP_REASONS = {"final_answer", "final_var", "max_iterations", "limit"}
WAIT_MS = 200_000


@contextmanager
def rlm_serve(llama: LlamaServer, log: Path) -> Iterator[str]:
    """`rlm-sdk serve` in a child process, its model on the llama.cpp server; yields its URL."""
    command = [sys.executable, "-m", "rlm_sdk.cli", "serve", "--port", "0"]
    command += ["--models", f"openai:{MODEL}", "--max-iterations", "2"]
    command += ["--max-tokens", "48", "--timeout", "150"]
    with log.open("w") as errors:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, "OPENAI_BASE_URL": llama.base_url, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", first)
        assert found, f"rlm-sdk serve did not start: {first!r} {log.read_text()}"
        yield found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_serve_answers_the_openai_client_plain_and_streamed(
    llama: LlamaServer, tmp_path: Path
) -> None:
    """The official client gets a chat completion, then a stream of chunks, from `rlm-sdk
    serve` running real RLM runs on the llama.cpp server; the usage is the runs' own."""
    with rlm_serve(llama, tmp_path / "serve.log") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=200)
        messages: Any = [{"role": "user", "content": CONTEXT}, {"role": "user", "content": QUERY}]
        name = f"rlm:openai:{MODEL}"

        plain = client.chat.completions.create(model=name, messages=messages)
        stream = client.chat.completions.create(
            model=name, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)

    assert plain.model == name
    assert plain.choices[0].finish_reason in ("stop", "length")
    run = (plain.model_extra or {})["rlm"]
    assert run["stop_reason"] in STOP_REASONS
    assert plain.choices[0].message.content == run["answer"]
    assert all(t["completion_tokens"] <= 48 for t in run["trajectory"]["turns"])  # --max-tokens
    models = run["usage"]["models"]
    assert plain.usage is not None
    assert plain.usage.prompt_tokens == sum(m["prompt_tokens"] for m in models.values()) > 0
    assert plain.usage.completion_tokens == sum(m["completion_tokens"] for m in models.values())

    endings = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len(endings) == 1 and endings[0] in ("stop", "length")
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and not chunks[-1].choices


async def run_events(url: str, run_id: str) -> list[Event]:
    """A finished run's events, as the page received them (the SSE backlog, up to ``end``)."""
    events: list[Event] = []
    async with (
        httpx.AsyncClient(base_url=url) as http,
        http.stream("GET", f"/api/runs/{run_id}/events") as stream,
    ):
        ending = False
        async for line in stream.aiter_lines():
            if line == "event: end":
                ending = True
            elif line.startswith("data: ") and not ending:
                events.append(event_adapter.validate_json(line.removeprefix("data: ")))
    return events


async def test_the_page_runs_the_real_model_and_shows_every_turn(
    llama: LlamaServer, browser_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started from the page in Chromium streams every real turn and the server's token
    counts, and ends finished; the screenshot is kept in test-artifacts/."""
    monkeypatch.setenv("OPENAI_BASE_URL", llama.base_url)  # the app's own provider, closed with it
    page = browser_page
    config = {"max_tokens": 48, "max_wall_time": 150.0, "default_max_iterations": 2}
    with serve_in_thread(None, models=[f"openai:{MODEL}"], **config) as server:  # type: ignore[arg-type]
        await page.goto(server.url + "/")
        await page.wait_for_selector("#model option", state="attached")
        await page.fill("#context", CONTEXT)
        await page.fill("#query", QUERY)
        await page.click("#run-button")
        await page.wait_for_selector(
            "#run-status[data-status=finished], #run-status[data-status=error]", timeout=WAIT_MS
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "realmodel-page.png"), full_page=True)
        run_id = await page.evaluate("page.runId")
        async with httpx.AsyncClient(base_url=server.url) as http:
            status = (await http.get(f"/api/runs/{run_id}")).json()
        events = await run_events(server.url, run_id)

    assert status["status"] == "finished", status
    assert await page.get_attribute("#run-status", "data-status") == "finished"
    replies = [e for e in events if isinstance(e, ModelResponse)]
    root_turns = [e for e in events if isinstance(e, TurnStarted) and e.depth == 0]
    turns = page.locator(".rlm-run.depth-0 > .turns > details.turn")
    assert await turns.count() == len(root_turns) >= 1
    tokens = sum(e.prompt_tokens + e.completion_tokens for e in replies)
    shown = int((await page.text_content("#stat-tokens") or "0").replace(",", ""))
    assert shown == tokens > 0
    assert all(e.completion_tokens <= 48 for e in replies)  # the server's --max-tokens
    if status["answer"] is not None:
        assert await page.text_content("#final-answer") == status["answer"]
