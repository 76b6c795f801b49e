"""Needle in a haystack: find a magic number hidden in a million lines of random words.

Runs against the configured provider (``RLM_MODEL`` / ``--model``, with its key in the
environment or ``.env``). With none configured it falls back to the offline scripted
test/demo double, says so, and calls no language model.

    uv run python examples/niah.py                       # offline stand-in
    uv run python examples/niah.py --model openai:gpt-5-mini
"""

from __future__ import annotations

import argparse

import anyio

from rlm_sdk import RecursiveLM
from rlm_sdk.cli._demo import NIAH_QUERY, make_haystack, niah_policy
from rlm_sdk.testing import ScriptedProvider


async def main(lines: int, model: str | None) -> bool:
    context, number = make_haystack(lines)
    if model is None:
        print("No model given: using the offline scripted stand-in (no language model is called).")
        rlm = RecursiveLM("scripted", provider=ScriptedProvider(niah_policy))
    else:
        rlm = RecursiveLM(model)
    async with rlm:
        result = await rlm.acomplete(context, NIAH_QUERY)
    correct = result.answer is not None and str(number) in result.answer
    print(f"answer={result.answer!r} expected={number} correct={correct} turns={result.iterations}")
    return correct


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    raise SystemExit(0 if anyio.run(main, args.lines, args.model) else 1)
