"""The turn loop on replies real models write: other fences, FINAL of a variable, answers
written before the output, reasoning, empty replies and tool-call markup (scripted
test/demo doubles stand in for the models; the REPL workers are real)."""

from __future__ import annotations

import pytest

from rlm_sdk import (
    CompletionRequest,
    CompletionResponse,
    ConfirmationAsked,
    EmptyReplyError,
    Event,
    ModelResponse,
    RecursiveLM,
    ReplyParsed,
)
from rlm_sdk._protocol import MAX_HISTORY_REPLY_CHARS
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration

F = "```"


def rlm_with(replies: object, **kw: object) -> tuple[RecursiveLM, ScriptedProvider]:
    provider = ScriptedProvider(replies)  # type: ignore[arg-type]
    return RecursiveLM("root", provider=provider, **kw), provider  # type: ignore[arg-type]


def last_user(request: CompletionRequest) -> str:
    return request.messages[-1].content


async def test_a_glued_fence_runs_and_its_output_comes_back() -> None:
    """The closing fence glued to the last line: the block runs (it used to be 'never closed')."""
    rlm, provider = rlm_with([f"{F}repl\nprint(len(context)){F}", "FINAL(done)"])
    result = await rlm.acomplete("abcdef", "q")
    assert result.answer == "done"
    assert last_user(provider.requests[1]).startswith("REPL output:\n6")
    assert result.trajectory.turns[0].fence == "repl"


async def test_a_python_block_runs_and_the_event_names_the_fence() -> None:
    """No repl block, no answer: the ```python block runs, and ReplyParsed says so."""
    events: list[Event] = []
    rlm, provider = rlm_with(
        [f"Code:\n{F}python\nprint(context.upper())\n{F}", "FINAL(ok)"], on_event=events.append
    )
    await rlm.acomplete("shout", "q")
    parsed = [e for e in events if isinstance(e, ReplyParsed)]
    assert parsed[0].fence == "python" and parsed[0].code_blocks == 1
    assert "SHOUT" in last_user(provider.requests[1])


async def test_final_of_a_bound_variable_answers_with_its_value() -> None:
    """FINAL(random_number) after the code bound it: the value, not the name."""
    rlm, _ = rlm_with(
        [f"{F}repl\nrandom_number = 22\n{F}", "I can now answer.\n\nFINAL(random_number)"]
    )
    result = await rlm.acomplete("ctx", "Pick a number.")
    assert (result.answer, result.stop_reason) == ("22", "final_var")
    assert result.trajectory.turns[1].reply.endswith("FINAL(random_number)")  # raw reply kept


async def test_final_of_an_unbound_name_is_the_text() -> None:
    """FINAL(Paris) with no variable of that name answers the text Paris."""
    rlm, _ = rlm_with(["FINAL(Paris)"])
    result = await rlm.acomplete("ctx", "Capital of France?")
    assert (result.answer, result.stop_reason) == ("Paris", "final_answer")


async def test_final_quotes_around_a_literal_are_dropped() -> None:
    """FINAL("Blue") answers Blue."""
    rlm, _ = rlm_with(['FINAL("Blue")'])
    assert (await rlm.acomplete("Pick a color.")).answer == "Blue"


async def test_an_answer_written_with_its_code_is_confirmed_after_the_real_output() -> None:
    """Code, an invented output and FINAL: the code runs, the real output is shown, the model
    is asked to confirm, and the invented text never enters the history."""
    events: list[Event] = []
    invented = f"{F}repl\nprint(context.count('x'))\n{F}\nREPL output:\n{F}\n7\n{F}\nFINAL(7)"

    def confirm(request: CompletionRequest) -> str:
        assert "REPL output:\n3" in last_user(request)
        return "FINAL(3)"

    rlm, provider = rlm_with([invented, confirm], on_event=events.append)
    result = await rlm.acomplete("x x x", "How many x?")
    assert result.answer == "3"
    asked = [e for e in events if isinstance(e, ConfirmationAsked)]
    assert [e.answer for e in asked] == ["7"]
    history = provider.requests[1].messages
    assert history[-2].role == "assistant" and "7" not in history[-2].content
    assert "FINAL(7)" in last_user(provider.requests[1])
    assert result.trajectory.turns[0].unconfirmed_answer == "7"


async def test_a_repeated_answer_is_taken_even_with_code() -> None:
    """Asked once, the same answer again is taken, code or not."""
    reply = f"{F}repl\nprint(1)\n{F}\nFINAL(one)"
    rlm, provider = rlm_with([reply, reply])
    result = await rlm.acomplete("ctx", "q")
    assert (result.answer, result.iterations) == ("one", 2)
    assert len(provider.requests) == 2


