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
