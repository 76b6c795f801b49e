"""Fitting a history to its model's window: when to compact, what replaces the older turns,
what the REPL gets, and cutting what still does not fit."""

from __future__ import annotations

from rlm_sdk import ChatMessage, CompletionResponse
from rlm_sdk._compaction import HISTORY_VARIABLE, HistoryWindow, shrink, sub_call_chars
from rlm_sdk._window import estimate_message_tokens


def history(turns: int, size: int = 700) -> list[ChatMessage]:
    messages = [
        ChatMessage(role="system", content="S" * 700),
        ChatMessage(role="user", content="The query: q"),
    ]
    for n in range(turns):
        messages.append(ChatMessage(role="assistant", content=f"reply {n} " + "r" * size))
        messages.append(ChatMessage(role="user", content=f"output {n} " + "o" * size))
    return messages


class Recorder:
    """Stands in for the run: the compaction call (a test double's summary) and the REPL."""

    def __init__(self) -> None:
        self.asked: list[list[ChatMessage]] = []
        self.cells: list[str] = []

    async def ask(self, request: list[ChatMessage]) -> CompletionResponse:
        self.asked.append(request)
        return CompletionResponse(text=f"summary of {len(request) - 3} messages", model="m")

    async def archive(self, code: str) -> object:
        self.cells.append(code)
        return None


def window_of(size: int, **kw: object) -> HistoryWindow:
    return HistoryWindow("m", {"m": size}, kw.get("compact_at", 0.85), None, "The query: q")  # type: ignore[arg-type]


async def test_under_the_threshold_nothing_changes() -> None:
    """A history below compact_at of the window is left alone, with no call made."""
    messages = history(2)
    recorder = Recorder()
    assert await window_of(100_000).fit(messages, recorder.ask, recorder.archive) is None
    assert len(messages) == 6 and recorder.asked == []


async def test_older_turns_become_a_summary_and_go_to_the_repl() -> None:
    """Past the threshold: the model summarises all but the last turn, the summary joins the
    query, the last turn stays, and the REPL gets the replaced turns in full."""
    messages = history(10)
    recorder = Recorder()
    done = await window_of(3_000).fit(messages, recorder.ask, recorder.archive)
    assert done is not None
    assert (done.turns, done.messages_before, done.messages_after) == (9, 22, 4)
    assert done.tokens_after < 3_000 * 0.85 < done.tokens_before
    assert messages[1].content.startswith("The query: q\n\n[Turns 1-9")
    assert "summary of 18 messages" in messages[1].content
    assert messages[2].content.startswith("reply 9") and messages[3].content.startswith("output 9")
    namespace: dict[str, object] = {}
    exec(recorder.cells[0], namespace)
    archived = namespace[HISTORY_VARIABLE]
    assert isinstance(archived, list) and len(archived) == 18
    assert archived[0] == {"role": "assistant", "content": "reply 0 " + "r" * 700}
    assert estimate_message_tokens(recorder.asked[0]) <= 3_000


async def test_a_second_compaction_counts_on() -> None:
    """Turns summarised add up, and the REPL list is extended, not replaced."""
    messages = history(10)
    recorder = Recorder()
    hw = window_of(3_000)
    await hw.fit(messages, recorder.ask, recorder.archive)
    messages += history(8)[2:]
    done = await hw.fit(messages, recorder.ask, recorder.archive)
    assert done is not None and done.turns == 9 + 8
    assert messages[1].content.count("[Turns 1-") == 1
    namespace: dict[str, object] = {}
    for code in recorder.cells:
        exec(code, namespace)
    assert len(namespace[HISTORY_VARIABLE]) == 18 + 16  # type: ignore[arg-type]


async def test_a_refused_prompt_is_fitted_to_less_than_was_sent() -> None:
    """With no known window, a refusal fits the history to four fifths of what was sent."""
    messages = history(6)
    before = estimate_message_tokens(messages)
    recorder = Recorder()
    hw = HistoryWindow("unknown", {}, 0.85, None, "The query: q")
    done = await hw.fit(messages, recorder.ask, recorder.archive, refused=True)
    assert done is not None and done.window == int(before * 0.8)
    assert estimate_message_tokens(messages) < before * 0.8


def test_shrink_cuts_the_longest_messages_but_never_the_system_prompt() -> None:
    """Cutting to a limit keeps the system prompt whole and heads and tails of the rest."""
    messages = history(1, size=20_000)
    shrink(messages, 3_000)
    assert estimate_message_tokens(messages) <= 3_000
    assert messages[0].content == "S" * 700
    assert messages[2].content.startswith("reply 0") and "characters cut" in messages[2].content


def test_sub_call_chars_follows_the_sub_models_window() -> None:
    """The system prompt's 'characters per call' comes from the window, or a default."""
    assert sub_call_chars("m", {"m": 10_000}, None) == 3 * (10_000 - 1_250)
    assert sub_call_chars("unknown-model", {}, None) == 400_000


async def test_a_tool_turn_is_kept_whole_and_summarised_as_text() -> None:
    """With tool calls, the last reply stays with all its results; the summary request is text."""
    from rlm_sdk import ToolCall

    messages = history(6)
    calls = (
        ToolCall(id="a", name="repl", arguments='{"code": "1"}'),
        ToolCall(id="b", name="repl", arguments='{"code": "2"}'),
    )
    messages += [
        ChatMessage(role="assistant", content="", tool_calls=calls),
        ChatMessage(role="tool", content="o" * 700, tool_call_id="a"),
        ChatMessage(role="tool", content="o" * 700, tool_call_id="b"),
    ]
    recorder = Recorder()
    done = await window_of(3_000).fit(messages, recorder.ask, recorder.archive)
    assert done is not None and done.turns == 6
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert messages[2].tool_calls == calls
    assert all(not m.tool_calls and m.role != "tool" for m in recorder.asked[0])
