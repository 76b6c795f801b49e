"""The page in real headless Chromium: run, watch, stop, and open a saved trajectory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlm_sdk import CompletionRequest, CompletionResponse, RecursiveLM
from rlm_sdk._recorder import JSONLRecorder
from rlm_sdk.testing import ScriptedProvider, tool_reply
from tests.server.helpers import (
    ROOT,
    ROOT_MARK,
    LiveServer,
    nested_policy,
    repl,
    sleeping_policy,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

StartServer = Callable[..., LiveServer]
WAIT_MS = 20_000


async def open_page(page: Any, server: LiveServer) -> None:
    await page.goto(server.url + "/")
    # A selector, not wait_for_function: polling a JS string needs eval, which the page's CSP forbids.
    await page.wait_for_selector("#model option", state="attached")


async def test_run_streams_nested_steps_and_the_final_answer(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """Context and query in, Run pressed: turns, highlighted cells, nested child runs and the answer appear."""
    server = live_server(ScriptedProvider(nested_policy))
    page = browser_page
    await open_page(page, server)
    await page.fill("#context", "The sky is blue today.\n" * 50)
    await page.fill("#query", f"{ROOT_MARK} What colour is the sky?")
    await page.fill("#max-depth", "2")
    await page.click("#run-button")
    await page.wait_for_selector("#final:not([hidden])", timeout=WAIT_MS)
    await page.wait_for_selector("#run-status[data-status=finished]", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    assert await page.text_content("#final-answer") == "blue"
    root_turns = page.locator(".rlm-run.depth-0 > .turns > details.turn")
    assert await root_turns.count() == 2
    assert (
        await page.locator(".cell pre.code .tok-com").first.text_content()
        == "# count, then delegate"
    )
    assert await page.locator(".cell pre.code .tok-bi", has_text="rlm_query").count() >= 1
    child = page.locator(".subcall.kind-rlm .rlm-run.depth-1")
    assert await child.count() == 1
    assert await child.locator("details.turn").count() == 2
    assert await child.locator(".subcall.kind-llm").count() == 1
    assert await page.text_content("#stat-turns") == "4"
    assert await page.text_content("#stat-cells") == "2"
    assert await page.text_content("#stat-calls") == "2"
    assert int((await page.text_content("#stat-tokens") or "0").replace(",", "")) > 0
    root_cell = page.locator(".rlm-run.depth-0 > .turns > details.turn .turn-body > .cell").first
    output = await root_cell.locator("> .cell-output pre").text_content()
    assert output is not None and "1150 characters" in output


async def test_model_output_is_shown_as_text_never_as_html(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """HTML in a reply, in cell output and in the answer is displayed literally, not parsed."""
    evil = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
    provider = ScriptedProvider([repl(f"print({evil!r})", evil), f"FINAL({evil})"])
    server = live_server(provider)
    page = browser_page
    await open_page(page, server)
    await page.fill("#context", "ctx")
    await page.click("#run-button")
    await page.wait_for_selector("#final:not([hidden])", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "escaped.png"), full_page=True)
    assert await page.text_content("#final-answer") == evil
    assert await page.locator("#run img, #run b").count() == 0
    assert await page.title() != "pwned"
    assert evil in (await page.locator(".cell-output pre").first.text_content() or "")


async def test_stop_button_cancels_the_run(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """Stop during a sleeping cell ends the run as stopped, in the page and on the server."""
    server = live_server(ScriptedProvider(sleeping_policy))
    page = browser_page
    await open_page(page, server)
    await page.fill("#context", "ctx")
    await page.click("#run-button")
    await page.wait_for_selector(".cell .cell-status.spinner", timeout=WAIT_MS)
    assert await page.is_enabled("#stop-button")
    await page.click("#stop-button")
    await page.wait_for_selector("#run-status[data-status=cancelled]", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)

    run_id = await page.evaluate("page.runId")
    async with httpx.AsyncClient(base_url=server.url) as http:
        status = (await http.get(f"/api/runs/{run_id}")).json()
    assert status["status"] == "cancelled"
    assert await page.is_disabled("#stop-button")
    assert await page.is_enabled("#run-button")
    assert "Stopped" in (await page.text_content("#run-error") or "")
    assert len(server.provider.requests) == 1


async def test_saved_trajectory_renders_like_a_live_run(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """A JSONL file opened from the page is drawn with its steps, nesting and final answer."""
    path = tmp_path / "saved-run.jsonl"
    with JSONLRecorder(path) as recorder:
        async with RecursiveLM(ROOT, provider=ScriptedProvider(nested_policy), max_depth=2) as rlm:
            await rlm.acomplete("The sky is blue.", f"{ROOT_MARK} colour?", on_event=recorder)
    server = live_server(ScriptedProvider(nested_policy))
    page = browser_page
    await open_page(page, server)
    await page.set_input_files("#trajectory-upload", str(path))
    await page.wait_for_selector("#run-status[data-status=saved]", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "saved.png"), full_page=True)
    assert await page.text_content("#final-answer") == "blue"
    assert await page.locator(".rlm-run.depth-1").count() == 1
    assert await page.text_content("#stat-turns") == "4"
    assert "saved-run.jsonl" in (await page.text_content("#run-title") or "")
    assert server.provider.requests == []


async def test_how_each_reply_was_read_is_shown(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """Reasoning collapsed, a glued fence and a python block run, a confirmation asked: all shown."""
    first = CompletionResponse(
        text="<think>\nplan: count\n</think>\nCode:\n```python\nprint(len(context))```",
        reasoning="the field's reasoning",
        model=ROOT,
    )
    guess = "```repl\nx = len(context)\n```\nREPL output: 99\nFINAL(99)"
    server = live_server(ScriptedProvider([first, guess, "FINAL_VAR(x)"]))
    page = browser_page
    await open_page(page, server)
    await page.fill("#context", "abc")
    await page.click("#run-button")
    await page.wait_for_selector("#run-status[data-status=finished]", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "dialects.png"), full_page=True)
    assert await page.text_content("#final-answer") == "3"
    reasoning = page.locator("details.reasoning").first
    assert not await reasoning.get_attribute("open")  # collapsed
    summary = await reasoning.locator("summary").text_content()
    assert summary is not None and summary.startswith("reasoning ·")
    assert "<think>" not in (await page.locator(".reply").first.text_content() or "")
    read = await page.locator(".note.read").first.text_content()
    assert read is not None and read.startswith("code from python") and "glued" in read
    asked = await page.locator(".note.confirmation").first.text_content()
    assert asked is not None and "99" in asked
    assert await page.text_content("#stat-cells") == "2"


def _tools_policy(request: CompletionRequest) -> CompletionResponse | str:
    """A stand-in model that calls the REPL tool until its history is compacted, then answers."""
    if request.messages[-1].content.startswith("This conversation is about to outgrow"):
        return "Summary: printed long lines three times."
    if "were summarised" in request.messages[1].content:
        return tool_reply(("final_answer", {"answer": "done"}))
    return tool_reply(("repl", {"code": "print('y' * 1500)"}))


async def test_tool_calls_and_compactions_are_shown(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """A saved run made with tools and a small window: its calls and its compaction appear."""
    path = tmp_path / "tools-run.jsonl"
    with JSONLRecorder(path) as recorder:
        async with RecursiveLM(
            ROOT,
            provider=ScriptedProvider(_tools_policy),
            protocol="tools",
            context_windows={ROOT: 2_500},
        ) as rlm:
            result = await rlm.acomplete("ctx", "q", on_event=recorder)
    assert result.answer == "done"
    server = live_server(ScriptedProvider(["FINAL(unused)"]))
    page = browser_page
    await open_page(page, server)
    await page.set_input_files("#trajectory-upload", str(path))
    await page.wait_for_selector("#run-status[data-status=saved]", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "tools.png"), full_page=True)
    assert await page.text_content("#final-answer") == "done"
    assert await page.locator(".tool-call .call-fn", has_text="repl").count() >= 3
    compaction = await page.locator(".note.compaction summary").first.text_content()
    assert compaction is not None and compaction.startswith("History compacted")
    assert "history" in compaction
