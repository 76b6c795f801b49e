"""Follow-up questions from the page: its API, and the page itself in real headless Chromium.

The model is the ScriptedProvider test double (``conversation_policy``); the REPL workers
and the server on 127.0.0.1 are real.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import LiveServer, repl_workers
from tests.server.test_page_api import read_sse
from tests.server.test_sessions import conversation_policy, settle

pytestmark = pytest.mark.integration

StartServer = Callable[..., LiveServer]
WAIT_MS = 20_000


async def test_a_finished_run_takes_a_follow_up_in_its_session(live_server: StartServer) -> None:
    """A page run is kept in a session: its follow-up is a new run in the same worker, which
    still holds the first run's variable."""
    server = live_server(ScriptedProvider(conversation_policy))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        first = (await http.post("/api/runs?query=How long?", content=b"0123456789ab")).json()
        _events, end = await read_sse(http, first["events_url"])
        assert (end["status"], end["answer"]) == ("finished", "12")
        assert end["session"]
        workers = await settle(lambda w: len(w) == 1)
        asked = await http.post(
            f"/api/runs/{first['id']}/follow-up", params={"query": "And twice that?"}
        )
        assert asked.status_code == 201, asked.text
        _events, end = await read_sse(http, asked.json()["events_url"])
        assert (end["status"], end["answer"]) == ("finished", "24")
        assert repl_workers() == workers
        empty = await http.post(f"/api/runs/{first['id']}/follow-up", params={"query": " "})
        assert empty.status_code == 400


async def test_a_follow_up_after_the_session_closed_is_refused(live_server: StartServer) -> None:
    """Once the session is gone (idle here), a follow-up is a 409 that says to start again."""
    server = live_server(ScriptedProvider(conversation_policy), session_idle_timeout=0.2)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        first = (await http.post("/api/runs?query=How long?", content=b"abc")).json()
        _events, end = await read_sse(http, first["events_url"])
        assert end["answer"] == "3"
        assert await settle(lambda w: not w) == set()
        asked = await http.post(f"/api/runs/{first['id']}/follow-up", params={"query": "more?"})
    assert asked.status_code == 409
    assert asked.json()["error"]["code"] == "session_closed"


@pytest.mark.browser
async def test_the_page_asks_a_follow_up_and_shows_its_answer(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """Run, then the follow-up box under the answer: its answer replaces the first, computed
    from a variable the first run left in the REPL."""
    server = live_server(ScriptedProvider(conversation_policy))
    page = browser_page
    await page.goto(server.url + "/")
    await page.wait_for_selector("#model option", state="attached")
    assert await page.is_hidden("#followup")
    await page.fill("#context", "x" * 21)
    await page.fill("#query", "How long?")
    await page.click("#run-button")
    await page.wait_for_selector("#run-status[data-status=finished]", timeout=WAIT_MS)
    assert await page.text_content("#final-answer") == "21"
    await page.wait_for_selector("#followup:not([hidden])", timeout=WAIT_MS)
    await page.fill("#followup-query", "And twice that?")
    await page.click("#followup-button")
    await page.wait_for_selector("#run-title:has-text('Follow-up 1')", timeout=WAIT_MS)
    await page.wait_for_selector("#run-status[data-status=finished]", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "follow-up.png"), full_page=True)
    assert await page.text_content("#final-answer") == "42"
    assert await page.is_visible("#followup")
    cell = await page.locator(".cell pre.code").first.text_content()
    assert cell is not None and "x * 2" in cell