async def test_final_var_of_a_variable_the_code_sets_needs_no_confirmation() -> None:
    """Code that binds `total`, then FINAL_VAR(total) in the same reply: answered at once."""
    rlm, _ = rlm_with([f"{F}repl\ntotal = len(context)\n{F}\nFINAL_VAR(total)"])
    result = await rlm.acomplete("abcd", "q")
    assert (result.answer, result.iterations) == ("4", 1)


async def test_final_var_after_failing_code_is_confirmed() -> None:
    """The code set the variable, then failed: the answer waits for the model to see the error."""
    rlm, provider = rlm_with(
        [f"{F}repl\ntotal = 1\n1 / 0\n{F}\nFINAL_VAR(total)", "FINAL_VAR(total)"]
    )
    result = await rlm.acomplete("ctx", "q")
    assert (result.answer, result.iterations) == ("1", 2)
    assert "ZeroDivisionError" in last_user(provider.requests[1])


async def test_final_called_in_code_ends_the_run() -> None:
    """FINAL(value) inside a repl block answers with str(value), as FINAL_VAR(value) does."""
    rlm, _ = rlm_with([f"{F}repl\nresult = {{'a': 1}}\nFINAL(result)\n{F}"])
    result = await rlm.acomplete("ctx", "q")
    assert (result.answer, result.stop_reason) == ("{'a': 1}", "final_var")


async def test_reasoning_is_recorded_and_never_sent_back() -> None:
    """A reasoning field and a <think> block: in the events and the trajectory, not the history."""
    events: list[Event] = []
    first = CompletionResponse(
        text=f"<think>count first</think>\n{F}repl\nprint(1)\n{F}",
        reasoning="field thoughts",
        model="root",
    )
    rlm, provider = rlm_with([first, "FINAL(1)"], on_event=events.append)
    result = await rlm.acomplete("ctx", "q")
    responses = [e for e in events if isinstance(e, ModelResponse)]
    assert responses[0].reasoning == "field thoughts\n\ncount first"
    assert responses[0].text.startswith("<think>")  # the raw reply stays in the record
    assert result.trajectory.turns[0].reasoning == "field thoughts\n\ncount first"
    sent = " ".join(m.content for m in provider.requests[1].messages)
    assert "count first" not in sent and "field thoughts" not in sent


async def test_a_sub_model_reasoning_stays_out_of_the_answer_the_code_gets() -> None:
    """llm_query returns the text without <think>; the sub-call record keeps the reasoning."""

    def reply(request: CompletionRequest) -> str:
        if request.model == "sub":
            return "<think>\nhmm\n</think>\nyes"
        if len(request.messages) == 2:
            return f"{F}repl\nprint(repr(llm_query('ok?')))\n{F}"
        return "FINAL(done)"

    rlm = RecursiveLM("root", sub_model="sub", provider=ScriptedProvider(reply))
    result = await rlm.acomplete("ctx", "q")
    cell = result.trajectory.turns[0].cells[0]
    assert cell.stdout.strip() == "'yes'"
    assert cell.sub_calls[0].reasoning == "hmm"


async def test_an_empty_reply_gets_a_reminder() -> None:
    """One empty reply costs a turn and a reminder, then the run goes on."""
    rlm, provider = rlm_with(["", "FINAL(ok)"])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "ok"
    assert last_user(provider.requests[1]).startswith("Your reply was empty.")
    assert result.trajectory.turns[0].problems == ["Your reply was empty."]


async def test_empty_replies_in_a_row_end_the_run_with_a_typed_error() -> None:
    """Three empty replies in a row raise EmptyReplyError carrying the partial result."""
    rlm, provider = rlm_with(["  ", CompletionResponse(text="", reasoning="...", model="m"), "\n"])
    with pytest.raises(EmptyReplyError) as caught:
        await rlm.acomplete("ctx", "q")
    assert caught.value.replies == 3
    assert caught.value.result is not None
    assert caught.value.result.stop_reason == "error"
    assert caught.value.result.iterations == 3
    assert "again (2 in a row" in last_user(provider.requests[2])


async def test_tool_call_markup_as_text_runs_the_code() -> None:
    """<invoke name="repl"> written as text runs, and the output comes back."""
    markup = (
        '<function_calls>\n<invoke name="repl">\n<parameter name="code">print(len(context))'
        "</parameter>\n</invoke>\n</function_calls>"
    )
    rlm, provider = rlm_with([markup, "FINAL(ok)"])
    result = await rlm.acomplete("abc", "q")
    assert result.trajectory.turns[0].fence == "tool_markup"
    assert last_user(provider.requests[1]).startswith("REPL output:\n3")


async def test_a_ten_megabyte_reply_costs_a_turn_not_the_run() -> None:
    """A 10 MB reply with no code: a reminder, a bounded history message, and the run answers."""
    rlm, provider = rlm_with(["blah " * 2_000_000, "FINAL(ok)"])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "ok"
    assert len(provider.requests[1].messages[-2].content) <= MAX_HISTORY_REPLY_CHARS + 100
