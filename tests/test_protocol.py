"""The RLM protocol's pure functions: code blocks, final answers, descriptions, prompts."""

from __future__ import annotations

import pytest

from rlm_sdk._protocol import (
    FinalAnswer,
    build_system_prompt,
    build_user_prompt,
    describe_context,
    format_cell_feedback,
    no_code_reminder,
    parse_reply,
    truncate_middle,
    unknown_variable_feedback,
)

F = "```"


@pytest.mark.parametrize(
    ("reply", "blocks", "final"),
    [
        pytest.param("FINAL(42)", (), FinalAnswer("text", "42"), id="plain-final"),
        pytest.param(
            "Done.\nFINAL(f(a, (b)))", (), FinalAnswer("text", "f(a, (b))"), id="balanced-parens"
        ),
        pytest.param('FINAL("quoted")', (), FinalAnswer("text", "quoted"), id="quotes-dropped"),
        pytest.param(
            'FINAL("a" and "b")', (), FinalAnswer("text", '"a" and "b"'), id="not-one-literal-kept"
        ),
        pytest.param(
            "FINAL(yes) and more words",
            (),
            FinalAnswer("text", "yes", name="yes"),
            id="text-after-close-dropped",
        ),
        pytest.param(
            'FINAL("a (b") tail', (), FinalAnswer("text", "a (b"), id="paren-inside-leading-quote"
        ),
        pytest.param(
            "FINAL(It's 42 (roughly))",
            (),
            FinalAnswer("text", "It's 42 (roughly)"),
            id="apostrophe-is-text",
        ),
        pytest.param(
            "FINAL(line one\nline two)",
            (),
            FinalAnswer("text", "line one\nline two"),
            id="multiline-final",
        ),
        pytest.param(
            "  FINAL(indented)",
            (),
            FinalAnswer("text", "indented", name="indented"),
            id="leading-space-ok",
        ),
        pytest.param("The FINAL(x) is not at line start", (), None, id="mid-line-not-final"),
        pytest.param("`FINAL(x)` in backticks", (), None, id="inline-code-not-final"),
        pytest.param('print("FINAL(x)")', (), None, id="string-literal-not-final"),
        pytest.param("FINAL_VAR(result)", (), FinalAnswer("var", "result"), id="final-var"),
        pytest.param(
            'FINAL_VAR("result")', (), FinalAnswer("var", "result"), id="final-var-quoted"
        ),
        pytest.param("FINAL_VAR('r')", (), FinalAnswer("var", "r"), id="final-var-single-quoted"),
        pytest.param("FINAL(text)\nFINAL_VAR(v)", (), FinalAnswer("var", "v"), id="final-var-wins"),
        pytest.param(
            "FINAL(first)\nFINAL(second)",
            (),
            FinalAnswer("text", "first", name="first"),
            id="first-final-wins",
        ),
        pytest.param(f"{F}repl\nx = 1\n{F}", ("x = 1",), None, id="one-block"),
        pytest.param(
            f"{F}repl\na\n{F}\ntext\n{F}repl\nb\n{F}", ("a", "b"), None, id="several-blocks"
        ),
        pytest.param(f"{F}text\nx = 1\n{F}", (), None, id="other-language-not-run"),
        pytest.param(f"{F} repl \nx\n{F}", ("x",), None, id="spaces-around-info"),
        pytest.param(f"{F}REPL\nx\n{F}", ("x",), None, id="info-case-insensitive"),
        pytest.param(
            f"{F}repl\r\nx = 1\r\n{F}\r\nFINAL(1)\r\n",
            ("x = 1",),
            FinalAnswer("text", "1"),
            id="crlf",
        ),
        pytest.param(
            f"````repl\nprint('{F}')\n````", (f"print('{F}')",), None, id="nested-backticks"
        ),
        pytest.param(f"{F}repl\nFINAL(1)\n{F}", ("FINAL(1)",), None, id="final-in-code-not-answer"),
        pytest.param(
            f"{F}repl\nx\n{F}\n{F}\nFINAL(1)\n{F}",
            ("x",),
            None,
            id="final-in-plain-fence-not-answer",
        ),
        pytest.param(
            f"{F}repl\nv = 2\n{F}\nFINAL_VAR(v)",
            ("v = 2",),
            FinalAnswer("var", "v"),
            id="code-then-final-var",
        ),
        pytest.param("no code, no answer", (), None, id="nothing"),
        pytest.param("~~~repl\nx\n~~~", ("x",), None, id="tilde-fence"),
        pytest.param(f"{F}repl\n{F}", ("",), None, id="empty-block"),
    ],
)
def test_parse_reply_table(reply: str, blocks: tuple[str, ...], final: FinalAnswer | None) -> None:
    """Each reply splits into the code blocks and final answer the protocol defines."""
    parsed = parse_reply(reply)
    assert parsed.code_blocks == blocks
    assert parsed.final == final
    assert parsed.problems == ()


