"""The live console view renders every kind of step, bounded, to any file."""

from __future__ import annotations

import io

import pytest

from rlm_sdk import RecursiveLM
from rlm_sdk._console import ConsoleView
from rlm_sdk.testing import ScriptedProvider

from .test_orchestrator import _nesting_policy

pytestmark = pytest.mark.integration


async def test_console_view_renders_a_depth_two_run() -> None:
    """Replies, code, output, sub-calls by depth, the final answer and the usage table all appear."""
    buf = io.StringIO()
    view = ConsoleView(file=buf, width=100)
    rlm = RecursiveLM("root", provider=ScriptedProvider(_nesting_policy), max_depth=2)
    result = await rlm.acomplete("ctx", "nest", on_event=view.handle)
    out = buf.getvalue()
    assert result.answer == "[[leaf]]"
    for needle in (
        "Run ",
        "Child run (depth 1)",
        "repl cell 1",
        "rlm_query",
        "inner=",
        "final answer",
        "[[leaf]]",
        "Usage",
        "calls",
    ):
        assert needle in out, needle
    assert out.index("final answer") < out.index("Usage")


def test_long_output_is_cut_to_head_and_tail() -> None:
    """A huge cell output is shown as head and tail with a count of what was cut."""
    from rlm_sdk import CellFinished

    buf = io.StringIO()
    ConsoleView(file=buf, width=80, threaded=False).render(
        CellFinished(
            run_id="r", iteration=1, cell=0, stdout="x" * 100_000, stderr="", duration_s=0.1
        )
    )
    out = buf.getvalue()
    assert "characters cut" in out
    assert len(out) < 5_000


def test_how_a_reply_was_read_is_shown() -> None:
    """Reasoning (collapsed to one line), the fence accepted, problems and a confirmation asked."""
    from rlm_sdk import ConfirmationAsked, ModelResponse, ReplyParsed

    buf = io.StringIO()
    view = ConsoleView(file=buf, width=120, threaded=False)
    view.render(
        ModelResponse(
            run_id="r",
            model="m",
            text="<think>\nfirst I count\n</think>\n```python\nprint(1)\n```",
            reasoning="first I count " + "and count " * 200,
            latency_s=0.1,
            prompt_tokens=1,
            completion_tokens=1,
        )
    )
    view.render(
        ReplyParsed(
            run_id="r",
            iteration=1,
            fence="python",
            code_blocks=1,
            notes=["no ```repl block: the ```python blocks ran"],
            problems=["The ```repl block opened on line 4 was never closed, so it did not run."],
        )
    )
    view.render(ConfirmationAsked(run_id="r", iteration=1, answer="7"))
    out = buf.getvalue()
    assert "▸ reasoning (2,014 chars): first I count" in out
    assert "and count " * 20 not in out  # collapsed
    assert "<think>" not in out
    assert "code from python" in out
    assert "⚠ The ```repl block opened on line 4" in out
    assert "answer not taken yet" in out and "7" in out


def test_tool_calls_compactions_and_a_protocol_switch_are_shown() -> None:
    """The calls a reply made, a compaction with its sizes, and a server refusing tools."""
    from rlm_sdk import HistoryCompacted, ModelResponse, ProtocolSwitched, ToolCall

    buf = io.StringIO()
    view = ConsoleView(file=buf, width=120, threaded=False)
    view.render(
        ModelResponse(
            run_id="r",
            model="m",
            text="",
            tool_calls=[ToolCall(id="c1", name="repl", arguments='{"code": "print(1)"}')],
            latency_s=0.1,
            prompt_tokens=1,
            completion_tokens=1,
        )
    )
    view.render(
        HistoryCompacted(
            run_id="r",
            iteration=9,
            turns=7,
            messages_before=18,
            messages_after=4,
            tokens_before=2_600,
            tokens_after=700,
            window=3_000,
            variable="history",
            summary="counted to seven",
        )
    )
    view.render(
        ProtocolSwitched(
            run_id="r",
            iteration=1,
            from_protocol="tools",
            to_protocol="fenced",
            reason="openai answered 400: tools are not supported",
        )
    )
    out = buf.getvalue()
    assert '→ repl({"code": "print(1)"})' in out
    assert "history compacted (turns 1-7 summarised): 2,600 → 700 tokens" in out
    assert "`history`" in out
    assert "the server refused tools" in out and "tools are not supported" in out
