"""Typed answers (``output_type=``): what checking the answer adds to a run.

``check``: in-process, for a pydantic model, a TypedDict and a JSON Schema: compiling the
output type (once per call) and reading and validating one answer, an invoice of 20 lines
sent as JSON by the worker.

``run``: whole runs against a scripted model that answers at once (a TEST/DEMO double), with
real REPL workers: a cell builds the invoice dict from the context, the next reply answers
``FINAL_VAR(invoice)``. Runs with and without ``output_type=Invoice`` alternate; the answer
is valid the first time, so the difference of the medians is all the SDK adds for a typed
answer: the schema in the prompt, the value's JSON from the worker (one more round trip),
the validation. Every run's output is checked against the context.

    uv run python bench/bench_output.py check
    uv run python bench/bench_output.py run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio
from pydantic import BaseModel
from typing_extensions import TypedDict

from rlm_sdk import CompletionRequest, RecursiveLM
from rlm_sdk._output import output_shape
from rlm_sdk.testing import ScriptedProvider

LINES = 20
CONTEXT = "\n".join(f"line {i}: item-{i} x {i % 5 + 1} at {i * 1.25:.2f}" for i in range(LINES))


class Line(BaseModel):
    sku: str
    qty: int
    price: float


class Invoice(BaseModel):
    number: str
    lines: list[Line]
    total: float


class LineDict(TypedDict):
    sku: str
    qty: int
    price: float


class InvoiceDict(TypedDict):
    number: str
    lines: list[LineDict]
    total: float


def invoice_value() -> dict[str, Any]:
    lines = []
    for row in CONTEXT.splitlines():
        _, rest = row.split(": ", 1)
        sku, _, qty, _, price = rest.split()
        lines.append({"sku": sku, "qty": int(qty), "price": float(price)})
    return {
        "number": "INV-1",
        "lines": lines,
        "total": round(sum(x["qty"] * x["price"] for x in lines), 2),
    }


BUILD = """```repl
rows = [r.split(": ", 1)[1].split() for r in context.splitlines()]
lines = [{"sku": s, "qty": int(q), "price": float(p)} for s, _, q, _, p in rows]
invoice = {"number": "INV-1", "lines": lines, "total": round(sum(x["qty"] * x["price"] for x in lines), 2)}
print(len(lines))
```"""


def policy(request: CompletionRequest) -> str:
    return "FINAL_VAR(invoice)" if any(m.role == "assistant" for m in request.messages) else BUILD


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``fn`` over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check() -> None:
    value = invoice_value()
    text, value_json = str(value), json.dumps(value)
    schema = Invoice.model_json_schema()
    for name, output_type in (
        ("pydantic", Invoice),
        ("TypedDict", InvoiceDict),
        ("schema", schema),
    ):
        shape = output_shape(output_type)
        typed, _, problems = shape.read(text, value_json)
        assert problems == [] and typed is not None
        compile_s = timed(lambda t=output_type: output_shape(t), 200)  # type: ignore[misc]
        read_s = timed(lambda s=shape: s.read(text, value_json), 2000)  # type: ignore[misc]
        print(
            f"{name:>9}: compile {compile_s * 1e6:7.1f} us per call; "
            f"read + validate {read_s * 1e6:6.1f} us per answer ({LINES} lines)"
        )


async def runs(rounds: int) -> None:
    expected = Invoice.model_validate(invoice_value())
    walls: dict[bool, list[float]] = {False: [], True: []}
    async with (
        RecursiveLM("m", provider=ScriptedProvider(policy)) as plain,
        RecursiveLM("m", provider=ScriptedProvider(policy)) as typed,
    ):
        for warm in (False, True):  # start both fork servers first
            await (typed if warm else plain).acomplete(CONTEXT, "The invoice?")
        for _ in range(rounds):
            for with_type in (False, True):
                t0 = time.perf_counter()
                if with_type:
                    result = await typed.acomplete(CONTEXT, "The invoice?", output_type=Invoice)
                    assert result.output == expected
                else:
                    result = await plain.acomplete(CONTEXT, "The invoice?")
                    assert result.answer == str(invoice_value())
                walls[with_type].append(time.perf_counter() - t0)
    off, on = statistics.median(walls[False]), statistics.median(walls[True])
    print(f"untyped run: median {off * 1000:.2f} ms over {rounds} runs")
    print(f"typed run:   median {on * 1000:.2f} ms over {rounds} runs")
    print(
        f"typed - untyped: {(on - off) * 1000:+.2f} ms per run; ratio {on / off:.3f}x "
        "(instant model: every millisecond here is the SDK's)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["check", "run"])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if args.what == "check":
        check()
    else:
        anyio.run(runs, args.rounds)


if __name__ == "__main__":
    main()
