"""The SDK's own cost per turn, with an instant provider and the 1M-line NIAH context.

A scripted stand-in model (a TEST/DEMO double) answers at once with a small cell for nine
turns and a final answer on the tenth. The SDK's time per turn is the wall time minus what
the cells themselves computed (as the worker measured it), divided by the turns; worker
start-up and context load are reported apart.

    uv run python bench/bench_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from rlm_sdk import CompletionRequest, RecursiveLM, RunStarted, TurnStarted
from rlm_sdk.testing import NIAH_QUERY, ScriptedProvider, make_haystack

TURNS = 10


def policy(request: CompletionRequest) -> str:
    turn = sum(1 for m in request.messages if m.role == "assistant") + 1
    if turn < TURNS:
        return f"Step {turn}.\n```repl\nx = {turn}\nprint(len(context), x)\n```"
    return "FINAL(done)"


async def main(repeat: int) -> None:
    context, _ = make_haystack(1_000_000, seed=11)
    rlm = RecursiveLM("instant", provider=ScriptedProvider(policy), max_iterations=TURNS + 2)
    await rlm.acomplete("warm-up", "q")
    per_turn, walls, first_turn = [], [], []
    for _ in range(repeat):
        marks: dict[str, float] = {}

        def on_event(event: object, marks: dict[str, float] = marks) -> None:
            if isinstance(event, RunStarted):
                marks["start"] = time.perf_counter()
            elif isinstance(event, TurnStarted) and event.iteration == 2:
                marks["turn2"] = time.perf_counter()

        t0 = time.perf_counter()
        result = await rlm.acomplete(context, NIAH_QUERY, on_event=on_event)
        wall = time.perf_counter() - t0
        assert result.answer == "done" and result.iterations == TURNS
        cells = sum(c.duration_s for t in result.trajectory.turns for c in t.cells)
        # Turn 1 includes waiting for the worker to start and load the context; report it apart.
        steady = time.perf_counter() - marks["turn2"]
        steady_cells = sum(c.duration_s for t in result.trajectory.turns[1:] for c in t.cells)
        per_turn.append((steady - steady_cells) / (TURNS - 1))
        walls.append(wall - cells)
        first_turn.append(marks["turn2"] - t0)
    print(
        f"SDK time per turn (turns 2-{TURNS}, cell compute excluded): median {statistics.median(per_turn) * 1000:.2f} ms (bar 5 ms)"
    )
    print(
        f"turn 1 incl. worker start and 38.5 MB context load: median {statistics.median(first_turn) * 1000:.1f} ms"
    )
    print(
        f"whole run minus cell compute: median {statistics.median(walls) * 1000:.1f} ms over {repeat} runs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    anyio.run(main, parser.parse_args().repeat)
