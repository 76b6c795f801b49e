"""Needle in a haystack: find a magic number hidden in a million lines of random words.

Runs against the configured model (``--model``, else ``RLM_MODEL`` from the environment or
``.env``, with its key). With none configured, or with ``--offline``, it runs the offline
scripted test/demo double instead, says so, and calls no language model.

    uv run python examples/niah.py                       # RLM_MODEL, or the offline stand-in
    uv run python examples/niah.py --model openai:gpt-5-mini
    uv run python examples/niah.py --offline --lines 100000
"""

from __future__ import annotations

import argparse

import anyio

from rlm_sdk import ConfigurationError, RecursiveLM
from rlm_sdk.testing import NIAH_QUERY, ScriptedProvider, make_haystack, niah_policy


def offline() -> RecursiveLM:
    print("Offline: a scripted test/demo double plays the model (no language model is called).")
    return RecursiveLM("scripted", provider=ScriptedProvider(niah_policy))


async def main(lines: int, model: str | None, force_offline: bool) -> bool:
    context, number = make_haystack(lines)
    if force_offline:
        rlm = offline()
    else:
        try:
            rlm = RecursiveLM(model)  # None: RLM_MODEL from the environment or .env
        except ConfigurationError:
            print("No model configured (pass --model or set RLM_MODEL).")
            rlm = offline()
    async with rlm:
        result = await rlm.acomplete(context, NIAH_QUERY)
    correct = result.answer is not None and str(number) in result.answer
    print(f"answer={result.answer!r} expected={number} correct={correct} turns={result.iterations}")
    return correct


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--model", default=None, help="default: RLM_MODEL")
    parser.add_argument("--offline", action="store_true", help="use the scripted stand-in")
    args = parser.parse_args()
    raise SystemExit(0 if anyio.run(main, args.lines, args.model, args.offline) else 1)
