"""Reading real models' replies: each dialect rule of docs/concepts/repl.md, on a small case
modelled on a reply a real model wrote, and bad input that must cost a turn, never the run."""

from __future__ import annotations

import time

import pytest

from rlm_sdk._protocol import FinalAnswer, parse_reply, split_reasoning
from rlm_sdk._protocol._reply import MAX_BLOCKS, MAX_HISTORY_REPLY_CHARS

F = "```"


# --- fences ---------------------------------------------------------------------------------


def test_a_closing_fence_glued_to_the_last_line_closes_the_block() -> None:
    """gpt-5 glues the fence to its last call: the block runs, up to the backticks."""
    reply = f'{F}repl\ndone("Created a runnable boids simulation.\\n- Open index.html.\\n"){F}'
    parsed = parse_reply(reply)
    assert parsed.code_blocks == (
        'done("Created a runnable boids simulation.\\n- Open index.html.\\n")',
    )
    assert parsed.fence == "repl"
    assert parsed.problems == ()
    assert any("glued" in note for note in parsed.notes)


def test_a_glued_fence_after_a_multiline_string() -> None:
    """A long code string, then the call with the fence glued to it: one block, whole."""
    reply = f'{F}repl\ncode = """PATH: scripts/boid.js\n(function () {{\n}})();\n"""\ndone(code){F}'
    assert parse_reply(reply).code_blocks == (
        'code = """PATH: scripts/boid.js\n(function () {\n})();\n"""\ndone(code)',
    )


def test_a_shorter_run_glued_to_a_line_does_not_close_a_longer_fence() -> None:
    """Inside a four-backtick block, three backticks ending a line are code."""
    reply = f"````repl\nmd = 'x'  # {F}\nprint(md){F}\n````"
    assert parse_reply(reply).code_blocks == (f"md = 'x'  # {F}\nprint(md){F}",)


@pytest.mark.parametrize(
    ("reply", "fence"),
    [
        pytest.param(
            f"Reasoning: First explore the data.\nCode:\n{F}python\nprint(users.shape)\n{F}\n",
            "python",
            id="dspy-python",
        ),
        pytest.param(f"Let me look.\n{F}py\nprint(users.shape)\n{F}", "py", id="py"),
        pytest.param(f"Let me look.\n{F}\nprint(users.shape)\n{F}", "bare", id="bare"),
        pytest.param("repl\nprint(users.shape)", "unfenced", id="first-line-repl-no-fence"),
    ],
)
def test_other_fences_run_when_there_is_no_repl_block_and_no_answer(reply: str, fence: str) -> None:
    """python, py, bare fences (and a first line `repl` with no fence) run; the fence is named."""
    parsed = parse_reply(reply)
    assert parsed.code_blocks == ("print(users.shape)",)
    assert parsed.fence == fence


def test_python_blocks_are_preferred_to_bare_ones() -> None:
    """With both, the python blocks run and a bare one (often an output) does not."""
    parsed = parse_reply(f"{F}python\nx = 1\n{F}\n{F}\n1\n{F}")
    assert (parsed.code_blocks, parsed.fence) == (("x = 1",), "python")


def test_a_repl_block_wins_over_other_fences() -> None:
    """Only ```repl blocks run when the reply has one; a python example beside it does not."""
    parsed = parse_reply(f"Example:\n{F}python\nimport os\n{F}\n{F}repl\nprint(1)\n{F}")
    assert (parsed.code_blocks, parsed.fence) == (("print(1)",), "repl")


def test_a_final_answer_keeps_other_fences_from_running() -> None:
    """A python block shown beside FINAL(...) is an illustration: the answer stands, no code runs."""
    parsed = parse_reply(f"{F}python\nprint(2)\n{F}\nFINAL(2)")
    assert parsed.code_blocks == ()
    assert parsed.final == FinalAnswer("text", "2")


def test_prose_and_other_languages_do_not_run() -> None:
    """A reply that is a file's text (no fence, first line not a language) runs nothing."""
    parsed = parse_reply("PATH: scripts/boid.js\n(function () {\n  var App = {};\n})();")
    assert (parsed.code_blocks, parsed.fence, parsed.final) == ((), None, None)
    assert parse_reply(f"{F}text\nhello\n{F}").code_blocks == ()


