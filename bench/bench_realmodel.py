"""The SDK against a real model: its time per turn, and twenty runs at once.

llama.cpp's server (from the ``realmodel`` dependency group) serves SmolLM2-135M on
127.0.0.1, started and stopped by this script as the tests do. Every run is real: the model
writes what it writes, with ``temperature=0``, ``max_tokens=48`` and two iterations.

* **Per turn.** Each of ``--runs`` runs goes alone. The SDK's own time is the run's wall
  time minus its model calls' latency (as the provider measured it) and its cells' time,
  spread over its turns. The server's generation time is what llama.cpp itself logged for
  each request (prompt evaluation plus generation).
* **Concurrently.** The same runs again, all at once, against the slowest of them alone.
  llama-cpp-python's server answers one request at a time, so the wall time is bounded below
  by the server's busy time, which is printed beside it.

    uv sync --all-extras --group realmodel
    uv run python bench/bench_realmodel.py --runs 20
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' server helper

from tests.realmodel.llama import MODEL, LlamaServer, llama_server

from rlm_sdk import (
    CellFinished,
    Event,
    Limits,
    ModelResponse,
    OpenAICompatibleProvider,
    RecursiveLM,
    RLMResult,
)

CONTEXT = "\n".join(
    f"Day {d}: the weather was {w}." for d, w in enumerate(["sunny", "rainy", "windy"] * 20, 1)
)
_SERVER_MS = re.compile(r"(?:prompt eval|\beval) time =\s+([\d.]+) ms")


@dataclass
class Measured:
    """One run: its result, wall time, model latency and cell time."""

    result: RLMResult
    wall: float
    model: float = 0.0
    cells: float = 0.0
    calls: int = 0
    events: list[Event] = field(default_factory=list)

    @property
    def sdk(self) -> float:
        return self.wall - self.model - self.cells


def server_ms(server: LlamaServer, start: int) -> tuple[float, int]:
    """llama.cpp's own compute time (ms) logged after byte ``start``, and the log's new end."""
    text = server.log.read_bytes()
    found = [float(m) for m in _SERVER_MS.findall(text[start:].decode("utf-8", "replace"))]
    return sum(found), len(text)


async def one_run(rlm: RecursiveLM, i: int) -> Measured:
    events: list[Event] = []
    started = time.perf_counter()
    result = await rlm.acomplete(
        CONTEXT, f"On which days was it windy? (question {i})", on_event=events.append
    )
    measured = Measured(result, time.perf_counter() - started, events=events)
    for event in events:
        if isinstance(event, ModelResponse):
            measured.model += event.latency_s if event.purpose != "sub_call" else 0.0
            measured.calls += 1
        elif isinstance(event, CellFinished):
            measured.cells += event.duration_s
    return measured


def rlm_for(provider: OpenAICompatibleProvider) -> RecursiveLM:
    return RecursiveLM(
        MODEL,
        provider=provider,
        max_tokens=48,
        temperature=0,
        limits=Limits(max_iterations=2, max_wall_time=600),
        on_limit="return",
    )


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as logs, llama_server(Path(logs)) as server:
        provider = OpenAICompatibleProvider(base_url=server.base_url, timeout=600)
        async with provider, rlm_for(provider) as rlm:
            await one_run(rlm, -1)  # warm: the fork server, the prompt cache
            _, mark = server_ms(server, 0)
            solo: list[Measured] = []
            for i in range(runs):
                solo.append(await one_run(rlm, i))
            solo_server, mark = server_ms(server, mark)

            results: dict[int, Measured] = {}

            async def concurrent(i: int) -> None:
                results[i] = await one_run(rlm, i)

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(runs):
                    tg.start_soon(concurrent, i)
            wall = time.perf_counter() - started
            together_server, _ = server_ms(server, mark)

    turns = [m.result.iterations for m in solo]
    calls = sum(m.calls for m in solo)
    per_turn_sdk = [m.sdk / t for m, t in zip(solo, turns, strict=True)]
    per_turn_model = [m.model / t for m, t in zip(solo, turns, strict=True)]
    print(f"{runs} runs alone: {sum(turns)} turns, {calls} model calls")
    print(
        f"  per turn, median: SDK {statistics.median(per_turn_sdk) * 1000:.1f} ms, "
        f"model call {statistics.median(per_turn_model) * 1000:.0f} ms; "
        f"llama.cpp's own compute {solo_server / calls:.0f} ms per call"
    )
    print(
        f"  SDK share of a run's wall time: median "
        f"{statistics.median(m.sdk / m.wall for m in solo) * 100:.1f} %"
    )
    slowest = max(m.wall for m in solo)
    print(f"{runs} runs at once: wall {wall:.2f} s")
    print(
        f"  slowest run alone {slowest:.2f} s ({wall / slowest:.1f}x); all runs alone, one after "
        f"another, {sum(m.wall for m in solo):.2f} s; the server's compute meanwhile "
        f"{together_server / 1000:.2f} s (wall / compute {wall / (together_server / 1000):.2f}x)"
    )
    stops = {m.result.stop_reason for m in [*solo, *results.values()]}
    print(f"  stop reasons: {sorted(stops)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    anyio.run(main, parser.parse_args().runs)
