"""The RLM protocol as pure functions: prompts, parsing replies, describing contexts.

No I/O here, so every rule can be tested exhaustively and the run stays a loop. The
model's dialects are absorbed here and nowhere else: :mod:`._reply` reads replies (fences,
final answers, reasoning, tool-call markup written as text), :mod:`._prompts` writes what
the model is told, :mod:`._tools` offers the REPL as a tool and reads the calls.
"""

from __future__ import annotations

from ._prompts import (
    build_system_prompt,
    build_user_prompt,
    compacted_history_note,
    compaction_prompt,
    confirm_final_prompt,
    describe_context,
    empty_reply_problem,
    final_call_prompt,
    format_cell_feedback,
    no_code_reminder,
    output_final_note,
    output_format_prompt,
    output_rejected_feedback,
    truncate_middle,
    unknown_variable_feedback,
)
from ._reply import (
    MAX_HISTORY_REPLY_CHARS,
    FenceKind,
    FinalAnswer,
    ParsedReply,
    parse_reply,
    split_reasoning,
)
from ._tools import (
    FINAL_TOOL,
    REPL_TOOL,
    TOOLS,
    ToolAction,
    read_tool_calls,
    refuses_tools,
    to_fenced,
)

__all__ = [
    "FINAL_TOOL",
    "MAX_HISTORY_REPLY_CHARS",
    "REPL_TOOL",
    "TOOLS",
    "ToolAction",
    "FenceKind",
    "FinalAnswer",
    "ParsedReply",
    "build_system_prompt",
    "build_user_prompt",
    "compacted_history_note",
    "compaction_prompt",
    "confirm_final_prompt",
    "describe_context",
    "empty_reply_problem",
    "final_call_prompt",
    "format_cell_feedback",
    "no_code_reminder",
    "output_final_note",
    "output_format_prompt",
    "output_rejected_feedback",
    "parse_reply",
    "read_tool_calls",
    "refuses_tools",
    "split_reasoning",
    "to_fenced",
    "truncate_middle",
    "unknown_variable_feedback",
]
