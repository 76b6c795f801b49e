"""The limits of one top-level run, and the one place they are enforced.

Every run of a recursion tree shares one :class:`Budget`: the root makes it and each child
run is handed the same object. It answers the three questions the loop asks, and nothing
else decides them:

* may another model call be made? (:meth:`Budget.charge_call`, before every call: calls,
  tokens and cost spent by the whole tree);
* may this run recurse? (:meth:`Budget.can_recurse`: depth);
* how many turns may a run take? (:attr:`Budget.max_iterations`).

Wall time is a deadline on the whole tree (:meth:`Budget.wall_clock`): it cancels the work in
flight, model calls and cells alike, and turns the cancellation into a
:class:`~rlm_sdk.LimitExceededError`. Once a budget is spent it stays spent: every later
call in the tree raises the same error, so a run whose sub-calls hit the limit stops at
its next turn instead of spending on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import anyio

from ._exceptions import LimitExceededError
from ._types import Limits, Usage
from .providers import CompletionResponse

__all__ = ["Budget"]


class Budget:
    """What a run tree may spend, and what it has spent so far.

    Args:
        limits: the budgets, from the :class:`~rlm_sdk.RecursiveLM` that started the run.
        prices: USD per million (prompt, completion) tokens by model string, for calls whose
            provider reports no cost.
    """

    def __init__(self, limits: Limits, prices: Mapping[str, tuple[float, float]]) -> None:
        self.limits = limits
        self.usage = Usage()
        self._prices = prices
        self._calls = 0
        self._tokens = 0
        self._cost = 0.0
        self._spent: tuple[str, str, dict[str, Any]] | None = None
        """The budget that ran out: its name, the message, details. A fresh error is raised
        each time, so no error object is kept where its own traceback could reach it."""
        self._clock: anyio.CancelScope | None = None

    @property
    def max_iterations(self) -> int:
        """Turns each run of the tree may take before one last call for the answer."""
        return self.limits.max_iterations

    def can_recurse(self, depth: int) -> bool:
        """Whether a run at ``depth`` may start child runs (``rlm_query``) rather than plain calls."""
        return depth + 1 < self.limits.max_depth

    def charge_call(self) -> None:
        """Raise :class:`LimitExceededError` if the tree may not make another model call."""
        if self._spent is not None:
            raise self._error()
        lim = self.limits
        if lim.max_model_calls is not None and self._calls >= lim.max_model_calls:
            raise self._spend("model_calls", f"{self._calls} model calls made")
        if lim.max_tokens is not None and self._tokens >= lim.max_tokens:
            raise self._spend("tokens", f"{self._tokens:,} tokens used")
        if lim.max_cost is not None and self._cost >= lim.max_cost:
            raise self._spend("cost", f"${self._cost:.4f} spent")

    def record(self, model: str, response: CompletionResponse) -> float | None:
        """Count one finished call; returns its cost (reported, else from the price table)."""
        u = response.usage
        cost = self._cost_of(model, response)
        self._calls += 1
        self._tokens += u.prompt_tokens + u.completion_tokens
        if cost is not None:
            self._cost += cost
        self.usage.add(model, u.prompt_tokens, u.completion_tokens, cost)
        return cost

    def record_hit(self, model: str, response: CompletionResponse) -> None:
        """Count a sub-call the cache answered: in usage only, never against a limit."""
        u = response.usage
        self.usage.add_hit(model, u.total_tokens, self._cost_of(model, response))

    def _cost_of(self, model: str, response: CompletionResponse) -> float | None:
        u = response.usage
        if u.cost is None and model in self._prices:
            per_prompt, per_completion = self._prices[model]
            return (u.prompt_tokens * per_prompt + u.completion_tokens * per_completion) / 1e6
        return u.cost

    @contextlib.contextmanager
    def wall_clock(self) -> Iterator[None]:
        """Bound the block by ``max_wall_time``; past it, raise :class:`LimitExceededError`."""
        with anyio.move_on_after(self.limits.max_wall_time) as scope:
            self._clock = scope
            yield
        if scope.cancelled_caught:
            raise self._spend(
                "wall_time",
                f"wall time of {self.limits.max_wall_time} s exceeded",
                max_wall_time=self.limits.max_wall_time,
            )

    def out_of_time(self) -> bool:
        """Whether the wall-time deadline has cancelled the tree (not some outer cancel)."""
        return self._clock is not None and self._clock.cancel_called

    def exhausted(self) -> LimitExceededError | None:
        """An error for the budget that ran out, if one did."""
        if self._spent is None and self.out_of_time():
            return self._spend(
                "wall_time",
                f"wall time of {self.limits.max_wall_time} s exceeded",
                max_wall_time=self.limits.max_wall_time,
            )
        return None if self._spent is None else self._error()

    def _spend(self, limit: str, detail: str, **details: Any) -> LimitExceededError:
        if self._spent is None:
            message = (
                detail if limit == "wall_time" else f"budget exhausted: {detail} (limit on {limit})"
            )
            self._spent = (limit, message, details)
        return self._error()

    def _error(self) -> LimitExceededError:
        assert self._spent is not None
        limit, message, details = self._spent
        return LimitExceededError(message, limit=limit, **details)
