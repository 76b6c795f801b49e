"""Typed answers (``output_type=``): the schema reaches the model, answers are read and
checked, a rejected answer goes back with its reasons for a bounded number of tries, and the
typed value comes out in ``result.output``.

The models here are ``ScriptedProvider`` test doubles: their code builds each answer from
the context in a real REPL worker (never a value written into the script), and a script that
fixes an answer does so from the reasons the run sent back.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic's TypedDict on Python < 3.12

from rlm_sdk import (
    BatchItem,
    CompletionRequest,
    ConfigurationError,
    Event,
    JSONLRecorder,
    OutputRejected,
    OutputValidationError,
    RecursiveLM,
    RLMResult,
    RunFinished,
    load_runs,
)
from rlm_sdk import _protocol as proto
from rlm_sdk._frontend import console_view
from rlm_sdk._output import OutputCheck, output_shape, reply_format_shape
from rlm_sdk.repl import REPLSession
from rlm_sdk.testing import ScriptedProvider, tool_reply

F = "```"
INVOICE_TEXT = "Invoice A-17\nitem: paper, 3 x 2.50\nitem: ink, 1 x 7.25\ncurrency: EUR\n"


class Invoice(BaseModel):
    number: str
    currency: str
    total: float


class Item(TypedDict):
    name: str
    qty: int


def code(src: str, prose: str = "Let me work on it.") -> str:
    return f"{prose}\n{F}repl\n{src}\n{F}"


# The code a model would write for INVOICE_TEXT, first with the total left as text.
READ_INVOICE = (
    "import re\n"
    "lines = context.splitlines()\n"
    "pairs = re.findall(r'(\\d+) x ([\\d.]+)', context)\n"
    "inv = {'number': lines[0].split()[1], 'currency': lines[-1].split(': ')[1]}\n"
    "inv['total'] = ' + '.join(f'{n} x {p}' for n, p in pairs)\n"
    "print(inv)"
)
FIX_TOTAL = "inv = dict(inv, total=sum(int(n) * float(p) for n, p in pairs))\nprint(inv)"


def rejected(request: CompletionRequest) -> bool:
    """Whether the run's last message says an answer was not taken."""
    return "was not taken" in request.messages[-1].content


def invoice_script() -> list[Any]:
    """Read the invoice, answer with the total as text, fix it from the reasons, answer again."""

    def fix(request: CompletionRequest) -> str:
        assert rejected(request) and "$.total" in request.messages[-1].content
        return code(FIX_TOTAL + "\nFINAL_VAR(inv)", "The total must be a number.")

    return [code(READ_INVOICE), "FINAL_VAR(inv)", fix]


def expected_total() -> float:
    return sum(int(n) * float(p) for n, p in re.findall(r"(\d+) x ([\d.]+)", INVOICE_TEXT))


# --- compiling an output type ---------------------------------------------------------------


def test_a_pydantic_model_compiles_to_its_schema_and_validator() -> None:
    """A model's shape has its name, pydantic's JSON Schema and a validator returning instances."""
    shape = output_shape(Invoice)
    assert shape.name == "Invoice" and shape.schema == Invoice.model_json_schema()
    value, problems = shape.validate({"number": "A", "currency": "EUR", "total": "2.5"})
    assert problems == [] and value == Invoice(number="A", currency="EUR", total=2.5)
    assert shape.validate({"number": "A"})[1] == [
        "$.currency: Field required",
        "$.total: Field required",
    ]


def test_typed_dicts_lists_and_schemas_compile() -> None:
    """A TypedDict, a generic list and a JSON Schema dict are all output types."""
    items = output_shape(list[Item])
    assert items.validate([{"name": "ink", "qty": "2"}]) == ([{"name": "ink", "qty": 2}], [])
    assert items.validate([{"name": "ink"}])[1] == ["$[0].qty: Field required"]
    schema = output_shape({"type": "array", "items": {"type": "integer"}, "title": "Counts"})
    assert schema.name == "Counts" and schema.adapter is None
    assert schema.validate([1, 2]) == ([1, 2], [])
    assert schema.validate([1, "2"])[1] == ["$[1]: expected integer, got string"]


