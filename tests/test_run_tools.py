"""The REPL as a tool: calls run in order and answer back, broken calls get errors, answers
written with code wait for confirmation, servers without tools fall back to fenced text
(scripted test/demo doubles and the fake server stand in for models; REPL workers are real)."""

from __future__ import annotations

import pytest

from rlm_sdk import (
    CompletionRequest,
    CompletionResponse,
    ConfigurationError,
    Event,
    OpenAICompatibleProvider,
    ProtocolSwitched,
    RecursiveLM,
    ReplyParsed,
)
from rlm_sdk.testing import FakeChatServer, ScriptedProvider, tool_reply

pytestmark = pytest.mark.integration

F = "```"


def rlm_with(replies: object, **kw: object) -> tuple[RecursiveLM, ScriptedProvider]:
    provider = ScriptedProvider(replies)  # type: ignore[arg-type]
    return RecursiveLM("root", provider=provider, protocol="tools", **kw), provider  # type: ignore[arg-type]


def results(request: CompletionRequest) -> list[str]:
    """The tool results the request carries after the model's last calls."""
    out: list[str] = []
    for message in reversed(request.messages):
        if message.role != "tool":
            break
        out.insert(0, message.content)
    return out


async def test_a_repl_call_runs_and_its_output_comes_back_as_the_tool_result() -> None:
    """repl(code) runs in the REPL; its output is the tool result; final_answer ends the run."""
    events: list[Event] = []

    def answer(request: CompletionRequest) -> CompletionResponse:
        (output,) = results(request)
        return tool_reply(("final_answer", {"answer": output.split("\n")[1]}))

    rlm, provider = rlm_with(
        [tool_reply(("repl", {"code": "print(len(context))"}), text="Measuring."), answer],
        on_event=events.append,
    )
    result = await rlm.acomplete("hello", "How long?")
    assert (result.answer, result.stop_reason, result.iterations) == ("5", "final_answer", 2)
    first, second = provider.requests
    assert [t.name for t in first.tools or []] == ["repl", "final_answer"]
    assert "call the `repl` tool" in first.messages[0].content.replace("calling", "call")
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert second.messages[2].content == "Measuring."
    assert second.messages[2].tool_calls[0].name == "repl"
    assert second.messages[3].tool_call_id == second.messages[2].tool_calls[0].id
    parsed = [e for e in events if isinstance(e, ReplyParsed)]
    assert parsed[0].fence == "tool_call" and parsed[0].code_blocks == 1
    assert result.trajectory.turns[0].tool_calls[0].name == "repl"
    assert result.trajectory.turns[0].cells[0].stdout.strip() == "5"


async def test_several_calls_in_one_reply_run_in_order() -> None:
    """Two repl calls: one namespace, run in order, one result each, in the same order."""
    rlm, provider = rlm_with(
        [
            tool_reply(("repl", {"code": "a = 20"}), ("repl", {"code": "print(a + 22)"})),
            tool_reply(("final_answer", {"variable": "a"})),
        ]
    )
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "20"
    assert results(provider.requests[1]) == ["REPL output:\n(no output)", "REPL output:\n42"]
    assert [len(t.cells) for t in result.trajectory.turns] == [2, 0]


async def test_final_answer_naming_a_variable_the_same_reply_set_is_taken() -> None:
    """repl binds total, final_answer(variable=total) in the same reply: answered at once."""
    rlm, provider = rlm_with(
        [tool_reply(("repl", {"code": "total = 6 * 7"}), ("final_answer", {"variable": "total"}))]
    )
    result = await rlm.acomplete("ctx", "q")
    assert (result.answer, result.iterations, len(provider.requests)) == ("42", 1, 1)


async def test_a_final_answer_written_with_code_waits_for_confirmation() -> None:
    """final_answer(text) after a repl call in one reply is not taken; its result asks again."""
    guess = tool_reply(
        ("repl", {"code": "print(context.count('x'))"}), ("final_answer", {"answer": "7"})
    )

    def confirm(request: CompletionRequest) -> CompletionResponse:
        output, asked = results(request)
        assert output == "REPL output:\n3"
        assert "written before you saw" in asked
        return tool_reply(("final_answer", {"answer": "3"}))

    rlm, _ = rlm_with([guess, confirm])
    result = await rlm.acomplete("x x x", "q")
    assert result.answer == "3"
    assert result.trajectory.turns[0].unconfirmed_answer == "7"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(("repl", '{"code": "print(1)'), "are not valid JSON", id="invalid-json"),
        pytest.param(("web_search", {"q": "rlm"}), "there is no tool `web_search`", id="unknown"),
        pytest.param(("repl", ""), "repl was called with no arguments", id="no-arguments"),
        pytest.param(("repl", {"source": "x"}), 'repl needs a "code" argument', id="no-code"),
        pytest.param(("final_answer", {}), 'final_answer needs "answer"', id="empty-final"),
    ],
)
async def test_a_broken_call_gets_an_error_result_and_the_run_goes_on(
    call: tuple[str, object], error: str
) -> None:
    """Bad arguments, an unknown function, no arguments: an Error: result, never a crash."""
    events: list[Event] = []
    rlm, provider = rlm_with(
        [tool_reply(call), tool_reply(("final_answer", {"answer": "ok"}))],  # type: ignore[arg-type]
        on_event=events.append,
    )
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "ok"
    (sent,) = results(provider.requests[1])
    assert sent.startswith("Error: ") and error in sent
    problems = [p for e in events if isinstance(e, ReplyParsed) for p in e.problems]
    assert len(problems) == 1 and error in problems[0]
    assert result.trajectory.turns[0].cells == []