# --- final answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "final"),
    [
        pytest.param(
            "I can now provide the final answer.\n\nFINAL(random_number)",
            FinalAnswer("text", "random_number", name="random_number"),
            id="bare-name",
        ),
        pytest.param(
            'I will respond directly.\n\nFINAL("Blue")', FinalAnswer("text", "Blue"), id="quoted"
        ),
        pytest.param("FINAL('It is 42')", FinalAnswer("text", "It is 42"), id="single-quoted"),
        pytest.param(
            'FINAL("""two\nlines""")', FinalAnswer("text", "two\nlines"), id="triple-quoted"
        ),
        pytest.param('FINAL("a\\tb")', FinalAnswer("text", "a\tb"), id="escapes-read"),
        pytest.param(
            "FINAL(x is set to 500.)", FinalAnswer("text", "x is set to 500."), id="prose"
        ),
        pytest.param("FINAL('It's')", FinalAnswer("text", "'It's'"), id="not-a-literal-kept"),
        pytest.param("FINAL(None)", FinalAnswer("text", "None"), id="keyword-is-text"),
        pytest.param('FINAL_VAR("answer_text")', FinalAnswer("var", "answer_text"), id="final-var"),
    ],
)
def test_final_answers_as_real_models_write_them(reply: str, final: FinalAnswer) -> None:
    """Quotes around a whole literal go, a bare identifier may name a variable, prose stays prose."""
    assert parse_reply(reply).final == final


def test_a_quoted_name_is_text_not_a_variable() -> None:
    """FINAL("result") answers the word, even if a variable has that name."""
    assert parse_reply('FINAL("result")').final == FinalAnswer("text", "result")


# --- reasoning -----------------------------------------------------------------------------


def test_think_blocks_are_set_aside_before_reading() -> None:
    """Code and FINAL inside <think> are neither run nor taken; the reasoning is kept apart."""
    reply = (
        f"<think>\nMaybe FINAL(3)?\n{F}repl\nprint('draft')\n{F}\n</think>\n"
        f"{F}repl\nprint(len(context))\n{F}"
    )
    parsed = parse_reply(reply)
    assert parsed.code_blocks == ("print(len(context))",)
    assert parsed.final is None
    assert parsed.reasoning is not None and "Maybe FINAL(3)?" in parsed.reasoning
    assert "draft" not in parsed.history and "<think>" not in parsed.history


def test_a_closing_think_tag_alone_ends_the_reasoning() -> None:
    """Templates that open <think> in the prompt: everything before the lone </think> is reasoning."""
    text, reasoning = split_reasoning("Let me think about it.\n</think>\n\nFINAL(4)")
    assert (text, reasoning) == ("FINAL(4)", "Let me think about it.")
    assert parse_reply("Let me think about it.\n</think>\n\nFINAL(4)").final == FinalAnswer(
        "text", "4"
    )


def test_an_unclosed_think_block_leaves_an_empty_reply() -> None:
    """A reply cut off while still thinking has nothing to read: it is empty, the reasoning kept."""
    parsed = parse_reply("<think>\nThe context is large, so")
    assert parsed.empty
    assert parsed.reasoning == "The context is large, so"


def test_think_tags_inside_code_are_code() -> None:
    """A tag in the middle of a code line is data, not reasoning."""
    parsed = parse_reply(f'{F}repl\nparts = text.split("</think>")\ns = "<think>x"\n{F}')
    assert parsed.code_blocks == ('parts = text.split("</think>")\ns = "<think>x"',)
    assert parsed.reasoning is None


@pytest.mark.parametrize("reply", ["", "   \n\t\n", "<think>only thoughts</think>\n"])
def test_empty_replies(reply: str) -> None:
    """An empty or whitespace-only reply (reasoning aside) is marked empty, nothing to run."""
    parsed = parse_reply(reply)
    assert parsed.empty and parsed.code_blocks == () and parsed.final is None


# --- tool-call markup written as text --------------------------------------------------------


def test_tool_call_markup_naming_the_repl_is_read_as_code() -> None:
    """<function_calls><invoke name="repl"> written as text runs its `code` parameter."""
    reply = (
        'I\'ll inspect the context.\n<function_calls>\n<invoke name="repl">\n'
        '<parameter name="code">print(len(context))\nprint(context[:200])</parameter>\n'
        "</invoke>\n</function_calls>"
    )
    parsed = parse_reply(reply)
    assert parsed.code_blocks == ("print(len(context))\nprint(context[:200])",)
    assert parsed.fence == "tool_markup"
    assert parsed.problems == ()


def test_hermes_tool_call_markup_is_read_as_code() -> None:
    """<tool_call>{"name": "repl", "arguments": {...}}</tool_call> runs its code."""
    parsed = parse_reply(
        '<tool_call>\n{"name": "repl", "arguments": {"code": "print(1)"}}\n</tool_call>'
    )
    assert (parsed.code_blocks, parsed.fence) == (("print(1)",), "tool_markup")


def test_markup_calling_another_tool_gets_a_precise_reminder() -> None:
    """A call of a tool that does not exist runs nothing, and the reminder names it."""
    reply = '<function_calls><invoke name="web_search"><parameter name="q">rlm</parameter></invoke></function_calls>'
    parsed = parse_reply(reply)
    assert parsed.code_blocks == ()
    assert len(parsed.problems) == 1
    assert "`web_search`" in parsed.problems[0] and "```repl" in parsed.problems[0]


