"""``response_format`` on ``/v1/chat/completions``, driven by the official ``openai`` client
against a real server on 127.0.0.1. The root model is a ``ScriptedProvider`` test double whose
code reads each answer from the context in a real REPL worker."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from rlm_sdk import CompletionRequest, RecursiveLM
from rlm_sdk._recorder import JSONLRecorder
from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import ROOT, LiveServer, repl

pytestmark = pytest.mark.integration

StartServer = Callable[..., LiveServer]
ORDER = "order 5521 for Ada Lovelace: 4 lamps\n"


class Order(BaseModel):
    number: int
    customer: str
    note: str | None = None


def client_for(server: LiveServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def order_policy(request: CompletionRequest) -> str:
    """Read the order with code; the first answer has the number as words, the fix a number."""
    messages = request.messages
    said = [m.content for m in messages if m.role == "assistant"]
    if not said:
        return repl(
            "import re\nm = re.search(r'order (\\d+) for ([^:]+):', context)\n"
            "order = {'number': 'number ' + m.group(1), 'customer': m.group(2), 'note': None}\n"
            "print(order)"
        )
    if "was not taken" in messages[-1].content:
        return repl("order['number'] = int(m.group(1))\nFINAL_VAR(order)", "Fixing the number.")
    return "FINAL_VAR(order)"


async def test_parse_with_a_pydantic_model_gets_the_typed_order(live_server: StartServer) -> None:
    """client.chat.completions.parse(response_format=Order): the schema reaches the root model,
    the rejected first answer is retried, and ``parsed`` is the order read from the context."""
    server = live_server(ScriptedProvider(order_policy))
    async with client_for(server) as client:
        completion = await client.chat.completions.parse(
            model=f"rlm:{ROOT}",
            messages=[
                {"role": "user", "content": ORDER},
                {"role": "user", "content": "The order?"},
            ],
            response_format=Order,
        )
    found = re.search(r"order (\d+) for ([^:]+):", ORDER)
    assert found is not None
    parsed = completion.choices[0].message.parsed
    assert parsed == Order(number=int(found.group(1)), customer=found.group(2), note=None)
    first = server.provider.requests[0].messages[1].content
    assert '"additionalProperties": false' in first and '"title": "Order"' in first
    assert len(server.provider.requests) == 3  # read, rejected answer, fixed answer


async def test_json_schema_content_is_json_also_when_streamed(live_server: StartServer) -> None:
    """With a json_schema response_format the content is JSON, whole or in chunks."""
    server = live_server(ScriptedProvider(order_policy))
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "order", "schema": Order.model_json_schema()},
    }
    messages = [{"role": "user", "content": ORDER}, {"role": "user", "content": "The order?"}]
    async with client_for(server) as client:
        whole = await client.chat.completions.create(
            model=f"rlm:{ROOT}",
            messages=messages,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
        )
        stream = await client.chat.completions.create(
            model=f"rlm:{ROOT}",
            messages=messages,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
            stream=True,
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    content = whole.choices[0].message.content
    assert content is not None
    assert (
        json.loads(content)
        == json.loads(streamed)
        == Order.model_validate_json(content).model_dump()
    )


async def test_bad_response_formats_are_400(live_server: StartServer) -> None:
    """An unknown format type, a missing schema or a keyword outside the subset: 400, no run."""
    server = live_server(ScriptedProvider(order_policy))
    bad = [
        {"type": "yaml"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"if": {}}}},
    ]
    async with client_for(server) as client:
        for response_format in bad:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model=f"rlm:{ROOT}",
                    messages=[{"role": "user", "content": "q"}],
                    response_format=response_format,  # type: ignore[arg-type]
                )
            assert caught.value.param == "response_format"
    assert server.provider.requests == []


async def test_answers_that_never_match_are_a_500_with_a_code(live_server: StartServer) -> None:
    """A run whose answers never match the schema fails as output_validation_failed."""

    def stubborn(request: CompletionRequest) -> str:
        return repl("n = len(context)\nFINAL_VAR(n)")

    server = live_server(ScriptedProvider(stubborn))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        reply = await http.post(
            "/v1/chat/completions",
            json={
                "model": f"rlm:{ROOT}",
                "messages": [{"role": "user", "content": "abc"}, {"role": "user", "content": "q"}],
                "response_format": {"type": "json_object"},
            },
        )
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["code"] == "output_validation_failed" and "expected object" in error["message"]
    assert len(server.provider.requests) == 3  # the first answer and two retries


@pytest.mark.browser
async def test_a_saved_typed_run_shows_its_rejected_answer(
    live_server: StartServer, browser_page: Any, tmp_path: Path
) -> None:
    """The page draws an OutputRejected event of a saved run as a note with the reasons."""
    path = tmp_path / "typed-run.jsonl"
    with JSONLRecorder(path) as recorder:
        async with RecursiveLM(ROOT, provider=ScriptedProvider(order_policy)) as rlm:
            result = await rlm.acomplete(ORDER, "The order?", output_type=Order, on_event=recorder)
    assert isinstance(result.output, Order)
    server = live_server(ScriptedProvider(["FINAL(unused)"]))
    page = browser_page
    await page.goto(server.url + "/")
    await page.wait_for_selector("#model option", state="attached")
    await page.set_input_files("#trajectory-upload", str(path))
    await page.wait_for_selector("#run-status[data-status=saved]", timeout=20_000)
    note = await page.locator(".note.rejected").first.text_content()
    assert note is not None and "2 tries left" in note and "$.number" in note