def test_openai_response_formats_are_read() -> None:
    """json_schema gives its schema (titled by its name), json_object any object, text none."""
    named = {"type": "json_schema", "json_schema": {"name": "Total", "schema": {"type": "number"}}}
    shape = reply_format_shape(named)
    assert shape is not None and shape.name == "Total" and shape.validate(2)[1] == []
    obj = reply_format_shape({"type": "json_object"})
    assert obj is not None and obj.validate([1])[1] == ["$: expected object, got array"]
    assert reply_format_shape({"type": "text"}) is None and reply_format_shape(None) is None
    assert output_shape(named).name == "Total"  # the same dict works as an output_type
    with pytest.raises(ConfigurationError, match=r"json_schema\.schema"):
        reply_format_shape({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(ConfigurationError, match="response_format must be"):
        reply_format_shape({"type": "yaml"})


@pytest.mark.parametrize("bad", [3, Any.__class__, {"type": "object", "if": {}}])
def test_what_cannot_be_validated_is_a_configuration_error(bad: Any) -> None:
    """A value that is no type, a type without a JSON Schema, a schema outside the subset."""
    with pytest.raises(ConfigurationError):
        output_shape(bad)


# --- reading an answer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"number": "A-1", "currency": "EUR", "total": 5}',
        '```json\n{"number": "A-1", "currency": "EUR", "total": 5}\n```',
        "{'number': 'A-1', 'currency': 'EUR', 'total': 5}",  # str() of a dict
    ],
)
def test_answer_text_is_read_as_json_fenced_json_or_a_python_literal(text: str) -> None:
    """JSON text, JSON in a code fence and a dict's str() all give the same value."""
    typed, read, problems = output_shape(Invoice).read(text)
    assert problems == [] and read == {"number": "A-1", "currency": "EUR", "total": 5}
    assert typed == Invoice(number="A-1", currency="EUR", total=5.0)


def test_the_repl_value_wins_over_the_text() -> None:
    """With the value's JSON from the REPL, the text (``str()`` of it) is not read at all."""
    typed, read, problems = output_shape(list[int]).read("not json", "[1, 2]")
    assert (typed, read, problems) == ([1, 2], [1, 2], [])


def test_plain_text_answers_fit_plain_types() -> None:
    """``str`` takes text that merely looks like a number; ``int`` takes the number."""
    assert output_shape(str).read("42")[0] == "42"
    assert output_shape(str).read("hello")[0] == "hello"
    assert output_shape(int).read("42")[0] == 42
    typed, read, problems = output_shape(int).read("forty-two")
    assert typed is None and read == "forty-two" and problems[0].startswith("$: Input should be")


# --- the check's bookkeeping -------------------------------------------------------------------


def test_rejections_are_counted_reported_and_end_in_an_error() -> None:
    """Each rejection emits an event and feedback; the one past ``retries`` raises with the value."""
    events: list[tuple[type[Any], dict[str, Any]]] = []
    check = OutputCheck(output_shape(Invoice), retries=1)
    first = check.review('{"number": 1}', None, 3, lambda cls, **kw: events.append((cls, kw)))
    assert len(first) == 1 and "1 more try" in first[0] and "$.currency: Field required" in first[0]
    assert events[0][0] is OutputRejected
    assert events[0][1]["attempt"] == 1 and events[0][1]["retries_left"] == 1
    assert events[0][1]["iteration"] == 3
    with pytest.raises(OutputValidationError) as caught:
        check.review('{"number": 2}', None, 4, lambda cls, **kw: events.append((cls, kw)))
    assert caught.value.value == {"number": 2} and caught.value.answer == '{"number": 2}'
    assert "$.total: Field required" in caught.value.errors
    assert events[1][1]["retries_left"] == 0
    ok = check.review(
        '{"number": "A", "currency": "EUR", "total": 1}', None, 5, lambda *a, **k: None
    )
    assert ok == [] and check.value == Invoice(number="A", currency="EUR", total=1)


