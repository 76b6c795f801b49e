"""The SDK's own cost per turn, with an instant provider and the 1M-line NIAH context.

A scripted stand-in model (a TEST/DEMO double) answers at once with a small cell for nine
turns and a final answer on the tenth. The SDK's time per turn is the wall time minus what
the cells themselves computed (as the worker measured it), divided by the turns; worker
start-up and context load are reported apart.

With ``--otel`` the same runs are made with OpenTelemetry tracing off and on, alternately:
on is :class:`rlm_sdk.otel.OTelTracer` with the OpenTelemetry SDK behind it (spans batched
for a background exporter that drops them, as a production exporter would take them), and
"no SDK" is the tracer with no SDK configured. Besides the time per turn of each, it reports
the time spent inside the tracer itself per turn, measured around each call (bar 0.2 ms), and
the time per turn it adds, each run paired with the run without tracing of the same round.

    uv run python bench/bench_overhead.py
    uv run python bench/bench_overhead.py --otel
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from rlm_sdk import CompletionRequest, Event, RecursiveLM, RunStarted, TurnStarted
from rlm_sdk.testing import NIAH_QUERY, ScriptedProvider, make_haystack

TURNS = 10
Sink = Callable[[Event], None]


def policy(request: CompletionRequest) -> str:
    turn = sum(1 for m in request.messages if m.role == "assistant") + 1
    if turn < TURNS:
        return f"Step {turn}.\n```repl\nx = {turn}\nprint(len(context), x)\n```"
    return "FINAL(done)"


class Timed:
    """A sink wrapped to add up the time spent inside it: wall time, and this thread's CPU
    time (which leaves out the moments another process or thread had the core or the GIL)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __call__(self, event: Event) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        self.sink(event)
        self.cpu_seconds += time.thread_time() - c0
        self.seconds += time.perf_counter() - t0


def tracers() -> dict[str, Callable[[], Timed | None]]:
    """How each mode makes its sink: none, OTelTracer without an SDK, and with one."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import NoOpTracerProvider

    from rlm_sdk.otel import OTelTracer

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return {
        "off": lambda: None,
        "otel, no SDK": lambda: Timed(OTelTracer(tracer_provider=NoOpTracerProvider())),
        "otel, SDK": lambda: Timed(OTelTracer(tracer_provider=provider)),
    }


async def one_run(
    rlm: RecursiveLM, context: str, tracer: Timed | None
) -> tuple[float, float, float, float, float]:
    """(SDK time per steady turn, first turn, whole run minus cells, tracer wall and CPU time
    per turn)."""
    marks: dict[str, float] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, RunStarted):
            marks["start"] = time.perf_counter()
        elif isinstance(event, TurnStarted) and event.iteration == 2:
            marks["turn2"] = time.perf_counter()
        if tracer is not None:
            tracer(event)

    t0 = time.perf_counter()
    result = await rlm.acomplete(context, NIAH_QUERY, on_event=on_event)
    wall = time.perf_counter() - t0
    assert result.answer == "done" and result.iterations == TURNS
    cells = sum(c.duration_s for t in result.trajectory.turns for c in t.cells)
    # Turn 1 includes waiting for the worker to start and load the context; report it apart.
    steady = time.perf_counter() - marks["turn2"]
    steady_cells = sum(c.duration_s for t in result.trajectory.turns[1:] for c in t.cells)
    traced = 0.0 if tracer is None else tracer.seconds / TURNS
    cpu = 0.0 if tracer is None else tracer.cpu_seconds / TURNS
    return (steady - steady_cells) / (TURNS - 1), marks["turn2"] - t0, wall - cells, traced, cpu


async def main(repeat: int, otel: bool) -> None:
    context, _ = make_haystack(1_000_000, seed=11)
    rlm = RecursiveLM("instant", provider=ScriptedProvider(policy), max_iterations=TURNS + 2)
    await rlm.acomplete("warm-up", "q")
    modes = tracers() if otel else {"off": lambda: None}
    samples: dict[str, list[tuple[float, float, float, float, float]]] = {m: [] for m in modes}
    order = list(modes)
    for i in range(repeat):
        # Alternately, so that drift hits every mode alike, and each in turn first, since a
        # run pays for some of the clean-up of the one before it.
        for mode in order[i % len(order) :] + order[: i % len(order)]:
            samples[mode].append(await one_run(rlm, context, modes[mode]()))
    for mode, rows in samples.items():
        per_turn, first, walls, traced, cpu = (
            statistics.median(col) for col in zip(*rows, strict=True)
        )
        label = "" if not otel else f"[{mode}] "
        print(
            f"{label}SDK time per turn (turns 2-{TURNS}, cell compute excluded): median {per_turn * 1000:.2f} ms (bar 5 ms)"
        )
        if mode != "off":
            # Each run is paired with the run without tracing of the same round.
            added = statistics.median(
                row[0] - off[0] for row, off in zip(rows, samples["off"], strict=True)
            )
            print(
                f"{label}time inside the tracer per turn: median {traced * 1000:.3f} ms "
                f"(bar 0.2 ms), of which CPU {cpu * 1000:.3f} ms; SDK time per turn added "
                f"(paired with the run off): median {added * 1000:.3f} ms"
            )
        print(
            f"{label}turn 1 incl. worker start and 38.5 MB context load: median {first * 1000:.1f} ms"
        )
        print(
            f"{label}whole run minus cell compute: median {walls * 1000:.1f} ms over {repeat} runs"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--otel", action="store_true", help="compare OpenTelemetry tracing off and on"
    )
    args = parser.parse_args()
    anyio.run(main, args.repeat, args.otel)
