"""Watch a run step by step with ``astream``, and save its trajectory for later.

Prints one line per event as the run goes (turns, model calls, cells, sub-calls, child
runs), then the answer and the usage per model. The trajectory is saved as JSONL; replay
it with ``uv run rlm-sdk view run.jsonl`` or open it in ``rlm-sdk serve``.

    RLM_MODEL=openai:gpt-5-mini uv run python examples/stream_events.py big.log \\
        -q "Which errors repeat, and how often?"

The model comes from ``--model`` or ``RLM_MODEL`` (with its key in the environment or
``.env``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from rlm_sdk import (
    CellFinished,
    ChildRunStarted,
    ConfigurationError,
    Event,
    JSONLRecorder,
    LimitReached,
    ModelResponse,
    RecursiveLM,
    RetryScheduled,
    RunFinished,
    SubCallFinished,
    TurnStarted,
)


def describe(event: Event) -> str | None:
    """One line for the events worth a line; None for the rest."""
    pad = "  " * event.depth
    if isinstance(event, TurnStarted):
        return f"{pad}turn {event.iteration}"
    if isinstance(event, ModelResponse):
        tokens = event.prompt_tokens + event.completion_tokens
        return f"{pad}  {event.purpose} reply from {event.model}: {tokens:,} tokens, {event.latency_s:.2f} s"
    if isinstance(event, CellFinished):
        status = event.error_type or "ok"
        return f"{pad}  cell {event.cell + 1}: {status}, {event.duration_s * 1000:.0f} ms, {len(event.stdout):,} chars printed"
    if isinstance(event, SubCallFinished):
        outcome = "failed" if event.error else "ok"
        return f"{pad}  {event.kind}_query {outcome} in {event.duration_s:.2f} s"
    if isinstance(event, ChildRunStarted):
        return f"{pad}  child run {event.child_run_id} started"
    if isinstance(event, RetryScheduled):
        return f"{pad}  retry {event.attempt} in {event.delay_s:.1f} s ({event.reason})"
    if isinstance(event, LimitReached):
        return f"{pad}  budget ran out: {event.detail}"
    return None


async def main(args: argparse.Namespace) -> int:
    context = args.file.read_text(encoding="utf-8", errors="replace")
    answer = None
    with JSONLRecorder(args.record) as recorder:
        async with RecursiveLM(args.model, on_event=recorder) as rlm:
            async for event in rlm.astream(context, args.query):
                line = describe(event)
                if line:
                    print(line)
                if isinstance(event, RunFinished) and event.depth == 0:
                    result = event.result
                    answer = result.answer
                    print(f"answer: {answer}")
                    for model, usage in result.usage.models.items():
                        print(f"  {model}: {usage.calls} calls, {usage.total_tokens:,} tokens")
    print(f"trajectory saved to {args.record}")
    return 0 if answer is not None else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="the context: a text file")
    parser.add_argument("-q", "--query", required=True)
    parser.add_argument("--record", type=Path, default=Path("run.jsonl"), help="trajectory file")
    parser.add_argument("--model", help="default: RLM_MODEL, from the environment or .env")
    args = parser.parse_args()
    try:
        raise SystemExit(anyio.run(main, args))
    except ConfigurationError as err:  # no model named, or a missing key: one line, no traceback
        raise SystemExit(f"{parser.prog}: {err}") from None