def test_at_the_last_call_a_rejection_raises_at_once() -> None:
    """``last=True`` (the iteration limit's final call) leaves no retry, whatever is left."""
    check = OutputCheck(output_shape(int), retries=5)
    with pytest.raises(OutputValidationError):
        check.review("many", None, 9, lambda *a, **k: None, last=True)


def test_feedback_lists_at_most_twenty_problems_and_says_how_to_answer() -> None:
    """Long lists of problems are cut with a count; the tools protocol is told to call final_answer."""
    text = proto.output_rejected_feedback([f"$[{i}]: bad" for i in range(25)], 2, "tools")
    assert "$[19]: bad" in text and "$[20]: bad" not in text and "... and 5 more" in text
    assert "call final_answer again" in text and "2 more tries" in text
    told = proto.output_format_prompt("Invoice", '{"type": "object"}', "fenced")
    assert "FINAL_VAR(name)" in told and '{"type": "object"}' in told


# --- whole runs (real REPL workers) -------------------------------------------------------------


@pytest.mark.integration
async def test_an_invalid_answer_goes_back_and_the_fixed_one_is_typed() -> None:
    """The schema goes with the query; a rejected FINAL_VAR is explained; the fix is the output."""
    events: list[Event] = []
    provider = ScriptedProvider(invoice_script())
    async with RecursiveLM("m", provider=provider, on_event=events.append) as rlm:
        result = await rlm.acomplete(INVOICE_TEXT, "Extract the invoice.", output_type=Invoice)
    assert result.output == Invoice(number="A-17", currency="EUR", total=expected_total())
    assert result.stop_reason == "final_var" and result.iterations == 3
    assert (
        json.loads(result.answer.replace("'", '"')) == result.output.model_dump()
    )  # str() of the dict
    first = provider.requests[0].messages
    assert '"title": "Invoice"' in first[1].content and "Invoice" not in first[0].content
    (event,) = [e for e in events if isinstance(e, OutputRejected)]
    assert event.iteration == 2 and event.attempt == 1 and event.retries_left == 2
    assert event.errors == [
        "$.total: Input should be a valid number, unable to parse string as a number"
    ]
    turns = result.trajectory.turns
    assert [t.output_errors for t in turns] == [[], event.errors, []]
    assert turns[1].final_answer is None and "$.total" in (turns[1].feedback or "")
    assert "no final answer" not in (turns[1].feedback or "")


@pytest.mark.integration
async def test_json_text_in_final_is_read_for_a_typed_dict() -> None:
    """FINAL with JSON text is an answer too; a list of TypedDicts comes out as dicts."""

    def answer(request: CompletionRequest) -> str:
        printed = request.messages[-1].content.split("\n", 1)[1].strip()
        return f"The list is printed above.\nFINAL({printed})"

    script = [
        code(
            "import json, re\n"
            "items = [{'name': n, 'qty': int(q)} for n, q, _ in "
            "re.findall(r'item: (\\w+), (\\d+) x ([\\d.]+)', context)]\n"
            "print(json.dumps(items))"
        ),
        answer,
    ]
    async with RecursiveLM("m", provider=ScriptedProvider(script)) as rlm:
        result = await rlm.acomplete(INVOICE_TEXT, "List the items.", output_type=list[Item])
    assert result.output == [{"name": "paper", "qty": 3}, {"name": "ink", "qty": 1}]
    assert result.stop_reason == "final_answer"