def test_markup_inside_a_repl_block_is_code() -> None:
    """A repl block that prints markup runs as written; nothing in it is a call."""
    parsed = parse_reply(f"{F}repl\nprint('<function_calls>')\n{F}")
    assert (parsed.code_blocks, parsed.fence) == (("print('<function_calls>')",), "repl")


def test_final_answer_markup_gives_the_answer() -> None:
    """<invoke name="final_answer"> with an answer parameter is a final answer."""
    reply = '<function_calls><invoke name="final_answer"><parameter name="answer">42</parameter></invoke></function_calls>'
    assert parse_reply(reply).final == FinalAnswer("text", "42")


# --- what the history keeps -----------------------------------------------------------------


def test_an_invented_output_after_the_code_never_enters_the_history() -> None:
    """Claude-style: code, then its imagined output, then FINAL: the history keeps only the code."""
    reply = (
        f"Counting.\n{F}repl\nprint(sum(1 for _ in context.splitlines()))\n{F}\n"
        "REPL output:\n```\n1000\n```\nSo the answer is 1000.\nFINAL(1000)"
    )
    parsed = parse_reply(reply)
    assert parsed.code_blocks == ("print(sum(1 for _ in context.splitlines()))",)
    assert parsed.final == FinalAnswer("text", "1000")
    assert "1000\n" not in parsed.history and "FINAL(1000)" not in parsed.history
    assert parsed.history.startswith("Counting.\n```repl\n")
    assert "set aside" in parsed.history.splitlines()[-1]


def test_an_imitated_output_between_blocks_is_set_aside() -> None:
    """A fenced 'output' between two blocks that ran is replaced by a note in the history."""
    reply = f"{F}repl\na = 1\n{F}\n{F}output\n42\n{F}\n{F}repl\nb = 2\n{F}"
    parsed = parse_reply(reply)
    assert parsed.code_blocks == ("a = 1", "b = 2")
    assert "42" not in parsed.history
    assert "did not run was set aside" in parsed.history


def test_a_reply_without_code_is_kept_as_written() -> None:
    """A plan or an answer goes back unchanged (reasoning removed)."""
    assert parse_reply("I will first look at the context.").history == (
        "I will first look at the context."
    )


# --- bad input -----------------------------------------------------------------------------


def test_a_ten_megabyte_reply_is_read_in_linear_time() -> None:
    """10 MB of prose, of code, or of unclosed FINAL( lines: read quickly, the history bounded."""
    shapes = [
        "word " * 2_000_000,
        f"{F}repl\n" + "x = 1\n" * 1_700_000 + F,
        "FINAL(\n" * 1_400_000,
        'FINAL("\n' * 1_250_000,
        (f"{F}repl\n") * 1_200_000,
    ]
    for text in shapes:
        started = time.perf_counter()
        parsed = parse_reply(text)
        assert time.perf_counter() - started < 5.0  # quadratic would take hours
        assert len(parsed.history) <= MAX_HISTORY_REPLY_CHARS + 100
    assert parse_reply(shapes[1]).code_blocks[0].count("\n") == 1_700_000 - 1


@pytest.mark.parametrize("reply", ["```", "``````", "`" * 10_000, "```\n```\n```", "~~~~"])
def test_a_reply_of_only_backticks(reply: str) -> None:
    """Only backticks: nothing runs, no answer, no crash."""
    parsed = parse_reply(reply)
    assert parsed.final is None
    assert all(not block.strip() for block in parsed.code_blocks)


def test_fences_nested_four_deep() -> None:
    """Longer fences hold shorter ones: the outer repl block keeps the three inner ones as text."""
    inner = f"``````markdown\n`````python\n````\n{F}\n{F}\n````\n`````\n``````"
    reply = f"```````repl\ns = '''\n{inner}\n'''\nprint(s.count('`'))\n```````"
    parsed = parse_reply(reply)
    assert parsed.code_blocks == (f"s = '''\n{inner}\n'''\nprint(s.count('`'))",)
    assert parsed.problems == ()


def test_a_final_never_closed_across_a_thousand_lines() -> None:
    """FINAL( with no closing parenthesis in 1,000 lines is no answer, and the model is told."""
    reply = "FINAL(the answer is\n" + "".join(f"line {i} (note\n" for i in range(1000))
    parsed = parse_reply(reply)
    assert parsed.final is None
    assert parsed.problems == (
        "FINAL( was opened but never closed, so it was not taken as the answer.",
    )


def test_too_many_blocks_are_cut_and_reported() -> None:
    """A reply with more blocks than MAX_BLOCKS runs the first ones and says the rest were not read."""
    parsed = parse_reply(f"{F}repl\nx\n{F}\n" * (MAX_BLOCKS + 10))
    assert len(parsed.code_blocks) == MAX_BLOCKS
    assert any("only the first" in p for p in parsed.problems)
