"""Budget: the one place a run tree's limits are enforced."""

from __future__ import annotations

import anyio
import pytest

from rlm_sdk import CompletionResponse, LimitExceededError, Limits, TokenUsage
from rlm_sdk._budget import Budget


def _reply(prompt: int, completion: int, cost: float | None = None) -> CompletionResponse:
    usage = TokenUsage(prompt_tokens=prompt, completion_tokens=completion, cost=cost)
    return CompletionResponse(text="x", model="m", usage=usage)


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        (Limits(max_model_calls=2), "model_calls"),
        (Limits(max_tokens=25), "tokens"),
        (Limits(max_cost=0.015), "cost"),
    ],
)
def test_a_spent_budget_refuses_the_next_call_and_stays_spent(limits: Limits, limit: str) -> None:
    """Two calls of 15 tokens and $0.01 each spend the budget; every later call raises it again."""
    budget = Budget(limits, {})
    for _ in range(2):
        budget.charge_call()
        budget.record("m", _reply(10, 5, 0.01))
    with pytest.raises(LimitExceededError) as first:
        budget.charge_call()
    assert first.value.limit == limit
    with pytest.raises(LimitExceededError) as again:
        budget.charge_call()
    assert (again.value.limit, str(again.value)) == (limit, str(first.value))
    spent = budget.exhausted()
    assert spent is not None and (spent.limit, str(spent)) == (limit, str(first.value))


def test_usage_and_prices() -> None:
    """A reported cost is kept; a missing one comes from the price table, per million tokens."""
    budget = Budget(Limits(), {"priced": (1.0, 2.0)})
    assert budget.record("priced", _reply(1_000_000, 500_000)) == pytest.approx(2.0)
    assert budget.record("reported", _reply(10, 10, cost=0.5)) == 0.5
    assert budget.record("unknown", _reply(10, 10)) is None
    assert budget.usage.calls == 3
    assert budget.usage.cost == pytest.approx(2.5)
    assert budget.usage.models["unknown"].cost is None


@pytest.mark.parametrize(("max_depth", "recursing"), [(1, []), (2, [0]), (3, [0, 1])])
def test_depth(max_depth: int, recursing: list[int]) -> None:
    """Runs exist at depths 0 .. max_depth-1: only those above the deepest may start children."""
    budget = Budget(Limits(max_depth=max_depth), {})
    assert [d for d in range(4) if budget.can_recurse(d)] == recursing


async def test_wall_clock_turns_its_deadline_into_a_limit_error() -> None:
    """Past max_wall_time the block is cancelled, and the budget says it was the wall time."""
    budget = Budget(Limits(max_wall_time=0.05), {})
    with pytest.raises(LimitExceededError) as info, budget.wall_clock():
        await anyio.sleep(5)
    assert info.value.limit == "wall_time"
    assert budget.out_of_time()
    with pytest.raises(LimitExceededError):
        budget.charge_call()


async def test_an_outer_cancel_is_not_the_wall_time() -> None:
    """A cancel from outside passes through unchanged, and the budget is not spent."""
    budget = Budget(Limits(max_wall_time=10), {})
    with anyio.move_on_after(0.05) as outer, budget.wall_clock():
        await anyio.sleep(5)
    assert outer.cancelled_caught
    assert not budget.out_of_time()
    assert budget.exhausted() is None


async def test_no_wall_time_means_no_deadline() -> None:
    """Without max_wall_time the block runs to its end."""
    budget = Budget(Limits(), {})
    with budget.wall_clock():
        await anyio.sleep(0)
    assert not budget.out_of_time()