@pytest.mark.integration
async def test_a_json_schema_checks_the_answer_dict() -> None:
    """A JSON Schema output type checks ``answer["content"]`` set from code; the output is the value."""
    schema = {
        "type": "object",
        "properties": {"lines": {"type": "integer", "minimum": 1}},
        "required": ["lines"],
        "additionalProperties": False,
    }
    script = [
        code(
            "answer['content'] = {'lines': len(context.splitlines()), 'extra': 1}\nanswer['ready'] = True"
        ),
        lambda r: (
            code("del answer['content']['extra']\nanswer['ready'] = True") if rejected(r) else "?"
        ),
    ]
    async with RecursiveLM("m", provider=ScriptedProvider(script)) as rlm:
        result = await rlm.acomplete(INVOICE_TEXT, "Count the lines.", output_type=schema)
    assert result.output == {"lines": len(INVOICE_TEXT.splitlines())}
    assert result.trajectory.turns[0].output_errors == ["$.extra: is not an allowed field"]


@pytest.mark.integration
async def test_spent_retries_raise_with_the_last_value_and_the_partial_result() -> None:
    """After ``output_retries`` rejections, one more raises OutputValidationError carrying it all."""
    provider = ScriptedProvider(lambda r: code(READ_INVOICE + "\nFINAL_VAR(inv)"))
    finished: list[RunFinished] = []
    async with RecursiveLM(
        "m",
        provider=provider,
        output_retries=1,
        on_event=lambda e: finished.extend([e] if isinstance(e, RunFinished) else []),
    ) as rlm:
        with pytest.raises(OutputValidationError) as caught:
            await rlm.acomplete(INVOICE_TEXT, "Extract the invoice.", output_type=Invoice)
    err = caught.value
    assert len(provider.requests) == 2  # one answer, one retry
    assert isinstance(err.value, dict) and err.value["number"] == "A-17"
    assert err.errors == [
        "$.total: Input should be a valid number, unable to parse string as a number"
    ]
    assert (
        err.result is not None and err.result.stop_reason == "error" and err.result.answer is None
    )
    assert err.result.output is None and [
        t.output_errors != [] for t in err.result.trajectory.turns
    ] == [True, True]
    assert (
        finished[-1].result.error is not None
        and "OutputValidationError" in finished[-1].result.error
    )


@pytest.mark.integration
async def test_no_retries_means_the_first_rejection_raises() -> None:
    """``output_retries=0``: the first answer that does not match ends the run."""
    provider = ScriptedProvider([code("n = len(context)\nFINAL_VAR('n')")])
    async with RecursiveLM("m", provider=provider, output_retries=0) as rlm:
        with pytest.raises(OutputValidationError) as caught:
            await rlm.acomplete("abc", "How long?", output_type=list[int])
    assert caught.value.value == 3 and caught.value.answer == "3"
    assert len(provider.requests) == 1


@pytest.mark.integration
async def test_the_final_call_at_the_iteration_limit_is_checked_once() -> None:
    """At the iteration limit the last call is told the type; its answer is checked, no retry."""
    script = [code("n = len(context)\nprint(n)"), "FINAL(about three)"]
    events: list[Event] = []
    provider = ScriptedProvider(script)
    async with RecursiveLM("m", provider=provider, max_iterations=1, on_event=events.append) as rlm:
        with pytest.raises(OutputValidationError) as caught:
            await rlm.acomplete("abc", "How long?", output_type=int)
    assert (
        "the JSON Schema given with the query (int)" in provider.requests[-1].messages[-1].content
    )
    assert caught.value.answer == "about three"
    assert [e.retries_left for e in events if isinstance(e, OutputRejected)] == [0]


