"""Give the model a tool that lives in your process: a customer lookup.

The REPL worker that runs the model's code has no access to your data. A tool is the
door: the model's code calls ``customer_tier("C-2")``, the call travels to this process,
the function runs here, and only the JSON result goes back.

    RLM_MODEL=openai:gpt-5-mini uv run python examples/tools.py

The model comes from ``--model`` or ``RLM_MODEL`` (with its key in the environment or
``.env``).
"""

from __future__ import annotations

import argparse

import anyio

from rlm_sdk import ConfigurationError, RecursiveLM

CUSTOMERS = {"C-1": "gold", "C-2": "silver", "C-3": "gold", "C-4": "bronze"}


def customer_tier(customer_id: str) -> str:
    """The loyalty tier of a customer: gold, silver or bronze."""
    if customer_id not in CUSTOMERS:  # the model chooses the argument: check it
        raise ValueError(f"unknown customer {customer_id!r}")
    return CUSTOMERS[customer_id]


ORDERS = [f"order {n}: customer C-{n % 4 + 1}, {n % 3 + 1} items" for n in range(1, 40)]
QUERY = (
    "Which loyalty tier placed the most orders? "
    "Look tiers up with customer_tier(customer_id), a function in the REPL."
)


async def main(model: str | None) -> int:
    async with RecursiveLM(model, tools={"customer_tier": customer_tier}) as rlm:
        result = await rlm.acomplete(ORDERS, QUERY)
    print(f"answer: {result.answer}")
    tool_calls = sum(
        "customer_tier(" in cell.code for turn in result.trajectory.turns for cell in turn.cells
    )
    print(f"{result.iterations} turns; {tool_calls} cells called the tool")
    return 0 if result.answer else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: RLM_MODEL, from the environment or .env")
    args = parser.parse_args()
    try:
        raise SystemExit(anyio.run(main, args.model))
    except ConfigurationError as err:  # no model named, or a missing key: one line, no traceback
        raise SystemExit(f"{parser.prog}: {err}") from None
