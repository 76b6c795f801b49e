"""Run under a budget, and see what a run that hits it gives back.

Budgets (model calls, tokens, cost, wall time) are shared by the whole run tree. With
``on_limit="return"`` a run that runs out returns normally, with ``stop_reason="limit"``,
its usage so far and its trajectory; with the default ``"raise"`` it raises
``LimitExceededError`` carrying the same partial result.

    RLM_MODEL=openai:gpt-5-mini uv run python examples/budgets.py big.log \\
        -q "Which errors repeat?" --max-calls 1

The model comes from ``--model`` or ``RLM_MODEL`` (with its key in the environment or
``.env``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlm_sdk import ConfigurationError, LimitExceededError, Limits, RecursiveLM


def main(args: argparse.Namespace) -> int:
    context = args.file.read_text(encoding="utf-8", errors="replace")
    limits = Limits(max_model_calls=args.max_calls, max_tokens=args.max_tokens)

    # 1. on_limit="return": the result says why it stopped.
    rlm = RecursiveLM(args.model, limits=limits, on_limit="return")
    result = rlm.complete(context, args.query)
    print(f"stop_reason={result.stop_reason} answer={result.answer!r}")
    print(
        f"  {result.usage.calls} calls, {result.usage.total_tokens:,} tokens; {result.error or ''}"
    )

    # 2. on_limit="raise" (the default): the error carries the partial result.
    rlm = RecursiveLM(args.model, limits=limits)
    try:
        result = rlm.complete(context, args.query)
    except LimitExceededError as err:
        partial = err.result
        assert partial is not None
        print(f"LimitExceededError on {err.limit!r} after {partial.iterations} turns")
        return 0
    print(f"answered within the budget: {result.answer}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="the context: a text file")
    parser.add_argument("-q", "--query", required=True)
    parser.add_argument("--max-calls", type=int, default=1, help="model calls in the whole tree")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens in the whole tree")
    parser.add_argument("--model", help="default: RLM_MODEL, from the environment or .env")
    args = parser.parse_args()
    try:
        raise SystemExit(main(args))
    except ConfigurationError as err:  # no model named, or a missing key: one line, no traceback
        raise SystemExit(f"{parser.prog}: {err}") from None