@pytest.mark.integration
async def test_with_tools_a_rejected_code_answer_is_said_in_its_tool_result() -> None:
    """protocol="tools": the repl call's result says why its answer was not taken; final_answer fixes it."""

    def fix(request: CompletionRequest) -> Any:
        assert (
            request.messages[-1].role == "tool" and "was not taken" in request.messages[-1].content
        )
        return tool_reply(("repl", {"code": FIX_TOTAL}), ("final_answer", {"variable": "inv"}))

    script = [tool_reply(("repl", {"code": READ_INVOICE + "\nFINAL_VAR(inv)"})), fix]
    async with RecursiveLM("m", provider=ScriptedProvider(script), protocol="tools") as rlm:
        result = await rlm.acomplete(INVOICE_TEXT, "Extract the invoice.", output_type=Invoice)
    assert result.output == Invoice(number="A-17", currency="EUR", total=expected_total())


@pytest.mark.integration
async def test_batches_take_a_shared_type_and_per_item_types() -> None:
    """abatch: the batch's output_type, an item's own over it, and a failure kept to its item."""

    def script(request: CompletionRequest) -> str:
        if any(m.role == "assistant" for m in request.messages):
            return "FINAL_VAR(n)"
        return code("n = len(context.split())\nprint(n)")

    items = [
        ("one two three", "Count the words."),
        BatchItem(context="a b", query="Count the words.", output_type=str),
        BatchItem(context="x y z w", query="Count the words.", output_type=list[int]),
    ]
    async with RecursiveLM("m", provider=ScriptedProvider(script), output_retries=0) as rlm:
        results = await rlm.abatch(items, output_type=int)
    assert results[0].output == 3 and results[1].output == "2"
    assert results[2].error_type == "OutputValidationError" and results[2].result is not None


@pytest.mark.integration
async def test_the_chat_drop_in_answers_json_for_a_response_format() -> None:
    """chat.completions.create(response_format=...) returns the typed answer as JSON content."""
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Invoice", "schema": Invoice.model_json_schema()},
    }
    script = [*invoice_script(), code("d = {'n': len(context)}\nFINAL_VAR(d)")]
    async with RecursiveLM("m", provider=ScriptedProvider(script)) as rlm:
        completion = await rlm.chat.completions.create(
            messages=[
                {"role": "user", "content": INVOICE_TEXT},
                {"role": "user", "content": "Extract it."},
            ],
            response_format=response_format,
        )
        plain = await rlm.chat.completions.create(
            messages=[{"role": "user", "content": "ab"}, {"role": "user", "content": "?"}],
            response_format={"type": "text"},
        )
    content = completion.choices[0].message.content
    assert content is not None and json.loads(content) == {
        "number": "A-17",
        "currency": "EUR",
        "total": expected_total(),
    }
    assert completion.rlm.output == Invoice.model_validate_json(content).model_dump()
    assert plain.choices[0].message.content == plain.rlm.answer == "{'n': 2}"


@pytest.mark.integration
async def test_without_an_output_type_nothing_changes() -> None:
    """No type: no schema in the prompt, the answer is the text, ``output`` is None."""
    provider = ScriptedProvider([code("d = {'n': len(context)}\nFINAL_VAR(d)")])
    async with RecursiveLM("m", provider=provider) as rlm:
        result = await rlm.acomplete("abc", "How long?")
    assert result.answer == "{'n': 3}" and result.output is None
    assert "JSON Schema" not in provider.requests[0].messages[1].content


@pytest.mark.integration
async def test_streams_show_the_rejection_and_results_round_trip_through_json() -> None:
    """astream yields OutputRejected; a typed result dumps to JSON and loads back as plain data."""
    async with RecursiveLM("m", provider=ScriptedProvider(invoice_script())) as rlm:
        events = [e async for e in rlm.astream(INVOICE_TEXT, "Extract.", output_type=Invoice)]
    kinds = [e.type for e in events]
    assert kinds.count("output_rejected") == 1 and kinds[-1] == "run_finished"
    result = events[-1].result  # type: ignore[union-attr]
    loaded = RLMResult.model_validate_json(result.model_dump_json())
    assert loaded.output == {"number": "A-17", "currency": "EUR", "total": expected_total()}