async def test_a_text_reply_with_a_repl_block_still_runs() -> None:
    """A model that answers in text despite the tools: its fenced code runs as usual."""
    rlm, provider = rlm_with([f"{F}repl\nprint(2 + 2)\n{F}", "FINAL(4)"])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "4"
    assert provider.requests[1].messages[-1].content == "REPL output:\n4"


async def test_child_runs_use_the_tools_too() -> None:
    """rlm_query from a repl call starts a child run that answers through final_answer."""

    def reply(request: CompletionRequest) -> CompletionResponse:
        is_root = "The query" in request.messages[1].content
        if is_root and len(request.messages) == 2:
            return tool_reply(("repl", {"code": "print(rlm_query('say leaf'))"}))
        if is_root:
            return tool_reply(("final_answer", {"answer": results(request)[0].split("\n")[1]}))
        if len(request.messages) == 2:
            return tool_reply(("repl", {"code": "found = context.split()[-1]"}))
        return tool_reply(("final_answer", {"variable": "found"}))

    rlm = RecursiveLM("root", provider=ScriptedProvider(reply), protocol="tools", max_depth=2)
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "leaf"
    child = result.trajectory.turns[0].cells[0].sub_calls[0].child
    assert child is not None and child.turns[-1].tool_calls[0].name == "final_answer"


async def test_a_server_refusing_tools_switches_the_run_to_fenced_text() -> None:
    """protocol='auto' against a server that 400s on tools: one event, the same turn sent again
    as fenced text, and the run answers with nothing lost."""
    events: list[Event] = []

    def reply(body: dict[str, object]) -> str:
        messages = body["messages"]
        assert isinstance(messages, list)
        if len(messages) == 2:
            return f"{F}repl\nprint(len(context))\n{F}"
        return "FINAL(" + messages[-1]["content"].split("\n")[1] + ")"

    with FakeChatServer(reply, tools=False) as server:
        provider = OpenAICompatibleProvider(base_url=server.base_url)
        async with RecursiveLM(
            "fake", provider=provider, protocol="auto", on_event=events.append
        ) as rlm:
            result = await rlm.acomplete("four", "How long?")
        await provider.aclose()
        bodies = [r.json for r in server.requests]
    assert result.answer == "4"
    assert result.iterations == 2
    assert "tools" in bodies[0] and all("tools" not in b for b in bodies[1:])
    assert "```repl" in bodies[1]["messages"][0]["content"]
    switched = [e for e in events if isinstance(e, ProtocolSwitched)]
    assert [(e.from_protocol, e.to_protocol, e.iteration) for e in switched] == [
        ("tools", "fenced", 1)
    ]
    assert "tools" in switched[0].reason


async def test_tool_calls_over_http_through_the_fake_server() -> None:
    """The fake server plays a model that calls tools; results go back as role=tool messages."""

    def reply(body: dict[str, object]) -> dict[str, object]:
        messages = body["messages"]
        assert isinstance(messages, list)
        if messages[-1]["role"] == "tool":
            return {"tool_calls": [{"name": "final_answer", "arguments": {"variable": "n"}}]}
        return {
            "content": None,
            "tool_calls": [{"name": "repl", "arguments": {"code": "n = len(context)"}}],
        }

    with FakeChatServer(reply) as server:
        provider = OpenAICompatibleProvider(base_url=server.base_url)
        rlm = RecursiveLM("fake", provider=provider, protocol="tools")
        result = await rlm.acomplete("abcdef", "q")
        await provider.aclose()
        last = server.requests[-1].json
    assert result.answer == "6"
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "tool"]
    assert last["messages"][2]["tool_calls"][0]["function"]["name"] == "repl"


def test_tools_need_a_provider_that_has_them() -> None:
    """protocol='tools' with a provider without tool calling is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="tool calling"):
        RecursiveLM("m", provider=ScriptedProvider(["x"], tools=False), protocol="tools")
    with pytest.raises(ConfigurationError, match="protocol must be"):
        RecursiveLM("m", provider=ScriptedProvider(["x"]), protocol="json")  # type: ignore[arg-type]


async def test_auto_uses_fenced_text_where_the_provider_has_no_tools() -> None:
    """protocol='auto' with a provider that has no tool calling sends no tools."""
    provider = ScriptedProvider(["FINAL(ok)"], tools=False)
    rlm = RecursiveLM("m", provider=provider, protocol="auto")
    assert (await rlm.acomplete("ctx", "q")).answer == "ok"
    assert provider.requests[0].tools is None
    assert "```repl" in provider.requests[0].messages[0].content


async def test_the_last_call_at_the_iteration_limit_offers_final_answer() -> None:
    """At max_iterations the last call still offers the tools, and final_answer is the answer."""

    def last(request: CompletionRequest) -> CompletionResponse:
        assert request.tools is not None
        assert "by calling final_answer" in request.messages[-1].content
        return tool_reply(("final_answer", {"variable": "x"}))

    rlm, _ = rlm_with([tool_reply(("repl", {"code": "x = 'best'"})), last], max_iterations=1)
    result = await rlm.acomplete("ctx", "q")
    assert (result.answer, result.stop_reason) == ("best", "max_iterations")