def test_unterminated_fence_is_not_run_and_reported() -> None:
    """A repl block that never closes does not run, and the model is told which line."""
    parsed = parse_reply(f"text\n{F}repl\nx = 1\nFINAL(1)")
    assert parsed.code_blocks == ()
    assert parsed.final is None
    assert parsed.problems == (
        "The ```repl block opened on line 2 was never closed, so it did not run.",
    )


def test_unclosed_final_is_reported_not_taken() -> None:
    """`FINAL(` never closed is not an answer and is reported."""
    parsed = parse_reply("FINAL(the answer is")
    assert parsed.final is None
    assert parsed.problems == (
        "FINAL( was opened but never closed, so it was not taken as the answer.",
    )


def test_unclosed_final_before_good_final() -> None:
    """A later well-formed FINAL still answers when an earlier one was malformed."""
    parsed = parse_reply("FINAL(oops\nFINAL(ok)")
    assert parsed.final == FinalAnswer("text", "ok", name="ok")
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ("ab\ncd", "a str of 5 characters (2 lines)"),
        (b"\x00\x01", "bytes of length 2"),
        (["aa", "b"], "a list of 2 items, 3 characters in all; item lengths: [2, 1]"),
        ({"a": 1, "b": 2}, "a dict with 2 keys: 'a', 'b'"),
        (42, "a int"),
    ],
)
def test_describe_context(context: object, expected: str) -> None:
    """The description gives type and sizes only."""
    assert describe_context(context) == expected


def test_describe_long_list_is_abbreviated() -> None:
    """A list of many parts shows the first and last lengths and how many are hidden."""
    text = describe_context(["x" * i for i in range(100)])
    assert text.startswith("a list of 100 items, 4,950 characters in all")
    assert "... 88 more ..." in text
    assert text.endswith("94, 95, 96, 97, 98, 99]")


def test_describe_big_str_skips_line_count() -> None:
    """A very large string is described without scanning it for lines."""
    assert describe_context("a" * 3_000_000) == "a str of 3,000,000 characters"


def test_describe_never_contains_content() -> None:
    """The description never includes the context's text."""
    assert "SECRET" not in describe_context("SECRET " * 10)
    assert "SECRET" not in describe_context(["SECRET"] * 3)


def test_system_prompt_mentions_protocol_and_description() -> None:
    """The system prompt names the context, the sub-call functions and the final-answer forms."""
    prompt = build_system_prompt("a str of 10 characters", sub_model="m-sub", can_recurse=True)
    for needle in (
        "a str of 10 characters",
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "FINAL(",
        "FINAL_VAR(",
        "m-sub",
        "```repl",
    ):
        assert needle in prompt
    assert "plain model call" in build_system_prompt("d", sub_model="m", can_recurse=False)


def test_user_prompt_with_and_without_query() -> None:
    """The first user message carries the query, or says the context states the task."""
    assert "The query: find x" in build_user_prompt("find x")
    assert "context itself states the task" in build_user_prompt(None)


def test_truncate_middle_keeps_head_and_tail() -> None:
    """Long text keeps its head and tail and says how much was cut."""
    out = truncate_middle("a" * 100 + "b" * 100, 30)
    assert out.startswith("a" * 20) and out.endswith("b" * 10)
    assert "[170 characters cut]" in out
    assert truncate_middle("short", 30) == "short"


def test_format_cell_feedback_bounds_and_labels() -> None:
    """Cell feedback labels several cells, shows errors and restarts, and stays bounded."""
    cells = [
        {"stdout": "x" * 10_000, "stderr": "", "error": None, "restarted": False},
        {
            "stdout": "",
            "stderr": "warn",
            "error": "ZeroDivisionError: division by zero",
            "restarted": True,
        },
    ]
    text = format_cell_feedback(cells, ["a problem"], limit=2_000)
    assert "Output of repl block 1:" in text and "Output of repl block 2:" in text
    assert "ZeroDivisionError" in text and "[stderr]\nwarn" in text
    assert "REPL was restarted" in text and text.endswith("a problem")
    assert len(text) < 2_600
    assert format_cell_feedback([{"stdout": ""}], [], limit=100) == "REPL output:\n(no output)"


def test_reminders() -> None:
    """Reminders name the problem and the two ways to answer."""
    assert "FINAL(...)" in no_code_reminder()
    assert no_code_reminder(["P."]).startswith("P. ")
    text = unknown_variable_feedback("ans", {"x": "int"})
    assert "'ans'" in text and "x (int)" in text