@pytest.mark.integration
async def test_a_bad_output_type_fails_before_any_model_call() -> None:
    """An output type that cannot be validated raises ConfigurationError before the run starts."""
    provider = ScriptedProvider(["FINAL(x)"])
    async with RecursiveLM("m", provider=provider) as rlm:
        with pytest.raises(ConfigurationError, match="not supported"):
            await rlm.acomplete("abc", "q", output_type={"type": "object", "if": {}})
        with pytest.raises(ConfigurationError, match="output_type"):
            await rlm.abatch([("a", "q")], output_type=3)
    assert provider.requests == []
    with pytest.raises(ConfigurationError, match="output_retries"):
        RecursiveLM("m", provider=provider, output_retries=-1)


@pytest.mark.integration
async def test_the_worker_sends_values_as_json_beside_their_text() -> None:
    """FINAL_VAR of sets and dataclasses carries JSON; text, and values JSON cannot hold, carry none."""
    async with REPLSession("ctx") as repl:
        cell = await repl.run_cell("FINAL_VAR({'s': {3}, 'p': (1, 2)})")
        assert cell.final_answer == "{'s': {3}, 'p': (1, 2)}"
        assert cell.final_json is not None and json.loads(cell.final_json) == {
            "s": [3],
            "p": [1, 2],
        }
        text = await repl.run_cell("FINAL('plain')")
        assert text.final_answer == "plain" and text.final_json is None
        odd = await repl.run_cell("FINAL_VAR(object())")
        assert odd.final_answer is not None and odd.final_json is None
        nan = await repl.run_cell("FINAL_VAR(float('nan'))")
        assert nan.final_json is None
        await repl.run_cell(
            "from dataclasses import dataclass\n"
            "@dataclass\nclass P:\n    x: int\n    y: int\n"
            "pt = P(1, 2)\nwords = 'a b'\nnums = [1, 2]"
        )
        assert json.loads(await repl.get_variable_json("pt") or "null") == {"x": 1, "y": 2}
        assert await repl.get_variable_json("nums") == "[1, 2]"
        assert await repl.get_variable_json("words") is None
        assert await repl.get_variable_json("missing") is None
        assert await repl.get_variable("nums") == "[1, 2]"  # the text is unchanged


def test_the_console_view_says_why_an_answer_was_rejected() -> None:
    """``verbose=True`` shows a rejection with the retries left and the problems."""
    out = io.StringIO()
    view = console_view(file=out, width=200, threaded=False)
    view.handle(
        OutputRejected(
            run_id="r", iteration=2, answer="x", errors=["$.a: bad"], attempt=1, retries_left=1
        )
    )
    assert "answer rejected by output_type (retries left: 1): $.a: bad" in out.getvalue()


@pytest.mark.integration
async def test_a_recorded_typed_run_loads_with_its_rejections(tmp_path: Path) -> None:
    """The JSONL recording of a typed run loads back into the same trajectory, rejections included."""
    path = tmp_path / "typed.jsonl"
    with JSONLRecorder(path) as recorder:
        async with RecursiveLM("m", provider=ScriptedProvider(invoice_script())) as rlm:
            result = await rlm.acomplete(
                INVOICE_TEXT, "Extract.", output_type=Invoice, on_event=recorder
            )
    (saved,) = load_runs(path)
    assert saved.trajectory == result.trajectory
    assert saved.trajectory.turns[1].output_errors == result.trajectory.turns[1].output_errors != []


def test_a_rejected_answer_is_not_called_missing() -> None:
    """The reminder after a reply whose answer was not taken asks for another answer, and
    does not claim the reply had none."""
    told = proto.no_code_reminder(["Your final answer was not taken: ..."], answered=True)
    assert "no final answer" not in told and "answer again with FINAL" in told
    assert "no final answer" in proto.no_code_reminder(["P."])
